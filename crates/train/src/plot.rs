//! The loss curve (and nDCG@10 per checkpoint, when measured) as SVG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::{Result, TrainError};
use crate::evaluation::CheckpointEval;
use crate::log::StepLog;

pub const CURVE_FILE: &str = "training_curves.svg";

/// Draws `output/training_curves.svg` from the run's log; returns its path.
pub fn write_curves(output: &Path, log: &Path, evals: &[CheckpointEval]) -> Result<PathBuf> {
    let text = std::fs::read_to_string(log).map_err(|error| TrainError::Io {
        path: log.to_path_buf(),
        error,
    })?;
    let steps: Vec<StepLog> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let path = output.join(CURVE_FILE);
    let plot_error = |e: &dyn std::fmt::Display| {
        TrainError::Invalid(format!("{}: plotting failed: {e}", path.display()))
    };
    let height = if evals.is_empty() { 450 } else { 800 };
    let root = SVGBackend::new(&path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(&e))?;
    let (top, bottom) = if evals.is_empty() {
        (root.clone(), None)
    } else {
        let (a, b) = root.split_vertically(450);
        (a, Some(b))
    };
    let last_step = steps.last().map_or(1, |s| s.step).max(1) as f64;
    let max_loss = steps
        .iter()
        .map(|s| s.loss)
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let mut chart = ChartBuilder::on(&top)
        .caption("Training loss", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last_step, 0f64..max_loss * 1.05)
        .map_err(|e| plot_error(&e))?;
    // Steps are whole: no more ticks than steps, labelled as integers.
    let step_ticks = (last_step as usize + 1).min(10);
    let step_label = |v: &f64| format!("{}", v.round() as i64);
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .x_labels(step_ticks)
        .x_label_formatter(&step_label)
        .y_label_formatter(&bge_rerank_eval::report::tick)
        .draw()
        .map_err(|e| plot_error(&e))?;
    chart
        .draw_series(LineSeries::new(
            steps.iter().map(|s| (s.step as f64, s.loss)),
            BLUE.mix(0.3),
        ))
        .map_err(|e| plot_error(&e))?
        .label("per step")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.mix(0.3)));
    // A trailing mean over ~5% of the run shows the trend through per-batch noise (a run under 40
    // steps has no window worth drawing: the mean of one step is the step).
    let window = steps.len() / 20;
    if window >= 2 {
        let smoothed: Vec<(f64, f64)> = (0..steps.len())
            .map(|i| {
                let from = i.saturating_sub(window - 1);
                let slice = &steps[from..=i];
                let mean = slice.iter().map(|s| s.loss).sum::<f64>() / slice.len() as f64;
                (steps[i].step as f64, mean)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(smoothed, BLUE.stroke_width(2)))
            .map_err(|e| plot_error(&e))?
            .label(format!("mean of {window} steps"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    // The loss falls from the upper left: the legend goes upper right.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(&e))?;
    if let Some(area) = bottom {
        let (low, high) = evals
            .iter()
            .flat_map(|e| [e.first_stage, e.reranked])
            .fold((1.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let mut chart = ChartBuilder::on(&area)
            .caption("nDCG@10 at each checkpoint", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0f64..last_step,
                (low - 0.05).max(0.0)..(high + 0.05).min(1.0),
            )
            .map_err(|e| plot_error(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("nDCG@10")
            .x_labels(step_ticks)
            .x_label_formatter(&step_label)
            .y_label_formatter(&bge_rerank_eval::report::tick)
            .draw()
            .map_err(|e| plot_error(&e))?;
        let first = evals[0].first_stage;
        chart
            .draw_series(LineSeries::new(
                [(0.0, first), (last_step, first)],
                BLACK.mix(0.5),
            ))
            .map_err(|e| plot_error(&e))?
            .label("first stage")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
        chart
            .draw_series(LineSeries::new(
                evals.iter().map(|e| (e.step as f64, e.reranked)),
                RED.stroke_width(2),
            ))
            .map_err(|e| plot_error(&e))?
            .label("reranked")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(
                evals
                    .iter()
                    .map(|e| Circle::new((e.step as f64, e.reranked), 4, RED.filled())),
            )
            .map_err(|e| plot_error(&e))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(&e))?;
    }
    root.present().map_err(|e| plot_error(&e))?;
    Ok(output.join(CURVE_FILE))
}
