//! The decoder stack Gemma and MiniCPM share (Llama-style: RMSNorm, RoPE, causal grouped-query
//! attention, gated MLP), run packed like the encoders: dense layers over all real tokens of a batch,
//! attention per sequence with positions 0..n-1. The families differ only in the constants below and in
//! their score heads, which read the final (normed) state of each sequence's last token.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use super::attention::{causal_mask, padded_attention, PaddedLayout};
use super::layers::{check_input, split_heads, Activation, Dense, Numerics};
use crate::error::{Error, Result};
use crate::input::ModelInput;

/// What distinguishes one Llama-like family from another.
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    /// Gemma's RMSNorm multiplies by (1 + weight); Llama/MiniCPM by weight.
    pub norm_weight_offset: f64,
    /// Embeddings are multiplied by this (Gemma: sqrt(hidden); MiniCPM: scale_emb).
    pub embedding_scale: f64,
    /// Each residual branch is multiplied by this (MiniCPM: scale_depth / sqrt(layers); else 1).
    pub residual_scale: f64,
}

impl DecoderSpec {
    /// Width of the query projection (all heads).
    fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the key and of the value projection.
    fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

/// RMSNorm computed in f32: x / sqrt(mean(x^2) + eps) * (offset + weight).
struct RmsNorm {
    weight: Tensor,
    eps: f64,
    numerics: Numerics,
}

impl RmsNorm {
    fn load(vb: VarBuilder, spec: &DecoderSpec, numerics: Numerics) -> candle_core::Result<Self> {
        let weight = numerics.weight(&vb, &[spec.hidden_size], "weight")?;
        let weight = numerics.round((weight + spec.norm_weight_offset)?)?;
        Ok(Self {
            weight,
            eps: spec.rms_norm_eps,
            numerics,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = self
            .numerics
            .round(x.broadcast_div(&(variance + self.eps)?.sqrt()?)?)?;
        self.numerics.round(normed.broadcast_mul(&self.weight)?)
    }
}

struct DecoderLayer {
    input_norm: RmsNorm,
    qkv: Dense,
    o_proj: Dense,
    post_attention_norm: RmsNorm,
    gate_up: Dense,
    down: Dense,
}

impl DecoderLayer {
    fn load(vb: VarBuilder, spec: &DecoderSpec, numerics: Numerics) -> candle_core::Result<Self> {
        let h = spec.hidden_size;
        let attn = vb.pp("self_attn");
        let q = Dense::load(attn.pp("q_proj"), h, spec.q_dim(), false, numerics)?;
        let k = Dense::load(attn.pp("k_proj"), h, spec.kv_dim(), false, numerics)?;
        let v = Dense::load(attn.pp("v_proj"), h, spec.kv_dim(), false, numerics)?;
        let mlp = vb.pp("mlp");
        let i = spec.intermediate_size;
        let gate = Dense::load(mlp.pp("gate_proj"), h, i, false, numerics)?;
        let up = Dense::load(mlp.pp("up_proj"), h, i, false, numerics)?;
        Ok(Self {
            input_norm: RmsNorm::load(vb.pp("input_layernorm"), spec, numerics)?,
            qkv: Dense::stack(&[q, k, v])?,
            o_proj: Dense::load(attn.pp("o_proj"), spec.q_dim(), h, false, numerics)?,
            post_attention_norm: RmsNorm::load(vb.pp("post_attention_layernorm"), spec, numerics)?,
            gate_up: Dense::stack(&[gate, up])?,
            down: Dense::load(mlp.pp("down_proj"), i, h, false, numerics)?,
        })
    }
}

/// A decoder without its output head.
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    spec: DecoderSpec,
    numerics: Numerics,
    inv_freq: Tensor,
    device: Device,
}

impl Decoder {
    /// `vb` points at the `model.` prefix.
    pub fn load(vb: VarBuilder, spec: DecoderSpec, numerics: Numerics) -> Result<Self> {
        if spec.head_dim % 2 != 0 {
            return Err(Error::Unsupported(format!(
                "head_dim {} must be even for RoPE",
                spec.head_dim
            )));
        }
        if spec.num_key_value_heads == 0 || spec.num_attention_heads % spec.num_key_value_heads != 0
        {
            return Err(Error::Unsupported(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                spec.num_attention_heads, spec.num_key_value_heads
            )));
        }
        let embed_tokens = Embedding::new(
            numerics.weight(
                &vb.pp("embed_tokens"),
                &[spec.vocab_size, spec.hidden_size],
                "weight",
            )?,
            spec.hidden_size,
        );
        let layers = (0..spec.num_hidden_layers)
            .map(|i| DecoderLayer::load(vb.pp("layers").pp(i), &spec, numerics))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = RmsNorm::load(vb.pp("norm"), &spec, numerics)?;
        let half = spec.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (spec.rope_theta.powf(2.0 * i as f64 / spec.head_dim as f64)) as f32)
            .collect();
        let device = vb.device().clone();
        Ok(Self {
            inv_freq: Tensor::from_vec(inv_freq, (1, half), &device)?,
            embed_tokens,
            layers,
            norm,
            spec,
            numerics,
            device,
        })
    }

    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// The embedding table (Gemma's tied output projection reads rows of it).
    pub fn embedding_rows(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_slice(ids, ids.len(), &self.device)?;
        Ok(self.embed_tokens.embeddings().index_select(&ids, 0)?)
    }

