//! Attention for training: packed sequences laid out on a padded grid (per-sequence slices, as
//! inference runs them, would each back-propagate a full-size zero tensor), the masked softmax as one
//! operation that keeps only its output for the backward pass, and seeded dropout.

use std::sync::{Arc, Mutex};

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};

use crate::ops::trainable::{AttentionSoftmax, KeyMask, MaskProduct};

/// Packed sequences laid out on a right-padded (sequences, max_len) grid by row gathers, whose
/// backward pass is one scatter-add.
pub struct PaddedLayout {
    sequences: usize,
    max_len: usize,
    /// For each grid cell, the packed row it shows (padding shows row 0 and is masked).
    to_grid: Tensor,
    /// For each packed row, its grid cell.
    to_packed: Tensor,
    /// Per sequence, per key: 0 for real keys, -inf for padding.
    key_mask: Arc<Vec<f32>>,
}

impl PaddedLayout {
    pub fn new(seq_lens: &[usize], device: &Device) -> Result<Self> {
        let max_len = seq_lens.iter().copied().max().unwrap_or(0);
        let mut to_grid = Vec::with_capacity(seq_lens.len() * max_len);
        let mut to_packed = Vec::new();
        let mut key_mask = Vec::with_capacity(seq_lens.len() * max_len);
        let mut start = 0u32;
        for (s, &len) in seq_lens.iter().enumerate() {
            for t in 0..max_len {
                let real = t < len;
                to_grid.push(if real { start + t as u32 } else { 0 });
                key_mask.push(if real { 0f32 } else { f32::NEG_INFINITY });
                if real {
                    to_packed.push((s * max_len + t) as u32);
                }
            }
            start += len as u32;
        }
        let n = seq_lens.len();
        Ok(Self {
            sequences: n,
            max_len,
            to_grid: Tensor::from_vec(to_grid, n * max_len, device)?,
            to_packed: Tensor::from_vec(to_packed, start as usize, device)?,
            key_mask: Arc::new(key_mask),
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// (tokens, heads * head_dim) -> (sequences, heads, max_len, head_dim).
    pub fn to_heads(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let head_dim = x.dim(1)? / heads;
        x.contiguous()?
            .index_select(&self.to_grid, 0)?
            .reshape((self.sequences, self.max_len, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// (sequences, heads, max_len, head_dim) -> (tokens, heads * head_dim).
    pub fn to_rows(&self, x: &Tensor) -> Result<Tensor> {
        let (n, heads, len, head_dim) = x.dims4()?;
        x.transpose(1, 2)?
            .reshape((n * len, heads * head_dim))?
            .index_select(&self.to_packed, 0)
    }
}

/// Attention on a padded grid, built from differentiable ops: `q`, `k`, `v` are (sequences, heads,
/// max_len, head_dim) with as many kv heads as query heads; causal attention masks later positions,
/// bidirectional attention masks padding keys. Returns (sequences, heads, max_len, head_dim).
pub fn padded_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    layout: &PaddedLayout,
    causal: bool,
    dropout: Option<&Dropout>,
) -> Result<Tensor> {
    let softmax = AttentionSoftmax {
        scale: 1.0 / (q.dim(3)? as f32).sqrt(),
        // Right padding: under a causal mask a real query never sees a padding key.
        mask: match causal {
            true => KeyMask::Causal,
            false => KeyMask::Padding(layout.key_mask.clone()),
        },
    };
    let mut probs = softmax.apply(&q.matmul(&k.t()?)?)?;
    if let Some(dropout) = dropout {
        probs = dropout.attention(&probs)?;
    }
    probs.matmul(v)
}

/// Training-time dropout (inverted: kept values scaled by 1 / (1 - p)) drawing its masks from one
/// seeded generator, so a run repeats exactly. Clones share the generator.
#[derive(Debug, Clone)]
pub struct Dropout {
    hidden: f64,
    attention: f64,
    rng: Arc<Mutex<rand::rngs::SmallRng>>,
}

impl Dropout {
    pub fn new(hidden: f64, attention: f64, seed: u64) -> Self {
        Self {
            hidden,
            attention,
            rng: Arc::new(Mutex::new(rand::rngs::SmallRng::seed_from_u64(seed))),
        }
    }

    pub fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, self.hidden)
    }

    pub fn attention(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, self.attention)
    }

    pub fn apply(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - p;
        let scale = (1.0 / keep) as f32;
        // A value stays when a uniform 32-bit draw falls below keep * 2^32.
        let threshold = (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (0..x.elem_count())
                .map(|_| match rng.random::<u32>() < threshold {
                    true => scale,
                    false => 0.0,
                })
                .collect()
        };
        x.contiguous()?.apply_op1(MaskProduct { mask })
    }
}
