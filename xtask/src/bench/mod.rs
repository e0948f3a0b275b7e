//! `cargo xtask bench`: the cost of tracing, against the untraced workload
//! and against peers, in one run, interleaved.
//!
//! The workload (bench/workload.c) maps and unmaps 64 KiB PAIRS times
//! through a 3-deep call chain, built -O2 without frame pointers, and times
//! its own loop. Every tracer attaches to it by pid before the loop starts
//! (the workload waits for a line on stdin), so start-up costs stay out of
//! the numbers and each tracer's CPU time and peak RSS are its own
//! (wait4 of the tracer, which the workload is not a child of).
//!
//! Three measurements:
//! 1. mmap+munmap pairs: untraced, mmap-trace (fp, dwarf, auto), bpftrace,
//!    perf record.
//! 2. the same pairs with an mprotect there and back and a madvise
//!    (DONTNEED) each: mmap-trace with every call traced (the default), and
//!    without mprotect/madvise (`--syscalls mmap,brk,shm`).
//! 3. the pairs from Python code (bench/workload.py): mmap-trace with
//!    Python frames (the default) and with `--python off`.
//! 4. what a sample of resident memory costs with 100,000 live regions.
//! 5. the bytes a trace takes per event (version 2, and as JSON lines).
//! 6. 8 threads racing on one address space, with the default buffer:
//!    the rate, and that nothing is lost or misordered there.

mod measure;
mod sampling;
mod table;
mod threads;
mod trace_size;

use std::{fs, io::Write as _, path::Path};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, run as run_cmd};
use measure::{Setup, Tracer, WorkloadKind};

const DEFAULT_PAIRS: u64 = 200_000;
const DEFAULT_ROUNDS: usize = 5;
const SAMPLED_REGIONS: u64 = 100_000;

/// The pairs workload's tracers. `--metrics-addr` (port 0: a free one)
/// next to plain auto shows what keeping the Prometheus metrics costs.
const TRACERS: [Tracer; 7] = [
    Tracer::Untraced,
    Tracer::MmapTrace {
        unwind: "fp",
        extra: &[],
    },
    Tracer::MmapTrace {
        unwind: "dwarf",
        extra: &[],
    },
    Tracer::MmapTrace {
        unwind: "auto",
        extra: &[],
    },
    Tracer::MmapTrace {
        unwind: "auto",
        extra: &["--metrics-addr", "127.0.0.1:0"],
    },
    Tracer::Bpftrace,
    Tracer::PerfRecord,
];

/// The advising workload's tracers.
const ADVISE_TRACERS: [Tracer; 3] = [
    Tracer::Untraced,
    Tracer::MmapTrace {
        unwind: "auto",
        extra: &[],
    },
    Tracer::MmapTrace {
        unwind: "auto",
        extra: &["--syscalls", "mmap,brk,shm"],
    },
];

/// The Python workload's tracers: with Python frames (the default) and
/// without.
const PYTHON_TRACERS: [Tracer; 3] = [
    Tracer::Untraced,
    Tracer::MmapTrace {
        unwind: "auto",
        extra: &[],
    },
    Tracer::MmapTrace {
        unwind: "auto",
        extra: &["--python", "off"],
    },
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (pairs, rounds) = parse_args(args)?;
    let setup = prepare(pairs)?;
    let plain = rounds_of(&setup, WorkloadKind::Pairs, &TRACERS, rounds)?;
    let advising = rounds_of(&setup, WorkloadKind::Advising, &ADVISE_TRACERS, rounds)?;
    let python = rounds_of(&setup, WorkloadKind::Python, &PYTHON_TRACERS, rounds)?;
    let sampling = sampling::measure(&setup, SAMPLED_REGIONS)?;
    let trace_size = trace_size::measure(&setup)?;
    let threads = threads::measure(&setup)?;
    table::print(
        &format!(
            "mmap-trace bench: {pairs} mmap+munmap pairs of 64 KiB through a 3-deep call chain \
             (-O2, no frame pointers); median of {rounds} interleaved rounds"
        ),
        |_| 2 * pairs,
        &TRACERS,
        &plain,
    );
    table::print(
        &format!(
            "the same {pairs} pairs, each with mprotect(PROT_NONE), mprotect(PROT_READ|WRITE) \
             and madvise(DONTNEED) before the munmap"
        ),
        // Without mprotect and madvise, 2 of the 5 calls are traced.
        |tracer| match tracer {
            Tracer::MmapTrace { extra, .. } if extra.contains(&"--syscalls") => 2 * pairs,
            _ => 5 * pairs,
        },
        &ADVISE_TRACERS,
        &advising,
    );
    let python_pairs = WorkloadKind::Python.pairs(pairs);
    table::print(
        &format!(
            "{python_pairs} mmap+munmap pairs of 64 KiB from Python (bench/workload.py, Debian's \
             python3, 8 Python frames deep): the cost of walking Python frames in the kernel"
        ),
        |_| 2 * python_pairs,
        &PYTHON_TRACERS,
        &python,
    );
    sampling.print();
    trace_size.print();
    threads.print();
    Ok(())
}

