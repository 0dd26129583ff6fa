//! Encoder cross-encoders: XLM-RoBERTa (bge-reranker-base, -large, -v2-m3) and BERT, with their
//! sequence-classification heads.
//!
//! Sequences are packed: the dense layers see all real tokens of a batch as one (tokens x hidden)
//! matrix, and attention runs per sequence, so no work is spent on padding and a pair's score does not
//! depend on what it is batched with.

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Activation, LayerNorm, Linear, Numerics, PackedBatch};
use crate::error::{Error, Result};
use crate::input::ModelInput;
use crate::ops::attention::{packed_attention, padded_attention, Dropout, Heads, PaddedLayout};
use crate::ops::embedding::Embedding;
use crate::ops::in_row_blocks;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<HashMap<String, String>>,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// The head's dropout; `None` means hidden_dropout_prob (as transformers reads it).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

fn default_dropout() -> f64 {
    0.1
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

impl Config {
    pub fn num_labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(HashMap::len))
            .unwrap_or(2)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(kind) = &self.position_embedding_type {
            if kind != "absolute" {
                return Err(format!(
                    "position_embedding_type `{kind}` is not supported (only `absolute`)"
                ));
            }
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// The two encoders differ in checkpoint prefix, position ids and the names of the head's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Positions count non-pad tokens from `pad_token_id + 1`; segment ids are always 0.
    XlmRoberta,
    /// Positions are 0..n; segment ids come from the tokenizer (0 query, 1 passage).
    Bert,
}

impl Flavor {
    /// The body's tensor-name prefix in checkpoints with a head (without the dot).
    pub fn prefix(self) -> &'static str {
        match self {
            Flavor::XlmRoberta => "roberta",
            Flavor::Bert => "bert",
        }
    }
}

/// A tensor every encoder body has: where it sits tells whether names carry the flavor's prefix.
pub const BODY_PROBE: &str = "embeddings.word_embeddings.weight";

struct EncoderLayer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    intermediate_size: usize,
    activation: Activation,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    numerics: Numerics,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, cfg: &Config, numerics: Numerics) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let attention = vb.pp("attention");
        let projection = |name: &str| (attention.pp("self").pp(name), h);
        let qkv = Linear::load_stacked(
            &[projection("query"), projection("key"), projection("value")],
            h,
            true,
            numerics,
        )?;
        Ok(Self {
            qkv,
            attention_out: Linear::load(attention.pp("output").pp("dense"), h, h, true, numerics)?,
            attention_norm: LayerNorm::load(
                attention.pp("output").pp("LayerNorm"),
                h,
                cfg.layer_norm_eps,
                numerics,
            )?,
            intermediate: Linear::load(
                vb.pp("intermediate").pp("dense"),
                h,
                cfg.intermediate_size,
                true,
                numerics,
            )?,
            intermediate_size: cfg.intermediate_size,
            activation: cfg.hidden_act,
            output: Linear::load(
                vb.pp("output").pp("dense"),
                cfg.intermediate_size,
                h,
                true,
                numerics,
            )?,
            output_norm: LayerNorm::load(
                vb.pp("output").pp("LayerNorm"),
                h,
                cfg.layer_norm_eps,
                numerics,
            )?,
            heads: cfg.num_attention_heads,
            numerics,
        })
    }

    fn forward(&self, x: &Tensor, packed: &EncoderBatch) -> candle_core::Result<Tensor> {
        let hidden = x.dim(1)?;
        let qkv = self.qkv.forward(x)?;
        let context = match &packed.padded {
            Some(layout) => {
                let heads =
                    |i: usize| layout.to_heads(&qkv.narrow(1, i * hidden, hidden)?, self.heads);
                let dropout = packed.dropout.as_ref();
                layout.to_rows(&padded_attention(
                    &heads(0)?,
                    &heads(1)?,
                    &heads(2)?,
                    layout,
                    false,
                    dropout,
                )?)?
            }
            None => {
                let heads = Heads {
                    heads: self.heads,
                    kv_heads: self.heads,
                    head_dim: hidden / self.heads,
                    causal: false,
                };
                packed_attention(&qkv, &packed.tokens.seq_lens, heads, self.numerics)?
            }
        };
        let attended = self.attention_norm.forward_sum(
            &packed.hidden_dropout(&self.attention_out.forward(&context)?)?,
            x,
        )?;
        let mlp = in_row_blocks(&attended, self.intermediate_size * 4, |rows| {
            let inner = self.intermediate.forward_activated(rows, self.activation)?;
            self.output.forward(&inner)
        })?;
        self.output_norm
            .forward_sum(&packed.hidden_dropout(&mlp)?, &attended)
    }
}

