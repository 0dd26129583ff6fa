//! FlagEmbedding's reranker losses over groups (the positive first, then its negatives).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::ops::log_softmax;

/// Cross-entropy with the positive (index 0) as the target, averaged over groups:
/// `logits` is (groups * group_size,), laid out group by group.
pub fn group_loss(logits: &Tensor, group_size: usize) -> Result<Tensor> {
    let grouped = logits.reshape(((), group_size))?;
    let targets = Tensor::zeros(grouped.dim(0)?, DType::U32, grouped.device())?;
    candle_nn::loss::cross_entropy(&grouped, &targets)
}

/// Soft cross-entropy to a teacher's distribution: mean over groups of
/// `-sum(softmax(teacher) * log_softmax(student))`; the teacher gets no gradient.
pub fn distill_loss(student: &Tensor, teacher: &Tensor, group_size: usize) -> Result<Tensor> {
    let student = student.reshape(((), group_size))?;
    let teacher = candle_nn::ops::softmax(&teacher.detach().reshape(((), group_size))?, D::Minus1)?;
    (log_softmax(&student, D::Minus1)? * teacher)?
        .sum(D::Minus1)?
        .mean_all()?
        .neg()
}

/// The training loss of one batch. `per_layer` holds one logits tensor per answering layer (one for
/// single-score families). Each layer gets the group loss. Layerwise models also distil every earlier
/// layer towards the last layer's distribution; with teacher scores (`--distill`), every layer
/// distils towards the teacher instead (FlagEmbedding's layerwise and base modelling).
pub fn batch_loss(per_layer: &[Tensor], group_size: usize, teacher: Option<&Tensor>) -> Result<Tensor> {
    let Some(last) = per_layer.last() else {
        candle_core::bail!("no logits to train on");
    };
    let mut loss = group_loss(last, group_size)?;
    for logits in &per_layer[..per_layer.len() - 1] {
        loss = (loss + group_loss(logits, group_size)?)?;
    }
    match teacher {
        Some(teacher) => {
            for logits in per_layer {
                loss = (loss + distill_loss(logits, teacher, group_size)?)?;
            }
        }
        None => {
            for logits in &per_layer[..per_layer.len() - 1] {
                loss = (loss + distill_loss(logits, last, group_size)?)?;
            }
        }
    }
    Ok(loss)
}
