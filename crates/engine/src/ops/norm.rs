//! Normalisations, computed in f32 whatever the model's precision (as PyTorch does for bf16 models)
//! and rounded to it after. At inference each row is normalised by our loop, rows spread over rayon's
//! threads; a tensor that records gradients (training) takes an operation with a backward pass.

use std::mem::MaybeUninit;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::trainable::LayerNormOp;
use super::{map_f32, with_f32_values, Numerics};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Applies `normalise` to every row of `x` (last dimension `dim`) across threads; `None` where
/// candle must compute instead.
fn rows_in_parallel(
    x: &Tensor,
    dim: usize,
    normalise: impl Fn(&mut [f32]) + Sync,
) -> Result<Option<Tensor>> {
    map_f32(x, |values| {
        values
            .par_chunks_mut(dim * ROWS_PER_TASK)
            .for_each(|rows| rows.chunks_exact_mut(dim).for_each(&normalise));
    })
}

/// A row's mean and 1 / sqrt(variance + eps): LayerNorm's statistics, forward and backward.
pub(super) fn row_moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// LayerNorm with weight and bias: (x - mean) / sqrt(var + eps) * weight + bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    /// The same, as plain values for our loop.
    weight_values: Vec<f32>,
    bias_values: Vec<f32>,
    eps: f64,
    numerics: Numerics,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64, numerics: Numerics) -> Result<Self> {
        let weight = numerics.weight(&vb, &[dim], "weight")?;
        let bias = numerics.weight(&vb, &[dim], "bias")?;
        Ok(Self {
            weight_values: weight.to_vec1()?,
            bias_values: bias.to_vec1()?,
            weight,
            bias,
            eps,
            numerics,
        })
    }

    /// One row, normalised and rounded to the model's precision.
    fn normalise(&self, row: &mut [f32]) {
        let (mean, inv) = row_moments(row, self.eps as f32);
        for ((v, w), b) in row
            .iter_mut()
            .zip(&self.weight_values)
            .zip(&self.bias_values)
        {
            *v = (*v - mean) * inv * w + b;
        }
        self.numerics.round_slice(row);
    }

    /// LayerNorm(a + b), the residual connection's sum formed row by row inside the normalisation
    /// (no tensor of it is built).
    pub fn forward_sum(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let plain = |x: &Tensor| x.dtype() == DType::F32 && x.device().is_cpu() && !x.track_op();
        if !(plain(a) && plain(b)) || a.dims() != b.dims() {
            return self.forward(&(a + b)?);
        }
        let dim = self.weight_values.len();
        let len = a.elem_count();
        let mut out: Vec<f32> = Vec::with_capacity(len);
        with_f32_values(a, |a| {
            with_f32_values(b, |b| {
                let chunk = dim * ROWS_PER_TASK;
                out.spare_capacity_mut()[..len]
                    .par_chunks_mut(chunk)
                    .zip(a.par_chunks(chunk).zip(b.par_chunks(chunk)))
                    .for_each(|(out, (a, b))| {
                        for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
                            o.write(x + y);
                        }
                        // SAFETY: every value of `out` was just written.
                        let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
                        out.chunks_exact_mut(dim)
                            .for_each(|row| self.normalise(row));
                    })
            })
        })??;
        // SAFETY: the chunks cover all `len` values.
        unsafe { out.set_len(len) };
        Tensor::from_vec(out, a.shape(), a.device())
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight_values.len();
        match rows_in_parallel(x, dim, |row| self.normalise(row))? {
            Some(y) => Ok(y),
            None if x.dtype() == DType::F32 && x.device().is_cpu() => {
                let y = LayerNormOp {
                    eps: self.eps as f32,
                }
                .apply(x, &self.weight, &self.bias)?;
                self.numerics.round(y)
            }
            None => {
                let eps = self.eps as f32;
                let y = candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, eps)?;
                self.numerics.round(y)
            }
        }
    }
}

/// RMSNorm: x / sqrt(mean(x^2) + eps), rounded to the model's precision, times (offset + weight)
/// (Gemma's weights are stored minus one: offset 1; Llama-style models: offset 0).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    weight_values: Vec<f32>,
    eps: f64,
    numerics: Numerics,
}

impl RmsNorm {
    pub fn load(
        vb: VarBuilder,
        dim: usize,
        eps: f64,
        weight_offset: f64,
        numerics: Numerics,
    ) -> Result<Self> {
        let weight = numerics.weight(&vb, &[dim], "weight")?;
        let weight = numerics.round((weight + weight_offset)?)?;
        Ok(Self {
            weight_values: weight.to_vec1()?,
            weight,
            eps,
            numerics,
        })
    }

    fn normalise(&self, row: &mut [f32]) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let root = (mean_square + self.eps as f32).sqrt();
        row.iter_mut().for_each(|v| *v /= root);
        self.numerics.round_slice(row);
        for (v, w) in row.iter_mut().zip(&self.weight_values) {
            *v *= w;
        }
        self.numerics.round_slice(row);
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight_values.len();
        match rows_in_parallel(x, dim, |row| self.normalise(row))? {
            Some(y) => Ok(y),
            None => {
                let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = self
                    .numerics
                    .round(x.broadcast_div(&(variance + self.eps)?.sqrt()?)?)?;
                self.numerics.round(normed.broadcast_mul(&self.weight)?)
            }
        }
    }
}