/// The encoder body: embeddings and transformer layers, as in `XLMRobertaModel` / `BertModel`.
pub struct Encoder {
    flavor: Flavor,
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    numerics: Numerics,
    cfg: Config,
    device: Device,
    dropout: Option<Dropout>,
}

impl Encoder {
    /// Loads the body from `vb`, whose tensors may or may not carry the `roberta.`/`bert.` prefix
    /// (checkpoints with a head have it; bare `BertModel` checkpoints such as all-MiniLM-L6-v2 do not).
    pub fn load(vb: VarBuilder, cfg: &Config, flavor: Flavor, numerics: Numerics) -> Result<Self> {
        cfg.validate().map_err(Error::Unsupported)?;
        let prefixed = vb.pp(flavor.prefix());
        let base = if prefixed.contains_tensor(BODY_PROBE) {
            prefixed
        } else {
            vb
        };
        Ok(Self::load_body(base, cfg, flavor, numerics)?)
    }

    fn load_body(
        base: VarBuilder,
        cfg: &Config,
        flavor: Flavor,
        numerics: Numerics,
    ) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let emb = base.pp("embeddings");
        let embedding = |name: &str, rows: usize| Embedding::load(emb.pp(name), rows, h, numerics);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::load(base.pp("encoder.layer").pp(i), cfg, numerics))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            flavor,
            word_embeddings: embedding("word_embeddings", cfg.vocab_size)?,
            position_embeddings: embedding("position_embeddings", cfg.max_position_embeddings)?,
            token_type_embeddings: embedding("token_type_embeddings", cfg.type_vocab_size)?,
            embedding_norm: LayerNorm::load(emb.pp("LayerNorm"), h, cfg.layer_norm_eps, numerics)?,
            layers,
            numerics,
            cfg: cfg.clone(),
            device: base.device().clone(),
            dropout: None,
        })
    }

    /// Training: turn dropout on (the config's probabilities, masks drawn from `seed`) or off.
    pub fn set_dropout(&mut self, seed: Option<u64>) {
        self.dropout = seed.map(|seed| {
            Dropout::new(
                self.cfg.hidden_dropout_prob,
                self.cfg.attention_probs_dropout_prob,
                seed,
            )
        });
    }

    fn dropout(&self) -> Option<&Dropout> {
        self.dropout.as_ref()
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// The longest input the position table allows.
    pub fn max_input_tokens(&self) -> usize {
        match self.flavor {
            Flavor::XlmRoberta => self
                .cfg
                .max_position_embeddings
                .saturating_sub(self.cfg.pad_token_id as usize + 1),
            Flavor::Bert => self.cfg.max_position_embeddings,
        }
    }

    /// The final hidden state of each input's first token (`<s>` / `[CLS]`): (inputs, hidden).
    pub fn first_token_states(&self, inputs: &[&ModelInput]) -> Result<Tensor> {
        let packed = self.pack(inputs)?;
        Ok(self.forward(&packed)?)
    }

    fn forward(&self, packed: &EncoderBatch) -> candle_core::Result<Tensor> {
        let x = (self.word_embeddings.forward(&packed.tokens.ids)?
            + self.position_embeddings.forward(&packed.positions)?)?;
        let x = (x + self.token_type_embeddings.forward(&packed.type_ids)?)?;
        let x = self.embedding_norm.forward(&self.numerics.round(x)?)?;
        let mut x = packed.hidden_dropout(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, packed)?;
        }
        x.index_select(&packed.tokens.first_token_rows()?, 0)
    }

    fn pack(&self, inputs: &[&ModelInput]) -> Result<EncoderBatch> {
        let tokens = PackedBatch::new(
            inputs,
            self.max_input_tokens(),
            self.cfg.vocab_size,
            &self.device,
        )?;
        let total: usize = tokens.seq_lens.iter().sum();
        let mut type_ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let pad = self.cfg.pad_token_id;
        for input in inputs {
            match self.flavor {
                Flavor::XlmRoberta => {
                    // transformers: cumsum(ids != pad) * (ids != pad) + pad; a literal <pad> inside
                    // the text takes position `pad` and does not advance the count.
                    let mut count = 0;
                    for &id in &input.ids {
                        if id == pad {
                            positions.push(pad);
                        } else {
                            count += 1;
                            positions.push(pad + count);
                        }
                        type_ids.push(0);
                    }
                }
                Flavor::Bert => {
                    positions.extend(0..input.len() as u32);
                    for &t in &input.type_ids {
                        if t as usize >= self.cfg.type_vocab_size {
                            return Err(Error::Input(format!(
                                "segment id {t} is outside type_vocab_size {}",
                                self.cfg.type_vocab_size
                            )));
                        }
                        type_ids.push(t);
                    }
                }
            }
        }
        let tensor = |v: Vec<u32>| {
            let n = v.len();
            Tensor::from_vec(v, n, &self.device)
        };
        let padded = if self.numerics.differentiable {
            Some(PaddedLayout::new(&tokens.seq_lens, &self.device)?)
        } else {
            None
        };
        Ok(EncoderBatch {
            type_ids: tensor(type_ids)?,
            positions: tensor(positions)?,
            tokens,
            padded,
            dropout: self.dropout.clone(),
        })
    }
}

