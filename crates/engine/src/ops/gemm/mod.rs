//! `y = x W^T + b` for activations `x` (m x k, row-major f32) and a weight matrix `W` (n x k) packed
//! once, at load, into the layout the kernel reads.
//!
//! Layout (as in GotoBLAS / MLAS / oneDNN): `W` is cut into panels of [`NR`] output columns; each
//! panel stores its k x NR block k-major, so the micro-kernel reads one contiguous run of NR weights
//! per step of k. A panel stored as bf16 or f16 is widened to f32 one cache block (KC x NR) at a time
//! into a per-thread buffer, then reused by every row tile of the block: half the memory of f32 at
//! the f32 kernel's speed, and exact, since bf16/f16 values are f32 values.
//!
//! Blocking: a task owns up to MC rows of `x` and a range of panels. For each KC-deep slice of k it walks
//! the panels, and for each panel the MR-row tiles: the panel slice (KC x NR x 4 bytes) stays in L1/L2
//! while the tiles stream by, and the task's rows of `y` stay in L2 across the k slices.
//! Threads (rayon's pool) take tasks: row blocks when there are enough, else panel ranges too.
//!
//! The matrix units read panels of the same NR columns with k cut into groups (`amx`, `int8`): each
//! group holds NR x G values, G consecutive inputs of a column side by side (G = 2 for bf16 tiles, 4
//! for int8), so one 64-byte row of a tile is 16 columns x G inputs. The FMA panels are the case G = 1.

mod aligned;
#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod int8;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub use aligned::Aligned;
use aligned::Plain;
#[cfg(target_arch = "x86_64")]
pub(crate) use amx::Tiles;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::cpu::MatmulKernel;

/// Output columns per panel: two 512-bit vectors of f32.
pub const NR: usize = 32;
/// Rows per micro-kernel tile.
pub const MR: usize = 12;
/// Depth of one k slice.
const KC: usize = 192;
/// Rows per task (a multiple of MR): 576 rows keep a k slice of them (576 x KC x 4 = 442 KB) and
/// their block of the output (576 x NC_PANELS x NR x 4 = 590 KB) in a 1-2 MB L2 together, while
/// each task streams the weights once (a few large tasks, so the weights of the LLMs' 16384-wide
/// MLP are read and widened a few times per product, not once per 144 rows).
const MC: usize = 48 * MR;
/// Panels whose block of the output (MC x NC_PANELS x NR) is kept in L2 across k slices.
const NC_PANELS: usize = 8;

/// How the panels are stored.
#[derive(Debug, Clone)]
pub enum PanelData {
    F32(Aligned<f32>),
    /// bf16 bit patterns.
    Bf16(Aligned<u16>),
    /// IEEE half bit patterns.
    F16(Aligned<u16>),
    /// bf16 bit patterns in the layout of AMX tiles (pairs of inputs, k padded to whole tiles).
    Bf16Pairs(Aligned<u16>),
    /// Quantized, in the layout of the int8 kernels (see `int8`).
    Int8(int8::Int8Panels),
}

/// Inputs per group of a column in the bf16 tile layout (`TDPBF16PS` multiplies pairs).
const BF16_PAIR: usize = 2;

/// Where input `col` of output `row` sits in panels of groups of `group` inputs, k padded to
/// `k_padded` (a multiple of `group`).
fn grouped_at(row: usize, col: usize, k_padded: usize, group: usize) -> usize {
    (row / NR) * k_padded * NR + (col / group) * NR * group + (row % NR) * group + col % group
}

/// Packs a row-major (n x k) matrix into panels of groups of `group` inputs, k padded with zeros to
/// `k_padded`, each value converted by `convert`.
fn pack_grouped<T: Copy, U: Plain>(
    w: &[T],
    (n, k): (usize, usize),
    (group, k_padded): (usize, usize),
    convert: impl Fn(T) -> U,
) -> Aligned<U> {
    assert_eq!(
        w.len(),
        n * k,
        "weight matrix of {n} x {k} has {} values",
        w.len()
    );
    let mut out = Aligned::zeroed(n.div_ceil(NR) * k_padded * NR);
    for (row, values) in w.chunks_exact(k.max(1)).enumerate().take(n) {
        for (col, &v) in values.iter().enumerate() {
            out[grouped_at(row, col, k_padded, group)] = convert(v);
        }
    }
    out
}

