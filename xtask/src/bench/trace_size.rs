//! What a trace costs on disk: mmap-trace attached to the pairs workload
//! with a trace file (version 2), and the same trace as JSON lines
//! (version 1, what `mmap-trace dump` prints).

use std::{
    fs,
    io::Read as _,
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::measure::{Setup, Workload, WorkloadKind, json_number, wait_for_output};

pub struct TraceSize {
    events: u64,
    compact: u64,
    json_lines: u64,
}

impl TraceSize {
    pub fn print(&self) {
        let per = |bytes: u64| bytes as f64 / self.events.max(1) as f64;
        println!(
            "\ntrace of the {} events of the pairs workload: {:.1} bytes an event \
             ({:.1} MiB, version 2); as JSON lines (version 1, `mmap-trace dump`) {:.1} bytes an event",
            self.events,
            per(self.compact),
            self.compact as f64 / 1048576.0,
            per(self.json_lines),
        );
    }
}

pub fn measure(setup: &Setup) -> anyhow::Result<TraceSize> {
    let trace = setup.dir.join("bench.mtrace");
    let workload = Workload::start(setup, WorkloadKind::Pairs)?;
    let pid = workload.pid().to_string();
    let mut tracer = Command::new(&setup.mmap_trace)
        .args(["record", "--format", "json", "--pid", &pid, "--output"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_for_output(tracer.stderr.as_mut().expect("piped"), "tracing pid")?;
    let mut stdout = tracer.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    workload.go()?;
    let status = tracer.wait()?;
    let json = reader.join().expect("the reader does not panic")?;
    if !status.success() {
        bail!("mmap-trace with a trace file failed ({status})");
    }
    serde_json::from_str::<Value>(&json).context("the report")?;
    let events = json_number(&json, "mmap")? + json_number(&json, "munmap")?;
    let compact = fs::metadata(&trace)?.len();
    let dumped = Command::new(&setup.mmap_trace)
        .arg("dump")
        .arg(&trace)
        .stderr(Stdio::inherit())
        .output()?;
    if !dumped.status.success() {
        bail!("mmap-trace dump failed");
    }
    fs::remove_file(&trace)?;
    Ok(TraceSize {
        events,
        compact,
        json_lines: dumped.stdout.len() as u64,
    })
}
