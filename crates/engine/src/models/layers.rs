//! Building blocks shared by the model families: norms, activations and per-sequence attention.
//!
//! Inference uses candle's fused kernels (softmax, layer norm, rope), which record no gradient; a
//! model built for training (`Numerics::differentiable`) takes differentiable forms of the same ops
//! (see `attention` for its attention path).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::input::ModelInput;
pub use crate::ops::linear::Linear;
pub use crate::ops::Numerics;

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
            Activation::Gelu => match crate::ops::map_f32(x, crate::ops::simd::gelu_erf)? {
                Some(y) => Ok(y),
                None => x.gelu_erf(),
            },
            Activation::GeluNew => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
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
