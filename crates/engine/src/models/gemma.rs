//! bge-reranker-v2-gemma (`GemmaForCausalLM`): the score is the logit of "Yes" at the last token.
//! The tied output projection is applied to that one row at that one position, never to the whole
//! vocabulary.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::decoder::{Decoder, DecoderSpec};
use super::layers::{Activation, Numerics};
use crate::error::{Error, Result};
use crate::input::ModelInput;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// transformers 4.57's Gemma reads `hidden_act` ("gelu": exact GELU in the real model).
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_positions() -> usize {
    8192
}
fn default_true() -> bool {
    true
}

impl Config {
    fn spec(&self) -> DecoderSpec {
        DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_position_embeddings: self.max_position_embeddings,
            activation: self.hidden_act,
            norm_weight_offset: 1.0,
            embedding_scale: (self.hidden_size as f64).sqrt(),
            residual_scale: 1.0,
        }
    }
}

pub struct GemmaReranker {
    decoder: Decoder,
    /// (hidden,): the output projection's row for the "Yes" token.
    yes_row: Tensor,
}

impl GemmaReranker {
    pub fn load(vb: VarBuilder, cfg: &Config, yes_token: u32, numerics: Numerics) -> Result<Self> {
        if yes_token as usize >= cfg.vocab_size {
            return Err(Error::Input(format!(
                "the \"Yes\" token id {yes_token} is outside the vocabulary of {}",
                cfg.vocab_size
            )));
        }
        let head_row = |name: &str| -> Result<Tensor> {
            let head = vb.get((cfg.vocab_size, cfg.hidden_size), name)?;
            // The row's values in a tensor of their own: a row view (or candle's `copy`, which
            // clones the whole storage) would keep the whole table alive, 2 GB for Gemma.
            let row = head.get(yes_token as usize)?.to_dtype(DType::F32)?;
            let row = Tensor::from_vec(row.to_vec1::<f32>()?, cfg.hidden_size, head.device())?;
            Ok(numerics.round(row)?)
        };
        let untied = !cfg.tie_word_embeddings && vb.contains_tensor("lm_head.weight");
        // The "Yes" row is the score head: with int8 tables it is read exactly, not from the
        // table's int8 copy (and before the layers are loaded, to keep the load's peak low).
        let exact_row = match (untied, numerics.quantizes()) {
            (true, _) => Some(head_row("lm_head.weight")?),
            (false, true) => Some(head_row("model.embed_tokens.weight")?),
            (false, false) => None,
        };
        let decoder = Decoder::load(vb.pp("model"), cfg.spec(), numerics)?;
        if !untied {
            // The table is also the score head, read exactly above: a saved int8 folder keeps it
            // as stored.
            crate::ops::saved_int8::keep_as_stored("model.embed_tokens.weight");
        }
        let yes_row = match exact_row {
            Some(row) => row,
            None => decoder.embedding_rows(&[yes_token])?.squeeze(0)?,
        };
        Ok(Self { decoder, yes_row })
    }

    /// The "Yes" logits as a tensor (inputs,), part of the autograd graph when trained.
    pub fn logits(&self, inputs: &[&ModelInput]) -> Result<Tensor> {
        let depth = self.decoder.spec().num_hidden_layers;
        let states = self.decoder.last_token_states(inputs, &[depth])?;
        Ok(states[0].matmul(&self.yes_row.unsqueeze(1)?)?.squeeze(1)?)
    }
}
