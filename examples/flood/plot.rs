//! The comparison plot: peak RSS and drain time per policy, as SVG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report::RunResult;

/// `target/flood.svg` when run from a cargo workspace, else `flood.svg`.
pub(crate) fn default_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    if target.is_dir() {
        target.join("flood.svg")
    } else {
        PathBuf::from("flood.svg")
    }
}

/// Draws two bar charts side by side.
pub(crate) fn write(path: &Path, results: &[RunResult]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let names: Vec<String> = results.iter().map(|r| r.policy.clone()).collect();
    let rss: Vec<f64> = results
        .iter()
        .map(|r| r.peak_rss_bytes as f64 / (1u64 << 20) as f64)
        .collect();
    let drain: Vec<f64> = results.iter().map(|r| r.drain_s).collect();
    bars(&left, "peak RSS (MiB, VmHWM)", &names, &rss, &BLUE)?;
    bars(&right, "drain time (s)", &names, &drain, &RED)?;
    root.present()?;
    Ok(())
}

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    names: &[String],
    values: &[f64],
    color: &RGBColor,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let max = values.iter().copied().fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d((0..names.len()).into_segmented(), 0.0..max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 12).into_font().transform(FontTransform::Rotate90))
        .draw()?;
    chart.draw_series(values.iter().enumerate().map(|(i, v)| {
        let mut bar = Rectangle::new(
            [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
            color.mix(0.6).filled(),
        );
        bar.set_margin(0, 0, 8, 8);
        bar
    }))?;
    Ok(())
}
