//! Model families behind one interface: token ids in, logits out. Inference reads the logits as
//! numbers; training keeps them in the autograd graph. The one dispatch serves both.

pub mod decoder;
pub mod encoder;
pub mod gemma;
pub mod layers;
pub mod minicpm;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::input::ModelInput;

/// What the scheduler and the trainer need of a model family.
pub trait ScoringModel: Send + Sync {
    /// The layers that answer for `requested` cutoff layers: sorted, checked. Families without
    /// per-layer heads take no request and answer with their one score (an empty list).
    fn resolve_layers(&self, requested: Option<&[usize]>) -> Result<Vec<usize>> {
        match requested {
            None => Ok(Vec::new()),
            Some(_) => Err(Error::InvalidOption(
                "cutoff_layers apply to the layerwise reranker (bge-reranker-v2-minicpm-layerwise) only"
                    .into(),
            )),
        }
    }

    /// Every layer that can answer (what training supervises); empty for families with one score.
    fn all_layers(&self) -> Vec<usize> {
        Vec::new()
    }

    /// Training: dropout on (masks drawn from `seed`) or off. Families trained without dropout
    /// (the LLM rerankers' LoRA) ignore it.
    fn set_dropout(&mut self, _seed: Option<u64>) {}

    /// One logit tensor (inputs,) per resolved layer (or one), part of the autograd graph when the
    /// weights are variables. `inputs` is not empty.
    fn logits(&self, inputs: &[&ModelInput], layers: &[usize]) -> Result<Vec<Tensor>>;

    /// For each input in order, its raw scores: one per resolved layer, or one if none.
    fn score(&self, inputs: &[&ModelInput], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let per_layer = self
            .logits(inputs, layers)?
            .iter()
            .map(|t| t.to_dtype(DType::F32)?.to_vec1::<f32>())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((0..inputs.len())
            .map(|i| per_layer.iter().map(|layer| layer[i]).collect())
            .collect())
    }
}

impl ScoringModel for encoder::CrossEncoder {
    fn set_dropout(&mut self, seed: Option<u64>) {
        encoder::CrossEncoder::set_dropout(self, seed)
    }

    fn logits(&self, inputs: &[&ModelInput], _layers: &[usize]) -> Result<Vec<Tensor>> {
        Ok(vec![encoder::CrossEncoder::logits(self, inputs)?])
    }
}

impl ScoringModel for gemma::GemmaReranker {
    fn logits(&self, inputs: &[&ModelInput], _layers: &[usize]) -> Result<Vec<Tensor>> {
        Ok(vec![gemma::GemmaReranker::logits(self, inputs)?])
    }
}

impl ScoringModel for minicpm::LayerwiseReranker {
    fn resolve_layers(&self, requested: Option<&[usize]>) -> Result<Vec<usize>> {
        minicpm::LayerwiseReranker::resolve_layers(self, requested)
    }

    fn all_layers(&self) -> Vec<usize> {
        self.layer_range().collect()
    }

    fn logits(&self, inputs: &[&ModelInput], layers: &[usize]) -> Result<Vec<Tensor>> {
        self.layer_logits(inputs, layers)
    }
}
