//! What the model families share beyond the ops layer: the config's activation and the input check.

use candle_core::{Module, Result, Tensor};

use crate::input::ModelInput;
pub use crate::ops::linear::Linear;
pub use crate::ops::norm::LayerNorm;
pub use crate::ops::Numerics;

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