/// A weight matrix (n outputs x k inputs) in panel layout.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    data: PanelData,
}

impl PackedWeight {
    pub fn from_f32(w: &[f32], n: usize, k: usize) -> Self {
        let data = PanelData::F32(pack_grouped(w, (n, k), (1, k), |v| v));
        Self { n, k, data }
    }

    /// From bf16 bit patterns, for `kernel`: in AMX tile layout for the AMX kernel, else in FMA
    /// panels.
    pub fn from_bf16_bits(w: &[u16], n: usize, k: usize, kernel: MatmulKernel) -> Self {
        let data = match kernel {
            MatmulKernel::Amx => {
                let k_padded = bf16_tile_depth(k);
                PanelData::Bf16Pairs(pack_grouped(w, (n, k), (BF16_PAIR, k_padded), |v| v))
            }
            _ => PanelData::Bf16(pack_grouped(w, (n, k), (1, k), |v| v)),
        };
        Self { n, k, data }
    }

    /// From IEEE half bit patterns.
    pub fn from_f16_bits(w: &[u16], n: usize, k: usize) -> Self {
        let data = PanelData::F16(pack_grouped(w, (n, k), (1, k), |v| v));
        Self { n, k, data }
    }

    /// Quantizes a row-major (n x k) f32 matrix to int8, one scale per output channel.
    pub fn quantize_int8(w: &[f32], n: usize, k: usize) -> Self {
        let data = PanelData::Int8(int8::Int8Panels::quantize(w, n, k));
        Self { n, k, data }
    }

    /// From int8 rows already quantized (row-major, n = scales.len() rows of k), one scale a row.
    pub fn from_int8_rows(values: &[i8], scales: Vec<f32>, k: usize) -> Self {
        let n = scales.len();
        let data = PanelData::Int8(int8::Int8Panels::from_rows(values, scales, k));
        Self { n, k, data }
    }

    /// The matrix in each float storage `kernel` reads (f32, bf16, f16), for tests and probes.
    pub fn in_every_storage(
        w: &[f32],
        n: usize,
        k: usize,
        kernel: MatmulKernel,
    ) -> [PackedWeight; 3] {
        let bf16: Vec<u16> = w
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        let f16: Vec<u16> = w
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        [
            Self::from_f32(w, n, k),
            Self::from_bf16_bits(&bf16, n, k, kernel),
            Self::from_f16_bits(&f16, n, k),
        ]
    }

    /// Outputs.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn storage_name(&self) -> &'static str {
        match self.data {
            PanelData::F32(_) => "f32",
            PanelData::Bf16(_) => "bf16",
            PanelData::Bf16Pairs(_) => "bf16 tiles",
            PanelData::F16(_) => "f16",
            PanelData::Int8(_) => "int8",
        }
    }

    /// Memory held by the panels.
    pub fn bytes(&self) -> usize {
        match &self.data {
            PanelData::F32(v) => v.len() * 4,
            PanelData::Bf16(v) | PanelData::Bf16Pairs(v) | PanelData::F16(v) => v.len() * 2,
            PanelData::Int8(q) => q.bytes(),
        }
    }

    /// One weight, widened to f32 (dequantized for int8), for tests and the reference product.
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let bf16 = |bits: u16| f32::from_bits((bits as u32) << 16);
        let at = grouped_at(row, col, self.k, 1);
        match &self.data {
            PanelData::F32(v) => v[at],
            PanelData::Bf16(v) => bf16(v[at]),
            PanelData::F16(v) => half::f16::from_bits(v[at]).to_f32(),
            PanelData::Bf16Pairs(v) => {
                let k_padded = bf16_tile_depth(self.k);
                bf16(v[grouped_at(row, col, k_padded, BF16_PAIR)])
            }
            PanelData::Int8(q) => q.get(row, col),
        }
    }
}

/// `y = x W^T (+ bias)`: `x` is (m x k) row-major, `y` (m x n) row-major.
pub fn matmul(
    kernel: MatmulKernel,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    // SAFETY: f32 and MaybeUninit<f32> have the same layout, and `matmul_into` writes only
    // initialised values.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    matmul_into(kernel, x, m, w, bias, y)
}

