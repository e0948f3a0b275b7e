//! `cargo xtask soak --minutes N`: mmap-trace on a busy workload for a
//! long time. It traces the bench workload (mmap+munmap pairs through a
//! 3-deep call chain, as fast as it goes: a few hundred thousand calls a
//! second traced) with a trace file, and checks what hours of production
//! need: the tracer's RSS stays flat (the slope of its samples is
//! printed), nothing is lost, and the report of the live run equals the
//! report replayed from its trace.

use std::{
    fs,
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cmd;

/// How often the tracer's RSS is read.
const RSS_EVERY: Duration = Duration::from_secs(5);

/// The tracer's RSS may grow this much a minute and still count as flat
/// (samples of the time series accumulate: about a kilobyte a second).
const FLAT_KIB_PER_MIN: f64 = 512.0;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let minutes = parse_minutes(args)?;
    crate::setup::run()?;
    if !cmd::is_root() {
        bail!("the soak loads eBPF programs: run it as root");
    }
    let (dir, workload) = crate::bench::build("target/soak")?;
    let root = cmd::workspace_root();
    let trace = dir.join("soak.mtrace");
    let mmap_trace = root.join("target/release/mmap-trace");
    println!("xtask: soak: tracing the bench workload for {minutes} min");
    let started = Instant::now();
    let mut tracer = Command::new(&mmap_trace)
        .args(["record", "--format", "json", "--syscalls", "mmap"])
        .arg("--duration")
        .arg(format!("{minutes}m"))
        .arg("--output")
        .arg(&trace)
        .arg("--")
        .arg(&workload)
        .arg("100000000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting mmap-trace")?;
    let mut stdout = tracer.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let mut rss: Vec<(f64, f64)> = Vec::new();
    while tracer.try_wait()?.is_none() {
        if let Some(kib) = vm_rss_kib(tracer.id()) {
            rss.push((started.elapsed().as_secs_f64() / 60.0, kib));
        }
        thread::sleep(RSS_EVERY);
    }
    let live_json = reader.join().expect("the reader does not panic")?;
    let live: Value = serde_json::from_str(&live_json).context("the live report")?;
    let replayed = Command::new(&mmap_trace)
        .args(["report", "--format", "json"])
        .arg(&trace)
        .output()?;
    if !replayed.status.success() {
        bail!(
            "report of the trace failed: {}",
            String::from_utf8_lossy(&replayed.stderr)
        );
    }
    let replayed: Value =
        serde_json::from_slice(&replayed.stdout).context("the replayed report")?;
    let events = live["events"]["mmap"].as_u64().unwrap_or(0)
        + live["events"]["munmap"].as_u64().unwrap_or(0);
    let lost = live["events"]["lost"].as_u64().unwrap_or(u64::MAX);
    let trace_bytes = fs::metadata(&trace)?.len();
    fs::remove_file(&trace)?;
    let seconds = started.elapsed().as_secs_f64();
    // The first minute (a third of a short run) holds start-up: symbol
    // tables, the first rules.
    let warm = (minutes as f64 / 3.0).min(1.0);
    let steady: Vec<(f64, f64)> = rss.iter().copied().filter(|(m, _)| *m >= warm).collect();
    let slope = slope(if steady.len() >= 3 { &steady } else { &rss });
    println!("\nmmap-trace soak: {minutes} min of the bench workload, traced to a trace file");
    println!(
        "  events      {events} ({:.0} a second), lost {lost}",
        events as f64 / seconds
    );
    println!(
        "  tracer RSS  {:.1} MiB after start-up, {:.1} MiB at the end: {:+.1} KiB/min",
        steady.first().or(rss.first()).map_or(0.0, |r| r.1 / 1024.0),
        rss.last().map_or(0.0, |r| r.1 / 1024.0),
        slope
    );
    println!(
        "  trace       {:.1} MiB, {:.1} bytes an event",
        trace_bytes as f64 / 1048576.0,
        trace_bytes as f64 / events.max(1) as f64
    );
    println!(
        "  live report equals the replay of its trace: {}",
        live == replayed
    );
    let mut failures = Vec::new();
    if lost != 0 || live["complete"] != true {
        failures.push(format!("{lost} records lost"));
    }
    if slope > FLAT_KIB_PER_MIN {
        failures.push(format!("the tracer's RSS grows {slope:.0} KiB/min"));
    }
    if live != replayed {
        failures.push("the replayed report differs from the live one".into());
    }
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}

fn parse_minutes(args: &[String]) -> anyhow::Result<u64> {
    match args {
        [] => Ok(5),
        [flag, value] if flag == "--minutes" => {
            let minutes: u64 = value.parse().context("--minutes N")?;
            if minutes == 0 {
                bail!("--minutes must be positive");
            }
            Ok(minutes)
        }
        _ => bail!("usage: cargo xtask soak [--minutes N] (default 5)"),
    }
}

/// VmRSS of `pid`, in KiB.
fn vm_rss_kib(pid: u32) -> Option<f64> {
    let status =
        fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Least-squares slope of (minutes, KiB): KiB a minute.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(xy, xx), p| {
        (xy + (p.0 - mx) * (p.1 - my), xx + (p.0 - mx) * (p.0 - mx))
    });
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_and_arguments() {
        assert_eq!(slope(&[(0.0, 10.0), (1.0, 12.0), (2.0, 14.0)]), 2.0);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
        assert_eq!(parse_minutes(&[]).unwrap(), 5);
        assert_eq!(
            parse_minutes(&["--minutes".into(), "30".into()]).unwrap(),
            30
        );
        assert!(parse_minutes(&["--minutes".into(), "0".into()]).is_err());
    }
}
