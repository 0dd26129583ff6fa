//! `Linear`: `y = x W^T + b` on rows of `x` (tokens x features). The one place that decides how a
//! weight matrix is held and multiplied:
//! - inference on a CPU with our kernels: packed once at load into panels in the compute precision
//!   (f32, bf16 or f16 storage; see `gemm`), and the candle tensor dropped;
//! - int8 inference (any kernel): quantized once at load into int8 panels (see `gemm::int8`);
//! - training, a LoRA pair being trained, or the `candle` kernel: an f32 candle tensor (on the
//!   precision's grid) multiplied by candle, which records gradients.

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::activation::Activation;
use super::cpu::MatmulKernel;
use super::gemm::int8::quantize_symmetric;
use super::gemm::{self, PackedWeight};
use super::saved_int8::{self, QuantizedTensor};
use super::{with_f32_values, Numerics};

/// A linear layer, plus a LoRA update `x A^T B^T` while one is being trained.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    lora: Option<LowRank>,
    numerics: Numerics,
}

#[derive(Debug, Clone)]
enum Weight {
    /// (out, in) f32, multiplied by candle.
    Tensor { w: Tensor, bias: Option<Tensor> },
    /// Panels for our kernels; the bias is added as the output is stored.
    Packed {
        w: Arc<PackedWeight>,
        bias: Option<Arc<Vec<f32>>>,
        kernel: MatmulKernel,
    },
}

/// A LoRA pair: `a` is (r, in); `b` is (out, r) and already carries the alpha / r scaling (see
/// `trainable::LoraBackend`), so the update is `x A^T B^T`.
#[derive(Debug, Clone)]
struct LowRank {
    a: Tensor,
    b: Tensor,
}

/// One layer's tensors as read from the checkpoint, before they are stacked and packed.
struct Part {
    weight: PartWeight,
    /// Rows of the weight.
    out_dim: usize,
    bias: Option<Tensor>,
    lora: Option<LowRank>,
}

enum PartWeight {
    Float(Tensor),
    /// Saved int8 (see `saved_int8`): row-major values and one scale per row.
    Int8 {
        values: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl Part {
    fn load(
        vb: &VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        n: Numerics,
    ) -> Result<Self> {
        let lora = if vb.contains_tensor("lora_A.weight") {
            Some(LowRank {
                a: vb.get_unchecked("lora_A.weight")?,
                b: vb.get_unchecked("lora_B.weight")?,
            })
        } else {
            None
        };
        let weight = match saved_int8::read(vb, "weight", &[out_dim, in_dim])? {
            Some(_) if !n.quantizes() => candle_core::bail!(
                "{}.weight is saved as int8: this layer loads only in int8",
                vb.prefix()
            ),
            Some((values, scales)) => PartWeight::Int8 { values, scales },
            None => PartWeight::Float(n.compute_weight(vb, &[out_dim, in_dim], "weight")?),
        };
        Ok(Self {
            weight,
            out_dim,
            bias: if bias {
                Some(n.weight(vb, &[out_dim], "bias")?)
            } else {
                None
            },
            lora,
        })
    }
}

impl Linear {
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        numerics: Numerics,
    ) -> Result<Self> {
        Self::load_stacked(&[(vb, out_dim)], in_dim, bias, numerics)
    }

    /// Several layers reading the same input (`(weights, outputs)` each), stacked into one matrix:
    /// one product instead of several, with the outputs side by side in the order given.
    pub fn load_stacked(
        parts: &[(VarBuilder, usize)],
        in_dim: usize,
        bias: bool,
        numerics: Numerics,
    ) -> Result<Self> {
        let loaded = parts
            .iter()
            .map(|(vb, out)| Part::load(vb, in_dim, *out, bias, numerics))
            .collect::<Result<Vec<_>>>()?;
        let lora = stack_lora(&loaded)?;
        let bias = match bias {
            true => Some(cat(loaded
                .iter()
                .filter_map(|p| p.bias.as_ref())
                .collect())?),
            false => None,
        };
        let packable = lora.is_none() && !numerics.differentiable;
        // int8 runs on every kernel (the portable loop where no matrix unit is present); float
        // panels need ours, else candle multiplies the tensor.
        let weight = if packable && numerics.quantizes() {
            let names: Vec<String> = parts.iter().map(|(vb, _)| vb.prefix()).collect();
            Weight::packed(quantize(loaded, &names, in_dim)?, bias, numerics)?
        } else {
            let mut floats = Vec::with_capacity(loaded.len());
            for part in &loaded {
                match &part.weight {
                    PartWeight::Float(w) => floats.push(w),
                    PartWeight::Int8 { .. } => {
                        candle_core::bail!("int8 weights outside int8 numerics")
                    }
                }
            }
            let w = cat(floats)?;
            match numerics.kernel {
                kernel if packable && kernel.packs_weights() => {
                    Weight::packed(pack(&w, kernel)?, bias, numerics)?
                }
                _ => Weight::Tensor {
                    w: w.to_dtype(DType::F32)?,
                    bias,
                },
            }
        };
        Ok(Self {
            weight,
            lora,
            numerics,
        })
    }
}

impl Weight {
    fn packed(w: PackedWeight, bias: Option<Tensor>, numerics: Numerics) -> Result<Self> {
        Ok(Weight::Packed {
            w: Arc::new(w),
            bias: bias.map(|b| b.to_vec1::<f32>().map(Arc::new)).transpose()?,
            kernel: numerics.kernel,
        })
    }
}

/// Tensors stacked along their first dimension (one is returned as is).
fn cat(tensors: Vec<&Tensor>) -> Result<Tensor> {
    match tensors.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Tensor::cat(&tensors, 0),
    }
}

