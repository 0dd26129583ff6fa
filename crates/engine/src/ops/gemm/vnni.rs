//! The AVX-512 VNNI micro-kernel: an MR x NR tile of i32 sums in 2 x MR zmm registers; each step
//! broadcasts 4 u8 activations of a row and meets 4 inputs x 16 columns of s8 weights per vector
//! (`VPDPBUSD`: 64 multiply-adds an instruction, four times an f32 FMA's 16). Dequantization and bias
//! are applied as the tile is stored.
//!
//! Blocking: a task's panels are taken in groups small enough to stay in L2 (each panel holds
//! k_padded x NR bytes: 24 KB at k = 768), and every row tile of the task runs the whole depth
//! against each panel of the group while its rows (MR x k_padded bytes) stay in L1. The activations
//! are a quarter of f32's size, so no k slicing is needed at these models' depths.

use std::arch::x86_64::*;

use super::int8::{Block, RowRange, GROUP, TILE_ROWS};
use super::{lanes, NR};

/// Panel bytes per group kept in L2 together.
const GROUP_BYTES: usize = 512 * 1024;

/// # Safety
/// The CPU must have AVX-512F and AVX-512 VNNI; the block's rows and panels must lie inside its
/// operands, and no other thread may write its part of the output.
pub(super) unsafe fn run(block: &Block) {
    // SAFETY: forwarded.
    unsafe { run_block(block) }
}

#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn run_block(block: &Block) {
    let kp = block.w.k_padded;
    let per_group = (GROUP_BYTES / (kp * NR).max(1)).max(1);
    for first in block.panels.clone().step_by(per_group) {
        let group = first..(first + per_group).min(block.panels.end);
        let mut i = block.rows.start;
        while i < block.rows.end {
            let rows = TILE_ROWS.min(block.rows.end - i);
            for j in group.clone() {
                let tile = Tile {
                    block,
                    row: i,
                    panel: j,
                };
                match rows {
                    12 => tile.run::<12>(),
                    11 => tile.run::<11>(),
                    10 => tile.run::<10>(),
                    9 => tile.run::<9>(),
                    8 => tile.run::<8>(),
                    7 => tile.run::<7>(),
                    6 => tile.run::<6>(),
                    5 => tile.run::<5>(),
                    4 => tile.run::<4>(),
                    3 => tile.run::<3>(),
                    2 => tile.run::<2>(),
                    _ => tile.run::<1>(),
                }
            }
            i += rows;
        }
    }
}

/// R rows starting at `row`, one panel.
struct Tile<'a, 'b> {
    block: &'a Block<'b>,
    row: usize,
    panel: usize,
}

