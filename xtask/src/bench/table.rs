//! The tables the bench prints.

use super::measure::{Sample, Tracer};

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One table: per tracer, medians over the rounds; ratios against the
/// first tracer (untraced). `issued(tracer)`: the calls the workload made
/// that the tracer was asked to trace.
pub fn print(
    title: &str,
    issued: impl Fn(&Tracer) -> u64,
    tracers: &[Tracer],
    samples: &[Vec<Sample>],
) {
    let base = median(&mut samples[0].iter().map(|s| s.ns_per_pair).collect::<Vec<_>>());
    println!("\n{title}");
    println!(
        "{:<52} {:>9} {:>9} {:>17} {:>9} {:>11} {:>10} {:>10}",
        "tracer",
        "ns/pair",
        "vs none",
        "captured/issued",
        "lost",
        "tracer CPU",
        "peak RSS",
        "written"
    );
    for (tracer, runs) in tracers.iter().zip(samples) {
        let issued = issued(tracer);
        let ns = median(&mut runs.iter().map(|s| s.ns_per_pair).collect::<Vec<_>>());
        let pick = |f: fn(&Sample) -> Option<f64>| {
            let mut values: Vec<f64> = runs.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| median(&mut values))
        };
        let captured = pick(|s| s.captured.map(|c| c as f64));
        let cpu = pick(|s| s.cpu_s);
        let rss = pick(|s| s.peak_rss.map(|r| r as f64));
        let written = pick(|s| s.written.map(|w| w as f64));
        let dash = || "-".to_owned();
        println!(
            "{:<52} {:>9.1} {:>8.2}x {:>17} {:>9} {:>11} {:>10} {:>10}",
            tracer.label(),
            ns,
            ns / base,
            captured.map_or_else(dash, |c| format!("{}/{issued}", c as u64)),
            captured.map_or_else(dash, |c| format!(
                "{:.1}%",
                100.0 * (issued as f64 - c).max(0.0) / issued as f64
            )),
            cpu.map_or_else(dash, |c| format!("{c:.2} s")),
            rss.map_or_else(dash, |r| format!("{:.1} MiB", r / 1048576.0)),
            written.map_or_else(dash, |w| format!("{:.1} MiB", w / 1048576.0)),
        );
    }
}
