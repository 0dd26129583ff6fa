//! int8 products: `y = x W^T + b` with `W` quantized once, at load, to int8 (symmetric, one scale
//! per output channel) and `x` quantized per row on the fly to u8 with a zero point (asymmetric:
//! activations after GELU or a residual are far from symmetric, and a row's own range keeps the
//! error of one outlier token out of the others).
//!
//! With `x ≈ sa_i (qa_ip - za_i)` and `W ≈ sw_j qw_jp`:
//! `y_ij = sa_i sw_j (sum_p qa_ip qw_jp - za_i sum_p qw_jp) + b_j`.
//! The sum of products is exact in i32 (|u8 x s8| <= 32,385, so 66,000 inputs fit), the column sums
//! are kept from packing, and the dequantization and bias are applied as the tile is stored.
//!
//! Layout for `VPDPBUSD` and `TDPBUSD` (4 adjacent u8 x s8 products summed into each i32 lane):
//! panels of NR output columns, k cut into groups of 4; group g of a panel holds NR x 4 bytes,
//! column-major within the group, so one 64-byte load (a vector, or a row of an AMX tile) gives 16
//! columns x 4 inputs. k is padded to a whole AMX tile row (64) with zero weights (padding activations
//! then contribute nothing). The VNNI, AMX and portable kernels read the same layout and give the
//! same integers, so every kernel computes identical scores.

use rayon::prelude::*;

use super::{for_each_task, grouped_at, pack_grouped, plan_tasks, Aligned, OutPtr, Task, MR, NR};
use crate::ops::cpu::{CpuFeatures, MatmulKernel};

/// Inputs per group of `VPDPBUSD`.
pub const GROUP: usize = 4;
/// k is padded to a multiple of this: the inputs of one row of an AMX int8 tile.
const DEPTH_ALIGN: usize = 64;
/// The activations' rows are padded (with zeros) to a multiple of this: the rows of the AMX kernel's
/// two tiles, which it loads whole.
const ROW_ALIGN: usize = 32;

/// Which code computes the integer products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Plain loops: any CPU.
    Portable,
    /// `VPDPBUSD` on zmm registers (AVX-512 VNNI).
    Vnni,
    /// `TDPBUSD` on AMX tiles.
    Amx,
}

impl Path {
    /// The path of a matmul kernel on this CPU: the AMX kernel's tiles, the AVX-512 kernel's VNNI
    /// where the CPU has it, else the portable loop.
    pub fn of(kernel: MatmulKernel) -> Self {
        match kernel {
            MatmulKernel::Amx => Self::Amx,
            MatmulKernel::Avx512 if CpuFeatures::detect().avx512_vnni => Self::Vnni,
            _ => Self::Portable,
        }
    }

    /// How people call it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Portable => "the portable loop (no AVX-512 VNNI)",
            Self::Vnni => "AVX-512 VNNI (VPDPBUSD)",
            Self::Amx => "AMX tiles (TDPBUSD)",
        }
    }
}

