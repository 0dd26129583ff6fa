//! AMX micro-kernels: `TDPBUSD` (int8) and `TDPBF16PS` (bf16) on tiles of 16 rows x 64 bytes.
//!
//! A tile multiply-add takes a 16 x 64-byte tile of activations (64 u8 or 32 bf16 inputs of 16 rows)
//! and a 16 x 64-byte tile of weights (16 groups of inputs x 16 columns, the panels' group layout read
//! with a 128-byte stride: one panel holds two such column halves) into 16 x 16 i32 or f32 sums:
//! 16,384 multiply-adds an instruction. The eight tile registers hold a 2 x 2 block of sums (32 rows
//! x one 32-column panel), two activation tiles and two weight tiles, so each load serves two
//! products (as oneDNN's brgemm and llama.cpp's AMX kernels block them).
//!
//! Stable Rust has no AMX intrinsics: the instructions are inline assembly on fixed tile registers,
//! which no compiled code uses. A task configures the tiles on its thread when it starts and releases
//! them when it ends, so threads that go on to other work carry no tile state.
//!
//! Sums leave the tiles through a 4 KB buffer per task (`TILESTORED`) and are finished with AVX-512:
//! dequantized (int8, by `vnni::Int8Store`) or given their bias (bf16) as they are stored.

use std::arch::asm;
use std::arch::x86_64::*;

use super::int8::Block;
use super::vnni::Int8Store;
use super::{
    bf16_tile_depth, for_each_task, lanes, plan_tasks, Aligned, OutPtr, Task, BF16_TILE_DEPTH, NR,
};
use crate::ops::simd;

/// Rows of one tile; the kernels compute two tiles of rows at a time.
const TILE_ROWS: usize = 16;
const BLOCK_ROWS: usize = 2 * TILE_ROWS;
/// Bytes of one tile row, and of one step of k in the activations.
const ROW_BYTES: usize = 64;
/// Bytes of one step of k in a panel: 16 groups of a column's inputs x 32 columns x 4 bytes.
const PANEL_STEP_BYTES: usize = TILE_ROWS * NR * 4;
/// The stride between groups of a panel (a weight tile's rows).
const PANEL_GROUP_BYTES: usize = NR * 4;
/// Panel bytes kept in L2 while the row blocks of a task go by.
const L2_PANEL_BYTES: usize = 512 * 1024;

/// The tile configuration (palette 1) every kernel here uses: all eight tiles 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// The tiles, configured on this thread while the value lives.
pub(crate) struct Tiles;

