//! Building blocks shared by the model families: dense layers, norms, activations and the numerics
//! (f32, or bf16/f16 emulated with f32 arithmetic) they compute in.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::input::ModelInput;

/// How a model rounds: `None` computes in plain f32; `Some(dtype)` keeps weights and activations on
/// that dtype's grid (f32 arithmetic with rounding after each layer), which is what bf16/f16 inference
/// computes on hardware without such matrix units in candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Numerics {
    pub round_to: Option<DType>,
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

/// A linear layer `y = x W^T + b` on rows of `x` (tokens x features).
#[derive(Debug, Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
    numerics: Numerics,
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
        Ok(Self {
            weight,
            bias,
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
            numerics: layers.first().map(|l| l.numerics).unwrap_or_default(),
        })
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
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
    inner: candle_nn::LayerNorm,
    numerics: Numerics,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64, numerics: Numerics) -> Result<Self> {
        let weight = numerics.weight(&vb, &[dim], "weight")?;
        let bias = numerics.weight(&vb, &[dim], "bias")?;
        Ok(Self {
            inner: candle_nn::LayerNorm::new(weight, bias, eps),
            numerics,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.numerics.round(self.inner.forward(x)?)
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
