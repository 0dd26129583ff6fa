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
//! Layout for `VPDPBUSD` (4 adjacent u8 x s8 products summed into each i32 lane): panels of NR
//! output columns, k cut into groups of 4; group g of a panel holds NR x 4 bytes, column-major within
//! the group, so one 64-byte load gives 16 columns x 4 inputs. k is padded to a multiple of 4 with zero
//! weights (padding activations then contribute nothing). The portable loop reads the same layout
//! and gives the same integers, so every kernel computes identical scores.

use rayon::prelude::*;

use super::{plan_tasks, Aligned, OutPtr, Task, MR, NR};

/// Inputs per group of `VPDPBUSD`.
pub const GROUP: usize = 4;

/// `x.round_ties_even()` for |x| < 2^22, in two additions: adding 1.5 x 2^23 leaves no fraction
/// bits, so the sum rounds to an integer (ties to even, the default rounding mode), and subtracting
/// it back is exact. Without SSE4.1 in the baseline target, `round_ties_even` is a libm call per
/// value, which made quantizing an LLM at load take seconds.
#[inline]
pub fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// A weight matrix quantized to int8 in panel layout.
#[derive(Debug, Clone)]
pub struct Int8Panels {
    /// Outputs and inputs.
    n: usize,
    k: usize,
    /// k padded to a multiple of GROUP.
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
        let k_padded = k.div_ceil(GROUP) * GROUP;
        let panels = n.div_ceil(NR);
        let mut data = Aligned::zeroed(panels * k_padded * NR);
        let mut scales = vec![0.0; panels * NR];
        let mut col_sums = vec![0; panels * NR];
        for (row, values) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            let inv = 1.0 / scale;
            scales[row] = scale;
            let (panel, col) = (row / NR, row % NR);
            let base = panel * k_padded * NR + col * GROUP;
            let mut sum = 0i32;
            for (p, &v) in values.iter().enumerate() {
                let q = round_small(v * inv).clamp(-127.0, 127.0) as i8;
                sum += i32::from(q);
                data[base + (p / GROUP) * NR * GROUP + p % GROUP] = q;
            }
            col_sums[row] = sum;
        }
        Self {
            n,
            k,
            k_padded,
            data,
            scales,
            col_sums,
        }
    }

    /// One weight, dequantized (for tests and the reference product).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let at = (row / NR) * self.k_padded * NR
            + (col / GROUP) * NR * GROUP
            + (row % NR) * GROUP
            + col % GROUP;
        f32::from(self.data[at]) * self.scales[row]
    }

    pub fn bytes(&self) -> usize {
        self.data.len() + self.scales.len() * 4 + self.col_sums.len() * 4
    }
}

/// Activations quantized per row: u8 values (rows `k_padded` apart, the padding zero), each row's
/// scale and zero point.
pub(super) struct QuantizedRows {
    pub data: Vec<u8>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
}

impl QuantizedRows {
    /// Each row's range (widened to hold 0, so that 0 is exact) is mapped onto 0..=255; `simd`
    /// uses AVX-512 (same values as the plain loops).
    pub fn quantize(x: &[f32], m: usize, k: usize, k_padded: usize, simd: bool) -> Self {
        let mut data = vec![0u8; m * k_padded];
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

/// `y = x W^T (+ bias)` on int8 panels; `vnni` picks the `VPDPBUSD` kernel (the CPU must have
/// AVX-512 VNNI), else the portable loop.
pub(super) fn matmul(
    vnni: bool,
    x: &[f32],
    m: usize,
    w: &Int8Panels,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (n, k) = (w.n, w.k);
    let a = QuantizedRows::quantize(x, m, k, w.k_padded, vnni);
    let out = OutPtr(y.as_mut_ptr());
    let tasks = plan_tasks(m, n.div_ceil(NR));
    let run = |task: &Task| {
        let block = Block {
            a: &a,
            w,
            rows: task.rows.clone(),
            panels: task.panels.clone(),
            cols: n,
            bias,
            c: out,
        };
        #[cfg(target_arch = "x86_64")]
        if vnni {
            // SAFETY: `vnni` is set only where the CPU has AVX-512 VNNI; the block stays inside
            // a, w and y, and no two tasks write the same element of y.
            return unsafe { super::vnni::run(&block) };
        }
        let _ = vnni;
        block.run_portable();
    };
    if tasks.len() == 1 {
        run(&tasks[0]);
    } else {
        tasks.par_iter().for_each(run);
    }
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