impl Tiles {
    /// # Safety
    /// The CPU must have AMX and the OS must have granted its state (`CpuFeatures::amx_*`).
    pub(crate) unsafe fn configure() -> Self {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        config.bytes_per_row[..8].fill(ROW_BYTES as u16);
        config.rows[..8].fill(TILE_ROWS as u8);
        // SAFETY: a valid palette-1 configuration; AMX is present (the caller's promise).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
        Tiles
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `configure` on this thread.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Sums of a 2 x 2 block of tiles (32 rows x 32 columns of i32 or f32), as `TILESTORED` writes them.
#[repr(C, align(64))]
struct Sums([u32; BLOCK_ROWS * NR]);

/// One tile instruction over a block: `steps` steps of k, each loading two activation tiles (rows
/// `lda` bytes apart; the second `TILE_ROWS` rows further, or none when `two_tiles` is false) and the
/// panel's two weight tiles, into the four sums (two when `two_tiles` is false), stored to `out`.
macro_rules! block_product {
    ($name:ident, $instruction:literal) => {
        /// # Safety
        /// Tiles configured on this thread; `a` readable for `steps` steps of ROW_BYTES over 16 (or
        /// 32) rows `lda` apart, `b` for `steps` panel steps.
        #[inline]
        unsafe fn $name(
            a: *const u8,
            lda: usize,
            b: *const u8,
            steps: usize,
            two_tiles: bool,
            out: &mut Sums,
        ) {
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for step in 0..steps {
                    let a0 = a.add(step * ROW_BYTES);
                    let b0 = b.add(step * PANEL_STEP_BYTES);
                    if two_tiles {
                        asm!(
                            "tileloadd tmm4, [{a0} + {lda}*1]",
                            "tileloadd tmm5, [{a1} + {lda}*1]",
                            "tileloadd tmm6, [{b0} + {ldb}*1]",
                            "tileloadd tmm7, [{b1} + {ldb}*1]",
                            concat!($instruction, " tmm0, tmm4, tmm6"),
                            concat!($instruction, " tmm1, tmm4, tmm7"),
                            concat!($instruction, " tmm2, tmm5, tmm6"),
                            concat!($instruction, " tmm3, tmm5, tmm7"),
                            a0 = in(reg) a0,
                            a1 = in(reg) a0.add(TILE_ROWS * lda),
                            lda = in(reg) lda,
                            b0 = in(reg) b0,
                            b1 = in(reg) b0.add(ROW_BYTES),
                            ldb = in(reg) PANEL_GROUP_BYTES,
                            options(nostack, readonly)
                        );
                    } else {
                        asm!(
                            "tileloadd tmm4, [{a0} + {lda}*1]",
                            "tileloadd tmm6, [{b0} + {ldb}*1]",
                            "tileloadd tmm7, [{b1} + {ldb}*1]",
                            concat!($instruction, " tmm0, tmm4, tmm6"),
                            concat!($instruction, " tmm1, tmm4, tmm7"),
                            a0 = in(reg) a0,
                            lda = in(reg) lda,
                            b0 = in(reg) b0,
                            b1 = in(reg) b0.add(ROW_BYTES),
                            ldb = in(reg) PANEL_GROUP_BYTES,
                            options(nostack, readonly)
                        );
                    }
                }
                // Row r of the block at r * 128 bytes: columns 0..16 then 16..32.
                let c = out.0.as_mut_ptr().cast::<u8>();
                let ldc = NR * 4;
                asm!(
                    "tilestored [{c0} + {ldc}*1], tmm0",
                    "tilestored [{c1} + {ldc}*1], tmm1",
                    "tilestored [{c2} + {ldc}*1], tmm2",
                    "tilestored [{c3} + {ldc}*1], tmm3",
                    c0 = in(reg) c,
                    c1 = in(reg) c.add(ROW_BYTES),
                    c2 = in(reg) c.add(TILE_ROWS * ldc),
                    c3 = in(reg) c.add(TILE_ROWS * ldc + ROW_BYTES),
                    ldc = in(reg) ldc,
                    options(nostack)
                );
            }
        }
    };
}

block_product!(int8_block, "tdpbusd");
block_product!(bf16_block, "tdpbf16ps");

/// Walks a task's output in blocks of 32 rows x one panel, panels in groups that stay in L2 while
/// the row blocks go by; `block(first_row, panel)` computes and stores one.
fn walk_blocks(
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    panel_bytes: usize,
    mut block: impl FnMut(usize, usize),
) {
    let per_group = (L2_PANEL_BYTES / panel_bytes.max(1)).max(1);
    for first in panels.clone().step_by(per_group) {
        for i in rows.clone().step_by(BLOCK_ROWS) {
            for j in first..(first + per_group).min(panels.end) {
                block(i, j);
            }
        }
    }
}

/// One task of an int8 product on AMX tiles. The activations are padded to a multiple of 32 rows and
/// the panels' k to a multiple of 64 (`int8`), so every tile load is in bounds.
///
/// # Safety
/// The CPU must have AMX-INT8 with the OS's permission and AVX-512F; the block's rows and panels
/// must lie inside its operands, and no other thread may write its part of the output.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run_int8(block: &Block) {
    let kp = block.w.k_padded;
    let _tiles = unsafe { Tiles::configure() };
    let mut sums = Sums([0; BLOCK_ROWS * NR]);
    walk_blocks(block.rows.clone(), block.panels.clone(), kp * NR, |i, j| {
        let rows = (block.rows.end - i).min(BLOCK_ROWS);
        unsafe {
            let a = block.a.data.as_ptr().add(i * kp);
            let b = block.w.data.as_ptr().add(j * kp * NR).cast::<u8>();
            int8_block(a, kp, b, kp / ROW_BYTES, rows > TILE_ROWS, &mut sums);
            let store = Int8Store::new(block, j);
            let sums = sums.0.as_ptr().cast::<__m512i>();
            for r in 0..rows {
                store.row(i + r, sums.add(2 * r).read(), sums.add(2 * r + 1).read());
            }
        }
    });
}

/// `y = x W^T (+ bias)` on bf16 tile panels (k padded to `BF16_TILE_DEPTH`): the activations are
/// rounded to bf16 (to nearest even) into rows padded to whole tiles, then multiplied on AMX tiles
/// with f32 sums.
pub(super) fn matmul_bf16(
    x: &[f32],
    m: usize,
    (n, k): (usize, usize),
    panels: &Aligned<u16>,
    bias: Option<&[f32]>,
    out: OutPtr,
) {
    let kp = bf16_tile_depth(k);
    let mut a = Aligned::<u16>::zeroed(m.next_multiple_of(BLOCK_ROWS) * kp);
    simd::to_bf16_rows(x, k, &mut a, kp);
    let tasks = plan_tasks(m, n.div_ceil(NR), BLOCK_ROWS);
    for_each_task(&tasks, |task: &Task| {
        let task = Bf16Task {
            a: &a,
            a_kp: kp,
            panels,
            panel_kp: kp,
            rows: task.rows.clone(),
            panel_range: task.panels.clone(),
            cols: n,
            bias,
            c: out,
            ldc: n,
        };
        // SAFETY: the AMX kernel is selected only where the CPU has AMX-BF16, the OS's permission
        // and AVX-512F; the task stays inside a, the panels and y, and no two tasks write the same
        // element of y.
        unsafe { task.run() }
    });
}

