//! What the model families share beyond the ops layer: the input check and the packed batch.

use candle_core::{Device, Result, Tensor};

use crate::input::ModelInput;
pub use crate::ops::activation::Activation;
pub use crate::ops::linear::Linear;
pub use crate::ops::norm::LayerNorm;
pub use crate::ops::Numerics;

/// Refuses an input the model cannot read: empty, longer than its positions, or holding token ids
/// beyond its vocabulary (a tokenizer that does not belong to the weights).
fn check_input(input: &ModelInput, max_tokens: usize, vocab_size: usize) -> crate::Result<()> {
    use crate::Error;
    if input.is_empty() {
        return Err(Error::Input("an input has no tokens".into()));
    }
    if input.len() > max_tokens {
        return Err(Error::Input(format!(
            "an input of {} tokens exceeds the model's {max_tokens} positions; lower max_length",
            input.len()
        )));
    }
    if let Some(&bad) = input.ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(Error::Input(format!(
            "token id {bad} is outside the model's vocabulary of {vocab_size}: the tokenizer does \
             not belong to these weights"
        )));
    }
    Ok(())
}

/// A batch of inputs laid end to end without padding (rows = tokens), as every family reads it:
/// the attention kernels take `seq_lens` to keep the sequences apart.
pub struct PackedBatch {
    /// (tokens,) u32.
    pub ids: Tensor,
    pub seq_lens: Vec<usize>,
    /// Where each input starts in the packed rows.
    pub starts: Vec<usize>,
}

impl PackedBatch {
    /// Checks each input against the model's positions and vocabulary, then packs them.
    pub fn new(
        inputs: &[&ModelInput],
        max_tokens: usize,
        vocab_size: usize,
        device: &Device,
    ) -> crate::Result<Self> {
        let mut ids = Vec::with_capacity(inputs.iter().map(|i| i.len()).sum());
        let mut seq_lens = Vec::with_capacity(inputs.len());
        let mut starts = Vec::with_capacity(inputs.len());
        for input in inputs {
            check_input(input, max_tokens, vocab_size)?;
            starts.push(ids.len());
            seq_lens.push(input.len());
            ids.extend_from_slice(&input.ids);
        }
        let n = ids.len();
        Ok(Self {
            ids: Tensor::from_vec(ids, n, device)?,
            seq_lens,
            starts,
        })
    }

    pub fn max_len(&self) -> usize {
        self.seq_lens.iter().copied().max().unwrap_or(0)
    }

    /// Row of each input's first token (encoders read `<s>` / `[CLS]`), as an index tensor.
    pub fn first_token_rows(&self) -> Result<Tensor> {
        let rows: Vec<u32> = self.starts.iter().map(|&s| s as u32).collect();
        Tensor::from_vec(rows, self.starts.len(), self.ids.device())
    }

    /// Row of each input's last token (LLM rerankers read the state there), as an index tensor.
    pub fn last_token_rows(&self) -> Result<Tensor> {
        let rows: Vec<u32> = (self.starts.iter().zip(&self.seq_lens))
            .map(|(&s, &len)| (s + len - 1) as u32)
            .collect();
        Tensor::from_vec(rows, self.starts.len(), self.ids.device())
    }
}
