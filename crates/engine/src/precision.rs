//! `--dtype`: which precision the model computes in.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;

use crate::error::Error;
use crate::ops::cpu::MatmulKernel;
use crate::ops::gemm::int8;
use crate::ops::Numerics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The dtype the weights are stored in, computed in f32 where this CPU build has no fast path.
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
    /// The transformer layers' matrices in int8 (per output channel), activations quantized per
    /// row, embedding rows int8; the rest in f32. See `ops::gemm::int8`.
    Int8,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "f16" | "float16" | "fp16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "int8" | "i8" | "qint8" => Ok(Self::Int8),
            other => Err(Error::InvalidOption(format!(
                "unknown dtype `{other}` (expected auto, f32, f16, bf16 or int8)"
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
            Self::Int8 => "int8",
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

impl ResolvedPrecision {
    /// Bytes a weight takes in the compute format (f32 4, bf16 and f16 2, int8 1).
    pub fn bytes_per_weight(&self) -> usize {
        match self.numerics.int8 {
            true => 1,
            false => self.numerics.round_to.map_or(4, |d| d.size_in_bytes()),
        }
    }

    /// The matrix kernel, for `--verbose`, `/info` and `bench`.
    pub fn kernel(&self) -> MatmulKernel {
        self.numerics.kernel
    }
}

impl Precision {
    /// What to compute in for weights stored as `stored` (`saved_int8`: a folder written by
    /// `bge-rerank quantize`), on `kernel`, or else the one `MatmulKernel::select` picks for this
    /// CPU (or `BGE_RERANK_KERNEL` forces).
    pub fn resolve(
        self,
        stored: DType,
        saved_int8: bool,
        kernel: Option<MatmulKernel>,
    ) -> Result<ResolvedPrecision, Error> {
        let kernel = match kernel {
            Some(kernel) => kernel.require_supported()?,
            None => MatmulKernel::select()?,
        };
        let stored_name = match saved_int8 {
            true => "int8 by bge-rerank quantize",
            false => stored.as_str(),
        };
        let (round_to, compute) = match self {
            Self::Auto | Self::F32 | Self::Int8 => (None, "f32"),
            Self::Bf16 => (Some(DType::BF16), "bf16"),
            Self::F16 => (Some(DType::F16), "f16"),
        };
        let int8 = self == Self::Int8;
        let compute = if int8 { "int8" } else { compute };
        let how = match (round_to, kernel) {
            _ if int8 => format!(
                "the transformer layers' matrices quantized to int8 at load (one scale per output \
                 channel), their inputs to u8 per row, int32 sums on {}; embedding tables int8 (a \
                 scale per 32 values); score heads, norms, softmax and attention in f32",
                int8::Path::of(kernel).describe()
            ),
            (Some(DType::BF16), MatmulKernel::Amx) => "bf16 weights packed for AMX tiles \
                 (TDPBF16PS: activations rounded to bf16 at each matrix input, f32 sums); \
                 activations rounded to bf16 after every layer, norms and softmax in f32"
                .to_string(),
            (None, MatmulKernel::Amx) => {
                "f32 weights packed for the AVX-512 kernel (AMX has no f32 tiles)".to_string()
            }
            (Some(_), MatmulKernel::Amx) => format!(
                "{compute} weights packed for the AVX-512 kernel (AMX has no {compute} tiles on \
                 this CPU; widened to f32 a block at a time, f32 accumulation); activations \
                 rounded to {compute} after every layer, norms and softmax in f32"
            ),
            (None, MatmulKernel::Avx512) => {
                "f32 weights packed for the AVX-512 kernel".to_string()
            }
            (Some(_), MatmulKernel::Avx512) => format!(
                "{compute} weights packed for the AVX-512 kernel (widened to f32 a block at a time, \
                 products exact, f32 accumulation); activations rounded to {compute} after every \
                 layer, norms and softmax in f32"
            ),
            (None, MatmulKernel::Candle) => "f32 weights, candle's matmul".to_string(),
            (Some(_), MatmulKernel::Candle) => format!(
                "weights and activations rounded to {compute} after every layer, held and \
                 multiplied in f32 by candle's matmul"
            ),
        };
        let why = if self == Self::Auto && stored != DType::F32 && !saved_int8 {
            " (auto computes in f32, as FlagEmbedding does by default)"
        } else {
            ""
        };
        Ok(ResolvedPrecision {
            numerics: Numerics {
                round_to,
                differentiable: false,
                kernel,
                int8,
            },
            compute,
            explanation: format!(
                "weights stored as {stored_name}, computed as {compute}{why}: {how}; kernel {kernel}"
            ),
        })
    }
}