/// `values` quantized symmetrically into `out`: each to the nearest multiple of max |value| / 127
/// (returned: the scale; 1 for all zeros).
pub fn quantize_symmetric(values: &[f32], out: &mut [i8]) -> f32 {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    for (q, &v) in out.iter_mut().zip(values) {
        *q = round_small(v * inv).clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// `x.round_ties_even()` for |x| < 2^22, in two additions: adding 1.5 x 2^23 leaves no fraction
/// bits, so the sum rounds to an integer (ties to even, the default rounding mode), and subtracting
/// it back is exact. Without SSE4.1 in the baseline target, `round_ties_even` is a libm call per
/// value, which made quantizing an LLM at load take seconds.
#[inline]
pub fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// A weight matrix quantized to int8 in panel layout (its n and k are the `PackedWeight`'s).
#[derive(Debug, Clone)]
pub struct Int8Panels {
    /// k padded to a multiple of DEPTH_ALIGN.
    pub(super) k_padded: usize,
    pub(super) data: Aligned<i8>,
    /// Per output column (padded to whole panels with zeros): the dequantization scale.
    pub(super) scales: Vec<f32>,
    /// Per output column: the sum of its quantized weights, for the activation zero point.
    pub(super) col_sums: Vec<i32>,
}

impl Int8Panels {
    /// Quantizes a row-major (n x k) f32 matrix: each row (output channel) by max |w| / 127.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        let mut rows = vec![0i8; n * k];
        let mut scales: Vec<f32> = w
            .chunks_exact(k.max(1))
            .zip(rows.chunks_exact_mut(k.max(1)))
            .take(n)
            .map(|(values, out)| quantize_symmetric(values, out))
            .collect();
        scales.resize(n, 1.0); // k = 0: no values, n rows all the same
        Self::from_rows(&rows, scales, k)
    }

    /// From rows already quantized: row-major values (scales.len() rows of k), a scale a row.
    pub fn from_rows(rows: &[i8], mut scales: Vec<f32>, k: usize) -> Self {
        let n = scales.len();
        let k_padded = k.next_multiple_of(DEPTH_ALIGN);
        let padded_n = n.div_ceil(NR) * NR;
        let mut col_sums: Vec<i32> = rows
            .chunks_exact(k.max(1))
            .take(n)
            .map(|row| row.iter().map(|&q| i32::from(q)).sum())
            .collect();
        col_sums.resize(padded_n, 0);
        scales.resize(padded_n, 0.0);
        Self {
            k_padded,
            data: pack_grouped(rows, (n, k), (GROUP, k_padded), |q| q),
            scales,
            col_sums,
        }
    }

    /// One weight, dequantized (for tests and the reference product).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        f32::from(self.data[grouped_at(row, col, self.k_padded, GROUP)]) * self.scales[row]
    }

    pub fn bytes(&self) -> usize {
        self.data.len() + self.scales.len() * 4 + self.col_sums.len() * 4
    }
}

/// Activations quantized per row: u8 values (rows `k_padded` apart, padded with zeros to whole
/// rows of k_padded and to a multiple of ROW_ALIGN rows), each row's scale and zero point.
pub(super) struct QuantizedRows {
    pub data: Vec<u8>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
}

impl QuantizedRows {
    /// Each row's range (widened to hold 0, so that 0 is exact) is mapped onto 0..=255; `simd`
    /// uses AVX-512 (same values as the plain loops).
    pub fn quantize(x: &[f32], m: usize, k: usize, k_padded: usize, simd: bool) -> Self {
        let mut data = vec![0u8; m.next_multiple_of(ROW_ALIGN) * k_padded];
        let mut scales = vec![0.0; m];
        let mut zero_points = vec![0; m];
        let rows_per_task = (1 << 16) / k.max(1) + 1;
        data.par_chunks_mut(rows_per_task * k_padded)
            .zip(scales.par_chunks_mut(rows_per_task))
            .zip(zero_points.par_chunks_mut(rows_per_task))
            .enumerate()
            .for_each(|(chunk, ((out, scales), zero_points))| {
                let first = chunk * rows_per_task;
                for (r, (scale, zero)) in scales.iter_mut().zip(zero_points).enumerate() {
                    let row = &x[(first + r) * k..(first + r + 1) * k];
                    let out = &mut out[r * k_padded..r * k_padded + k];
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: `simd` is set only where the CPU has AVX-512F.
                        (*scale, *zero) = unsafe { super::vnni::quantize_row(row, out) };
                        continue;
                    }
                    let _ = simd;
                    (*scale, *zero) = quantize_row(row, out);
                }
            });
        Self {
            data,
            scales,
            zero_points,
        }
    }
}

/// One row to u8: returns (scale, zero point).
fn quantize_row(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    let (mut low, mut high) = (0f32, 0f32);
    for &v in row {
        low = if v < low { v } else { low };
        high = if v > high { v } else { high };
    }
    let Some(range) = RowRange::new(low, high) else {
        out.fill(0);
        return (1.0, 0);
    };
    for (q, &v) in out.iter_mut().zip(row) {
        *q = (v * range.inv + range.zero)
            .round_ties_even()
            .clamp(0.0, 255.0) as u8;
    }
    (range.scale, range.zero as i32)
}

/// A row's quantization, from its smallest and largest values (0 included): `q = round(v * inv +
/// zero)`, multiplied and added separately so that every implementation rounds alike.
pub(super) struct RowRange {
    pub scale: f32,
    pub inv: f32,
    pub zero: f32,
}

