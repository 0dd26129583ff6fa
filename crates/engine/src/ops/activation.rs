//! Activation functions, as config.json's `hidden_act` names them.

use candle_core::{Module, Result, Tensor};

use super::{map_f32, simd};

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

impl Activation {
    /// The activation on plain values in place, where we have one that computes what the tensor
    /// form does (`None`: use `forward`).
    pub fn in_place(&self) -> Option<fn(&mut [f32])> {
        match self {
            Activation::Gelu => Some(simd::gelu_erf),
            _ => None,
        }
    }
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => match map_f32(x, simd::gelu_erf)? {
                Some(y) => Ok(y),
                None => x.gelu_erf(),
            },
            Activation::GeluNew => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}
