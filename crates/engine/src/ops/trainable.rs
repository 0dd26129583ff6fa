//! Training's element-wise steps as single operations with their own backward pass.
//!
//! Built from candle's primitive ops, each of these is several full-size passes forward and more
//! backward: candle's backward computes the gradient of *both* operands of every binary op (a
//! dropout mask or an attention mask included) and accumulates each into a fresh zero tensor. A
//! LayerNorm is nine such ops, the attention softmax with its scale, mask and dropout four; in a
//! small encoder (MiniLM) those passes, not the products, were most of a training step. Here each
//! is one pass over the rows forward and one backward, and the math is the composite's.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::norm::row_moments;
use super::{simd, with_f32_values};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// The values of a contiguous f32 CPU storage.
fn values<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("training computes in f32")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("a trainable op needs a contiguous input")
    };
    Ok(&data[start..end])
}

fn output(values: Vec<f32>, like: &Layout) -> (CpuStorage, Shape) {
    (CpuStorage::F32(values), like.shape().clone())
}

/// `f(index, out_row, row)` over the rows (last dimension `dim`) of `x`, in parallel; the new
/// values.
fn map_rows(x: &[f32], dim: usize, f: impl Fn(usize, &mut [f32], &[f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let dim = dim.max(1);
    let chunk = dim * ROWS_PER_TASK;
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .enumerate()
        .for_each(|(task, (out, x))| {
            let rows = out.chunks_exact_mut(dim).zip(x.chunks_exact(dim));
            for (i, (o, r)) in rows.enumerate() {
                f(task * ROWS_PER_TASK + i, o, r)
            }
        });
    out
}

/// Which keys each attention row may see.
#[derive(Clone)]
pub enum KeyMask {
    /// Per sequence, per key: 0 for a real key, -inf for padding (rows of one sequence share it).
    Padding(Arc<Vec<f32>>),
    /// Row i sees keys 0..=i.
    Causal,
}

/// softmax(scores * scale + mask) over the last dimension of (sequences, heads, queries, keys),
/// keeping only its output for the backward pass.
#[derive(Clone)]
pub struct AttentionSoftmax {
    pub scale: f32,
    pub mask: KeyMask,
}

impl AttentionSoftmax {
    pub fn apply(&self, scores: &Tensor) -> Result<Tensor> {
        scores.contiguous()?.apply_op1(self.clone())
    }
}

impl CustomOp1 for AttentionSoftmax {
    fn name(&self) -> &'static str {
        "attention-softmax-trainable"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, heads, queries, keys) = layout.shape().dims4()?;
        let x = values(storage, layout)?;
        let rows_per_sequence = heads * queries;
        let out = map_rows(x, keys, |row, out, x| {
            let visible = match &self.mask {
                KeyMask::Causal => {
                    let visible = row % queries + 1;
                    for (o, v) in out[..visible].iter_mut().zip(x) {
                        *o = v * self.scale;
                    }
                    visible
                }
                KeyMask::Padding(mask) => {
                    let sequence = row / rows_per_sequence;
                    let mask = &mask[sequence * keys..(sequence + 1) * keys];
                    for ((o, v), m) in out.iter_mut().zip(x).zip(mask) {
                        *o = v * self.scale + m;
                    }
                    keys
                }
            };
            out[visible..].fill(f32::NEG_INFINITY);
            simd::softmax_scaled(out, 1.0);
        });
        Ok(output(out, layout))
    }

    /// d scores = scale * y * (g - sum(g * y)).
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let keys = res.dim(candle_core::D::Minus1)?;
        let grad = with_f32_values(res, |y| {
            with_f32_values(grad_res, |g| {
                map_rows(y, keys, |row, out, y| {
                    let g = &g[row * keys..(row + 1) * keys];
                    let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                    for ((o, y), g) in out.iter_mut().zip(y).zip(g) {
                        *o = self.scale * y * (g - dot);
                    }
                })
            })
        })??;
        Ok(Some(Tensor::from_vec(grad, res.shape(), res.device())?))
    }
}

/// x * mask for a fixed mask (dropout's kept values scaled by 1 / (1 - p), dropped ones 0); the
/// backward pass is the same product, and no gradient is computed for the mask.
pub struct MaskProduct {
    pub mask: Vec<f32>,
}