/// `matmul` into a buffer that need not be initialised: every element of `y` is written (a fresh
/// output need not be zeroed first, which cost a twentieth of a bf16 encoder's time).
pub fn matmul_into(
    kernel: MatmulKernel,
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
) {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "x is not {m} x {k}");
    assert_eq!(y.len(), m * n, "y is not {m} x {n}");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not {n} long");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for (at, value) in y.iter_mut().enumerate() {
            value.write(bias.map_or(0.0, |b| b[at % n]));
        }
        return;
    }
    let out = OutPtr(y.as_mut_ptr().cast());
    match (&w.data, kernel) {
        // Every kernel runs int8 weights: on the matrix unit the CPU has, else the portable loop
        // on the same integers.
        (PanelData::Int8(q), _) => int8::matmul(int8::Path::of(kernel), x, (m, n), q, bias, out),
        #[cfg(target_arch = "x86_64")]
        (PanelData::Bf16Pairs(panels), MatmulKernel::Amx) => {
            amx::matmul_bf16(x, m, (n, k), panels, bias, out)
        }
        (PanelData::Bf16Pairs(_), _) => {
            panic!("bf16 tile panels are packed for the amx kernel only")
        }
        #[cfg(target_arch = "x86_64")]
        (_, MatmulKernel::Avx512 | MatmulKernel::Amx) => run_tasks(x, m, w, bias, out),
        _ => reference_with(x, m, w, bias, |at, v| {
            y[at].write(v);
        }),
    }
}

/// Inputs per row of a bf16 AMX tile (64 bytes): the bf16 tile panels' k is padded to a multiple.
const BF16_TILE_DEPTH: usize = 32;

/// k padded to whole bf16 tile rows: the depth of bf16 tile panels and of the activations that meet
/// them (the padding holds zeros).
fn bf16_tile_depth(k: usize) -> usize {
    k.next_multiple_of(BF16_TILE_DEPTH)
}

/// A block of rows and a range of panels, computed by one thread.
struct Task {
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
}

/// Cuts the product into tasks: one per MC-row block, each also split by panels when there are
/// too few blocks to keep every thread busy (few tokens, e.g. one pair). Blocks start on multiples
/// of `tile_rows`, the micro-kernel's rows.
fn plan_tasks(m: usize, panels: usize, tile_rows: usize) -> Vec<Task> {
    let threads = rayon::current_num_threads().max(1);
    // Row blocks of at most MC rows, as many as a multiple of the threads, with the row tiles
    // shared out evenly so that every thread gets the same work.
    let tiles = m.div_ceil(tile_rows);
    let row_blocks = m.div_ceil(MC).div_ceil(threads) * threads;
    let row_blocks = row_blocks.min(tiles);
    let panel_splits = (2 * threads).div_ceil(row_blocks).clamp(1, panels);
    let per_split = panels.div_ceil(panel_splits);
    let mut tasks = Vec::with_capacity(row_blocks * panel_splits);
    for block in 0..row_blocks {
        let first_tile = block * tiles / row_blocks;
        let end_tile = (block + 1) * tiles / row_blocks;
        let rows = (first_tile * tile_rows).min(m)..(end_tile * tile_rows).min(m);
        for split in (0..panels).step_by(per_split) {
            tasks.push(Task {
                rows: rows.clone(),
                panels: split..(split + per_split).min(panels),
            });
        }
    }
    tasks
}

/// The mask of the first `valid` lanes of 16 (all of them from 16 on).
#[cfg(target_arch = "x86_64")]
fn lanes(valid: usize) -> std::arch::x86_64::__mmask16 {
    if valid >= 16 {
        0xffff
    } else {
        ((1u32 << valid) - 1) as u16
    }
}

/// Runs every task, on rayon's pool unless there is only one (then on this thread: a product of a
/// few rows is over before a pool would wake).
fn for_each_task(tasks: &[Task], run: impl Fn(&Task) + Sync + Send) {
    match tasks {
        [one] => run(one),
        _ => tasks.par_iter().for_each(run),
    }
}

