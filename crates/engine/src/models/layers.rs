//! Building blocks shared by the model families: dense layers, norms, activations, attention and the
//! numerics (f32, or bf16/f16 emulated with f32 arithmetic) they compute in.
//!
//! Inference uses candle's fused kernels (softmax, layer norm, rope) and runs attention one sequence at
//! a time. Those kernels record no gradient, so a model built for training (`Numerics::differentiable`)
//! takes the composite forms of the same ops and runs attention on a padded grid instead: per-sequence
//! slices would each back-propagate a full-size zero tensor.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};

use crate::input::ModelInput;

/// How a model rounds: `None` computes in plain f32; `Some(dtype)` keeps weights and activations on
/// that dtype's grid (f32 arithmetic with rounding after each layer), which is what bf16/f16 inference
/// computes on hardware without such matrix units in candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Numerics {
    pub round_to: Option<DType>,
    /// Build the graph from ops that record gradients (training).
    pub differentiable: bool,
}

impl Numerics {
    pub fn round(&self, x: Tensor) -> Result<Tensor> {
        match self.round_to {
            Some(dtype) => x.to_dtype(dtype)?.to_dtype(DType::F32),
            None => Ok(x),
        }
    }

    /// Softmax over the last dimension.
    pub fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        if self.differentiable {
            candle_nn::ops::softmax(x, D::Minus1)
        } else {
            candle_nn::ops::softmax_last_dim(x)
        }
    }

    /// A weight from the checkpoint, as f32 on this numerics' grid.
    pub fn weight(&self, vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
        let w = vb.get(shape, name)?.to_dtype(DType::F32)?;
        self.round(w)
    }
}

/// A linear layer `y = x W^T + b` on rows of `x` (tokens x features), plus a LoRA update
/// `x A^T B^T` while one is being trained.
#[derive(Debug, Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: Option<LowRank>,
    numerics: Numerics,
}

/// A LoRA pair: `a` is (r, in); `b` is (out, r) and already carries the alpha / r scaling (see
/// `trainable::LoraBackend`), so the update is `x A^T B^T`.
#[derive(Debug, Clone)]
struct LowRank {
    a: Tensor,
    b: Tensor,
}

impl Dense {
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        numerics: Numerics,
    ) -> Result<Self> {
        let weight = numerics.weight(&vb, &[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(numerics.weight(&vb, &[out_dim], "bias")?)
        } else {
            None
        };
        let lora = if vb.contains_tensor("lora_A.weight") {
            Some(LowRank {
                a: vb.get_unchecked("lora_A.weight")?,
                b: vb.get_unchecked("lora_B.weight")?,
            })
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            lora,
            numerics,
        })
    }

    /// Several layers reading the same input, stacked into one matrix (one matmul instead of many).
    pub fn stack(layers: &[Dense]) -> Result<Self> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let bias = if layers.iter().all(|l| l.bias.is_some()) {
            let biases: Vec<&Tensor> = layers.iter().filter_map(|l| l.bias.as_ref()).collect();
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Ok(Self {
            weight: Tensor::cat(&weights, 0)?,
            bias,
            lora: Self::stack_lora(layers)?,
            numerics: layers.first().map(|l| l.numerics).unwrap_or_default(),
        })
    }

    /// The stacked layers' LoRA pairs as one: the A matrices stacked, and a block-diagonal B in which
    /// each layer's rows see only its own A rows (a layer without LoRA gets a zero block).
    fn stack_lora(layers: &[Dense]) -> Result<Option<LowRank>> {
        if layers.iter().all(|l| l.lora.is_none()) {
            return Ok(None);
        }
        let rank = |l: &Dense| l.lora.as_ref().map_or(Ok(0), |p| p.a.dim(0));
        let total: usize = layers.iter().map(rank).sum::<Result<usize>>()?;
        let a: Vec<&Tensor> = layers.iter().filter_map(|l| l.lora.as_ref().map(|p| &p.a)).collect();
        let mut rows = Vec::with_capacity(layers.len());
        let mut offset = 0;
        for layer in layers {
            let out = layer.weight.dim(0)?;
            let device = layer.weight.device();
            let r = rank(layer)?;
            let mut blocks = Vec::new();
            if offset > 0 {
                blocks.push(Tensor::zeros((out, offset), DType::F32, device)?);
            }
            if let Some(pair) = &layer.lora {
                blocks.push(pair.b.clone());
            }
            if total - offset - r > 0 {
                blocks.push(Tensor::zeros((out, total - offset - r), DType::F32, device)?);
            }
            rows.push(Tensor::cat(&blocks, 1)?);
            offset += r;
        }
        Ok(Some(LowRank {
            a: Tensor::cat(&a, 0)?,
            b: Tensor::cat(&rows, 0)?,
        }))
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.matmul(&self.weight.t()?)?;
        if let Some(pair) = &self.lora {
            y = (y + x.matmul(&pair.a.t()?)?.matmul(&pair.b.t()?)?)?;
        }
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        self.numerics.round(y)
    }
}

/// LayerNorm with weight and bias, computed in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    numerics: Numerics,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64, numerics: Numerics) -> Result<Self> {
        Ok(Self {
            weight: numerics.weight(&vb, &[dim], "weight")?,
            bias: numerics.weight(&vb, &[dim], "bias")?,
            eps,
            numerics,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let eps = self.eps as f32;
        let y = if self.numerics.differentiable || !x.is_contiguous() {
            candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, eps)?
        } else {
            candle_nn::ops::layer_norm(x, &self.weight, &self.bias, eps)?
        };
        self.numerics.round(y)
    }
}

/// config.json `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU, what transformers calls "gelu".
    Gelu,
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    Relu,
    #[serde(alias = "swish")]
    Silu,
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluNew => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// Softmax attention of one sequence: `q`, `k`, `v` are (heads, len, head_dim), contiguous.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(v)
}

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
    let mut probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    if let Some(dropout) = dropout {
        probs = dropout.attention(&probs)?;
    }
    probs.matmul(v)
}

/// (len, len): 0 on and below the diagonal, -inf above.
pub fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (len, len), device)
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
                .map(|_| if rng.random::<f64>() < keep { scale } else { 0.0 })
                .collect()
        };
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// Rows `[start, start + len)` of a (tokens, heads * head_dim) matrix as (heads, len, head_dim).
pub fn split_heads(x: &Tensor, start: usize, len: usize, heads: usize) -> Result<Tensor> {
    let head_dim = x.dim(D::Minus1)? / heads;
    x.narrow(0, start, len)?
        .reshape((len, heads, head_dim))?
        .transpose(0, 1)?
        .contiguous()
}

/// Refuses an input the model cannot read: empty, longer than its positions, or holding token ids
/// beyond its vocabulary (a tokenizer that does not belong to the weights).
pub fn check_input(input: &ModelInput, max_tokens: usize, vocab_size: usize) -> crate::Result<()> {
    use crate::Error;
    if input.is_empty() {
        return Err(Error::Input("an input has no tokens".into()));
    }
    if input.len() > max_tokens {
        return Err(Error::Input(format!(
            "an input of {} tokens exceeds the model's {max_tokens} positions; lower max_length",
            input.len()
        )));
    }
    if let Some(&bad) = input.ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(Error::Input(format!(
            "token id {bad} is outside the model's vocabulary of {vocab_size}: the tokenizer does \
             not belong to these weights"
        )));
    }
    Ok(())
}
