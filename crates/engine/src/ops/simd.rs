//! Element-wise kernels on f32 slices (GELU, softmax rows, rounding to bf16/f16), AVX-512 where the
//! CPU has it and plain loops elsewhere. candle computes these one element at a time through libm
//! (erf, exp), which cost as much as a fifth of an encoder's time beside our matrix kernels.
//!
//! exp: 2^n * p(r) with n = round(x log2 e), r = x - n ln 2 (|r| <= ln2/2), p the degree-7 Taylor
//! polynomial (relative error < 1e-8 before f32 rounding) and VSCALEFPS for 2^n.
//! erf: Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), the formula PyTorch's vectorized CPU
//! erf uses.

use rayon::prelude::*;

use super::cpu::CpuFeatures;

/// Values per parallel chunk of an element-wise op (256 KiB of f32: big enough to be worth a
/// task, small enough to share a layer's activations among the threads).
const CHUNK: usize = 1 << 16;

/// Runs an element-wise `op` over `x`, in chunks across rayon's threads when there is enough.
fn chunked(x: &mut [f32], op: fn(&mut [f32])) {
    if x.len() <= CHUNK {
        op(x);
    } else {
        x.par_chunks_mut(CHUNK).for_each(op);
    }
}

/// GELU with the exact (erf) form, in place: x * (1 + erf(x / sqrt 2)) / 2.
pub fn gelu_erf(x: &mut [f32]) {
    chunked(x, |x| {
        #[cfg(target_arch = "x86_64")]
        if CpuFeatures::detect().avx512f {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::gelu_erf(x) };
        }
        for v in x {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    })
}

/// GELU with the tanh approximation (transformers' `gelu_pytorch_tanh`), in place, as candle's
/// `gelu` computes it: x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))) / 2.
pub fn gelu_tanh(x: &mut [f32]) {
    chunked(x, |x| {
        #[cfg(target_arch = "x86_64")]
        if CpuFeatures::detect().avx512f {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::gelu_tanh(x) };
        }
        for v in x {
            let z = GELU_TANH_C * *v * (1.0 + 0.044_715 * *v * *v);
            *v = 0.5 * *v * (1.0 + z.tanh());
        }
    })
}

/// SiLU (swish), in place: x / (1 + exp(-x)).
pub fn silu(x: &mut [f32]) {
    chunked(x, |x| {
        #[cfg(target_arch = "x86_64")]
        if CpuFeatures::detect().avx512f {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::silu(x) };
        }
        for v in x {
            *v /= 1.0 + (-*v).exp();
        }
    })
}

/// sqrt(2 / pi).
const GELU_TANH_C: f32 = 0.797_884_6;

/// Softmax of one row times `scale`, in place (f32 throughout; `-inf` entries become 0).
pub fn softmax_scaled(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if CpuFeatures::detect().avx512f {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::softmax_scaled(row, scale) };
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) * scale;
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v * scale - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Rounds every value to the nearest bf16 (ties to even), kept as f32.
pub fn round_to_bf16(x: &mut [f32]) {
    chunked(x, |x| {
        #[cfg(target_arch = "x86_64")]
        if CpuFeatures::detect().avx512f {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::round_to_bf16(x) };
        }
        x.iter_mut()
            .for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
    })
}

/// Rows of `k` values of `x` as bf16 bit patterns (nearest, ties to even) into rows `k_padded`
/// apart of `out`, whose padding is left as it is (the AMX kernels' activations).
pub fn to_bf16_rows(x: &[f32], k: usize, out: &mut [u16], k_padded: usize) {
    let rows_per_task = CHUNK / k.max(1) + 1;
    x.par_chunks(rows_per_task * k.max(1))
        .zip(out.par_chunks_mut(rows_per_task * k_padded))
        .for_each(|(x, out)| {
            for (row, out) in x.chunks_exact(k.max(1)).zip(out.chunks_mut(k_padded)) {
                to_bf16_row(row, out);
            }
        });
}

/// One row of `to_bf16_rows`, on this thread: `out` (at least as long as `row`) gets its values.
pub fn to_bf16_row(row: &[f32], out: &mut [u16]) {
    assert!(out.len() >= row.len(), "bf16 row shorter than its values");
    #[cfg(target_arch = "x86_64")]
    if CpuFeatures::detect().avx512f {
        // SAFETY: the CPU has AVX-512F; `out` is at least as long as `row`.
        return unsafe { avx512::to_bf16_bits(row, out) };
    }
    for (o, &v) in out.iter_mut().zip(row) {
        *o = half::bf16::from_f32(v).to_bits();
    }
}