    /// Runs the first `max(depths)` layers and returns, for each depth `k` in `depths` (ascending,
    /// each in 1..=num_hidden_layers), the final-normed state after `k` layers of every input's last
    /// token: one (inputs, hidden) tensor per depth. Layers above the deepest are never computed.
    pub fn last_token_states(
        &self,
        inputs: &[&ModelInput],
        depths: &[usize],
    ) -> Result<Vec<Tensor>> {
        let packed = self.pack(inputs)?;
        let deepest = depths.iter().copied().max().unwrap_or(self.layers.len());
        let mut x = self
            .numerics
            .round((self.embed_tokens.forward(&packed.ids)? * self.spec.embedding_scale)?)?;
        let mut states = Vec::with_capacity(depths.len());
        // Training: one padded grid, and one rope table for it, serve every layer.
        let padded = if self.numerics.differentiable {
            let layout = PaddedLayout::new(&packed.seq_lens, &self.device)?;
            let rope = self.rope_tables(layout.max_len())?;
            Some((layout, rope))
        } else {
            None
        };
        for (index, layer) in self.layers.iter().enumerate().take(deepest) {
            x = match &padded {
                Some((layout, rope)) => self.layer_forward_padded(layer, &x, layout, rope)?,
                None => self.layer_forward(layer, &x, &packed.seq_lens)?,
            };
            if depths.contains(&(index + 1)) {
                let last = x.index_select(&packed.last_token_rows, 0)?;
                states.push(self.norm.forward(&last)?);
            }
        }
        Ok(states)
    }

    fn layer_forward(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        seq_lens: &[usize],
    ) -> candle_core::Result<Tensor> {
        let s = &self.spec;
        let (q_dim, kv_dim) = (s.q_dim(), s.kv_dim());
        let qkv = layer.qkv.forward(&layer.input_norm.forward(x)?)?;
        let q = qkv.narrow(1, 0, q_dim)?;
        let k = qkv.narrow(1, q_dim, kv_dim)?;
        let v = qkv.narrow(1, q_dim + kv_dim, kv_dim)?;
        let group = s.num_attention_heads / s.num_key_value_heads;
        let scale = 1.0 / (s.head_dim as f64).sqrt();
        let mut contexts = Vec::with_capacity(seq_lens.len());
        let mut start = 0;
        for &len in seq_lens {
            let (cos, sin) = self.rope_tables(len)?;
            let rope = |t: Tensor| -> candle_core::Result<Tensor> {
                let rotated =
                    candle_nn::rotary_emb::rope(&t.unsqueeze(0)?, &cos, &sin)?.squeeze(0)?;
                self.numerics.round(rotated)
            };
            let qs = rope(split_heads(&q, start, len, s.num_attention_heads)?)?;
            let ks = repeat_kv(
                rope(split_heads(&k, start, len, s.num_key_value_heads)?)?,
                group,
            )?;
            let vs = repeat_kv(split_heads(&v, start, len, s.num_key_value_heads)?, group)?;
            let scores =
                (qs.matmul(&ks.t()?)? * scale)?.broadcast_add(&causal_mask(len, &self.device)?)?;
            let probs = self
                .numerics
                .round(candle_nn::ops::softmax_last_dim(&scores)?)?;
            let context = self.numerics.round(probs.matmul(&vs)?)?;
            contexts.push(context.transpose(0, 1)?.reshape((len, q_dim))?);
            start += len;
        }
        self.finish_layer(layer, x, &Tensor::cat(&contexts, 0)?)
    }