/// The stacked layers' matrices as int8 panels, one scale per output channel: each layer's rows
/// quantized on their own (the same values as quantizing the stack, row by row), or taken as saved.
/// What is quantized here is recorded under the layer's name for `bge-rerank quantize`.
fn quantize(parts: Vec<Part>, names: &[String], k: usize) -> Result<PackedWeight> {
    let mut values: Vec<i8> = Vec::new();
    let mut scales: Vec<f32> = Vec::new();
    for (part, name) in parts.into_iter().zip(names) {
        let (part_values, part_scales) = match part.weight {
            PartWeight::Int8 { values, scales } => (values, scales),
            PartWeight::Float(w) => {
                let w = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                let mut q = vec![0i8; w.len()];
                let scales = w
                    .chunks(k.max(1))
                    .zip(q.chunks_mut(k.max(1)))
                    .map(|(row, out)| quantize_symmetric(row, out))
                    .collect::<Vec<f32>>();
                saved_int8::record(|| QuantizedTensor {
                    name: format!("{name}.weight"),
                    shape: vec![scales.len(), k],
                    values: q.clone(),
                    scales: scales.clone(),
                });
                (q, scales)
            }
        };
        values.extend_from_slice(&part_values);
        scales.extend_from_slice(&part_scales);
    }
    Ok(PackedWeight::from_int8_rows(&values, scales, k))
}

/// Packs an (out, in) matrix in the compute format (f32, bf16 or f16), keeping that format, in the
/// layout `kernel` reads.
fn pack(w: &Tensor, kernel: MatmulKernel) -> Result<PackedWeight> {
    let (n, k) = w.dims2()?;
    let w = w.flatten_all()?;
    match w.dtype() {
        DType::BF16 => {
            let values = w.to_vec1::<half::bf16>()?;
            let bits: Vec<u16> = values.into_iter().map(half::bf16::to_bits).collect();
            Ok(PackedWeight::from_bf16_bits(&bits, n, k, kernel))
        }
        DType::F16 => {
            let values = w.to_vec1::<half::f16>()?;
            let bits: Vec<u16> = values.into_iter().map(half::f16::to_bits).collect();
            Ok(PackedWeight::from_f16_bits(&bits, n, k))
        }
        _ => {
            let values = w.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            Ok(PackedWeight::from_f32(&values, n, k))
        }
    }
}

