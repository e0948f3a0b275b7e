//! Command-line interface.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report::folded::Weight;

#[derive(Debug, Parser)]
#[command(
    name = "mmap-trace",
    version,
    about = "Which library, through which stack, made the memory mappings a process holds",
    long_about = "mmap-trace traces the system calls that map memory (mmap, munmap, mremap, brk, \
shmat, shmdt) of a process with eBPF, keeps a ledger of the mappings still live, and attributes \
every byte to the library that issued the call and to the code that asked for it. It finds what \
heap profilers cannot see: memory mapped directly (by allocators, memory hooks such as UCX's, GPU \
and RDMA libraries).\n\n\
It needs root (CAP_BPF and CAP_PERFMON; CAP_SYS_PTRACE for other users' processes).",
    propagate_version = true
)]
pub struct Cli {
    /// More diagnostics on stderr (-v: progress and the eBPF side's log; -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a command or running processes, then print a report.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Render the report of a trace file (written by `record -o FILE.mtrace`).
    Report(ReportArgs),
    /// Compare two traces or JSON reports (before and after a fix): live
    /// bytes and growth per issuer and requester.
    Diff(DiffArgs),
    /// A live view of running processes: who is growing, live and resident
    /// bytes per requester and issuer, each process's RSS, events per
    /// second, lost records. Refreshes every --interval; q quits.
    #[command(after_help = super::top::EXAMPLES)]
    Top(super::top::TopArgs),
    /// Print a trace file (either version) as JSON lines, one record a
    /// line: the version 1 format, which `report` reads too, for scripts
    /// (`mmap-trace dump run.mtrace | jq 'select(.event.syscall)'`).
    Dump(super::dump::DumpArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The trace file.
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,

    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// More known patterns (see record --help).
    #[arg(long = "patterns", value_name = "FILE")]
    pub patterns: Vec<PathBuf>,

    /// How many stacks the text report shows.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// What the pictures (folded, svg, html) weigh each stack by.
    #[arg(long, value_enum, default_value_t = Weight::Live)]
    pub weight: Weight,

    #[command(flatten)]
    pub verdict: VerdictArgs,
}

/// When growth gets a verdict, and what a verdict does to the exit status.
#[derive(Clone, Copy, Debug, Args)]
pub struct VerdictArgs {
    /// The shortest traced window (of running processes) that gets a
    /// growth verdict; it also needs 5 samples (see --interval). Shorter
    /// runs are reported without one: what they leave mapped is in the
    /// tables.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub min_window: Duration,

    /// Exit with status 10 when anything's resident memory grows steadily
    /// (for CI gates and scripted labs). A launched command that fails
    /// keeps its own status.
    #[arg(long)]
    pub fail_on_growth: bool,
}

impl VerdictArgs {
    pub fn judging(&self) -> crate::report::Judging {
        crate::report::Judging {
            min_window_s: self.min_window.as_secs_f64(),
            ..Default::default()
        }
    }
}

/// The exit status of `--fail-on-growth` when something is flagged.
pub const EXIT_GROWTH: i32 = 10;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The "before": a trace (.mtrace) or a JSON report.
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,

    /// The "after".
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,

    /// Output format: text, json, or a differential picture: folded
    /// (stack, before, after) or svg (a differential flame graph).
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// What the differential pictures weigh each stack by.
    #[arg(long, value_enum, default_value_t = Weight::Live)]
    pub weight: Weight,

    /// For traces: the shortest window that gets a growth verdict (as
    /// record --min-window).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub min_window: Duration,
}

const RECORD_EXAMPLES: &str = "\
Examples:
  mmap-trace record -- ./server --port 8080
      Start the command traced from its first instruction; report when it exits.
  mmap-trace record --pid 4242 --duration 60s
      Trace a running process (and its children, existing and new) for a minute.
  mmap-trace record --cgroup system.slice/docker-3f2a.scope --duration 5m
      Trace a container: every process of its cgroup.
  mmap-trace record --format json --output report.json -- python3 infer.py
      Write the JSON report (schema mmap-trace/report/v1) to a file.
  mmap-trace record --output before.mtrace --pid 4242 --duration 5m
      Keep a trace (report it later anywhere: mmap-trace report before.mtrace).
  mmap-trace record --format html --output report.html -- ./server
      One page to open in a browser: the verdict, tables, timeline, flame graph
      (also: --format svg, folded, pprof; --weight live|resident|mapped|calls).
  mmap-trace record --cgroup kubepods.slice --metrics-addr 0.0.0.0:9464
      An agent: Prometheus metrics at http://HOST:9464/metrics until stopped
      (SIGTERM or Ctrl-C; no --duration), then the report.

