//! Grouping inputs into batches. Inputs are sorted longest first (as FlagEmbedding does) and a batch
//! is closed when it reaches `batch_size` pairs or `max_batch_tokens` real tokens. The models pack
//! sequences without padding, so batching changes speed and memory, never scores.

/// Limits on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub batch_size: usize,
    pub max_batch_tokens: usize,
}

impl Default for BatchLimits {
    /// 2048 tokens: enough rows for the matrix kernels to run at full speed, few enough that a
    /// layer's largest activation (2048 x 3072 f32 = 25 MB for the encoders' MLP) stays under the
    /// allocator's 32 MB mmap threshold (set in the CLI's main), so its memory is reused instead
    /// of page-faulted afresh for every layer; and the peak memory stays low. A longer input is a
    /// batch of its own.
    fn default() -> Self {
        Self {
            batch_size: 128,
            max_batch_tokens: 2048,
        }
    }
}

/// Indices of `lengths`, grouped into batches, longest inputs first.
pub fn plan_batches(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let max_pairs = limits.batch_size.max(1);
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0;
    for i in order {
        let full = current.len() >= max_pairs || tokens + lengths[i] > limits.max_batch_tokens;
        if full && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            tokens = 0;
        }
        tokens += lengths[i];
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_input_once_longest_first() {
        let lengths = [5, 50, 7, 50, 1, 30];
        let limits = BatchLimits {
            batch_size: 2,
            max_batch_tokens: 1000,
        };
        let batches = plan_batches(&lengths, limits);
        assert_eq!(batches, vec![vec![1, 3], vec![5, 2], vec![0, 4]]);
    }

    #[test]
    fn token_budget_closes_batches_but_never_starves_a_long_input() {
        let lengths = [600, 300, 300, 10];
        let limits = BatchLimits {
            batch_size: 128,
            max_batch_tokens: 512,
        };
        let batches = plan_batches(&lengths, limits);
        assert_eq!(batches, vec![vec![0], vec![1], vec![2, 3]]);
    }
}
