//! Measures what the kernels reach on the models' real matrix shapes, beside what the machine can
//! reach at all (a register-only loop of the kernel's instruction on every thread): the numbers behind
//! `bge-rerank bench --kernels`.

use std::time::Instant;

use candle_core::{Device, Tensor};

use super::cpu::{CpuFeatures, MatmulKernel};
use super::gemm::{self, int8, PackedWeight};

/// One GEMM shape: `m` rows of activations times a (k -> n) weight matrix.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl Shape {
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// The shapes of the five models' linear layers at a batch of `m` tokens: the encoders' 768-wide
/// (base) attention and MLP, and Gemma's 2048-wide attention and 16384-wide MLP.
pub fn model_shapes(m: usize) -> Vec<(&'static str, Shape)> {
    vec![
        ("encoder attention 768x768", Shape { m, k: 768, n: 768 }),
        ("encoder MLP up 768x3072", Shape { m, k: 768, n: 3072 }),
        ("encoder MLP down 3072x768", Shape { m, k: 3072, n: 768 }),
        (
            "gemma attention 2048x2048",
            Shape {
                m,
                k: 2048,
                n: 2048,
            },
        ),
        (
            "gemma MLP up 2048x16384",
            Shape {
                m,
                k: 2048,
                n: 16384,
            },
        ),
    ]
}

/// The instruction a kernel's inner loop is built on: what its speed is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// VFMADD231PS zmm (f32, bf16 and f16 panels, widened to f32).
    Fma512,
    /// VDPBF16PS zmm.
    DotBf16,
    /// VPDPBUSD zmm (int8).
    DotU8S8,
    /// TDPBF16PS on AMX tiles.
    TileBf16,
    /// TDPBUSD on AMX tiles (int8).
    TileU8S8,
    /// VFMADD231PS ymm.
    Fma256,
}

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub path: String,
    /// GFLOP/s (GOP/s for int8).
    pub gflops: f64,
    /// The instruction whose peak bounds it (`None`: candle's, or a portable loop).
    pub instruction: Option<Instruction>,
}

/// GFLOP/s (GOP/s for int8) of every matmul path this CPU has on `shape` (best of `repeat` runs):
/// candle's f32 matmul, our kernels on f32, bf16 and f16 panels, and the int8 product (VNNI or the
/// portable loop; activations quantized inside the timing, as in a model).
pub fn measure_shape(shape: Shape, repeat: usize) -> candle_core::Result<Vec<Measurement>> {
    let Shape { m, k, n } = shape;
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i % 97) as f32 - 48.0) / 64.0)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i % 89) as f32 - 44.0) / 64.0)
        .collect();
    let best = |f: &mut dyn FnMut()| -> f64 {
        f(); // warm-up: page faults and first-touch
        let mut fastest = f64::INFINITY;
        for _ in 0..repeat.max(1) {
            let start = Instant::now();
            f();
            fastest = fastest.min(start.elapsed().as_secs_f64());
        }
        shape.flops() / fastest / 1e9
    };
    let mut found = Vec::new();
    let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu)?;
    let wt = Tensor::from_slice(&w, (n, k), &Device::Cpu)?.t()?;
    let mut failure = None;
    let gflops = best(&mut || {
        if let Err(e) = xt.matmul(&wt) {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    found.push(Measurement {
        path: "candle f32".into(),
        gflops,
        instruction: None,
    });
    let cpu = CpuFeatures::detect();
    let mut y = vec![0f32; m * n];
    if MatmulKernel::Avx512.supported(cpu) {
        for packed in &PackedWeight::in_every_storage(&w, n, k, MatmulKernel::Avx512) {
            let gflops =
                best(&mut || gemm::matmul(MatmulKernel::Avx512, &x, m, packed, None, &mut y));
            found.push(Measurement {
                path: format!("avx512 {} weights", packed.storage_name()),
                gflops,
                instruction: Some(Instruction::Fma512),
            });
        }
    }
    if MatmulKernel::Amx.supported(cpu) {
        let [_, bf16, _] = PackedWeight::in_every_storage(&w, n, k, MatmulKernel::Amx);
        let gflops = best(&mut || gemm::matmul(MatmulKernel::Amx, &x, m, &bf16, None, &mut y));
        found.push(Measurement {
            path: "amx bf16 weights (activations rounded to bf16)".into(),
            gflops,
            instruction: Some(Instruction::TileBf16),
        });
    }
    // int8 on every path this CPU has: portable, VNNI, AMX.
    let int8 = PackedWeight::quantize_int8(&w, n, k);
    let mut paths: Vec<(MatmulKernel, int8::Path)> = Vec::new();
    for kernel in MatmulKernel::ALL {
        let path = int8::Path::of(kernel);
        if kernel.supported(cpu) && !paths.iter().any(|(_, p)| *p == path) {
            paths.push((kernel, path));
        }
    }
    for (kernel, path) in paths {
        let gflops = best(&mut || gemm::matmul(kernel, &x, m, &int8, None, &mut y));
        found.push(Measurement {
            path: format!("int8 weights on {}", path.describe()),
            gflops,
            instruction: match path {
                int8::Path::Portable => None,
                int8::Path::Vnni => Some(Instruction::DotU8S8),
                int8::Path::Amx => Some(Instruction::TileU8S8),
            },
        });
    }
    Ok(found)
}

/// The machine's peak for each instruction the kernels use, every thread of rayon's pool running a
/// register-only loop of it.
pub fn peaks() -> Vec<Measurement> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = CpuFeatures::detect();
        if cpu.avx512f {
            found.push(Measurement {
                path: "AVX-512 f32 FMA (VFMADD231PS zmm)".into(),
                gflops: on_all_threads(|| unsafe { x86::fma512() }),
                instruction: Some(Instruction::Fma512),
            });
        }
        if cpu.avx512_bf16 {
            found.push(Measurement {
                path: "AVX-512 bf16 dot (VDPBF16PS zmm)".into(),
                gflops: on_all_threads(|| unsafe { x86::dpbf16() }),
                instruction: Some(Instruction::DotBf16),
            });
        }
        if cpu.avx512_vnni {
            found.push(Measurement {
                path: "AVX-512 int8 dot (VPDPBUSD zmm), GOP/s".into(),
                gflops: on_all_threads(|| unsafe { x86::dpbusd() }),
                instruction: Some(Instruction::DotU8S8),
            });
        }
        if cpu.amx_bf16 {
            found.push(Measurement {
                path: "AMX bf16 tiles (TDPBF16PS)".into(),
                gflops: on_all_threads(|| unsafe { x86::tiles(x86::TileInstruction::Bf16) }),
                instruction: Some(Instruction::TileBf16),
            });
        }
        if cpu.amx_int8 {
            found.push(Measurement {
                path: "AMX int8 tiles (TDPBUSD), GOP/s".into(),
                gflops: on_all_threads(|| unsafe { x86::tiles(x86::TileInstruction::U8S8) }),
                instruction: Some(Instruction::TileU8S8),
            });
        }
        if cpu.avx2_fma {
            found.push(Measurement {
                path: "AVX2 f32 FMA (VFMADD231PS ymm)".into(),
                gflops: on_all_threads(|| unsafe { x86::fma256() }),
                instruction: Some(Instruction::Fma256),
            });
        }
    }
    found
}

