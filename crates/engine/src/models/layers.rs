//! Building blocks shared by the model families: dense layers, norms, activations, attention and the
//! numerics (f32, or bf16/f16 emulated with f32 arithmetic) they compute in.
//!
//! Inference uses candle's fused kernels (softmax, layer norm, rope), which record no gradient; a
//! model built for training (`Numerics::differentiable`) takes differentiable forms of the same ops
//! (see `attention` for its attention path).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

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
        let a: Vec<&Tensor> = layers
            .iter()
            .filter_map(|l| l.lora.as_ref().map(|p| &p.a))
            .collect();
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