/// An output buffer handed to parallel tasks that each write their own disjoint block of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: only shared between tasks that write disjoint regions (each user says which).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
fn run_tasks(x: &[f32], m: usize, w: &PackedWeight, bias: Option<&[f32]>, out: OutPtr) {
    let (n, k) = (w.n, w.k);
    let tasks = plan_tasks(m, n.div_ceil(NR), MR);
    for_each_task(&tasks, |task: &Task| {
        let product = avx512::Product {
            a: x[task.rows.start * k..].as_ptr(),
            lda: k,
            m: task.rows.len(),
            w,
            panels: task.panels.clone(),
            depth: k,
            cols: n,
            bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
            c: out.get().wrapping_add(task.rows.start * n),
            ldc: n,
            pack_a: true,
        };
        // SAFETY: the kernel was selected only where the CPU has AVX-512F; the task stays inside
        // x, w and y, and no two tasks write the same element of y.
        unsafe { product.run() }
    });
}

/// One thread's product on strided operands, for callers that already run one task per thread
/// (attention, per sequence and head): `c[i][0..cols] = sum_p a[i][p] * w[p][0..cols]` for `m` rows,
/// `p < depth` (a prefix of w's inputs), rows of `a` `lda` apart and of `c` `ldc` apart. f32 panels
/// run on the AVX-512 kernel (`pack_a`: copy the rows of `a` per block first), bf16 tile panels on
/// AMX tiles (the rows of `a` rounded to bf16).
///
/// # Safety
/// The CPU must have AVX-512F, and AMX with the OS's permission for bf16 tile panels (the kernel
/// that packed them); `a` must hold `m` rows of `depth` values and `c` `m` rows of `cols` values at
/// those strides; no other thread may write them.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product_strided(
    a: *const f32,
    lda: usize,
    m: usize,
    w: &PackedWeight,
    depth: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
    pack_a: bool,
) {
    assert!(
        depth <= w.k && cols <= w.n,
        "product beyond the packed matrix"
    );
    if m == 0 || cols == 0 {
        return;
    }
    if let PanelData::Bf16Pairs(panels) = &w.data {
        // SAFETY: forwarded from the caller.
        return unsafe { amx::product_bf16_strided(a, lda, m, (panels, w.k), depth, cols, c, ldc) };
    }
    let product = avx512::Product {
        a,
        lda,
        m,
        w,
        panels: 0..cols.div_ceil(NR),
        depth,
        cols,
        bias: std::ptr::null(),
        c,
        ldc,
        pack_a,
    };
    // SAFETY: forwarded from the caller.
    unsafe { product.run() }
}

/// Packs the matrix whose element (row, col) is `value(row, col)` as bf16 (nearest) in AMX tile
/// layout.
pub fn pack_bf16_tiles_with(
    n: usize,
    k: usize,
    value: impl Fn(usize, usize) -> f32,
) -> PackedWeight {
    let k_padded = bf16_tile_depth(k);
    let mut data = Aligned::zeroed(n.div_ceil(NR) * k_padded * NR);
    for row in 0..n {
        for col in 0..k {
            let bits = half::bf16::from_f32(value(row, col)).to_bits();
            data[grouped_at(row, col, k_padded, BF16_PAIR)] = bits;
        }
    }
    PackedWeight {
        n,
        k,
        data: PanelData::Bf16Pairs(data),
    }
}

/// Packs the matrix whose element (row, col) is `value(row, col)`, as f32.
pub fn pack_f32_with(n: usize, k: usize, value: impl Fn(usize, usize) -> f32) -> PackedWeight {
    let mut data = Aligned::zeroed(n.div_ceil(NR) * k * NR);
    for row in 0..n {
        for col in 0..k {
            data[grouped_at(row, col, k, 1)] = value(row, col);
        }
    }
    PackedWeight {
        n,
        k,
        data: PanelData::F32(data),
    }
}

/// The plain triple loop, in f64: the reference every kernel is tested against, and the path of
/// targets without our kernels (never chosen by `MatmulKernel::select` there: candle serves them).
pub fn reference(x: &[f32], m: usize, w: &PackedWeight, bias: Option<&[f32]>, y: &mut [f32]) {
    reference_with(x, m, w, bias, |at, v| y[at] = v)
}

/// `reference`, handing each output value (row-major index, value) to `write`.
fn reference_with(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    mut write: impl FnMut(usize, f32),
) {
    let (n, k) = (w.n, w.k);
    for i in 0..m {
        for j in 0..n {
            let mut sum = bias.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                sum += x[i * k + p] as f64 * w.get(j, p) as f64;
            }
            write(i * n + j, sum as f32);
        }
    }
}

#[cfg(test)]
mod tests;
