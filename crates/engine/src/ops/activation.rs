//! Activation functions, as config.json's `hidden_act` names them.

use std::mem::MaybeUninit;

use candle_core::{DType, Module, Result, Tensor};
use rayon::prelude::*;

use super::trainable::GeluErf;
use super::{map_f32, simd, with_f32_values, Numerics};

/// config.json `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU, what transformers calls "gelu".
    Gelu,
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    Relu,
    #[serde(alias = "swish")]
    Silu,
}

impl Activation {
    /// The activation on plain values in place, where we have one that computes what the tensor
    /// form does (`None`: use `forward`).
    pub fn in_place(&self) -> Option<fn(&mut [f32])> {
        match self {
            Activation::Gelu => Some(simd::gelu_erf),
            Activation::GeluNew => Some(simd::gelu_tanh),
            Activation::Silu => Some(simd::silu),
            Activation::Relu => None,
        }
    }

    /// The gated MLP's hidden state: `activation(gate) * up` for rows of `gate_up` holding gate then
    /// up (`width` values each, as the stacked projection writes them), rounded to the numerics'
    /// grid; one pass per row where we have the activation, candle's ops elsewhere (training).
    pub fn gated(&self, gate_up: &Tensor, width: usize, numerics: Numerics) -> Result<Tensor> {
        let (rows, cols) = gate_up.dims2()?;
        let fast = self.in_place().filter(|_| {
            gate_up.dtype() == DType::F32 && gate_up.device().is_cpu() && !gate_up.track_op()
        });
        let Some(apply) = fast.filter(|_| cols == 2 * width) else {
            let gate = self.forward(&gate_up.narrow(1, 0, width)?)?;
            return numerics.round((gate * gate_up.narrow(1, width, width)?)?);
        };
        let mut out: Vec<f32> = Vec::with_capacity(rows * width);
        with_f32_values(gate_up, |values| {
            let per_task = (1 << 16) / width.max(1) + 1;
            out.spare_capacity_mut()[..rows * width]
                .par_chunks_mut(per_task * width)
                .zip(values.par_chunks(per_task * cols))
                .for_each(|(out, rows)| {
                    for (out, row) in out.chunks_exact_mut(width).zip(rows.chunks_exact(cols)) {
                        let (gate, up) = row.split_at(width);
                        for (o, &g) in out.iter_mut().zip(gate) {
                            o.write(g);
                        }
                        // SAFETY: every value of the row was just written.
                        let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
                        apply(out);
                        out.iter_mut().zip(up).for_each(|(o, u)| *o *= u);
                        numerics.round_slice(out);
                    }
                })
        })?;
        // SAFETY: the rows cover all rows * width values.
        unsafe { out.set_len(rows * width) };
        Tensor::from_vec(out, (rows, width), gate_up.device())
    }
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(apply) = self.in_place() {
            if let Some(y) = map_f32(x, apply)? {
                return Ok(y);
            }
        }
        let plain_f32 = x.dtype() == DType::F32 && x.device().is_cpu();
        match self {
            // Training: one pass each way instead of candle's composite backward.
            Activation::Gelu if plain_f32 => x.contiguous()?.apply_op1(GeluErf),
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluNew => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}