impl RowRange {
    /// `None` for a row of zeros (or of non-finite values, which no scale represents): it is
    /// encoded as zeros.
    pub fn new(low: f32, high: f32) -> Option<Self> {
        let span = high - low;
        if !span.is_normal() {
            return None;
        }
        let scale = span / 255.0;
        Some(Self {
            scale,
            inv: 1.0 / scale,
            zero: (-low / scale).round_ties_even().clamp(0.0, 255.0),
        })
    }
}

/// `y = x W^T (+ bias)` on int8 panels into `out` (m x n), `x` (m x k) as `gemm::matmul` checked
/// them; `path` must be one the CPU has.
pub(super) fn matmul(
    path: Path,
    x: &[f32],
    (m, n): (usize, usize),
    w: &Int8Panels,
    bias: Option<&[f32]>,
    out: OutPtr,
) {
    let k = x.len() / m;
    let simd = path != Path::Portable;
    let a = QuantizedRows::quantize(x, m, k, w.k_padded, simd);
    let tile_rows = match path {
        Path::Amx => ROW_ALIGN,
        _ => TILE_ROWS,
    };
    let tasks = plan_tasks(m, n.div_ceil(NR), tile_rows);
    for_each_task(&tasks, |task: &Task| {
        let block = Block {
            a: &a,
            w,
            rows: task.rows.clone(),
            panels: task.panels.clone(),
            cols: n,
            bias,
            c: out,
        };
        // SAFETY (both kernels): `Path::of` picks them only where the CPU has their instructions
        // (and the OS the AMX state); the block stays inside a, w and y, and no two tasks write
        // the same element of y.
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Vnni => unsafe { super::vnni::run(&block) },
            #[cfg(target_arch = "x86_64")]
            Path::Amx => unsafe { super::amx::run_int8(&block) },
            _ => block.run_portable(),
        }
    });
}

/// One task of an int8 product: its rows and panels of the output.
pub(super) struct Block<'a> {
    pub a: &'a QuantizedRows,
    pub w: &'a Int8Panels,
    pub rows: std::ops::Range<usize>,
    pub panels: std::ops::Range<usize>,
    /// Columns of y (n).
    pub cols: usize,
    pub bias: Option<&'a [f32]>,
    pub c: OutPtr,
}

impl Block<'_> {
    /// The dequantized output value of row `i`, column `j` from its integer dot product.
    #[inline]
    pub fn dequantize(&self, i: usize, j: usize, dot: i32) -> f32 {
        let centred = dot - self.a.zero_points[i] * self.w.col_sums[j];
        // Fused, as the VNNI kernel's store: both kernels give the same f32.
        (centred as f32).mul_add(
            self.a.scales[i] * self.w.scales[j],
            self.bias.map_or(0.0, |b| b[j]),
        )
    }

    /// The same integers as the VNNI kernel, with plain loops.
    fn run_portable(&self) {
        let kp = self.w.k_padded;
        for j in self.panels.clone() {
            let panel = &self.w.data[j * kp * NR..(j + 1) * kp * NR];
            let cols = NR.min(self.cols - j * NR);
            for i in self.rows.clone() {
                let row = &self.a.data[i * kp..(i + 1) * kp];
                let mut acc = [0i32; NR];
                for (group, a) in panel.chunks_exact(NR * GROUP).zip(row.chunks_exact(GROUP)) {
                    for (sum, w) in acc.iter_mut().zip(group.chunks_exact(GROUP)) {
                        for t in 0..GROUP {
                            *sum += i32::from(a[t]) * i32::from(w[t]);
                        }
                    }
                }
                for (col, &dot) in acc.iter().enumerate().take(cols) {
                    let j_col = j * NR + col;
                    // SAFETY: (i, j_col) is inside y and belongs to this task alone.
                    unsafe {
                        *self.c.get().add(i * self.cols + j_col) = self.dequantize(i, j_col, dot)
                    };
                }
            }
        }
    }
}

/// Rows per tile of the VNNI kernel (as for f32: 24 accumulators).
pub(super) const TILE_ROWS: usize = MR;
