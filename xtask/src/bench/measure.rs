//! One measured run of one tracer on the workload.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub struct Setup {
    pub workload: PathBuf,
    /// bench/workload.py, run by Debian's python3.
    pub python_workload: PathBuf,
    pub mmap_trace: PathBuf,
    pub dir: PathBuf,
    pub pairs: u64,
}

/// Which loop the workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// mmap + munmap.
    Pairs,
    /// mmap, mprotect twice, madvise, munmap.
    Advising,
    /// mmap + munmap from Python code (bench/workload.py), 1/4 as many.
    Python,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracer {
    Untraced,
    MmapTrace {
        unwind: &'static str,
        /// More arguments (`--syscalls mmap,brk,shm`, `--python off`).
        extra: &'static [&'static str],
    },
    Bpftrace,
    PerfRecord,
}

impl Tracer {
    pub fn label(self) -> String {
        match self {
            Tracer::Untraced => "untraced".into(),
            Tracer::MmapTrace { unwind, extra } => {
                let mut label = format!("mmap-trace --unwind {unwind}");
                for arg in extra {
                    label.push(' ');
                    label.push_str(arg);
                }
                label
            }
            Tracer::Bpftrace => "bpftrace ustack".into(),
            Tracer::PerfRecord => "perf record --call-graph dwarf".into(),
        }
    }
}

/// One measured run.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub ns_per_pair: f64,
    /// Calls the tracer recorded.
    pub captured: Option<u64>,
    pub cpu_s: Option<f64>,
    pub peak_rss: Option<u64>,
    /// Bytes the tracer wrote (perf.data; our JSON report).
    pub written: Option<u64>,
}

impl WorkloadKind {
    /// The pairs a workload of this kind runs (Python's are slower).
    pub fn pairs(self, pairs: u64) -> u64 {
        match self {
            WorkloadKind::Python => (pairs / 4).max(1),
            _ => pairs,
        }
    }
}

/// The workload, started and waiting for "go".
pub struct Workload {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Workload {
    pub fn start(setup: &Setup, kind: WorkloadKind) -> anyhow::Result<Self> {
        let mut command = match kind {
            WorkloadKind::Python => {
                let mut python = Command::new("python3");
                python.arg(&setup.python_workload);
                python.arg(kind.pairs(setup.pairs).to_string());
                python
            }
            _ => {
                let mut native = Command::new(&setup.workload);
                native.arg(setup.pairs.to_string());
                native
            }
        };
        command.arg("--wait");
        if kind == WorkloadKind::Advising {
            command.arg("--advise");
        }
        let mut child = command
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the loop; returns its ns per pair.
    pub fn go(mut self) -> anyhow::Result<f64> {
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

pub fn measure(setup: &Setup, kind: WorkloadKind, tracer: Tracer) -> anyhow::Result<Sample> {
    let workload = Workload::start(setup, kind)?;
    match tracer {
        Tracer::Untraced => Ok(Sample {
            ns_per_pair: workload.go()?,
            ..Default::default()
        }),
        Tracer::MmapTrace { unwind, extra } => measure_mmap_trace(setup, workload, unwind, extra),
        Tracer::Bpftrace => measure_bpftrace(workload),
        Tracer::PerfRecord => measure_perf(setup, workload),
    }
}

/// mmap-trace attached by pid, writing its JSON report: the calls it
/// captured are the report's event counts.
fn measure_mmap_trace(
    setup: &Setup,
    workload: Workload,
    unwind: &str,
    extra: &[&str],
) -> anyhow::Result<Sample> {
    let report = setup.dir.join(format!("mmap-trace-{unwind}.json"));
    let pid = workload.pid().to_string();
    let mut command = Command::new(&setup.mmap_trace);
    command.args([
        "record", "--unwind", unwind, "--format", "json", "--pid", &pid,
    ]);
    command.args(extra);
    let mut child = command
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
        captured: Some(
            ["mmap", "munmap", "mprotect", "madvise"]
                .iter()
                .map(|call| json_number(&json, call))
                .sum::<anyhow::Result<u64>>()?,
        ),
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
pub fn wait_for_output(stream: &mut impl std::io::Read, needle: &str) -> anyhow::Result<()> {
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
pub fn wait_with_usage(child: &mut Child, interrupt: bool) -> anyhow::Result<Sample> {
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
pub fn json_number(json: &str, key: &str) -> anyhow::Result<u64> {
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