Reading the report:
  issuer     the object that made the system call (libucm.so when UCX's hooks are on)
  requester  the first frame outside libc, ld.so, allocators and memory hooks
  live       bytes still mapped at the end (for an exited process: at its exit)

With a command, mmap-trace exits with the command's exit status, as strace does.
With -o on a terminal, a status line on stderr says how tracing goes (-q: none).";

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Trace this running process, its existing children and the children it
    /// forks from now on (repeatable). Existing mappings count as
    /// pre-existing. Tracing ends when all --pid processes have exited.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Trace the running processes with this name (/proc/PID/comm; repeatable),
    /// as --pid does.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Trace every process of this cgroup v2 and of the cgroups below it (a
    /// container or a pod), including processes that start or move in later.
    /// A path in the cgroup hierarchy, absolute or relative to its mount.
    /// Tracing then ends at --duration or Ctrl-C.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Stop after this long (e.g. 30s, 500ms, 5m; a plain number is seconds).
    /// A launched command still running then gets SIGTERM (then SIGKILL).
    /// Without it, mmap-trace runs until stopped (Ctrl-C, SIGTERM) or until
    /// what it traces exits (--pid, --comm, a command; never for --cgroup):
    /// with --metrics-addr, that is an agent.
    #[arg(short, long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report to FILE instead of stdout. A FILE ending in .mtrace
    /// gets a trace instead (events, stacks and symbols resolved while the
    /// processes lived, the timeline), for `mmap-trace report` and `diff`
    /// later and elsewhere; the report then goes to stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// No status line. While tracing, when the report goes to a file (-o,
    /// or stdout redirected) and stderr is a terminal, one line on stderr,
    /// refreshed in place, says the time elapsed, the events traced, the
    /// records lost and the live and resident bytes; it is cleared before
    /// the report. Never on a pipe.
    #[arg(short, long)]
    pub quiet: bool,

    /// More known patterns (JSON, as mmap-trace/data/patterns.json) that turn
    /// a growth verdict into hints (repeatable).
    #[arg(long = "patterns", value_name = "FILE")]
    pub patterns: Vec<PathBuf>,

    /// How many stacks the text report shows.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// What the pictures (folded, svg, html) weigh each stack by.
    #[arg(long, value_enum, default_value_t = Weight::Live)]
    pub weight: Weight,

    #[command(flatten)]
    pub verdict: VerdictArgs,

    /// How calls are traced and sampled (shared with `top`).
    #[command(flatten)]
    pub tracing: super::live::TracingArgs,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics while tracing
    /// (e.g. 127.0.0.1:9464; 0.0.0.0:9464 for every interface; port 0 picks a
    /// free one, said on stderr): live, resident and reserved bytes per
    /// process and object (mmap_trace_live_bytes{pid,comm,role,object} ...),
    /// growth rates per object, each process's RSS, traced calls and lost
    /// records. Refreshed every --interval. With --cgroup and no --duration,
    /// mmap-trace runs as an agent until stopped (SIGTERM, Ctrl-C); with
    /// --pid or --comm, until those processes exit.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// With --metrics-addr: how many objects per role (issuer, requester) get
    /// a label of their own, those holding the most resident, then live,
    /// bytes; the rest of each process's bytes are summed as object="other".
    /// Bounds the number of series.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub metrics_top: usize,

    /// The command to start and trace, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Family {
    /// mmap, munmap, mremap.
    Mmap,
    /// brk: heap growth and shrinking.
    Brk,
    /// shmat, shmdt: System V shared memory.
    Shm,
    /// mprotect: reserved (PROT_NONE) and accessible address space.
    Mprotect,
    /// madvise that gives pages back (DONTNEED, FREE, REMOVE, PAGEOUT).
    Madvise,
}