/// Runs `probe` (returning flops done) on every thread at once; GFLOP/s of them all together, the
/// best of three tries (shared machines are noisy; the peak is what the hardware can do).
fn on_all_threads(probe: impl Fn() -> f64 + Sync) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            let flops: f64 = rayon::broadcast(|_| probe()).into_iter().sum();
            flops / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// About 0.1 s per thread and try.
    const ITERATIONS: usize = 240_000_000;

    /// 12 independent FMA chains (enough to cover the latency on two ports).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512() -> f64 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..ITERATIONS / 12 {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v));
        std::hint::black_box(sum);
        (ITERATIONS / 12 * 12 * 32) as f64
    }

    /// 12 independent VDPBF16PS chains: 32 multiply-adds (64 flops) each.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16() -> f64 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
        let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(2e-3));
        for _ in 0..ITERATIONS / 12 {
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v));
        std::hint::black_box(sum);
        (ITERATIONS / 12 * 12 * 64) as f64
    }

    /// 12 independent VPDPBUSD chains: 64 multiply-adds (128 integer ops) each.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn dpbusd() -> f64 {
        let mut acc = [_mm512_setzero_si512(); 12];
        let (a, b) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
        for _ in 0..ITERATIONS / 12 {
            for v in acc.iter_mut() {
                *v = _mm512_dpbusd_epi32(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_si512(), |s, v| _mm512_add_epi32(s, *v));
        std::hint::black_box(sum);
        (ITERATIONS / 12 * 12 * 128) as f64
    }

    pub enum TileInstruction {
        Bf16,
        U8S8,
    }

    /// Four independent tile multiply-adds per round on registers only (tiles zero: the values do not
    /// change the speed), as the kernels' 2 x 2 blocks issue them.
    ///
    /// # Safety
    /// The CPU must have AMX (bf16 and int8) with the OS's permission.
    pub unsafe fn tiles(instruction: TileInstruction) -> f64 {
        const ROUNDS: usize = 1_000_000;
        let _tiles = unsafe { crate::ops::gemm::Tiles::configure() };
        for _ in 0..ROUNDS {
            // SAFETY: the tiles are configured on this thread.
            unsafe {
                match instruction {
                    TileInstruction::Bf16 => std::arch::asm!(
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        options(nostack, nomem)
                    ),
                    TileInstruction::U8S8 => std::arch::asm!(
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tdpbusd tmm1, tmm4, tmm7",
                        "tdpbusd tmm2, tmm5, tmm6",
                        "tdpbusd tmm3, tmm5, tmm7",
                        options(nostack, nomem)
                    ),
                }
            }
        }
        // 16 x 16 sums of 32 (bf16) or 64 (int8) products, two operations each, four per round.
        let depth = match instruction {
            TileInstruction::Bf16 => 32,
            TileInstruction::U8S8 => 64,
        };
        (ROUNDS * 4 * 16 * 16 * depth * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256() -> f64 {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..ITERATIONS / 12 {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
        std::hint::black_box(sum);
        (ITERATIONS / 12 * 12 * 16) as f64
    }
}