    /// The training form of `layer_forward`: attention on a padded grid from differentiable ops.
    fn layer_forward_padded(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        layout: &PaddedLayout,
        (cos, sin): &(Tensor, Tensor),
    ) -> candle_core::Result<Tensor> {
        let s = &self.spec;
        let (q_dim, kv_dim) = (s.q_dim(), s.kv_dim());
        let qkv = layer.qkv.forward(&layer.input_norm.forward(x)?)?;
        let group = s.num_attention_heads / s.num_key_value_heads;
        let heads = |start: usize, width: usize, count: usize| {
            layout.to_heads(&qkv.narrow(1, start, width)?, count)
        };
        let q =
            candle_nn::rotary_emb::rope_slow(&heads(0, q_dim, s.num_attention_heads)?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_slow(
            &heads(q_dim, kv_dim, s.num_key_value_heads)?,
            cos,
            sin,
        )?;
        let v = heads(q_dim + kv_dim, kv_dim, s.num_key_value_heads)?;
        let (k, v) = (repeat_kv4(k, group)?, repeat_kv4(v, group)?);
        let context = padded_attention(&q, &k, &v, layout, true, None)?;
        self.finish_layer(layer, x, &layout.to_rows(&context)?)
    }

    /// Everything after attention: output projection, residuals and the gated MLP.
    fn finish_layer(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        context: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let s = &self.spec;
        let attended = layer.o_proj.forward(context)?;
        let x = self.numerics.round((x + (attended * s.residual_scale)?)?)?;
        let gate_up = layer
            .gate_up
            .forward(&layer.post_attention_norm.forward(&x)?)?;
        let i = s.intermediate_size;
        let hidden = self.numerics.round(
            (s.activation.forward(&gate_up.narrow(1, 0, i)?)? * gate_up.narrow(1, i, i)?)?,
        )?;
        let mlp = layer.down.forward(&hidden)?;
        self.numerics.round((x + (mlp * s.residual_scale)?)?)
    }

    /// cos and sin of positions 0..len, (len, head_dim / 2), in f32 as transformers computes them.
    fn rope_tables(&self, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let positions = Tensor::arange(0u32, len as u32, &self.device)?
            .to_dtype(DType::F32)?
            .reshape((len, 1))?;
        let freqs = positions.broadcast_mul(&self.inv_freq)?;
        Ok((
            self.numerics.round(freqs.cos()?)?,
            self.numerics.round(freqs.sin()?)?,
        ))
    }

    fn pack(&self, inputs: &[&ModelInput]) -> Result<PackedBatch> {
        let mut ids = Vec::new();
        let mut seq_lens = Vec::with_capacity(inputs.len());
        let mut last_token_rows = Vec::with_capacity(inputs.len());
        for input in inputs {
            check_input(
                input,
                self.spec.max_position_embeddings,
                self.spec.vocab_size,
            )?;
            ids.extend_from_slice(&input.ids);
            seq_lens.push(input.len());
            last_token_rows.push(ids.len() as u32 - 1);
        }
        let n = ids.len();
        Ok(PackedBatch {
            ids: Tensor::from_vec(ids, n, &self.device)?,
            last_token_rows: Tensor::from_vec(last_token_rows, inputs.len(), &self.device)?,
            seq_lens,
        })
    }
}

struct PackedBatch {
    ids: Tensor,
    last_token_rows: Tensor,
    seq_lens: Vec<usize>,
}

/// (kv_heads, len, d) -> (kv_heads * group, len, d), each kv head serving `group` query heads.
fn repeat_kv(x: Tensor, group: usize) -> candle_core::Result<Tensor> {
    if group == 1 {
        return Ok(x);
    }
    let (heads, len, d) = x.dims3()?;
    x.unsqueeze(1)?
        .expand((heads, group, len, d))?
        .reshape((heads * group, len, d))
}

/// (n, kv_heads, len, d) -> (n, kv_heads * group, len, d).
fn repeat_kv4(x: Tensor, group: usize) -> candle_core::Result<Tensor> {
    if group == 1 {
        return Ok(x);
    }
    let (n, heads, len, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((n, heads, group, len, d))?
        .reshape((n, heads * group, len, d))
}
