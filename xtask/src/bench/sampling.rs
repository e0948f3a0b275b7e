//! What a sample of resident memory costs: mmap-trace attached to a
//! process that maps (and touches) many single pages, sampling every
//! 200 ms; its report says how long each sample took.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::measure::{Setup, wait_for_output, wait_with_usage};

/// The costs mmap-trace reported.
pub struct SamplingCost {
    regions: u64,
    samples: u64,
    max_s: f64,
    mean_s: f64,
    live_regions: u64,
}

impl SamplingCost {
    pub fn print(&self) {
        println!(
            "\nsampling resident memory of {} live regions (one page each, {} of them traced): \
             max {:.1} ms per sample, mean {:.1} ms over {} samples",
            self.regions,
            self.live_regions,
            self.max_s * 1e3,
            self.mean_s * 1e3,
            self.samples
        );
    }
}

pub fn measure(setup: &Setup, regions: u64) -> anyhow::Result<SamplingCost> {
    println!("xtask: sampling {regions} live regions");
    let mut workload = Command::new(&setup.workload)
        .args(["--regions", &regions.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the workload")?;
    let mut out = BufReader::new(workload.stdout.take().expect("piped"));
    let mut stdin = workload.stdin.take().expect("piped");
    let mut expect = |said: &str| -> anyhow::Result<()> {
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != said {
            bail!("the workload said {line:?}, not {said:?}");
        }
        Ok(())
    };
    expect("ready")?;
    let report = setup.dir.join("sampling.json");
    let pid = workload.id().to_string();
    let mut tracer = Command::new(&setup.mmap_trace)
        .args([
            "record",
            "--format",
            "json",
            "--interval",
            "200ms",
            "--pid",
            &pid,
        ])
        .arg("--output")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_for_output(tracer.stderr.as_mut().expect("piped"), "tracing pid")?;
    stdin.write_all(b"go\n")?;
    expect("mapped")?;
    // Enough samples of all of them.
    thread::sleep(Duration::from_secs(2));
    wait_with_usage(&mut tracer, true)?;
    stdin.write_all(b"go\n")?;
    workload.wait()?;
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    let number = |path: &[&str]| {
        path.iter()
            .fold(&json, |value, key| &value[key])
            .as_f64()
            .with_context(|| format!("no {} in the report", path.join(".")))
    };
    let samples = number(&["tracer", "samples"])?;
    Ok(SamplingCost {
        regions,
        samples: samples as u64,
        max_s: number(&["tracer", "sample_seconds_max"])?,
        mean_s: number(&["tracer", "sample_seconds_total"])? / samples.max(1.0),
        live_regions: number(&["totals", "live_regions"])? as u64,
    })
}
