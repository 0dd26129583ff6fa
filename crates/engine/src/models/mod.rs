//! Model families behind one interface: token ids in, one logit per pair out.

pub mod encoder;
pub mod layers;

use crate::error::Result;
use crate::input::ModelInput;

/// What the scheduler needs of a model family.
pub trait ScoringModel: Send + Sync {
    /// One raw score (logit) per input, in input order.
    fn score(&self, batch: &[&ModelInput]) -> Result<Vec<f32>>;
}

impl ScoringModel for encoder::CrossEncoder {
    fn score(&self, batch: &[&ModelInput]) -> Result<Vec<f32>> {
        encoder::CrossEncoder::score(self, batch)
    }
}
