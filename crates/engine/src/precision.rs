//! `--dtype`: which precision the model computes in.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;

use crate::error::Error;
use crate::models::layers::Numerics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The dtype the weights are stored in, computed in f32 where this CPU build has no fast path.
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "f16" | "float16" | "fp16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(Error::InvalidOption(format!(
                "unknown dtype `{other}` (expected auto, f32, f16 or bf16)"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

/// The precision chosen for one model, and why.
#[derive(Debug, Clone)]
pub struct ResolvedPrecision {
    pub numerics: Numerics,
    /// "f32", "bf16" or "f16": what the scores are computed as.
    pub compute: &'static str,
    pub explanation: String,
}

impl Precision {
    pub fn resolve(self, stored: DType) -> ResolvedPrecision {
        let stored_name = stored.as_str();
        match self {
            Self::Auto | Self::F32 => ResolvedPrecision {
                numerics: Numerics::default(),
                compute: "f32",
                explanation: if self == Self::Auto && stored != DType::F32 {
                    format!(
                        "weights stored as {stored_name}, computed in f32 (no fast {stored_name} \
                         matmul on CPU; FlagEmbedding does the same)"
                    )
                } else {
                    format!("weights stored as {stored_name}, computed in f32")
                },
            },
            Self::F16 | Self::Bf16 => {
                let (dtype, name) = if self == Self::Bf16 {
                    (DType::BF16, "bf16")
                } else {
                    (DType::F16, "f16")
                };
                ResolvedPrecision {
                    numerics: Numerics {
                        round_to: Some(dtype),
                        differentiable: false,
                    },
                    compute: name,
                    explanation: format!(
                        "weights stored as {stored_name}, computed as {name}: weights and \
                         activations rounded to {name} after every layer, arithmetic in f32"
                    ),
                }
            }
        }
    }
}
