//! The ops layer: the only code that knows kernels, precisions and devices. Model files describe
//! architecture with [`Linear`] and the other ops here; what runs underneath (our AVX-512 kernels on
//! packed weights, candle's matmul, differentiable forms for training) is decided in this module.

pub mod activation;
pub mod attention;
pub mod cpu;
pub mod embedding;
pub mod gemm;
pub mod linear;
pub mod norm;
pub mod probe;
pub mod rope;
pub mod saved_int8;
pub mod simd;
pub mod trainable;

use candle_core::{DType, Result, Storage, Tensor};
use candle_nn::VarBuilder;

use cpu::MatmulKernel;

/// How a model computes: `round_to: None` in plain f32; `Some(bf16 | f16)` keeps weights and every
/// layer's output on that dtype's grid (products of grid values are exact in f32 and summed in f32,
/// as bf16 matrix units do), with norms and softmax in f32 as PyTorch does for bf16 models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    pub round_to: Option<DType>,
    /// Build the graph from ops that record gradients (training).
    pub differentiable: bool,
    /// Which kernel multiplies by weight matrices (training and the fallback: candle).
    pub kernel: MatmulKernel,
    /// Inference with the transformer layers' weight matrices quantized to int8 (one scale per
    /// output channel) and their inputs per row on the fly (`gemm::int8`), embedding tables as int8
    /// rows; the rest (norms, softmax, attention, score heads) in f32.
    pub int8: bool,
}

impl Numerics {
    /// The numerics of a score head: never int8. A head is one or two small matrices whose output
    /// is the score itself, so quantizing it saves nothing and costs accuracy where it shows most.
    pub fn head(self) -> Self {
        Self {
            int8: false,
            ..self
        }
    }

    /// Whether `Linear` holds its weights as int8.
    pub fn quantizes(&self) -> bool {
        self.int8 && !self.differentiable
    }

    pub fn round(&self, x: Tensor) -> Result<Tensor> {
        let Some(dtype) = self.round_to else {
            return Ok(x);
        };
        let rounded = match dtype {
            DType::BF16 => map_f32(&x, simd::round_to_bf16)?,
            DType::F16 => map_f32(&x, simd::round_to_f16)?,
            _ => None,
        };
        match rounded {
            Some(y) => Ok(y),
            None => x.to_dtype(dtype)?.to_dtype(DType::F32),
        }
    }

    /// `round` on a slice of plain values, in place.
    pub fn round_slice(&self, x: &mut [f32]) {
        match self.round_to {
            Some(DType::BF16) => simd::round_to_bf16(x),
            Some(DType::F16) => simd::round_to_f16(x),
            _ => {}
        }
    }

    /// A weight from the checkpoint in the compute format: bf16/f16 when inference computes on
    /// that grid (converted once from the stored dtype, so a bf16 checkpoint is never widened),
    /// else f32. Its values are those of `weight`.
    pub fn compute_weight(&self, vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
        let dtype = match self.round_to {
            Some(dtype) if !self.differentiable => dtype,
            _ => return self.weight(vb, shape, name),
        };
        vb.get_with_hints_dtype(shape, name, Default::default(), dtype)
    }

    /// A weight from the checkpoint, as f32 on this numerics' grid.
    pub fn weight(&self, vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
        let w = vb.get(shape, name)?.to_dtype(DType::F32)?;
        self.round(w)
    }
}

impl Default for Numerics {
    /// Plain f32 through candle: what every CPU can run, and what training needs.
    fn default() -> Self {
        Self {
            round_to: None,
            differentiable: false,
            kernel: MatmulKernel::Candle,
            int8: false,
        }
    }
}

/// Bytes under which an allocation comes from the heap and is reused: the CLI pins glibc's mmap
/// threshold at 32 MB (see `batch::BatchLimits`); a buffer above it is mapped afresh, page-faulted and
/// zeroed by the kernel every time, which took a quarter of Gemma's time with its 16384-wide MLP.
const REUSED_ALLOCATION_BYTES: usize = 24 << 20;

/// `f` on blocks of rows of `x` (2-D) small enough that its widest intermediate (`bytes_per_row` a
/// row) stays under REUSED_ALLOCATION_BYTES, the results stacked: the values of `f(x)` for a
/// row-wise `f` (an MLP).
pub fn in_row_blocks(
    x: &Tensor,
    bytes_per_row: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let rows = x.dim(0)?;
    // Multiples of 32 rows: whole blocks of the AMX kernels.
    let block = (REUSED_ALLOCATION_BYTES / bytes_per_row.max(1)).max(32) / 32 * 32;
    if rows <= block {
        return f(x);
    }
    let parts = (0..rows)
        .step_by(block)
        .map(|start| f(&x.narrow(0, start, block.min(rows - start))?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// `f` applied to a copy of an f32 CPU tensor's values, as a tensor of the same shape; `None` where
/// candle must compute instead (another dtype or device, or a tensor whose gradient is tracked).
pub fn map_f32(x: &Tensor, f: impl FnOnce(&mut [f32])) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 || !x.device().is_cpu() || x.track_op() {
        return Ok(None);
    }
    let mut values = x.flatten_all()?.to_vec1::<f32>()?;
    f(&mut values);
    Ok(Some(Tensor::from_vec(values, x.shape(), x.device())?))
}

/// Runs `f` on the values of an f32 CPU tensor, in memory order, without copying them.
pub fn with_f32_values<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!(
            "our kernels run on the CPU; this tensor is on {:?}",
            x.device()
        );
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("a contiguous tensor without contiguous offsets");
    };
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}
