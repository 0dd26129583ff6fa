//! What this CPU offers, read once at run time, and which matrix kernel that makes us use.
//!
//! The machines this runs on differ (Intel Xeons with AMX, AMD Zen 4 without, laptops with AVX2 only),
//! so nothing is decided at compile time: the binary carries every kernel and picks one here.
//! `BGE_RERANK_KERNEL` forces a choice (`candle`, `avx512`, `amx`), which is how tests reach every path
//! the machine has.

use std::fmt;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The instruction-set extensions the kernels care about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2_fma: bool,
    pub avx512f: bool,
    pub avx512_bf16: bool,
    pub avx512_vnni: bool,
    /// AMX tiles with bf16 and int8: the CPU has them (CPUID leaf 7) and Linux lets this process
    /// use them (the tile data state is off until a process asks for it; see `os_grants_amx`).
    pub amx_bf16: bool,
    pub amx_int8: bool,
}

impl CpuFeatures {
    pub fn detect() -> &'static CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        FEATURES.get_or_init(Self::read)
    }

    #[cfg(target_arch = "x86_64")]
    fn read() -> CpuFeatures {
        // AMX has no `is_x86_feature_detected!` name on stable Rust: read CPUID leaf 7 directly.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let amx_tile = leaf7.edx & (1 << 24) != 0 && os_grants_amx();
        CpuFeatures {
            avx2_fma: is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            avx512f: is_x86_feature_detected!("avx512f"),
            avx512_bf16: is_x86_feature_detected!("avx512bf16"),
            avx512_vnni: is_x86_feature_detected!("avx512vnni"),
            amx_bf16: amx_tile && leaf7.edx & (1 << 22) != 0,
            amx_int8: amx_tile && leaf7.edx & (1 << 25) != 0,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn read() -> CpuFeatures {
        CpuFeatures::default()
    }
}

/// Asks Linux for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`):
/// its 8 KB are not saved on context switches unless a process asks, and a tile instruction without
/// the permission is killed with SIGILL. The permission holds for every thread of the process. Asked
/// once, when the features are first read, and only where CPUID says the tiles exist.
#[cfg(target_os = "linux")]
fn os_grants_amx() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it changes only this process's
    // permission to use the tile state.
    let status = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    status == 0
}

#[cfg(not(target_os = "linux"))]
fn os_grants_amx() -> bool {
    false
}

impl fmt::Display for CpuFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.avx2_fma, "avx2+fma"),
            (self.avx512f, "avx512f"),
            (self.avx512_bf16, "avx512_bf16"),
            (self.avx512_vnni, "avx512_vnni"),
            (self.amx_bf16, "amx_bf16"),
            (self.amx_int8, "amx_int8"),
        ];
        let present: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if present.is_empty() {
            f.write_str("no vector extensions used by bge-rerank")
        } else {
            f.write_str(&present.join(" "))
        }
    }
}

/// Which code multiplies activations by weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKernel {
    /// candle's matmul (the `gemm` crate: AVX2 or AVX-512 by its own dispatch) on f32 weights;
    /// the fallback for every CPU and the path of training, which needs autograd.
    Candle,
    /// Our AVX-512 FMA kernel on weights packed at load into panels, stored as f32, bf16 or f16
    /// and widened to f32 a cache block at a time; int8 weights on AVX-512 VNNI where present.
    Avx512,
    /// AMX tiles: bf16 weights by `TDPBF16PS` (activations rounded to bf16, as PyTorch's bf16
    /// models have them), int8 weights by `TDPBUSD`; f32 and f16 weights as `Avx512`.
    Amx,
}

impl MatmulKernel {
    pub const ENV: &'static str = "BGE_RERANK_KERNEL";

    pub fn name(self) -> &'static str {
        match self {
            Self::Candle => "candle",
            Self::Avx512 => "avx512",
            Self::Amx => "amx",
        }
    }

    /// Whether the kernel multiplies weights packed at load (ours), rather than candle tensors.
    pub fn packs_weights(self) -> bool {
        matches!(self, Self::Avx512 | Self::Amx)
    }

    /// Can this CPU run the kernel?
    pub fn supported(self, cpu: &CpuFeatures) -> bool {
        match self {
            Self::Candle => true,
            Self::Avx512 => cpu.avx512f,
            Self::Amx => cpu.avx512f && cpu.amx_bf16 && cpu.amx_int8,
        }
    }

    /// The fastest kernel this CPU has.
    pub fn best(cpu: &CpuFeatures) -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|kernel| kernel.supported(cpu))
            .unwrap_or(Self::Candle)
    }

    /// The kernel to use: `BGE_RERANK_KERNEL` if set (and runnable here), else the best one.
    pub fn select() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(name) if !name.is_empty() && name != "auto" => Self::from_name(&name)
                .and_then(Self::require_supported)
                .map_err(|e| Error::InvalidOption(format!("{}: {e}", Self::ENV))),
            _ => Ok(Self::best(CpuFeatures::detect())),
        }
    }

    /// This kernel, or an error saying the CPU lacks it.
    pub fn require_supported(self) -> Result<Self> {
        let cpu = CpuFeatures::detect();
        match self.supported(cpu) {
            true => Ok(self),
            false => Err(Error::InvalidOption(format!(
                "this CPU cannot run the {self} kernel (it has: {cpu})"
            ))),
        }
    }

    /// Every kernel, best last.
    pub const ALL: [MatmulKernel; 3] = [Self::Candle, Self::Avx512, Self::Amx];

    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "candle" => Ok(Self::Candle),
            "avx512" => Ok(Self::Avx512),
            "amx" => Ok(Self::Amx),
            other => Err(Error::InvalidOption(format!(
                "unknown matmul kernel `{other}` (expected auto, candle, avx512 or amx)"
            ))),
        }
    }
}

impl fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
