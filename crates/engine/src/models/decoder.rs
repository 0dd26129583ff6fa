//! The decoder stack Gemma and MiniCPM share (Llama-style: RMSNorm, RoPE, causal grouped-query
//! attention, gated MLP), run packed like the encoders: dense layers over all real tokens of a batch,
//! attention per sequence with positions 0..n-1. The families differ only in the constants below and in
//! their score heads, which read the final (normed) state of each sequence's last token.

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Activation, Linear, Numerics, PackedBatch};
use crate::error::{Error, Result};
use crate::input::ModelInput;
use crate::ops::attention::{packed_attention, padded_attention, Heads, PaddedLayout};
use crate::ops::embedding::Embedding;
use crate::ops::in_row_blocks;
use crate::ops::norm::RmsNorm;
use crate::ops::rope::RopeTables;

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

    fn norm(&self, vb: VarBuilder, numerics: Numerics) -> candle_core::Result<RmsNorm> {
        RmsNorm::load(
            vb,
            self.hidden_size,
            self.rms_norm_eps,
            self.norm_weight_offset,
            numerics,
        )
    }
}

struct DecoderLayer {
    input_norm: RmsNorm,
    qkv: Linear,
    o_proj: Linear,
    post_attention_norm: RmsNorm,
    gate_up: Linear,
    down: Linear,
}

impl DecoderLayer {
    fn load(vb: VarBuilder, spec: &DecoderSpec, numerics: Numerics) -> candle_core::Result<Self> {
        let h = spec.hidden_size;
        let attn = vb.pp("self_attn");
        let qkv = [
            (attn.pp("q_proj"), spec.q_dim()),
            (attn.pp("k_proj"), spec.kv_dim()),
            (attn.pp("v_proj"), spec.kv_dim()),
        ];
        let mlp = vb.pp("mlp");
        let i = spec.intermediate_size;
        let gate_up = [(mlp.pp("gate_proj"), i), (mlp.pp("up_proj"), i)];
        Ok(Self {
            input_norm: spec.norm(vb.pp("input_layernorm"), numerics)?,
            qkv: Linear::load_stacked(&qkv, h, false, numerics)?,
            o_proj: Linear::load(attn.pp("o_proj"), spec.q_dim(), h, false, numerics)?,
            post_attention_norm: spec.norm(vb.pp("post_attention_layernorm"), numerics)?,
            gate_up: Linear::load_stacked(&gate_up, h, false, numerics)?,
            down: Linear::load(mlp.pp("down_proj"), i, h, false, numerics)?,
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
    device: Device,
}

impl Decoder {
    /// `vb` points at the `model.` prefix.
    pub fn load(vb: VarBuilder, spec: DecoderSpec, numerics: Numerics) -> Result<Self> {
        if !spec.head_dim.is_multiple_of(2) {
            return Err(Error::Unsupported(format!(
                "head_dim {} must be even for RoPE",
                spec.head_dim
            )));
        }
        if spec.num_key_value_heads == 0
            || !spec
                .num_attention_heads
                .is_multiple_of(spec.num_key_value_heads)
        {
            return Err(Error::Unsupported(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                spec.num_attention_heads, spec.num_key_value_heads
            )));
        }
        let embed_tokens = Embedding::load(
            vb.pp("embed_tokens"),
            spec.vocab_size,
            spec.hidden_size,
            numerics,
        )?;
        let layers = (0..spec.num_hidden_layers)
            .map(|i| DecoderLayer::load(vb.pp("layers").pp(i), &spec, numerics))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = spec.norm(vb.pp("norm"), numerics)?;
        let device = vb.device().clone();
        Ok(Self {
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
        Ok(self.embed_tokens.rows(ids)?)
    }

    /// Runs the first `max(depths)` layers and returns, for each depth `k` in `depths` (ascending,
    /// each in 1..=num_hidden_layers), the final-normed state after `k` layers of every input's last
    /// token: one (inputs, hidden) tensor per depth. Layers above the deepest are never computed.
    pub fn last_token_states(
        &self,
        inputs: &[&ModelInput],
        depths: &[usize],
    ) -> Result<Vec<Tensor>> {
        let packed = PackedBatch::new(
            inputs,
            self.spec.max_position_embeddings,
            self.spec.vocab_size,
            &self.device,
        )?;
        let last_token_rows = packed.last_token_rows()?;
        let deepest = depths.iter().copied().max().unwrap_or(self.layers.len());
        let mut x = self
            .numerics
            .round((self.embed_tokens.forward(&packed.ids)? * self.spec.embedding_scale)?)?;
        let mut states = Vec::with_capacity(depths.len());
        let max_len = packed.max_len();
        // One rope table (and in training one padded grid) serves every layer of the batch.
        let rope = RopeTables::new(
            max_len,
            self.spec.head_dim,
            self.spec.rope_theta,
            self.numerics,
        )?;
        let padded = if self.numerics.differentiable {
            let layout = PaddedLayout::new(&packed.seq_lens, &self.device)?;
            let tables = rope.tensors(&self.device)?;
            Some((layout, tables))
        } else {
            None
        };
        for (index, layer) in self.layers.iter().enumerate().take(deepest) {
            // Above the last layer only the last tokens are read: its projections after attention
            // run on those rows alone.
            let last_only = index + 1 == deepest && padded.is_none();
            x = match &padded {
                Some((layout, tables)) => self.layer_forward_padded(layer, &x, layout, tables)?,
                None => {
                    let rows = last_only.then_some(&last_token_rows);
                    self.layer_forward(layer, &x, &packed.seq_lens, &rope, rows)?
                }
            };
            if depths.contains(&(index + 1)) {
                let last = match last_only {
                    true => x.clone(),
                    false => x.index_select(&last_token_rows, 0)?,
                };
                states.push(self.norm.forward(&last)?);
            }
        }
        Ok(states)
    }

    fn heads(&self) -> Heads {
        Heads {
            heads: self.spec.num_attention_heads,
            kv_heads: self.spec.num_key_value_heads,
            head_dim: self.spec.head_dim,
            causal: true,
        }
    }

    /// One layer at inference; with `rows`, only those rows of its output are computed (and
    /// returned).
    fn layer_forward(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        seq_lens: &[usize],
        rope: &RopeTables,
        rows: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let qkv = layer.qkv.forward(&layer.input_norm.forward(x)?)?;
        let qkv = rope.apply_packed(&qkv, seq_lens, self.heads(), self.numerics)?;
        let context = packed_attention(&qkv, seq_lens, self.heads(), self.numerics)?;
        match rows {
            Some(rows) => self.finish_layer(
                layer,
                &x.index_select(rows, 0)?,
                &context.index_select(rows, 0)?,
            ),
            None => self.finish_layer(layer, x, &context),
        }
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
        let i = s.intermediate_size;
        let normed = layer.post_attention_norm.forward(&x)?;
        let mlp = in_row_blocks(&normed, 2 * i * 4, |rows| {
            let gate_up = layer.gate_up.forward(rows)?;
            layer
                .down
                .forward(&s.activation.gated(&gate_up, i, self.numerics)?)
        })?;
        self.numerics.round((x + (mlp * s.residual_scale)?)?)
    }
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