impl CustomOp1 for MaskProduct {
    fn name(&self) -> &'static str {
        "mask-product"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = values(storage, layout)?;
        if x.len() != self.mask.len() {
            candle_core::bail!(
                "a mask of {} values for {} values",
                self.mask.len(),
                x.len()
            )
        }
        let out = x.par_iter().zip(&self.mask).map(|(x, m)| x * m).collect();
        Ok(output(out, layout))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = with_f32_values(grad_res, |g| {
            g.par_iter()
                .zip(&self.mask)
                .map(|(g, m)| g * m)
                .collect::<Vec<f32>>()
        })?;
        Ok(Some(Tensor::from_vec(
            grad,
            grad_res.shape(),
            grad_res.device(),
        )?))
    }
}

/// Exact (erf) GELU: x * Phi(x), with Phi the standard normal distribution function.
pub struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-trainable"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut out = values(storage, layout)?.to_vec();
        simd::gelu_erf(&mut out);
        Ok(output(out, layout))
    }

    /// d/dx x Phi(x) = Phi(x) + x phi(x).
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let grad = with_f32_values(arg, |x| {
            with_f32_values(grad_res, |g| {
                x.par_iter()
                    .zip(g)
                    .map(|(&x, g)| {
                        let cdf = 0.5 * (1.0 + simd::erf(x * std::f32::consts::FRAC_1_SQRT_2));
                        let pdf = INV_SQRT_2PI * (-0.5 * x * x).exp();
                        g * (cdf + x * pdf)
                    })
                    .collect::<Vec<f32>>()
            })
        })??;
        Ok(Some(Tensor::from_vec(grad, arg.shape(), arg.device())?))
    }
}

/// LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias, with the
/// gradients of x, weight and bias.
#[derive(Clone)]
pub struct LayerNormOp {
    pub eps: f32,
}

impl LayerNormOp {
    pub fn apply(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op3(weight, bias, self.clone())
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm-trainable"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (values(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        let out = map_rows(x, w.len(), |_, out, row| {
            let (mean, inv) = row_moments(row, self.eps);
            for (((o, v), w), b) in out.iter_mut().zip(row).zip(w).zip(b) {
                *o = (v - mean) * inv * w + b;
            }
        });
        Ok(output(out, l1))
    }

    /// With xhat the normalised row and dh = g * weight:
    /// dx = inv * (dh - mean(dh) - xhat * mean(dh * xhat)); dweight = sum g * xhat; dbias = sum g.
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dim = weight.elem_count();
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let (dx, sums) = with_f32_values(x, |x| {
            with_f32_values(grad_res, |g| self.backward_rows(x, g, &w))
        })??;
        let (dw, db) = sums.split_at(dim);
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dw.to_vec(), weight.shape(), device)?),
            Some(Tensor::from_vec(db.to_vec(), weight.shape(), device)?),
        ))
    }
}

impl LayerNormOp {
    /// dx for every row, and the weight and bias gradients side by side (summed over the rows).
    fn backward_rows(&self, x: &[f32], g: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let dim = w.len();
        let chunk = dim * ROWS_PER_TASK;
        let mut dx = vec![0f32; x.len()];
        let sums = dx
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .map(|(dx, (x, g))| {
                let mut sums = vec![0f32; 2 * dim];
                let mut dh = vec![0f32; dim];
                let rows = dx.chunks_exact_mut(dim).zip(x.chunks_exact(dim));
                for ((dx, x), g) in rows.zip(g.chunks_exact(dim)) {
                    let (mean, inv) = row_moments(x, self.eps);
                    let (mut mean_dh, mut mean_dh_xhat) = (0f32, 0f32);
                    for i in 0..dim {
                        let xhat = (x[i] - mean) * inv;
                        dh[i] = g[i] * w[i];
                        mean_dh += dh[i];
                        mean_dh_xhat += dh[i] * xhat;
                        sums[i] += g[i] * xhat;
                        sums[dim + i] += g[i];
                    }
                    mean_dh /= dim as f32;
                    mean_dh_xhat /= dim as f32;
                    for i in 0..dim {
                        let xhat = (x[i] - mean) * inv;
                        dx[i] = inv * (dh[i] - mean_dh - xhat * mean_dh_xhat);
                    }
                }
                sums
            })
            .reduce(
                || vec![0f32; 2 * dim],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        (dx, sums)
    }
}

#[cfg(test)]
mod tests {
    //! Each op against the composite of candle's primitive ops it replaces: values and gradients.

