//! `cargo xtask bench`: the cost of tracing, against the untraced workload
//! and against peers, in one run, interleaved.
//!
//! The workload (bench/workload.c) maps and unmaps 64 KiB PAIRS times
//! through a 3-deep call chain, built -O2 without frame pointers, and times
//! its own loop. Every tracer attaches to it by pid before the loop starts
//! (the workload waits for a line on stdin), so start-up costs stay out of
//! the numbers and each tracer's CPU time and peak RSS are its own
//! (wait4 of the tracer, which the workload is not a child of).

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, run as run_cmd};

const DEFAULT_PAIRS: u64 = 200_000;
const DEFAULT_ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracer {
    Untraced,
    MmapTrace(&'static str),
    Bpftrace,
    PerfRecord,
}

impl Tracer {
    fn label(self) -> String {
        match self {
            Tracer::Untraced => "untraced".into(),
            Tracer::MmapTrace(mode) => format!("mmap-trace --unwind {mode}"),
            Tracer::Bpftrace => "bpftrace ustack".into(),
            Tracer::PerfRecord => "perf record --call-graph dwarf".into(),
        }
    }
}

const TRACERS: [Tracer; 6] = [
    Tracer::Untraced,
    Tracer::MmapTrace("fp"),
    Tracer::MmapTrace("dwarf"),
    Tracer::MmapTrace("auto"),
    Tracer::Bpftrace,
    Tracer::PerfRecord,
];

/// One measured run.
#[derive(Clone, Debug, Default)]
struct Sample {
    ns_per_pair: f64,
    /// Calls the tracer recorded (of 2 × pairs issued).
    captured: Option<u64>,
    cpu_s: Option<f64>,
    peak_rss: Option<u64>,
    /// Bytes the tracer wrote (perf.data; our JSON report).
    written: Option<u64>,
}

struct Setup {
    workload: PathBuf,
    mmap_trace: PathBuf,
    dir: PathBuf,
    pairs: u64,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (pairs, rounds) = parse_args(args)?;
    crate::setup::run()?;
    if !cmd::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    crate::setup::packages(&["bpftrace", "linux-perf"])?;
    mount_tracefs()?;
    run_cmd(command("cargo").args(["build", "--release", "-p", "mmap-trace"]))?;
    let root = cmd::workspace_root();
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir)?;
    let workload = dir.join("workload");
    run_cmd(
        command("gcc")
            .args(["-O2", "-g", "-fomit-frame-pointer", "-o"])
            .arg(&workload)
            .arg(root.join("bench/workload.c")),
    )?;
    let setup = Setup {
        workload,
        mmap_trace: root.join("target/release/mmap-trace"),
        dir,
        pairs,
    };

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); TRACERS.len()];
    for round in 1..=rounds {
        for (i, tracer) in TRACERS.iter().enumerate() {
            print!("xtask: round {round}/{rounds}: {:<32}", tracer.label());
            std::io::stdout().flush()?;
            let sample = measure(&setup, *tracer)
                .with_context(|| format!("measuring {}", tracer.label()))?;
            println!("{:>9.1} ns/pair", sample.ns_per_pair);
            samples[i].push(sample);
        }
    }
    print_table(&setup, rounds, &samples);
    Ok(())
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