/// Rounds every value to the nearest IEEE half (ties to even), kept as f32.
pub fn round_to_f16(x: &mut [f32]) {
    chunked(x, |x| {
        #[cfg(target_arch = "x86_64")]
        if CpuFeatures::detect().avx512f {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::round_to_f16(x) };
        }
        x.iter_mut()
            .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    })
}

const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152,
    1.061_405_4,
];

/// The scalar form of the vector erf (same formula, same error).
pub fn erf(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let poly = ERF_A.iter().rev().fold(0.0, |acc, &c| acc * t + c) * t;
    (1.0 - poly * (-a * a).exp()).copysign(z)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{ERF_A, ERF_P};

    /// Taylor coefficients 1/k! for k = 7 down to 0.
    const EXP_POLY: [f32; 8] = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];

    #[target_feature(enable = "avx512f")]
    pub(super) fn exp(x: __m512) -> __m512 {
        // Below -104 the result is 0 (VSCALEFPS underflows); above 88.7 it is +inf.
        let x = _mm512_max_ps(
            _mm512_min_ps(x, _mm512_set1_ps(88.8)),
            _mm512_set1_ps(-104.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 in two parts, so that r = x - n ln2 keeps its low bits.
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    #[target_feature(enable = "avx512f")]
    fn gelu_vector(x: __m512) -> __m512 {
        let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let a = _mm512_abs_ps(z);
        let one = _mm512_set1_ps(1.0);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), a, one));
        let mut poly = _mm512_set1_ps(ERF_A[4]);
        for &c in ERF_A[..4].iter().rev() {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        poly = _mm512_mul_ps(poly, t);
        let neg_a2 = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a));
        let erf_abs = _mm512_fnmadd_ps(poly, exp(neg_a2), one);
        // copysign(erf_abs, z): the sign bit of z on the (positive) magnitude.
        let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
        let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(one, erf),
        )
    }

    /// Mask of the first `n` (< 16) lanes.
    fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// Applies `f` to every 16 lanes of `x` in place, the tail masked.
    #[target_feature(enable = "avx512f")]
    fn map(x: &mut [f32], mut f: impl FnMut(__m512) -> __m512) {
        let mut chunks = x.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds 16 f32.
            unsafe {
                let v = _mm512_loadu_ps(chunk.as_ptr());
                _mm512_storeu_ps(chunk.as_mut_ptr(), f(v));
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mask = tail_mask(rest.len());
            // SAFETY: masked lanes beyond the slice are neither read nor written.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, rest.as_ptr());
                _mm512_mask_storeu_ps(rest.as_mut_ptr(), mask, f(v));
            }
        }
    }

    /// tanh(z) = sign(z) (1 - 2 / (exp(2|z|) + 1)): exact to an absolute 1e-7 (exp's error), and
    /// +-1 where exp overflows.
    #[target_feature(enable = "avx512f")]
    fn tanh(z: __m512) -> __m512 {
        let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
        let a = _mm512_castsi512_ps(_mm512_andnot_si512(
            _mm512_set1_epi32(i32::MIN),
            _mm512_castps_si512(z),
        ));
        let one = _mm512_set1_ps(1.0);
        let e = exp(_mm512_add_ps(a, a));
        let t = _mm512_sub_ps(
            one,
            _mm512_div_ps(_mm512_set1_ps(2.0), _mm512_add_ps(e, one)),
        );
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_tanh(x: &mut [f32]) {
        map(x, |v| {
            let inner = _mm512_fmadd_ps(
                _mm512_mul_ps(_mm512_set1_ps(0.044_715), v),
                v,
                _mm512_set1_ps(1.0),
            );
            let z = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(super::GELU_TANH_C), v), inner);
            let half_v = _mm512_mul_ps(_mm512_set1_ps(0.5), v);
            _mm512_mul_ps(half_v, _mm512_add_ps(_mm512_set1_ps(1.0), tanh(z)))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu(x: &mut [f32]) {
        map(x, |v| {
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), v));
            _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0), e))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_erf(x: &mut [f32]) {
        // Closures in a `target_feature` function inherit its features.
        map(x, |v| gelu_vector(v));
    }

    /// `v` rounded to the nearest bf16 (ties to even) in the upper 16 bits of each lane: add 0x7fff
    /// plus the lowest kept bit.
    #[target_feature(enable = "avx512f")]
    fn bf16_rounded(v: __m512) -> __m512i {
        let bits = _mm512_castps_si512(v);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)))
    }

    /// `row` as bf16 bit patterns into `out` (at least as long).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn to_bf16_bits(row: &[f32], out: &mut [u16]) {
        for i in (0..row.len()).step_by(16) {
            let valid = (row.len() - i).min(16);
            let mask = ((1u32 << valid) - 1) as __mmask16;
            // SAFETY: masked lanes beyond the row (and `out`, as long) are neither read nor written.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(i));
                let bits = _mm512_srli_epi32::<16>(bf16_rounded(v));
                _mm512_mask_cvtepi32_storeu_epi16(out.as_mut_ptr().add(i).cast(), mask, bits);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn round_to_bf16(x: &mut [f32]) {
        map(x, |v| {
            let rounded = bf16_rounded(v);
            let kept = _mm512_and_si512(rounded, _mm512_set1_epi32(0xffff_0000u32 as i32));
            _mm512_castsi512_ps(kept)
        });
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn round_to_f16(x: &mut [f32]) {
        map(x, |v| {
            _mm512_cvtph_ps(_mm512_cvtps_ph::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(v))
        });
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn softmax_scaled(row: &mut [f32], scale: f32) {
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut chunks = row.chunks_exact(16);
        for chunk in &mut chunks {
            // SAFETY: 16 values.
            max = _mm512_max_ps(max, unsafe { _mm512_loadu_ps(chunk.as_ptr()) });
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mask = tail_mask(rest.len());
            // SAFETY: masked lanes are not read.
            let v = unsafe { _mm512_mask_loadu_ps(max, mask, rest.as_ptr()) };
            max = _mm512_max_ps(max, v);
        }
        // scale > 0, so the largest scaled value is the scaled largest value.
        let scale = _mm512_set1_ps(scale);
        let max = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(max)), scale);
        let mut sum = _mm512_setzero_ps();
        let full = row.len() / 16 * 16;
        map(&mut row[..full], |v| {
            let e = exp(_mm512_fmsub_ps(v, scale, max));
            sum = _mm512_add_ps(sum, e);
            e
        });
        let tail = &mut row[full..];
        if !tail.is_empty() {
            let mask = tail_mask(tail.len());
            // SAFETY: masked lanes beyond the slice are neither read nor written.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, tail.as_ptr());
                let e = _mm512_maskz_mov_ps(mask, exp(_mm512_fmsub_ps(v, scale, max)));
                sum = _mm512_add_ps(sum, e);
                _mm512_mask_storeu_ps(tail.as_mut_ptr(), mask, e);
            }
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        map(row, |v| _mm512_mul_ps(v, inv));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<f32> {
        (-2000..=2000).map(|i| i as f32 * 0.00731).collect()
    }

    #[test]
    fn gelu_matches_candle() {
        let mut x = grid();
        x.extend([-30.0, -9.0, 9.0, 30.0, 0.0, -0.0, 1e-30, -1e-30]);
        let mut got = x.clone();
        gelu_erf(&mut got);
        let n = x.len();
        let candle = candle_core::Tensor::from_vec(x.clone(), n, &candle_core::Device::Cpu)
            .and_then(|t| t.gelu_erf())
            .and_then(|t| t.to_vec1::<f32>())
            .unwrap();
        for ((v, g), e) in x.iter().zip(&got).zip(&candle) {
            assert!(
                (g - e).abs() <= 3e-7 * (1.0 + v.abs()),
                "gelu({v}) = {g}, candle {e}"
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_matches_f64() {
        for len in [1, 5, 16, 17, 100, 513] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 23) as f32 * 0.7 - 8.0)
                .collect();
            let mut got = row.clone();
            softmax_scaled(&mut got, 1.0);
            let max = row
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |m, v| m.max(v as f64));
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (v, g) in row.iter().zip(&got) {
                let exact = (*v as f64 - max).exp() / sum;
                assert!(
                    (*g as f64 - exact).abs() <= 1e-6 * exact + 1e-9,
                    "len {len}: {g} vs {exact}"
                );
            }
        }
        let mut masked = vec![1.0, f32::NEG_INFINITY, 1.0];
        softmax_scaled(&mut masked, 1.0);
        assert_eq!(masked, [0.5, 0.0, 0.5]);
    }

    #[test]
    fn rounding_matches_half() {
        let mut x = grid();
        x.extend([65504.0, 1e-8, -3.0e38, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
        let mut b = x.clone();
        round_to_bf16(&mut b);
        let mut h = x.clone();
        round_to_f16(&mut h);
        for i in 0..x.len() {
            assert_eq!(
                b[i],
                half::bf16::from_f32(x[i]).to_f32(),
                "bf16 of {}",
                x[i]
            );
            assert_eq!(h[i], half::f16::from_f32(x[i]).to_f32(), "f16 of {}", x[i]);
        }
    }
}
