//! The AVX-512 FMA micro-kernel: an MR x NR tile of `y` held in 2 x MR zmm registers while a k slice
//! of `x` rows (broadcast one value at a time) meets a k slice of one weight panel (two vectors per
//! step). With MR = 12 that is 24 accumulators, 2 weight vectors and a broadcast: 27 of 32 registers,
//! and 24 FMAs for every 2 vector loads.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

use super::{lanes, Aligned, PackedWeight, PanelData, KC, MR, NC_PANELS, NR};

thread_local! {
    /// Per-thread scratch: a widened (f32) copy of one KC x NR panel slice (for bf16/f16 panels),
    /// and the task's rows of `a` for one k slice, packed tile by tile.
    static SCRATCH: RefCell<(Aligned<f32>, Vec<f32>)> =
        RefCell::new((Aligned::zeroed(KC * NR), Vec::new()));
}

/// One thread's product `c[0..m][cols of panels] (=|+=) a[0..m][0..depth] * panels[0..depth]`.
///
/// `a` is row 0 of the block (rows `lda` apart), `c` row 0, column 0 of the output (rows `ldc` apart;
/// panel j writes columns j*NR..); only the first `cols` columns and `depth` inputs of `w` are used.
/// With `bias` (NR-aligned to column 0), the first k slice adds it.
pub(super) struct Product<'a> {
    pub a: *const f32,
    pub lda: usize,
    pub m: usize,
    pub w: &'a PackedWeight,
    pub panels: Range<usize>,
    pub depth: usize,
    pub cols: usize,
    pub bias: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    /// Copy the rows of `a` into tiles first (worth it when many panels reuse them); else the tiles
    /// read `a` where it is, `lda` apart (attention's probabilities times a few value panels).
    pub pack_a: bool,
}

impl Product<'_> {
    /// # Safety
    /// The CPU must have AVX-512F; the operands must hold the rows and columns described, and no
    /// other thread may write this block of `c`.
    pub(super) unsafe fn run(&self) {
        SCRATCH.with(|scratch| {
            let (widened, packed_a) = &mut *scratch.borrow_mut();
            let tiles = self.m.div_ceil(MR);
            if self.pack_a {
                packed_a.resize(tiles * MR * self.depth, 0.0);
            }
            // SAFETY: forwarded from the caller; the buffers hold KC x NR and tiles x MR x depth
            // values.
            unsafe { self.blocks(widened.as_mut_ptr(), packed_a.as_mut_ptr()) }
        })
    }

    /// The rows of `a` are packed once (contiguous per tile and k slice) and reused by every
    /// panel; panels go in groups whose block of `c` stays in L2 across the k slices.
    #[target_feature(enable = "avx512f")]
    unsafe fn blocks(&self, widened: *mut f32, packed_a: *mut f32) {
        let slice_start = |pc: usize| match self.pack_a {
            true => packed_a.add(pc * self.m.div_ceil(MR) * MR).cast_const(),
            false => self.a.add(pc),
        };
        if self.pack_a {
            for pc in (0..self.depth).step_by(KC) {
                self.pack_a(pc, KC.min(self.depth - pc), slice_start(pc).cast_mut());
            }
        }
        let step = NC_PANELS.max(1);
        for first in self.panels.clone().step_by(step) {
            let group = first..(first + step).min(self.panels.end);
            for pc in (0..self.depth).step_by(KC) {
                let kc = KC.min(self.depth - pc);
                self.slice(group.clone(), pc, kc, widened, slice_start(pc));
            }
        }
    }

    /// Rows of `a`, columns pc..pc+kc, as tiles of MR rows stored k-major: tile t at t*MR*kc holds
    /// a[t*MR + r][pc + p] at p*MR + r (rows past m are zero).
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_a(&self, pc: usize, kc: usize, packed_a: *mut f32) {
        for t in 0..self.m.div_ceil(MR) {
            let tile = packed_a.add(t * MR * kc);
            for r in 0..MR {
                let row = t * MR + r;
                if row < self.m {
                    let src = self.a.add(row * self.lda + pc);
                    for p in 0..kc {
                        *tile.add(p * MR + r) = *src.add(p);
                    }
                } else {
                    for p in 0..kc {
                        *tile.add(p * MR + r) = 0.0;
                    }
                }
            }
        }
    }

    /// One k slice of the panels `group`.
    #[target_feature(enable = "avx512f")]
    unsafe fn slice(
        &self,
        group: Range<usize>,
        pc: usize,
        kc: usize,
        widened: *mut f32,
        a: *const f32,
    ) {
        let k = self.w.k;
        {
            for j in group {
                let offset = j * k * NR + pc * NR;
                let b: *const f32 = match &self.w.data {
                    PanelData::F32(v) => v.as_ptr().add(offset),
                    PanelData::Bf16(v) => {
                        widen_bf16(v.as_ptr().add(offset), kc * NR, widened);
                        widened
                    }
                    PanelData::F16(v) => {
                        widen_f16(v.as_ptr().add(offset), kc * NR, widened);
                        widened
                    }
                    // `matmul` sends int8 and tile panels to their own kernels; attention packs f32.
                    PanelData::Int8(_) | PanelData::Bf16Pairs(_) => {
                        unreachable!("matrix-unit panels reached the f32 kernel")
                    }
                };
                let cols = NR.min(self.cols - j * NR);
                // The bias is added once, when the first k slice is stored; later slices accumulate.
                let bias = match self.bias.is_null() {
                    false if pc == 0 => self.bias.add(j * NR),
                    _ => std::ptr::null(),
                };
                let mut i = 0;
                while i < self.m {
                    let mr = MR.min(self.m - i);
                    let tile = Tile {
                        kc,
                        a: match self.pack_a {
                            true => a.add(i * kc),
                            false => a.add(i * self.lda),
                        },
                        lda: self.lda,
                        b,
                        c: self.c.add(i * self.ldc + j * NR),
                        ldc: self.ldc,
                        cols,
                        bias,
                        accumulate: pc > 0,
                    };
                    match self.pack_a {
                        true => tile.dispatch::<true>(mr),
                        false => tile.dispatch::<false>(mr),
                    }
                    i += mr;
                }
            }
        }
    }
}