/// The workload, started and waiting for "go".
struct Workload {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Workload {
    fn start(setup: &Setup) -> anyhow::Result<Self> {
        let mut child = Command::new(&setup.workload)
            .args([setup.pairs.to_string(), "--wait".into()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the workload")?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("the workload said {line:?}");
        }
        Ok(Workload { child, out })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the loop; returns its ns per pair.
    fn go(mut self) -> anyhow::Result<f64> {
        self.child.stdin.take().expect("piped").write_all(b"go\n")?;
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the workload failed ({status}): {line}");
        }
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("ns_per_pair="))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no ns_per_pair in {line:?}"))
    }
}

fn measure(setup: &Setup, tracer: Tracer) -> anyhow::Result<Sample> {
    let workload = Workload::start(setup)?;
    match tracer {
        Tracer::Untraced => Ok(Sample {
            ns_per_pair: workload.go()?,
            ..Default::default()
        }),
        Tracer::MmapTrace(mode) => measure_mmap_trace(setup, workload, mode),
        Tracer::Bpftrace => measure_bpftrace(workload),
        Tracer::PerfRecord => measure_perf(setup, workload),
    }
}

/// mmap-trace attached by pid, writing its JSON report: the calls it
/// captured are the report's event counts.
fn measure_mmap_trace(setup: &Setup, workload: Workload, mode: &str) -> anyhow::Result<Sample> {
    let report = setup.dir.join(format!("mmap-trace-{mode}.json"));
    let pid = workload.pid().to_string();
    let mut child = Command::new(&setup.mmap_trace)
        .args([
            "record", "--unwind", mode, "--format", "json", "--pid", &pid,
        ])
        .arg("--output")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_for_output(child.stderr.as_mut().expect("piped"), "tracing pid")?;
    let ns_per_pair = workload.go()?;
    let usage = wait_with_usage(&mut child, false)?;
    let json = fs::read_to_string(&report)?;
    Ok(Sample {
        ns_per_pair,
        captured: Some(json_number(&json, "mmap")? + json_number(&json, "munmap")?),
        written: Some(json.len() as u64),
        ..usage
    })
}

/// bpftrace counting user stacks in a map it prints at exit: what it
/// captured is the sum of the counts. It writes nothing to disk.
fn measure_bpftrace(workload: Workload) -> anyhow::Result<Sample> {
    let pid = workload.pid();
    let program = format!(
        "tracepoint:syscalls:sys_enter_mmap, tracepoint:syscalls:sys_enter_munmap \
         /pid == {pid}/ {{ @[ustack] = count(); }}"
    );
    let mut child = Command::new("bpftrace")
        .args(["-e", &program])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    wait_for_output(&mut stdout, "Attaching")?;
    let ns_per_pair = workload.go()?;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let usage = wait_with_usage(&mut child, true)?;
    let maps = reader
        .join()
        .expect("the reader thread does not panic")
        .context("reading bpftrace's output")?;
    let captured = maps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("]: "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    Ok(Sample {
        ns_per_pair,
        captured: Some(captured),
        ..usage
    })
}

/// perf record with DWARF stacks: what it captured is perf report's sample
/// count, what it wrote is perf.data.
fn measure_perf(setup: &Setup, workload: Workload) -> anyhow::Result<Sample> {
    let data = setup.dir.join("perf.data");
    let pid = workload.pid().to_string();
    let mut child = Command::new("perf")
        .args(["record", "-q", "--call-graph", "dwarf"])
        .args([
            "-e",
            "syscalls:sys_enter_mmap",
            "-e",
            "syscalls:sys_enter_munmap",
        ])
        .args(["-p", &pid, "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // perf says nothing when it is attached; give it time.
    thread::sleep(Duration::from_millis(1500));
    let ns_per_pair = workload.go()?;
    let usage = wait_with_usage(&mut child, true)?;
    let stats = Command::new("perf")
        .args(["report", "--stats", "-i"])
        .arg(&data)
        .output()?;
    let stats = String::from_utf8_lossy(&stats.stdout);
    let captured = stats
        .lines()
        .find(|l| l.trim_start().starts_with("SAMPLE events:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok());
    Ok(Sample {
        ns_per_pair,
        captured,
        written: fs::metadata(&data).ok().map(|m| m.len()),
        ..usage
    })
}

/// Reads `stream` until `needle` appears (the tracer is attached).
fn wait_for_output(stream: &mut impl std::io::Read, needle: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        if stream.read(&mut byte)? == 0 || started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the tracer did not attach: {}",
                String::from_utf8_lossy(&seen)
            );
        }
        seen.push(byte[0]);
    }
    Ok(())
}

/// Waits for a tracer (interrupting it first if `interrupt`) and returns
/// its own CPU time and peak RSS.
fn wait_with_usage(child: &mut Child, interrupt: bool) -> anyhow::Result<Sample> {
    let pid = child.id() as libc::pid_t;
    if interrupt {
        // Let it see the workload's last events, then stop it.
        thread::sleep(Duration::from_millis(200));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Sample {
        cpu_s: Some(seconds(usage.ru_utime) + seconds(usage.ru_stime)),
        peak_rss: Some(usage.ru_maxrss as u64 * 1024),
        ..Default::default()
    })
}

/// A number from our JSON report's "events" object.
fn json_number(json: &str, key: &str) -> anyhow::Result<u64> {
    let events = &json[json.find("\"events\"").context("no events in the report")?..];
    let at = events
        .find(&format!("\"{key}\":"))
        .with_context(|| format!("no events.{key}"))?;
    let value = events[at + key.len() + 3..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default();
    value
        .parse()
        .with_context(|| format!("events.{key} = {value:?}"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn print_table(setup: &Setup, rounds: usize, samples: &[Vec<Sample>]) {
    let issued = 2 * setup.pairs;
    let base = median(&mut samples[0].iter().map(|s| s.ns_per_pair).collect::<Vec<_>>());
    println!(
        "\nmmap-trace bench: {} mmap+munmap pairs of 64 KiB through a 3-deep call chain \
         (-O2, no frame pointers); median of {rounds} interleaved rounds",
        setup.pairs
    );
    println!(
        "{:<32} {:>9} {:>9} {:>17} {:>9} {:>11} {:>10} {:>10}",
        "tracer",
        "ns/pair",
        "vs none",
        "captured/issued",
        "lost",
        "tracer CPU",
        "peak RSS",
        "written"
    );
    for (tracer, runs) in TRACERS.iter().zip(samples) {
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
            "{:<32} {:>9.1} {:>8.2}x {:>17} {:>9} {:>11} {:>10} {:>10}",
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
