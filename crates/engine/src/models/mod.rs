//! Model families behind one interface: token ids in, raw scores out.

pub mod decoder;
pub mod encoder;
pub mod gemma;
pub mod layers;
pub mod minicpm;

use crate::error::{Error, Result};
use crate::input::ModelInput;

/// What the scheduler needs of a model family.
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

    /// For each input in order, its raw scores: one per resolved layer, or one if none.
    fn score(&self, batch: &[&ModelInput], layers: &[usize]) -> Result<Vec<Vec<f32>>>;
}

fn one_per_input(scores: Vec<f32>) -> Vec<Vec<f32>> {
    scores.into_iter().map(|s| vec![s]).collect()
}

impl ScoringModel for encoder::CrossEncoder {
    fn score(&self, batch: &[&ModelInput], _layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        Ok(one_per_input(encoder::CrossEncoder::score(self, batch)?))
    }
}

impl ScoringModel for gemma::GemmaReranker {
    fn score(&self, batch: &[&ModelInput], _layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        Ok(one_per_input(gemma::GemmaReranker::score(self, batch)?))
    }
}

impl ScoringModel for minicpm::LayerwiseReranker {
    fn resolve_layers(&self, requested: Option<&[usize]>) -> Result<Vec<usize>> {
        minicpm::LayerwiseReranker::resolve_layers(self, requested)
    }

    fn score(&self, batch: &[&ModelInput], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        minicpm::LayerwiseReranker::score(self, batch, layers)
    }
}