/// One thread's bf16 product on strided operands, for attention (one task per sequence and head):
/// `c[i][0..cols] = sum_p a[i][p] * w[j][p]` for `m` rows, `p < depth` (a prefix of w's inputs),
/// rows of `a` (f32, rounded to bf16 here) `lda` apart and of `c` `ldc` apart.
///
/// # Safety
/// The CPU must have AMX-BF16 with the OS's permission and AVX-512F; `a` must hold `m` rows of
/// `depth` values and `c` `m` rows of `cols` values at those strides; no other thread may write them.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product_bf16_strided(
    a: *const f32,
    lda: usize,
    m: usize,
    (panels, k): (&Aligned<u16>, usize),
    depth: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
) {
    let a_kp = bf16_tile_depth(depth);
    let mut rows = Aligned::<u16>::zeroed(m.next_multiple_of(BLOCK_ROWS) * a_kp);
    for (i, out) in rows.chunks_exact_mut(a_kp).take(m).enumerate() {
        // SAFETY: row i of `a` holds `depth` values (the caller's promise).
        let row = unsafe { std::slice::from_raw_parts(a.add(i * lda), depth) };
        simd::to_bf16_row(row, out);
    }
    let task = Bf16Task {
        a: &rows,
        a_kp,
        panels,
        panel_kp: bf16_tile_depth(k),
        rows: 0..m,
        panel_range: 0..cols.div_ceil(NR),
        cols,
        bias: None,
        c: OutPtr(c),
        ldc,
    };
    // SAFETY: forwarded from the caller.
    unsafe { task.run() }
}

/// One task of a bf16 product: rows of bf16 activations (`a_kp` apart, zero beyond the depth) times
/// a range of panels (k padded to `panel_kp`), over the activations' depth.
struct Bf16Task<'a> {
    a: &'a [u16],
    a_kp: usize,
    panels: &'a [u16],
    panel_kp: usize,
    rows: std::ops::Range<usize>,
    panel_range: std::ops::Range<usize>,
    /// Valid columns of the output, and the stride of its rows.
    cols: usize,
    bias: Option<&'a [f32]>,
    c: OutPtr,
    ldc: usize,
}

impl Bf16Task<'_> {
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self) {
        let _tiles = unsafe { Tiles::configure() };
        let mut sums = Sums([0; BLOCK_ROWS * NR]);
        let panel_len = self.panel_kp * NR;
        walk_blocks(
            self.rows.clone(),
            self.panel_range.clone(),
            panel_len * 2,
            |i, j| {
                let rows = (self.rows.end - i).min(BLOCK_ROWS);
                unsafe {
                    let a = self.a.as_ptr().add(i * self.a_kp).cast::<u8>();
                    let b = self.panels.as_ptr().add(j * panel_len).cast::<u8>();
                    let steps = self.a_kp / BF16_TILE_DEPTH;
                    bf16_block(a, self.a_kp * 2, b, steps, rows > TILE_ROWS, &mut sums);
                    self.store(&sums, i..i + rows, j);
                }
            },
        );
    }

    /// Rows `rows` of panel `j` from the block's sums, plus the bias, masked to the valid columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(&self, sums: &Sums, rows: std::ops::Range<usize>, j: usize) {
        let col0 = j * NR;
        let cols = NR.min(self.cols - col0);
        let masks = [lanes(cols), lanes(cols.saturating_sub(16))];
        let bias = match self.bias {
            Some(b) => unsafe {
                [
                    _mm512_maskz_loadu_ps(masks[0], b.as_ptr().add(col0)),
                    _mm512_maskz_loadu_ps(masks[1], b.as_ptr().wrapping_add(col0 + 16)),
                ]
            },
            None => [_mm512_setzero_ps(); 2],
        };
        let sums = sums.0.as_ptr().cast::<f32>();
        for (r, i) in rows.enumerate() {
            // SAFETY: row i lies in the caller's part of the output; masked lanes are untouched.
            unsafe {
                let out = self.c.get().add(i * self.ldc + col0);
                for half in 0..2 {
                    let v = _mm512_loadu_ps(sums.add(r * NR + 16 * half));
                    let v = _mm512_add_ps(v, bias[half]);
                    _mm512_mask_storeu_ps(out.wrapping_add(16 * half), masks[half], v);
                }
            }
        }
    }
}
