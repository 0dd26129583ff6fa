//! bge-reranker-v2-minicpm-layerwise (`LayerWiseMiniCPMForCausalLM`): one score head per layer from
//! `start_layer` to the last; the hidden state after k layers, final-normed, at the last token, through
//! head k gives layer k's score. Layers above the highest requested one are never computed.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::decoder::{Decoder, DecoderSpec};
use super::layers::{Activation, Linear, Numerics};
use crate::error::{Error, Result};
use crate::input::ModelInput;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    pub scale_emb: f64,
    pub scale_depth: f64,
    pub start_layer: usize,
    #[serde(default = "default_true")]
    pub head_multi: bool,
    #[serde(default = "default_head_type")]
    pub head_type: String,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10000.0
}
fn default_positions() -> usize {
    2048
}
fn default_true() -> bool {
    true
}
fn default_head_type() -> String {
    "simple".into()
}

impl Config {
    fn spec(&self) -> DecoderSpec {
        DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.hidden_size / self.num_attention_heads.max(1),
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_position_embeddings: self.max_position_embeddings,
            activation: self.hidden_act,
            norm_weight_offset: 0.0,
            embedding_scale: self.scale_emb,
            // The full layer count, even when stopping early.
            residual_scale: self.scale_depth / (self.num_hidden_layers as f64).sqrt(),
        }
    }
}

pub struct LayerwiseReranker {
    decoder: Decoder,
    /// Head for layer `start_layer + i`.
    heads: Vec<Linear>,
    start_layer: usize,
}

impl LayerwiseReranker {
    pub fn load(vb: VarBuilder, cfg: &Config, numerics: Numerics) -> Result<Self> {
        if cfg.head_type != "simple" || !cfg.head_multi {
            return Err(Error::Unsupported(format!(
                "head_type `{}` with head_multi {} is not supported (the released model uses \
                 `simple` with head_multi true)",
                cfg.head_type, cfg.head_multi
            )));
        }
        if cfg.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::Unsupported("rope_scaling is not supported".into()));
        }
        if cfg.start_layer > cfg.num_hidden_layers {
            return Err(Error::Unsupported(format!(
                "start_layer {} is above num_hidden_layers {}",
                cfg.start_layer, cfg.num_hidden_layers
            )));
        }
        let decoder = Decoder::load(vb.pp("model"), cfg.spec(), numerics)?;
        let heads = (cfg.start_layer..=cfg.num_hidden_layers)
            .enumerate()
            .map(|(i, _)| {
                Linear::load(
                    vb.pp("lm_head").pp(i).pp("linear_head"),
                    cfg.hidden_size,
                    1,
                    false,
                    numerics.head(),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            decoder,
            heads,
            start_layer: cfg.start_layer,
        })
    }

    /// The layers that can answer: start_layer..=num_hidden_layers.
    pub fn layer_range(&self) -> std::ops::RangeInclusive<usize> {
        self.start_layer..=self.decoder.spec().num_hidden_layers
    }

    /// Sorted, de-duplicated layers, each checked to have a head; `None` means the last layer.
    pub fn resolve_layers(&self, requested: Option<&[usize]>) -> Result<Vec<usize>> {
        let range = self.layer_range();
        let mut layers = match requested {
            None | Some([]) => vec![*range.end()],
            Some(list) => list.to_vec(),
        };
        layers.sort_unstable();
        layers.dedup();
        if let Some(bad) = layers.iter().find(|l| !range.contains(l)) {
            return Err(Error::InvalidOption(format!(
                "cutoff layer {bad} has no score head; this model answers at layers {} to {}",
                range.start(),
                range.end()
            )));
        }
        Ok(layers)
    }

    /// One logit tensor (inputs,) per layer of `layers`, part of the autograd graph when trained.
    pub fn layer_logits(&self, inputs: &[&ModelInput], layers: &[usize]) -> Result<Vec<Tensor>> {
        let states = self.decoder.last_token_states(inputs, layers)?;
        states
            .iter()
            .zip(layers)
            .map(|(state, &layer)| {
                let head = &self.heads[layer - self.start_layer];
                Ok(head.forward(state)?.squeeze(1)?)
            })
            .collect()
    }
}
