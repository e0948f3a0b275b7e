//! Many threads racing on one address space (tests/fixtures/hammer.c, built
//! -O2): the rate at which the default ring buffer (16 MiB) must keep up,
//! and whether the ledger stays exact there. Untraced, then under
//! `mmap-trace record` with its defaults: calls a second each, what was
//! lost, what arrived out of the order the kernel applied it, and any
//! unmap of a range never seen mapped.

use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::measure::Setup;
use crate::cmd::{command, run as run_cmd, workspace_root};

const THREADS: u64 = 8;
const ITERATIONS: u64 = 100_000;

pub struct Threads {
    untraced: Rate,
    traced: Rate,
    events: u64,
    lost: u64,
    out_of_order: u64,
    unknown_unmapped: u64,
}

/// The fixture's own count and time of its threads' calls.
struct Rate {
    calls: u64,
    ns: u64,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.calls as f64 * 1e9 / self.ns.max(1) as f64
    }

    /// "hammer: CALLS calls in NS ns" on the fixture's stderr.
    fn parse(stderr: &[u8]) -> anyhow::Result<Rate> {
        let text = String::from_utf8_lossy(stderr);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("hammer: "))
            .with_context(|| format!("no timing line from the fixture: {text}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [calls, "calls", "in", ns, "ns"] => Ok(Rate {
                calls: calls.parse()?,
                ns: ns.parse()?,
            }),
            _ => bail!("unexpected timing line {line:?}"),
        }
    }
}

impl Threads {
    pub fn print(&self) {
        println!(
            "\n{THREADS} threads racing on one address space (tests/fixtures/hammer.c, -O2), \
             default ring buffer: untraced {:.0}k calls/s; traced {:.0}k calls/s, \
             {} events, {} lost, {} out of order, {} bytes unmapped never seen mapped",
            self.untraced.per_second() / 1e3,
            self.traced.per_second() / 1e3,
            self.events,
            self.lost,
            self.out_of_order,
            self.unknown_unmapped,
        );
    }
}

pub fn measure(setup: &Setup) -> anyhow::Result<Threads> {
    let hammer = setup.dir.join("hammer");
    run_cmd(
        command("gcc")
            .args(["-O2", "-g", "-pthread", "-o"])
            .arg(&hammer)
            .arg(workspace_root().join("tests/fixtures/hammer.c")),
    )?;
    let args = [THREADS.to_string(), ITERATIONS.to_string()];
    let untraced = finished(Command::new(&hammer).args(&args), "the untraced fixture")?;
    let traced = finished(
        Command::new(&setup.mmap_trace)
            .args(["record", "--format", "json", "--"])
            .arg(&hammer)
            .args(&args),
        "mmap-trace record on the fixture",
    )?;
    let report: Value = serde_json::from_slice(&traced.stdout).context("the report")?;
    let number = |pointer: &str| {
        report
            .pointer(pointer)
            .and_then(Value::as_u64)
            .with_context(|| format!("no {pointer} in the report"))
    };
    Ok(Threads {
        untraced: Rate::parse(&untraced.stderr)?,
        traced: Rate::parse(&traced.stderr)?,
        events: number("/events/mmap")? + number("/events/munmap")?,
        lost: number("/events/lost")?,
        out_of_order: number("/events/out_of_order")?,
        unknown_unmapped: number("/totals/unknown_unmapped_bytes")?,
    })
}

fn finished(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}
