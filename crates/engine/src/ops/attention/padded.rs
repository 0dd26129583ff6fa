//! Attention for training: packed sequences laid out on a padded grid (per-sequence slices, as
//! inference runs them, would each back-propagate a full-size zero tensor), a softmax that keeps only
//! its output for the backward pass, and seeded dropout.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, D};
use rand::{Rng, SeedableRng};

use super::causal_mask;

/// Packed sequences laid out on a right-padded (sequences, max_len) grid by row gathers, whose
/// backward pass is one scatter-add.
pub struct PaddedLayout {
    sequences: usize,
    max_len: usize,
    /// For each grid cell, the packed row it shows (padding shows row 0 and is masked).
    to_grid: Tensor,
    /// For each packed row, its grid cell.
    to_packed: Tensor,
    /// (sequences, 1, 1, max_len): 0 for real keys, -inf for padding.
    key_mask: Tensor,
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
            key_mask: Tensor::from_vec(key_mask, (n, 1, 1, max_len), device)?,
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
    let scale = 1.0 / (q.dim(3)? as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?;
    // Right padding: under a causal mask a real query never sees a padding key.
    let scores = if causal {
        scores.broadcast_add(&causal_mask(layout.max_len, q.device())?)?
    } else {
        scores.broadcast_add(&layout.key_mask)?
    };
    let mut probs = scores.apply_op1(SoftmaxLastDim)?;
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
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (0..x.elem_count())
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// Softmax over the last dimension with a backward pass. candle-nn's fused softmax records no
/// gradient and its composite form keeps three full-size intermediates per attention layer alive
/// for the backward pass (the memory limit of encoder training on CPU); this keeps only the output.
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim-trainable"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("trainable softmax computes in f32")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("trainable softmax needs a contiguous input")
        };
        let dim = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = data[start..end].to_vec();
        for row in out.chunks_mut(dim) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            for x in row.iter_mut() {
                *x /= sum;
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// d softmax: y * (g - sum(g * y)).
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dot = (grad_res * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((grad_res.broadcast_sub(&dot)? * res)?))
    }
}