impl Family {
    /// The families as the eBPF side's bit mask.
    pub fn mask(families: &[Family]) -> u32 {
        use mmap_trace_common::families as bits;
        families
            .iter()
            .map(|f| match f {
                Family::Mmap => bits::MMAP,
                Family::Brk => bits::BRK,
                Family::Shm => bits::SHM,
                Family::Mprotect => bits::MPROTECT,
                Family::Madvise => bits::MADVISE,
            })
            .fold(0, |mask, bit| mask | bit)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and top stacks, for people.
    Text,
    /// Everything, for scripts (see docs/report.md).
    Json,
    /// Folded stacks (root first, `;`-separated, then the weight), for
    /// inferno and flamegraph.pl.
    Folded,
    /// A flame graph (SVG; open it in a browser).
    Svg,
    /// A gzipped pprof profile, for go tool pprof, Pyroscope and Parca
    /// (binary: write it to a file).
    Pprof,
    /// One self-contained HTML page: verdict, tables, timeline, flame
    /// graph, stacks.
    Html,
}

impl Format {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Folded => "folded",
            Format::Svg => "svg",
            Format::Pprof => "pprof",
            Format::Html => "html",
        }
    }

    /// Bytes that are not text, which a terminal must not get.
    pub fn is_binary(self) -> bool {
        self == Format::Pprof
    }
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 5m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err("the duration must be positive".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(super) fn parse_stack_bytes(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix(['K', 'k']) {
        Some(kib) => (kib, 1024),
        None => (text, 1),
    };
    let bytes = number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a size like 32K or 16384"))?;
    let max = mmap_trace_common::MAX_STACK_WINDOW as u32;
    if !(512..=max).contains(&bytes) {
        return Err(format!(
            "the stack copy must be between 512 and {max} bytes"
        ));
    }
    Ok(bytes & !7)
}

pub(super) fn parse_buffer_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of MiB"))?;
    if !mib.is_power_of_two() || mib > 2048 {
        return Err("the buffer size must be a power of two between 1 and 2048 MiB".into());
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn record_takes_a_command_after_dashes() {
        let cli =
            Cli::try_parse_from(["mmap-trace", "record", "-f", "json", "--", "ls", "-l"]).unwrap();
        let Command::Record(args) = cli.command else {
            panic!("not record")
        };
        assert_eq!(
            args.command,
            vec![OsString::from("ls"), OsString::from("-l")]
        );
        assert_eq!(args.format, Format::Json);
        assert_eq!(args.tracing.buffer_size, 16);
        assert!(Cli::try_parse_from(["mmap-trace", "record", "--buffer-size", "3"]).is_err());
        assert_eq!(args.tracing.unwind, crate::model::UnwindMode::Auto);
        assert_eq!(
            Family::mask(&args.tracing.syscalls),
            mmap_trace_common::families::ALL
        );
        assert_eq!(args.tracing.stack_bytes, 32 * 1024);
    }

    #[test]
    fn pictures_have_formats_and_weights() {
        let cli = Cli::try_parse_from([
            "mmap-trace",
            "report",
            "-f",
            "pprof",
            "--weight",
            "resident",
            "x.mtrace",
        ])
        .unwrap();
        let Command::Report(args) = cli.command else {
            panic!("not report")
        };
        assert_eq!(
            (args.format, args.weight),
            (Format::Pprof, Weight::Resident)
        );
        assert!(args.format.is_binary());
        let cli = Cli::try_parse_from(["mmap-trace", "diff", "-f", "svg", "a", "b"]).unwrap();
        let Command::Diff(args) = cli.command else {
            panic!("not diff")
        };
        assert_eq!((args.format, args.weight), (Format::Svg, Weight::Live));
        for format in Format::value_variants() {
            let name = format.to_possible_value().unwrap();
            assert_eq!(name.get_name(), format.name());
        }
    }

    #[test]
    fn stack_bytes() {
        assert_eq!(parse_stack_bytes("16K"), Ok(16384));
        assert_eq!(parse_stack_bytes("4100"), Ok(4096), "whole words");
        assert!(parse_stack_bytes("128K").is_err());
        assert!(parse_stack_bytes("abc").is_err());
    }
}
