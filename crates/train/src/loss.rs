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
pub fn batch_loss(
    per_layer: &[Tensor],
    group_size: usize,
    teacher: Option<&Tensor>,
) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn losses_match_their_definitions() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[2.0f32, 0.0, -1.0, 0.5, 0.5, 1.0], &dev).unwrap();
        let teacher = Tensor::new(&[1.0f32, 0.0, 0.0, 0.0, 1.0, 2.0], &dev).unwrap();
        let ce = |row: &[f64], target: &[f64]| -> f64 {
            let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
            let t_sum: f64 = target.iter().map(|x| x.exp()).sum();
            -row.iter()
                .zip(target)
                .map(|(x, t)| (t.exp() / t_sum) * (x - lse))
                .sum::<f64>()
        };
        let hard = |row: &[f64]| row.iter().map(|x| x.exp()).sum::<f64>().ln() - row[0];
        let rows = [[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]];
        let teachers = [[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]];
        let want_group = (hard(&rows[0]) + hard(&rows[1])) / 2.0;
        let want_distill = (ce(&rows[0], &teachers[0]) + ce(&rows[1], &teachers[1])) / 2.0;
        let got: f32 = group_loss(&logits, 3).unwrap().to_scalar().unwrap();
        assert!((f64::from(got) - want_group).abs() < 1e-5);
        let got: f32 = batch_loss(std::slice::from_ref(&logits), 3, Some(&teacher))
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((f64::from(got) - want_group - want_distill).abs() < 1e-5);
        // Layerwise without a teacher: both layers' group losses, plus the first distilled to the last.
        let other = Tensor::new(&[0.0f32, 1.0, 0.0, 1.0, 0.0, 0.0], &dev).unwrap();
        let got: f32 = batch_loss(&[other.clone(), logits.clone()], 3, None)
            .unwrap()
            .to_scalar()
            .unwrap();
        let other_rows = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]];
        let want = want_group
            + (hard(&other_rows[0]) + hard(&other_rows[1])) / 2.0
            + (ce(&other_rows[0], &rows[0]) + ce(&other_rows[1], &rows[1])) / 2.0;
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
    }
}