/// One micro-kernel call: `c[r][0..cols] (+)= sum_p a[r][p] * b[p][0..cols]` for R rows.
struct Tile {
    kc: usize,
    /// MR x kc activations: k-major tiles (packed by `pack_a`), or rows `lda` apart.
    a: *const f32,
    lda: usize,
    /// kc x NR weights, k-major.
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    /// Valid columns of the panel (NR except in the last one).
    cols: usize,
    /// NR bias values, or null.
    bias: *const f32,
    /// Add to `c` (a later k slice) instead of overwriting it.
    accumulate: bool,
}

impl Tile {
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dispatch<const PACKED: bool>(&self, rows: usize) {
        match rows {
            12 => self.run::<12, PACKED>(),
            11 => self.run::<11, PACKED>(),
            10 => self.run::<10, PACKED>(),
            9 => self.run::<9, PACKED>(),
            8 => self.run::<8, PACKED>(),
            7 => self.run::<7, PACKED>(),
            6 => self.run::<6, PACKED>(),
            5 => self.run::<5, PACKED>(),
            4 => self.run::<4, PACKED>(),
            3 => self.run::<3, PACKED>(),
            2 => self.run::<2, PACKED>(),
            _ => self.run::<1, PACKED>(),
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const R: usize, const PACKED: bool>(&self) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for p in 0..self.kc {
            let b0 = _mm512_loadu_ps(self.b.add(p * NR));
            let b1 = _mm512_loadu_ps(self.b.add(p * NR + 16));
            for r in 0..R {
                let at = match PACKED {
                    true => p * MR + r,
                    false => r * self.lda + p,
                };
                let a = _mm512_set1_ps(*self.a.add(at));
                lo[r] = _mm512_fmadd_ps(a, b0, lo[r]);
                hi[r] = _mm512_fmadd_ps(a, b1, hi[r]);
            }
        }
        // Masks keep the last panel's padding columns out of `c` (masked lanes are never touched,
        // so the pointers past the row's end are not dereferenced).
        let (m0, m1) = (lanes(self.cols), lanes(self.cols.saturating_sub(16)));
        for r in 0..R {
            let row = self.c.add(r * self.ldc);
            let row_hi = row.wrapping_add(16);
            let (mut v0, mut v1) = (lo[r], hi[r]);
            if self.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row_hi));
            } else if !self.bias.is_null() {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, self.bias));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, self.bias.wrapping_add(16)));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(row_hi, m1, v1);
        }
    }
}

/// bf16 -> f32 is a 16-bit shift: `len` must be a multiple of 16.
#[target_feature(enable = "avx512f")]
unsafe fn widen_bf16(src: *const u16, len: usize, dst: *mut f32) {
    for i in (0..len).step_by(16) {
        let halves = _mm256_loadu_si256(src.add(i) as *const __m256i);
        let words = _mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16);
        _mm512_storeu_ps(dst.add(i), _mm512_castsi512_ps(words));
    }
}

/// IEEE half -> f32 (VCVTPH2PS): `len` must be a multiple of 16.
#[target_feature(enable = "avx512f")]
unsafe fn widen_f16(src: *const u16, len: usize, dst: *mut f32) {
    for i in (0..len).step_by(16) {
        let halves = _mm256_loadu_si256(src.add(i) as *const __m256i);
        _mm512_storeu_ps(dst.add(i), _mm512_cvtph_ps(halves));
    }
}
