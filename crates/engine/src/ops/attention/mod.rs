//! Attention over a packed batch: one entry point for every family at inference. The q, k and v of
//! all sequences sit side by side in one (tokens x width) matrix, as the stacked projection writes
//! them; each sequence attends only to itself (bidirectional or causal), with grouped kv heads.
//!
//! With our kernels, each (sequence, head) is one task: its keys and values are packed once into
//! panels, then query blocks of `QUERY_BLOCK` rows go through scores = q K^T (the GEMM kernel),
//! softmax (vectorized exp), and context = P V. Only a block's strip of scores is held
//! (QUERY_BLOCK x length), so memory grows linearly with the sequence, not with its square: a
//! two-pass softmax over the strip in place of flash attention's running rescale, which gives the
//! same bound without rescaling the output for every key block. Elsewhere candle computes each
//! sequence's attention with matmuls. Training takes `padded`: the same attention from
//! differentiable ops on a padded grid.

mod padded;

pub use padded::{padded_attention, Dropout, PaddedLayout};

use candle_core::{Result, Tensor};

use super::Numerics;

/// How the heads sit in the rows of the packed q/k/v matrix: q heads, then k heads, then v heads.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    /// Fewer than `heads` for grouped-query attention (each kv head serves heads / kv_heads).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Each position sees only itself and earlier ones (decoders).
    pub causal: bool,
}

impl Heads {
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Columns of the packed q/k/v matrix.
    pub fn width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }
}

/// Query rows per block (a multiple of the GEMM tile's 12 rows).
const QUERY_BLOCK: usize = 96;

/// Softmax attention of every sequence of `qkv` (tokens x `heads.width()`), sequences laid end to
/// end with lengths `seq_lens`: the context, (tokens x heads * head_dim).
pub fn packed_attention(
    qkv: &Tensor,
    seq_lens: &[usize],
    heads: Heads,
    numerics: Numerics,
) -> Result<Tensor> {
    let (tokens, width) = qkv.dims2()?;
    if width != heads.width() || seq_lens.iter().sum::<usize>() != tokens {
        candle_core::bail!("attention: a {tokens} x {width} q/k/v matrix does not match {heads:?}");
    }
    if heads.kv_heads == 0 || !heads.heads.is_multiple_of(heads.kv_heads) {
        candle_core::bail!(
            "attention: {} heads cannot share {} kv heads",
            heads.heads,
            heads.kv_heads
        );
    }
    match numerics.kernel {
        #[cfg(target_arch = "x86_64")]
        kernel if kernel.packs_weights() && !qkv.track_op() => {
            kernel::attention(qkv, seq_lens, heads, numerics)
        }
        _ => numerics.round(per_sequence(qkv, seq_lens, heads, numerics)?),
    }
}

/// candle's matmuls, one sequence at a time (the fallback).
fn per_sequence(qkv: &Tensor, seq_lens: &[usize], h: Heads, numerics: Numerics) -> Result<Tensor> {
    let (q_width, kv_width) = (h.q_width(), h.kv_width());
    let scale = 1.0 / (h.head_dim as f64).sqrt();
    let group = h.heads / h.kv_heads;
    let mut contexts = Vec::with_capacity(seq_lens.len());
    let mut start = 0;
    for &len in seq_lens {
        let split = |offset: usize, width: usize, count: usize| -> Result<Tensor> {
            qkv.narrow(0, start, len)?
                .narrow(1, offset, width)?
                .reshape((len, count, h.head_dim))?
                .transpose(0, 1)?
                .contiguous()
        };
        let q = split(0, q_width, h.heads)?;
        let k = repeat_kv(split(q_width, kv_width, h.kv_heads)?, group)?;
        let v = repeat_kv(split(q_width + kv_width, kv_width, h.kv_heads)?, group)?;
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if h.causal {
            scores = scores.broadcast_add(&causal_mask(len, qkv.device())?)?;
        }
        let probs = numerics.round(candle_nn::ops::softmax_last_dim(&scores)?)?;
        let context = probs.matmul(&v)?;
        contexts.push(context.transpose(0, 1)?.reshape((len, q_width))?);
        start += len;
    }
    Tensor::cat(&contexts, 0)
}

