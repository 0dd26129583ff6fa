//! Normalisations, computed in f32 whatever the model's precision (as PyTorch does for bf16 models)
//! and rounded to it after. At inference each row is normalised by our loop, rows spread over rayon's
//! threads; a tensor that records gradients (training) takes candle's differentiable ops.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::{map_f32, Numerics};

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

    fn normalise(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + self.eps as f32).sqrt();
        for ((v, w), b) in row
            .iter_mut()
            .zip(&self.weight_values)
            .zip(&self.bias_values)
        {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight_values.len();
        let y = match rows_in_parallel(x, dim, |row| self.normalise(row))? {
            Some(y) => y,
            None => {
                let eps = self.eps as f32;
                candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, eps)?
            }
        };
        self.numerics.round(y)
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
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight_values.len();
        let y = match rows_in_parallel(x, dim, |row| self.normalise(row))? {
            Some(y) => y,
            None => {
                let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = self
                    .numerics
                    .round(x.broadcast_div(&(variance + self.eps)?.sqrt()?)?)?;
                normed.broadcast_mul(&self.weight)?
            }
        };
        self.numerics.round(y)
    }
}