/// Installs the peers, builds mmap-trace and the workload.
fn prepare(pairs: u64) -> anyhow::Result<Setup> {
    crate::setup::run()?;
    if !cmd::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    crate::setup::packages(&["bpftrace", "linux-perf"])?;
    mount_tracefs()?;
    let (dir, workload) = build("target/bench")?;
    let root = cmd::workspace_root();
    Ok(Setup {
        workload,
        python_workload: root.join("bench/workload.py"),
        mmap_trace: root.join("target/release/mmap-trace"),
        dir,
        pairs,
    })
}

/// Builds mmap-trace (release) and the workload into `dir` (under the
/// workspace); returns the folder and the workload's path.
pub fn build(dir: &str) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    run_cmd(command("cargo").args(["build", "--release", "-p", "mmap-trace"]))?;
    let root = cmd::workspace_root();
    let dir = root.join(dir);
    fs::create_dir_all(&dir)?;
    let workload = dir.join("workload");
    run_cmd(
        command("gcc")
            .args(["-O2", "-g", "-fomit-frame-pointer", "-o"])
            .arg(&workload)
            .arg(root.join("bench/workload.c")),
    )?;
    Ok((dir, workload))
}

/// `rounds` interleaved rounds of every tracer on one workload.
fn rounds_of(
    setup: &Setup,
    kind: WorkloadKind,
    tracers: &[Tracer],
    rounds: usize,
) -> anyhow::Result<Vec<Vec<measure::Sample>>> {
    let mut samples = vec![Vec::new(); tracers.len()];
    for round in 1..=rounds {
        for (i, tracer) in tracers.iter().enumerate() {
            print!("xtask: round {round}/{rounds}: {:<48}", tracer.label());
            std::io::stdout().flush()?;
            let sample = measure::measure(setup, kind, *tracer)
                .with_context(|| format!("measuring {}", tracer.label()))?;
            println!("{:>9.1} ns/pair", sample.ns_per_pair);
            samples[i].push(sample);
        }
    }
    Ok(samples)
}

fn parse_args(args: &[String]) -> anyhow::Result<(u64, usize)> {
    let (mut pairs, mut rounds) = (DEFAULT_PAIRS, DEFAULT_ROUNDS);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args.next().context("a value after each flag")?;
        match arg.as_str() {
            "--pairs" => pairs = value.parse().context("--pairs N")?,
            "--rounds" => rounds = value.parse().context("--rounds N")?,
            other => bail!("unknown bench flag {other}; use --pairs N --rounds N"),
        }
    }
    if pairs == 0 || rounds == 0 {
        bail!("--pairs and --rounds must be positive");
    }
    Ok((pairs, rounds))
}

/// Peers read syscall tracepoints through tracefs; mmap-trace does not.
fn mount_tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events/syscalls").exists() {
        return Ok(());
    }
    println!("xtask: mounting tracefs at /sys/kernel/tracing (bpftrace and perf need it)");
    run_cmd(command("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
}
