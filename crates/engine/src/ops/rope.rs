//! Rotary position embeddings (the "rotate half" form of Llama, Gemma and MiniCPM) applied to the q
//! and k heads of a packed q/k/v matrix, each token at its position within its own sequence.

use candle_core::{DType, Device, Result, Tensor};

use super::attention::Heads;
use super::Numerics;

/// cos and sin of position x frequency, (positions x head_dim / 2) each, built once per batch for
/// its longest sequence.
pub struct RopeTables {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTables {
    /// As transformers computes them: inv_freq_i = 1 / theta^(2i / head_dim) in f32, angles in f32,
    /// then cos and sin (rounded to the model's precision where it computes in bf16/f16).
    pub fn new(len: usize, head_dim: usize, theta: f64, numerics: Numerics) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
            .collect();
        let angles: Vec<f32> = (0..len)
            .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let table = |f: fn(f32) -> f32| -> Result<Vec<f32>> {
            let values: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
            let n = values.len();
            numerics
                .round(Tensor::from_vec(values, n, &Device::Cpu)?)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()
        };
        Ok(Self {
            half,
            cos: table(f32::cos)?,
            sin: table(f32::sin)?,
        })
    }

    /// The tables as (len, head_dim / 2) tensors, for candle's rope (training).
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let len = self.cos.len() / self.half.max(1);
        Ok((
            Tensor::from_slice(&self.cos, (len, self.half), device)?,
            Tensor::from_slice(&self.sin, (len, self.half), device)?,
        ))
    }

    /// `qkv` with every q and k head of token t rotated by its position within its sequence
    /// (`seq_lens` laid end to end); v untouched. Rounded to the model's precision.
    pub fn apply_packed(
        &self,
        qkv: &Tensor,
        seq_lens: &[usize],
        heads: Heads,
        numerics: Numerics,
    ) -> Result<Tensor> {
        let (tokens, width) = qkv.dims2()?;
        let d = heads.head_dim;
        let rotated_heads = heads.heads + heads.kv_heads;
        if width != heads.width() || d != 2 * self.half {
            candle_core::bail!("rope: a {tokens} x {width} matrix does not match {heads:?}");
        }
        let mut values = qkv.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut rows = values.chunks_exact_mut(width.max(1));
        for &len in seq_lens {
            if len * self.half > self.cos.len() {
                candle_core::bail!("rope: a sequence of {len} is longer than the tables");
            }
            for position in 0..len {
                let Some(row) = rows.next() else {
                    candle_core::bail!("rope: sequences longer than the matrix");
                };
                let cos = &self.cos[position * self.half..(position + 1) * self.half];
                let sin = &self.sin[position * self.half..(position + 1) * self.half];
                for head in row[..rotated_heads * d].chunks_exact_mut(d) {
                    let (x1, x2) = head.split_at_mut(self.half);
                    for i in 0..self.half {
                        let (a, b) = (x1[i], x2[i]);
                        x1[i] = a * cos[i] - b * sin[i];
                        x2[i] = b * cos[i] + a * sin[i];
                    }
                }
            }
        }
        numerics.round(Tensor::from_vec(values, (tokens, width), qkv.device())?)
    }
}