/// (kv_heads, len, d) -> (kv_heads * group, len, d), each kv head serving `group` query heads.
fn repeat_kv(x: Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x);
    }
    let (heads, len, d) = x.dims3()?;
    x.unsqueeze(1)?
        .expand((heads, group, len, d))?
        .reshape((heads * group, len, d))
}

/// (len, len): 0 on and below the diagonal, -inf above.
pub fn causal_mask(len: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (len, len), device)
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use rayon::prelude::*;

    use super::*;
    use crate::ops::cpu::MatmulKernel;
    use crate::ops::gemm::{
        pack_bf16_tiles_with, pack_f32_with, product_strided, OutPtr, PackedWeight,
    };
    use crate::ops::{simd, with_f32_values};
    use candle_core::DType;

    /// The context, rounded to the numerics' grid. In bf16 on the AMX kernel, both products run on
    /// bf16 tiles as PyTorch's bf16 attention does: q, k and v are on the bf16 grid already (the
    /// projection's output), and the probabilities are rounded to bf16 before they meet v.
    pub(super) fn attention(
        qkv: &Tensor,
        seq_lens: &[usize],
        h: Heads,
        numerics: Numerics,
    ) -> Result<Tensor> {
        let tokens = qkv.dim(0)?;
        let out_width = h.q_width();
        let tiles = numerics.kernel == MatmulKernel::Amx && numerics.round_to == Some(DType::BF16);
        let mut out = vec![0f32; tokens * out_width];
        with_f32_values(qkv, |data| {
            let mut starts = Vec::with_capacity(seq_lens.len());
            let mut start = 0;
            for &len in seq_lens {
                starts.push((start, len));
                start += len;
            }
            let tasks: Vec<(usize, usize, usize)> = starts
                .iter()
                .flat_map(|&(start, len)| (0..h.heads).map(move |head| (start, len, head)))
                .collect();
            let out_ptr = OutPtr(out.as_mut_ptr());
            tasks.par_iter().for_each(|&(start, len, head)| {
                // SAFETY: tasks write disjoint blocks of `out` (own rows, own head's columns).
                unsafe { one_head(data, (start, len, head), h, tiles, out_ptr.get(), out_width) }
            });
        })?;
        numerics.round_slice(&mut out);
        Tensor::from_vec(out, (tokens, out_width), qkv.device())
    }

    /// The (n x k) matrix of `value(row, col)` in the panels the product runs on.
    fn pack(tiles: bool, n: usize, k: usize, value: impl Fn(usize, usize) -> f32) -> PackedWeight {
        match tiles {
            true => pack_bf16_tiles_with(n, k, value),
            false => pack_f32_with(n, k, value),
        }
    }

    /// Attention of one head of one sequence (rows start..start+len of the packed matrix), on bf16
    /// tiles or f32 panels.
    ///
    /// # Safety
    /// `out` must be a (tokens x out_width) buffer of which no other thread writes these rows of
    /// this head's columns.
    unsafe fn one_head(
        qkv: &[f32],
        (start, len, head): (usize, usize, usize),
        h: Heads,
        tiles: bool,
        out: *mut f32,
        out_width: usize,
    ) {
        let (d, width) = (h.head_dim, h.width());
        let kv_head = head / (h.heads / h.kv_heads);
        let k_col = h.q_width() + kv_head * d;
        let v_col = h.q_width() + h.kv_width() + kv_head * d;
        let row = |t: usize| &qkv[(start + t) * width..(start + t + 1) * width];
        // Keys as a weight matrix of `len` outputs over d inputs; values of d outputs over len.
        let keys = pack(tiles, len, d, |j, p| row(j)[k_col + p]);
        let values = pack(tiles, d, len, |c, j| row(j)[v_col + c]);
        let scale = 1.0 / (d as f32).sqrt();
        let mut scores = vec![0f32; QUERY_BLOCK.min(len) * len];
        for first in (0..len).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(len - first);
            let seen = if h.causal { first + rows } else { len };
            let q = qkv[(start + first) * width + head * d..].as_ptr();
            // SAFETY: q holds `rows` rows of d values `width` apart; scores holds rows x seen.
            unsafe {
                product_strided(
                    q,
                    width,
                    rows,
                    &keys,
                    d,
                    seen,
                    scores.as_mut_ptr(),
                    seen,
                    true,
                );
            }
            for (i, strip) in scores.chunks_exact_mut(seen).take(rows).enumerate() {
                if h.causal {
                    strip[first + i + 1..].fill(f32::NEG_INFINITY);
                }
                simd::softmax_scaled(strip, scale);
            }
            let context = out.add((start + first) * out_width + head * d);
            // SAFETY: scores holds rows x seen; `context` rows are this task's own.
            unsafe {
                product_strided(
                    scores.as_ptr(),
                    seen,
                    rows,
                    &values,
                    seen,
                    d,
                    context,
                    out_width,
                    false,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::{CpuFeatures, MatmulKernel};
    use candle_core::Device;

    fn numerics(kernel: MatmulKernel, round_to: Option<candle_core::DType>) -> Numerics {
        Numerics {
            kernel,
            round_to,
            ..Numerics::default()
        }
    }

    /// Shapes that hit the edges: (sequence lengths, heads, kv heads, head dim, causal).
    type Case = (Vec<usize>, usize, usize, usize, bool);

    /// The largest difference between the contexts of candle's attention and `kernel`'s, in the
    /// same precision, on inputs made by `value` (of an index).
    fn largest_difference(
        (lens, heads, kv_heads, head_dim, causal): &Case,
        kernel: MatmulKernel,
        round_to: Option<candle_core::DType>,
        value: impl Fn(usize) -> f32,
    ) -> f32 {
        let h = Heads {
            heads: *heads,
            kv_heads: *kv_heads,
            head_dim: *head_dim,
            causal: *causal,
        };
        let tokens: usize = lens.iter().sum();
        let values: Vec<f32> = (0..tokens * h.width()).map(value).collect();
        let qkv = Tensor::from_vec(values, (tokens, h.width()), &Device::Cpu).unwrap();
        let expected =
            packed_attention(&qkv, lens, h, numerics(MatmulKernel::Candle, round_to)).unwrap();
        let got = packed_attention(&qkv, lens, h, numerics(kernel, round_to)).unwrap();
        (expected - got)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn spread(i: usize) -> f32 {
        (((i * 7919) % 1000) as f32 / 500.0) - 1.0
    }

    #[test]
    fn kernel_matches_candle_on_awkward_shapes() {
        if !MatmulKernel::Avx512.supported(CpuFeatures::detect()) {
            eprintln!(
                "skipping: this CPU lacks AVX-512F (it has: {})",
                CpuFeatures::detect()
            );
            return;
        }
        let cases: [Case; 4] = [
            (vec![1], 1, 1, 8, false),
            (vec![3, 130, 7], 4, 4, 16, false),
            (vec![97, 1, 200], 4, 1, 24, true),
            (vec![5, 64], 6, 2, 64, true),
        ];
        for case in cases {
            let diff = largest_difference(&case, MatmulKernel::Avx512, None, spread);
            assert!(diff < 2e-6, "{case:?}: max difference {diff}");
        }
    }

    /// bf16 on AMX tiles against candle's bf16 (which rounds the probabilities to bf16 too), on
    /// inputs on the bf16 grid: the products differ only in the order of their f32 sums, so the
    /// contexts (rounded to bf16) agree within a bf16 step.
    #[test]
    fn bf16_tiles_match_candle_in_bf16() {
        if !MatmulKernel::Amx.supported(CpuFeatures::detect()) {
            eprintln!("skipping: no AMX here (it has: {})", CpuFeatures::detect());
            return;
        }
        let cases: [Case; 3] = [
            (vec![1], 1, 1, 64, false),
            (vec![3, 130, 7], 4, 4, 64, false),
            (vec![97, 1, 200], 4, 1, 80, true),
        ];
        let on_grid = |i| half::bf16::from_f32(spread(i)).to_f32();
        for case in cases {
            let bf16 = Some(candle_core::DType::BF16);
            let diff = largest_difference(&case, MatmulKernel::Amx, bf16, on_grid);
            assert!(diff <= 1.0 / 128.0, "{case:?}: max difference {diff}");
        }
    }
}