impl Tile<'_, '_> {
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    unsafe fn run<const R: usize>(&self) {
        let block = self.block;
        let kp = block.w.k_padded;
        let a = block.a.data.as_ptr().add(self.row * kp);
        let b = block.w.data.as_ptr().add(self.panel * kp * NR);
        let mut lo = [_mm512_setzero_si512(); R];
        let mut hi = [_mm512_setzero_si512(); R];
        for g in 0..kp / GROUP {
            let b0 = _mm512_load_si512(b.add(g * NR * GROUP).cast());
            let b1 = _mm512_load_si512(b.add(g * NR * GROUP + 64).cast());
            for r in 0..R {
                let four = a.add(r * kp + g * GROUP).cast::<i32>().read_unaligned();
                let av = _mm512_set1_epi32(four);
                lo[r] = _mm512_dpbusd_epi32(lo[r], av, b0);
                hi[r] = _mm512_dpbusd_epi32(hi[r], av, b1);
            }
        }
        self.store::<R>(&lo, &hi);
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const R: usize>(&self, lo: &[__m512i; R], hi: &[__m512i; R]) {
        let store = Int8Store::new(self.block, self.panel);
        for r in 0..R {
            store.row(self.row + r, lo[r], hi[r]);
        }
    }
}

/// Stores rows of one panel's i32 sums as `y = (sum - za * col_sum) * sa * sw + bias`, masked to the
/// panel's valid columns: the end of every int8 kernel.
pub(super) struct Int8Store<'a, 'b> {
    block: &'a Block<'b>,
    col0: usize,
    masks: [__mmask16; 2],
    col_sums: [__m512i; 2],
    scales: [__m512; 2],
    bias: [__m512; 2],
}

impl<'a, 'b> Int8Store<'a, 'b> {
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn new(block: &'a Block<'b>, panel: usize) -> Self {
        let col0 = panel * NR;
        let cols = NR.min(block.cols - col0);
        let masks = [lanes(cols), lanes(cols.saturating_sub(16))];
        // Scales and column sums are padded to whole panels: full loads are in bounds.
        let sums = block.w.col_sums.as_ptr().add(col0);
        let scales = block.w.scales.as_ptr().add(col0);
        let bias = match block.bias {
            Some(b) => [
                _mm512_maskz_loadu_ps(masks[0], b.as_ptr().add(col0)),
                _mm512_maskz_loadu_ps(masks[1], b.as_ptr().wrapping_add(col0 + 16)),
            ],
            None => [_mm512_setzero_ps(); 2],
        };
        Self {
            block,
            col0,
            masks,
            col_sums: [
                _mm512_loadu_si512(sums.cast()),
                _mm512_loadu_si512(sums.add(16).cast()),
            ],
            scales: [_mm512_loadu_ps(scales), _mm512_loadu_ps(scales.add(16))],
            bias,
        }
    }

    /// Row `i` of the output from its sums in the panel's columns 0..16 (`lo`) and 16..32 (`hi`).
    ///
    /// # Safety
    /// Row `i` must be inside the output and belong to the caller's task.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn row(&self, i: usize, lo: __m512i, hi: __m512i) {
        let block = self.block;
        let zero = _mm512_set1_epi32(block.a.zero_points[i]);
        let sa = _mm512_set1_ps(block.a.scales[i]);
        let out = block.c.get().add(i * block.cols + self.col0);
        for (half, sums) in [lo, hi].into_iter().enumerate() {
            let centred = _mm512_sub_epi32(sums, _mm512_mullo_epi32(zero, self.col_sums[half]));
            let scale = _mm512_mul_ps(sa, self.scales[half]);
            let y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(centred), scale, self.bias[half]);
            _mm512_mask_storeu_ps(out.wrapping_add(16 * half), self.masks[half], y);
        }
    }
}

/// `int8::quantize_row` with AVX-512: the same values (VCVTPS2DQ rounds to nearest even, as
/// `round_ties_even`; out-of-range and NaN lanes clamp as `clamp` then `as u8` do).
///
/// # Safety
/// The CPU must have AVX-512F; `out` must be as long as `row`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize_row(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    let n = row.len();
    let tail = |i: usize| lanes(n - i);
    let (mut low, mut high) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for i in (0..n).step_by(16) {
        let v = _mm512_maskz_loadu_ps(tail(i), row.as_ptr().add(i));
        low = _mm512_min_ps(low, v);
        high = _mm512_max_ps(high, v);
    }
    let Some(range) = RowRange::new(_mm512_reduce_min_ps(low), _mm512_reduce_max_ps(high)) else {
        out.fill(0);
        return (1.0, 0);
    };
    let (inv, zero) = (_mm512_set1_ps(range.inv), _mm512_set1_ps(range.zero));
    let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
    for i in (0..n).step_by(16) {
        let mask = tail(i);
        let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(i));
        let q = _mm512_cvtps_epi32(_mm512_add_ps(_mm512_mul_ps(v, inv), zero));
        let q = _mm512_min_epi32(_mm512_max_epi32(q, floor), ceiling);
        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(i).cast(), mask, q);
    }
    (range.scale, range.zero as i32)
}
