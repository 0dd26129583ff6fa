//! Presenting an evaluation: a terminal table, and a report as JSON, a Markdown table and an SVG plot
//! of the per-query change.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{EvalError, Result};
use crate::eval::{average, summary, DataSetResult};

fn rows(results: &[DataSetResult]) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    for r in results {
        for (i, m) in r.first_stage.metrics.iter().enumerate() {
            let (before, after) = (r.first_stage.mean[i], r.reranked.mean[i]);
            rows.push([
                r.name.clone(),
                m.name.clone(),
                format!("{before:.4}"),
                format!("{after:.4}"),
                format!("{:+.4}", after - before),
            ]);
        }
    }
    if results.len() > 1 {
        let (before, after) = average(results);
        for (i, m) in results[0].first_stage.metrics.iter().enumerate() {
            rows.push([
                "average".into(),
                m.name.clone(),
                format!("{:.4}", before[i]),
                format!("{:.4}", after[i]),
                format!("{:+.4}", after[i] - before[i]),
            ]);
        }
    }
    rows
}

const HEADER: [&str; 5] = ["data set", "metric", "first stage", "reranked", "diff"];

fn notes(results: &[DataSetResult]) -> Vec<String> {
    results
        .iter()
        .map(|r| {
            let (up, down, same) = r.changes(0);
            let metric = &r.first_stage.metrics[0].name;
            let mut line = format!(
                "{}: {} queries, first stage {}; by {metric}: {up} improved, {down} worsened, {same} unchanged; \
                 {} pairs ({} scored, {} from cache) in {:.1} s",
                r.name,
                r.reranked.num_queries(),
                r.first_stage_name,
                r.pairs.total,
                r.pairs.scored,
                r.pairs.from_cache,
                r.seconds
            );
            if r.missing_docs.0 > 0 {
                line.push_str(&format!(
                    "; {} documents of the run are not in the corpus (e.g. {})",
                    r.missing_docs.0,
                    r.missing_docs.1.join(", ")
                ));
            }
            if r.missing_queries.0 > 0 {
                line.push_str(&format!(
                    "; {} queries of the run are not judged or have no text (e.g. {})",
                    r.missing_queries.0,
                    r.missing_queries.1.join(", ")
                ));
            }
            line
        })
        .collect()
}

/// The table printed after an evaluation.
pub fn table(results: &[DataSetResult]) -> String {
    let rows = rows(results);
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([HEADER[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(&HEADER.map(String::from));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    for note in notes(results) {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

pub fn markdown(results: &[DataSetResult]) -> String {
    let mut out = format!("| {} |\n|---|---|---:|---:|---:|\n", HEADER.join(" | "));
    for row in rows(results) {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out.push('\n');
    for note in notes(results) {
        out.push_str(&format!("- {note}\n"));
    }
    out
}

/// What a report's numbers came from, recorded in its JSON and Markdown so that two reports can be
/// told apart (and one reproduced) later.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportContext {
    /// The model as given (folder or Hugging Face id), and its adapter if any.
    pub model: String,
    pub adapter: Option<String>,
    /// `Reranker::fingerprint()`: changes with any file the scores depend on.
    pub fingerprint: String,
    /// Precision and kernel, as `--verbose` says them.
    pub dtype: String,
    /// The options that change the figures (top-k, metrics, max length, ...).
    pub options: serde_json::Value,
    /// "bge-rerank X.Y.Z".
    pub version: String,
}

impl ReportContext {
    fn markdown(&self) -> String {
        let adapter = self
            .adapter
            .as_deref()
            .map_or(String::new(), |a| format!(", adapter `{a}`"));
        format!(
            "Model `{}`{adapter} (fingerprint {}), {}; options `{}`; {}.\n\n",
            self.model, self.fingerprint, self.dtype, self.options, self.version
        )
    }
}

/// A tick label: two decimals, and never "-0.00" (a tiny negative rounds to plain 0).
pub fn tick(value: &f64) -> String {
    let text = format!("{value:.2}");
    match text.as_str() {
        "-0.00" => "0.00".into(),
        _ => text,
    }
}

/// Writes `<stem>.json`, `<stem>.md` and `<stem>.svg` (for a given `OUT`, OUT with those extensions).
pub fn write_report(
    out: &Path,
    results: &[DataSetResult],
    context: &ReportContext,
) -> Result<Vec<std::path::PathBuf>> {
    let json_path = out.with_extension("json");
    let md_path = out.with_extension("md");
    let svg_path = out.with_extension("svg");
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| EvalError::io(parent, e))?;
    }
    let (before, after) = average(results);
    let json = serde_json::json!({
        "context": context,
        "data_sets": summary(results),
        "average": results.first().map(|r| r.first_stage.metrics.iter().enumerate().map(|(i, m)| {
            (m.name.clone(), serde_json::json!({"first_stage": before[i], "reranked": after[i], "diff": after[i] - before[i]}))
        }).collect::<serde_json::Map<_, _>>()),
    });
    let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
    std::fs::write(&json_path, pretty).map_err(|e| EvalError::io(&json_path, e))?;
    let md = context.markdown() + &markdown(results);
    std::fs::write(&md_path, md).map_err(|e| EvalError::io(&md_path, e))?;
    plot_deltas(&svg_path, results)?;
    Ok(vec![json_path, md_path, svg_path])
}

/// Per-query change of the first metric, sorted, one line per data set.
fn plot_deltas(path: &Path, results: &[DataSetResult]) -> Result<()> {
    let plot_error = |e: &dyn std::fmt::Display| {
        EvalError::Invalid(format!("{}: plotting failed: {e}", path.display()))
    };
    let series: Vec<(String, Vec<f64>)> = results
        .iter()
        .map(|r| (r.name.clone(), r.sorted_deltas(0)))
        .collect();
    let metric = results.first().map_or("metric".to_string(), |r| {
        r.first_stage.metrics[0].name.clone()
    });
    let (low, high) = series
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .fold((-0.1f64, 0.1f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Per-query {metric} change after reranking (sorted)"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..100f64, low * 1.05..high * 1.05)
        .map_err(|e| plot_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("queries, sorted by change (%)")
        .y_desc(format!("{metric} reranked - first stage"))
        .y_label_formatter(&tick)
        .draw()
        .map_err(|e| plot_error(&e))?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (100.0, 0.0)], BLACK.mix(0.4)))
        .map_err(|e| plot_error(&e))?;
    for (i, (name, deltas)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let n = deltas.len().max(2) - 1;
        chart
            .draw_series(LineSeries::new(
                deltas
                    .iter()
                    .enumerate()
                    .map(|(j, &d)| (j as f64 / n as f64 * 100.0, d)),
                color.stroke_width(2),
            ))
            .map_err(|e| plot_error(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    // Sorted changes rise from left to right: the upper left is free for the legend.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(&e))?;
    root.present().map_err(|e| plot_error(&e))?;
    Ok(())
}