/// The packed tokens with what an encoder reads beside them: positions, segment ids and, when
/// training, the padded layout attention uses and the dropout masks.
struct EncoderBatch {
    tokens: PackedBatch,
    type_ids: Tensor,
    positions: Tensor,
    padded: Option<PaddedLayout>,
    dropout: Option<Dropout>,
}

impl EncoderBatch {
    fn hidden_dropout(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.dropout {
            Some(dropout) => dropout.hidden(x),
            None => Ok(x.clone()),
        }
    }
}

/// An encoder with a one-logit classification head (dense + tanh on the first token, then a
/// projection): a cross-encoder reranker.
pub struct CrossEncoder {
    encoder: Encoder,
    dense: Linear,
    out: Linear,
    flavor: Flavor,
    classifier_dropout: f64,
}

impl CrossEncoder {
    pub fn load(vb: VarBuilder, cfg: &Config, flavor: Flavor, numerics: Numerics) -> Result<Self> {
        if cfg.num_labels() != 1 {
            return Err(Error::Unsupported(format!(
                "the classification head has {} labels; a reranker has exactly one output",
                cfg.num_labels()
            )));
        }
        let encoder = Encoder::load(vb.clone(), cfg, flavor, numerics)?;
        let h = cfg.hidden_size;
        let (dense, out) = match flavor {
            Flavor::XlmRoberta => (
                Linear::load(vb.pp("classifier.dense"), h, h, true, numerics.head())?,
                Linear::load(vb.pp("classifier.out_proj"), h, 1, true, numerics.head())?,
            ),
            Flavor::Bert => (
                Linear::load(vb.pp("bert.pooler.dense"), h, h, true, numerics.head())?,
                Linear::load(vb.pp("classifier"), h, 1, true, numerics.head())?,
            ),
        };
        Ok(Self {
            encoder,
            dense,
            out,
            flavor,
            classifier_dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
        })
    }

    /// Training: dropout on (masks drawn from `seed`) or off.
    pub fn set_dropout(&mut self, seed: Option<u64>) {
        self.encoder.set_dropout(seed);
    }

    /// The logits as a tensor (inputs,), part of the autograd graph when the weights are variables.
    /// Dropout sits where transformers puts it: RoBERTa's head drops before both layers, BERT's
    /// before the classifier only.
    pub fn logits(&self, inputs: &[&ModelInput]) -> Result<Tensor> {
        let states = self.encoder.first_token_states(inputs)?;
        let drop = |x: Tensor| -> candle_core::Result<Tensor> {
            match self.encoder.dropout() {
                Some(d) => d.apply(&x, self.classifier_dropout),
                None => Ok(x),
            }
        };
        let states = match self.flavor {
            Flavor::XlmRoberta => drop(states)?,
            Flavor::Bert => states,
        };
        let pooled = drop(self.dense.forward(&states)?.tanh()?)?;
        Ok(self.out.forward(&pooled)?.squeeze(1)?)
    }
}