    use candle_core::{Device, Var, D};

    use super::*;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// The largest absolute difference between two tensors.
    fn gap(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Values and gradients (of sum(f(x) * weights)) of `ours` and `composite` at the variables.
    fn compare(
        vars: &[Var],
        ours: impl Fn(&[Tensor]) -> Tensor,
        composite: impl Fn(&[Tensor]) -> Tensor,
        tolerance: f32,
    ) {
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (ours(&inputs), composite(&inputs));
        assert!(gap(&a, &b) <= tolerance, "values differ by {}", gap(&a, &b));
        let weights = random(a.dims(), 99);
        let grads_a = (a * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grads_b = (b * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (ga, gb) = (grads_a.get(v).unwrap(), grads_b.get(v).unwrap());
            assert!(
                gap(ga, gb) <= tolerance,
                "gradient {i} differs by {}",
                gap(ga, gb)
            );
        }
    }

    #[test]
    fn layer_norm_matches_the_composite() {
        let vars: Vec<Var> = [vec![37, 48], vec![48], vec![48]]
            .iter()
            .enumerate()
            .map(|(i, s)| Var::from_tensor(&random(s, i as u64)).unwrap())
            .collect();
        let eps = 1e-5;
        compare(
            &vars,
            |x| LayerNormOp { eps }.apply(&x[0], &x[1], &x[2]).unwrap(),
            |x| candle_nn::ops::layer_norm_slow(&x[0], &x[1], &x[2], eps).unwrap(),
            1e-4,
        );
    }

    #[test]
    fn attention_softmax_matches_the_composite_with_padding_and_causal_masks() {
        let (sequences, heads, len) = (3, 2, 5);
        let lens = [5usize, 2, 4];
        let mut padding = Vec::new();
        for &l in &lens {
            padding.extend((0..len).map(|k| if k < l { 0f32 } else { f32::NEG_INFINITY }));
        }
        let scores = Var::from_tensor(&random(&[sequences, heads, len, len], 7)).unwrap();
        let scale = 0.35f32;
        let masks = [
            (
                KeyMask::Padding(Arc::new(padding.clone())),
                Tensor::from_vec(padding, (sequences, 1, 1, len), &Device::Cpu).unwrap(),
            ),
            (
                KeyMask::Causal,
                crate::ops::attention::causal_mask(len, &Device::Cpu).unwrap(),
            ),
        ];
        for (mask, additive) in masks {
            let op = AttentionSoftmax { scale, mask };
            compare(
                std::slice::from_ref(&scores),
                |x| op.apply(&x[0]).unwrap(),
                |x| {
                    let s = (&x[0] * scale as f64)
                        .unwrap()
                        .broadcast_add(&additive)
                        .unwrap();
                    let e = s
                        .broadcast_sub(&s.max_keepdim(D::Minus1).unwrap())
                        .unwrap()
                        .exp()
                        .unwrap();
                    e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
                },
                1e-5,
            );
        }
    }

    #[test]
    fn gelu_and_mask_product_match_the_composite() {
        let x = Var::from_tensor(&random(&[9, 40], 3)).unwrap();
        compare(
            std::slice::from_ref(&x),
            |x| x[0].apply_op1(GeluErf).unwrap(),
            |x| x[0].gelu_erf().unwrap(),
            1e-5,
        );
        let mask: Vec<f32> = (0..360)
            .map(|i| if i % 3 == 0 { 0.0 } else { 1.5 })
            .collect();
        let constant = Tensor::from_vec(mask.clone(), (9, 40), &Device::Cpu).unwrap();
        compare(
            std::slice::from_ref(&x),
            |x| x[0].apply_op1(MaskProduct { mask: mask.clone() }).unwrap(),
            |x| (&x[0] * &constant).unwrap(),
            0.0,
        );
    }
}