/// The stacked layers' LoRA pairs as one: the A matrices stacked, and a block-diagonal B in which
/// each layer's rows see only its own A rows (a layer without LoRA gets a zero block).
fn stack_lora(parts: &[Part]) -> Result<Option<LowRank>> {
    if parts.iter().all(|p| p.lora.is_none()) {
        return Ok(None);
    }
    if let [one] = parts {
        return Ok(one.lora.clone());
    }
    let rank = |p: &Part| p.lora.as_ref().map_or(Ok(0), |pair| pair.a.dim(0));
    let total: usize = parts.iter().map(rank).sum::<Result<usize>>()?;
    let a: Vec<&Tensor> = parts
        .iter()
        .filter_map(|p| p.lora.as_ref().map(|pair| &pair.a))
        .collect();
    let mut rows = Vec::with_capacity(parts.len());
    let mut offset = 0;
    for part in parts {
        let out = part.out_dim;
        let device = a[0].device();
        let r = rank(part)?;
        let mut blocks = Vec::new();
        if offset > 0 {
            blocks.push(Tensor::zeros((out, offset), DType::F32, device)?);
        }
        if let Some(pair) = &part.lora {
            blocks.push(pair.b.clone());
        }
        if total - offset - r > 0 {
            blocks.push(Tensor::zeros(
                (out, total - offset - r),
                DType::F32,
                device,
            )?);
        }
        rows.push(Tensor::cat(&blocks, 1)?);
        offset += r;
    }
    Ok(Some(LowRank {
        a: Tensor::cat(&a, 0)?,
        b: Tensor::cat(&rows, 0)?,
    }))
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Tensor { w, bias } => {
                let mut y = x.broadcast_matmul(&w.t()?)?;
                if let Some(pair) = &self.lora {
                    let update = x
                        .broadcast_matmul(&pair.a.t()?)?
                        .broadcast_matmul(&pair.b.t()?)?;
                    y = (y + update)?;
                }
                match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
            Weight::Packed { w, bias, kernel } => {
                // The output is ours: round it in place instead of through another tensor.
                return packed_forward(x, w, bias.as_deref(), *kernel, self.numerics, |_| {});
            }
        };
        self.numerics.round(y)
    }
}

impl Linear {
    /// `activation(self.forward(x))`, the activation applied to the layer's own output buffer
    /// where it can be (no copy of the MLP's widest activations).
    pub fn forward_activated(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        match (&self.weight, activation.in_place()) {
            (Weight::Packed { w, bias, kernel }, Some(apply)) => {
                packed_forward(x, w, bias.as_deref(), *kernel, self.numerics, apply)
            }
            _ => activation.forward(&self.forward(x)?),
        }
    }
}

/// Runs the kernel on the rows of `x` (any leading shape, f32, on the CPU), rounds the output to the
/// numerics' grid and hands it to `then` before it becomes a tensor.
fn packed_forward(
    x: &Tensor,
    w: &PackedWeight,
    bias: Option<&Vec<f32>>,
    kernel: MatmulKernel,
    numerics: Numerics,
    then: impl FnOnce(&mut [f32]),
) -> Result<Tensor> {
    let dims = x.dims();
    let k = *dims.last().unwrap_or(&0);
    if k != w.k() {
        candle_core::bail!(
            "linear layer of {} inputs applied to a shape {dims:?}",
            w.k()
        );
    }
    let m = x.elem_count() / k.max(1);
    let x = x.to_dtype(DType::F32)?;
    let mut y = Vec::with_capacity(m * w.n());
    with_f32_values(&x, |data| {
        let out = &mut y.spare_capacity_mut()[..m * w.n()];
        gemm::matmul_into(kernel, data, m, w, bias.map(Vec::as_slice), out)
    })?;
    // SAFETY: `matmul_into` wrote all m * n values.
    unsafe { y.set_len(m * w.n()) };
    numerics.round_slice(&mut y);
    then(&mut y);
    let mut out_dims = dims.to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = w.n();
    }
    Tensor::from_vec(y, out_dims, x.device())
}
