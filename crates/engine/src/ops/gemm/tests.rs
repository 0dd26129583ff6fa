//! Every kernel this CPU can run, on every panel storage, against the f64 reference, on shapes that
//! hit the edges: one row, a partial row tile, a partial panel, k not a multiple of the vector width,
//! k deeper than one slice.

use super::*;
use crate::ops::cpu::CpuFeatures;

/// Deterministic values in [-1, 1) (a small LCG: no test depends on a random crate's stream).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn kernels() -> Vec<MatmulKernel> {
    let cpu = CpuFeatures::detect();
    let all = [MatmulKernel::Avx512, MatmulKernel::Amx];
    for kernel in all {
        if !kernel.supported(cpu) {
            eprintln!("skipping the {kernel} kernel: this CPU lacks it (it has: {cpu})");
        }
    }
    all.into_iter().filter(|k| k.supported(cpu)).collect()
}

const SHAPES: &[(usize, usize, usize)] = &[
    // (m, k, n)
    (1, 1, 1),
    (1, 768, 768),
    (3, 17, 5),
    (12, 64, 32),
    (13, 33, 31),
    (25, 100, 65),
    (145, 19, 97),
    (7, 1100, 40),
    (300, 768, 96),
];

#[test]
fn kernels_match_the_reference_on_awkward_shapes() {
    for kernel in kernels() {
        for &(m, k, n) in SHAPES {
            let x = values(m * k, (m * 31 + k) as u64);
            let w = values(n * k, (n * 17 + k) as u64);
            let bias = values(n, n as u64);
            for packed in PackedWeight::in_every_storage(&w, n, k, kernel) {
                // The AMX bf16 kernel multiplies activations rounded to bf16: so does its reference.
                let mut x = x.clone();
                if packed.storage_name() == "bf16 tiles" {
                    x.iter_mut()
                        .for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
                }
                for bias in [None, Some(bias.as_slice())] {
                    let mut expected = vec![0.0; m * n];
                    reference(&x, m, &packed, bias, &mut expected);
                    let mut got = vec![f32::NAN; m * n];
                    matmul(kernel, &x, m, &packed, bias, &mut got);
                    let worst = expected
                        .iter()
                        .zip(&got)
                        .map(|(e, g)| (e - g).abs())
                        .fold(0f32, f32::max);
                    // f32 sums of k products of magnitude <= 1: rounding grows with k.
                    let tolerance = 1e-6 * (k as f32).max(16.0);
                    assert!(
                        worst <= tolerance,
                        "{kernel} {} m={m} k={k} n={n} bias={}: max error {worst}",
                        packed.storage_name(),
                        bias.is_some()
                    );
                }
            }
        }
    }
}

#[test]
fn packing_keeps_every_weight() {
    let (n, k) = (37, 5);
    // bf16 values, which every storage holds exactly.
    let w: Vec<f32> = values(n * k, 3)
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    for kernel in [MatmulKernel::Avx512, MatmulKernel::Amx] {
        for packed in PackedWeight::in_every_storage(&w, n, k, kernel) {
            for row in 0..n {
                for col in 0..k {
                    assert_eq!(
                        packed.get(row, col),
                        w[row * k + col],
                        "{}",
                        packed.storage_name()
                    );
                }
            }
        }
    }
    assert_eq!(
        PackedWeight::from_f32(&w, n, k).bytes(),
        n.div_ceil(NR) * NR * k * 4
    );
}

#[test]
fn empty_inner_dimension_gives_the_bias() {
    let packed = PackedWeight::from_f32(&[], 3, 0);
    let mut y = vec![f32::NAN; 6];
    matmul(
        MatmulKernel::best(CpuFeatures::detect()),
        &[],
        2,
        &packed,
        Some(&[1.0, 2.0, 3.0]),
        &mut y,
    );
    assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
}

#[test]
fn tasks_cover_the_output_once() {
    for (m, panels) in [(1, 1), (1, 24), (144, 3), (145, 3), (2048, 96), (5, 100)] {
        for tile_rows in [MR, 32] {
            let mut seen = vec![0u8; m * panels];
            for task in plan_tasks(m, panels, tile_rows) {
                assert_eq!(
                    task.rows.start % tile_rows,
                    0,
                    "a block starts inside a tile"
                );
                for r in task.rows.clone() {
                    for p in task.panels.clone() {
                        seen[r * panels + p] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "m={m} panels={panels}");
        }
    }
}

/// int8: every kernel gives the very same values (the integer sums are exact and the store is the
/// same fused multiply-add), and they differ from the f64 product over the dequantized weights by no
/// more than the activations' rounding allows: half a quantization step per input, times |w|.
#[test]
fn int8_kernels_agree_and_stay_within_the_activation_rounding() {
    for &(m, k, n) in SHAPES {
        // Shifted so that rows are not symmetric around zero (the zero point matters).
        let x: Vec<f32> = values(m * k, (m * 7 + k) as u64)
            .iter()
            .map(|v| 2.0 * v + 0.5)
            .collect();
        let w = values(n * k, (n * 5 + k) as u64);
        let bias = values(n, 11);
        let packed = PackedWeight::quantize_int8(&w, n, k);
        let mut expected = vec![0.0; m * n];
        reference(&x, m, &packed, Some(&bias), &mut expected);
        let mut portable = vec![f32::NAN; m * n];
        matmul(
            MatmulKernel::Candle,
            &x,
            m,
            &packed,
            Some(&bias),
            &mut portable,
        );
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            let high = row.iter().fold(0f32, |a, &v| a.max(v));
            let low = row.iter().fold(0f32, |a, &v| a.min(v));
            let step = (high - low) / 255.0;
            for j in 0..n {
                let weight_sum: f32 = (0..k).map(|p| packed.get(j, p).abs()).sum();
                let bound = 0.5 * step * weight_sum * 1.001 + 1e-5;
                let error = (portable[i * n + j] - expected[i * n + j]).abs();
                assert!(
                    error <= bound,
                    "m={m} k={k} n={n} ({i}, {j}): error {error} > bound {bound}"
                );
            }
        }
        for kernel in kernels() {
            let mut got = vec![f32::NAN; m * n];
            matmul(kernel, &x, m, &packed, Some(&bias), &mut got);
            assert_eq!(
                got, portable,
                "{kernel} int8 differs from the portable loop"
            );
        }
    }
}

#[test]
fn int8_quantization_keeps_each_channel_within_half_a_step() {
    let (n, k) = (37, 9);
    let mut w = values(n * k, 4);
    w[5 * k..6 * k].fill(0.0); // an all-zero channel
    let packed = PackedWeight::quantize_int8(&w, n, k);
    for row in 0..n {
        let max = w[row * k..(row + 1) * k]
            .iter()
            .fold(0f32, |a, v| a.max(v.abs()));
        for col in 0..k {
            let error = (packed.get(row, col) - w[row * k + col]).abs();
            assert!(error <= max / 254.0 * 1.0001, "({row}, {col}): {error}");
        }
    }
    assert_eq!(packed.storage_name(), "int8");
}

#[test]
fn round_small_rounds_half_to_even_like_the_vector_conversion() {
    for x in [
        0.5f32, 1.5, 2.5, -0.5, -1.5, 126.5, 127.49, -127.5, 254.5, 0.0, -0.0, 3.7, -3.7,
    ] {
        assert_eq!(int8::round_small(x), x.round_ties_even(), "{x}");
    }
    for v in values(10_000, 9) {
        let x = v * 300.0;
        assert_eq!(int8::round_small(x), x.round_ties_even(), "{x}");
    }
}
