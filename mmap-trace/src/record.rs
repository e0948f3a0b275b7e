//! `mmap-trace record`: set up the targets, trace, resolve, report.

use std::{
    fs::File,
    io::{self, Write as _},
    os::unix::ffi::OsStrExt as _,
};

use anyhow::Context as _;

use crate::{
    attribute::Rules,
    cli::{Format, RecordArgs},
    collector::Collector,
    growth::Thresholds,
    launch::{self, LaunchError},
    loader::{self, Tracer},
    modules::ModuleMaps,
    patterns,
    perf_mmap::PerfRing,
    privileges,
    recording::{Ending as RecordedEnding, Header, Recording},
    report::{self, TracerUsage},
    resolve,
    session::{self, RulesMap, Session, StopWhen, Watched},
    targets::{self, Selection},
    tracefile::{self, TraceWriter},
    trends::Trends,
    unwind::{self, copies::CopyUnwinder},
};

/// Exit code when mmap-trace itself fails.
pub const EXIT_FAILURE: i32 = 1;

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub source: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(source: E) -> Self {
        Failure {
            code: EXIT_FAILURE,
            source: source.into(),
        }
    }
}

/// Runs `record`; returns the exit code (the command's, if one was run).
pub fn run(args: RecordArgs, verbose: bool) -> Result<i32, Failure> {
    if args.pids.is_empty()
        && args.comms.is_empty()
        && args.cgroup.is_none()
        && args.command.is_empty()
    {
        return Err(anyhow::anyhow!(
            "nothing to trace: give --pid, --comm, --cgroup or a command after `--` (see --help)"
        )
        .into());
    }
    // Everything that can be checked without the kernel is checked first.
    let command = match args.command.as_slice() {
        [] => None,
        argv => Some(launch::Command::new(argv).map_err(|e| Failure {
            code: match e {
                LaunchError::NotFound(_) => 127,
                LaunchError::NotExecutable(_) => 126,
                _ => EXIT_FAILURE,
            },
            source: e.into(),
        })?),
    };
    let targets = targets::select(&args.pids, &args.comms, args.cgroup.as_deref())?;
    privileges::check()?;
    let patterns = patterns::load(&args.patterns)?;
    // A trace file gets the recording; the report then goes to stdout.
    let trace_path = args
        .output
        .as_deref()
        .filter(|p| tracefile::is_trace_path(p));
    let mut output = Output::open(args.output.as_deref().filter(|_| trace_path.is_none()))?;
    let trace_writer = match trace_path {
        Some(path) => Some(
            TraceWriter::create(path, header(&args))
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let (recording, exit_code) =
        runtime.block_on(trace(&args, command, targets, trace_writer, verbose))?;

    let report = recording.report(&patterns, Thresholds::default());
    output.write(&render(&report, args.format, args.top))?;
    Ok(exit_code)
}

/// The report in `format`.
pub fn render(report: &report::Report, format: Format, top: usize) -> String {
    match format {
        Format::Text => report::render_text(report, top),
        Format::Json => report.to_json() + "\n",
    }
}

fn header(args: &RecordArgs) -> Header {
    Header {
        format: tracefile::FORMAT.into(),
        version: tracefile::VERSION,
        tool: env!("CARGO_PKG_VERSION").into(),
        command: command_argv(args),
        unwinder: args.unwind.name().into(),
        interposers: args.interposers.clone(),
    }
}

fn command_argv(args: &RecordArgs) -> Option<Vec<String>> {
    (!args.command.is_empty()).then(|| {
        args.command
            .iter()
            .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
            .collect()
    })
}

async fn trace(
    args: &RecordArgs,
    command: Option<launch::Command>,
    targets: Selection,
    trace: Option<TraceWriter>,
    verbose: bool,
) -> Result<(Recording, i32), Failure> {
    let mut tracer = Tracer::load(loader::Config {
        ring_bytes: args.buffer_size << 20,
        unwind: args.unwind,
        stack_bytes: args.stack_bytes,
        cgroup: targets.cgroup.as_ref().map(|c| (c.id, c.level)),
        syscalls: crate::cli::Family::mask(&args.syscalls),
        verbose,
    })?;
    let unwinder = match args.unwind {
        unwind::Mode::Fp => None,
        mode => Some(CopyUnwinder::new(mode, RulesMap(tracer.take_rules()?))),
    };
    let rules = Rules::new(&args.interposers);
    let mut session = Session {
        events: tracer.take_events()?,
        perf: open_perf_rings()?,
        collector: Collector::default(),
        modules: ModuleMaps::default(),
        unwinder,
        trends: Trends::new(rules.clone(), args.interval),
        trace,
    };
    for pid in targets.all_pids() {
        // Trace first, then read the maps: a mapping made in between is
        // seen twice, and the traced call wins.
        tracer.add_target(pid)?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        session.collector.add_target(pid, comm.trim_end(), 0);
        session.seed(pid);
    }
    announce(&targets);
    let watched_command = match &command {
        None => None,
        Some(command) => {
            let gated = command.spawn_gated()?;
            let pidfd = session::pidfd_open(gated.pid)
                .with_context(|| format!("watching {}", command.name()))?;
            tracer.add_target(gated.pid)?;
            session.collector.add_target(gated.pid, command.name(), 0);
            session.modules.claim(gated.pid);
            let pid = gated.release().map_err(|e| Failure {
                code: 127,
                source: e.into(),
            })?;
            log::info!("started {} as pid {pid}", command.name());
            Some(Watched { pid, pidfd })
        }
    };
    let ending = session
        .run(StopWhen {
            command: watched_command,
            // A traced cgroup has no last process: it ends by time or signal.
            targets: match targets.cgroup {
                Some(_) => None,
                None => Some(targets.watched),
            },
            duration: args.duration,
        })
        .await
        .context("tracing")?;
    let kernel = tracer.counters();
    drop(tracer); // detach before the (slower) symbolization

    log::info!(
        "resolving {} stacks; tracing stopped by {}",
        session.collector.stacks.len(),
        ending.reason
    );
    let stacks = resolve::resolve_all(&session.collector.stacks, &session.modules, &rules);
    let executables = session
        .collector
        .processes()
        .filter_map(|p| {
            let exe = session.modules.executable(p.pid, u64::MAX)?;
            Some((p.pid, exe.to_owned()))
        })
        .collect();
    let recorded_ending = RecordedEnding {
        stopped_by: ending.reason,
        command_status: ending.command_status.map(|s| s.to_string()),
        time_ns: ending.time_ns,
        kernel,
        unwinding: session
            .unwinder
            .as_ref()
            .map(|u| u.counts)
            .unwrap_or_default(),
        tracer: TracerUsage::of_self(),
        lost_mapping_records: session.modules.lost,
        executables,
    };
    let Session {
        collector,
        trends,
        trace,
        ..
    } = session;
    if let Some(trace) = trace {
        trace.finish(&stacks, &trends.resident, &recorded_ending)?;
    }
    let recording = Recording {
        header: header(args),
        collector,
        stacks,
        growth: trends.growth,
        resident: trends.resident,
        timeline: trends.timeline,
        ending: recorded_ending,
    };
    Ok((
        recording,
        ending.command_status.map_or(0, |s| s.as_exit_code()),
    ))
}

/// Says on stderr what is being traced (scripts wait for "tracing").
fn announce(targets: &Selection) {
    for watched in &targets.watched {
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", watched.pid)).unwrap_or_default();
        eprintln!(
            "mmap-trace: tracing pid {} ({}); stop with Ctrl-C",
            watched.pid,
            comm.trim_end()
        );
    }
    if !targets.others.is_empty() {
        eprintln!(
            "mmap-trace: tracing {} more running process{} (descendants, cgroup members)",
            targets.others.len(),
            if targets.others.len() == 1 { "" } else { "es" }
        );
    }
    if let Some(cgroup) = &targets.cgroup {
        eprintln!(
            "mmap-trace: tracing cgroup {} and the processes that join it; stop with Ctrl-C",
            cgroup.path.display()
        );
    }
}

fn open_perf_rings() -> anyhow::Result<Vec<PerfRing>> {
    let cpus =
        aya::util::online_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))?;
    cpus.into_iter()
        .map(|cpu| PerfRing::open(cpu).map_err(crate::error::TraceError::Perf))
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

/// Where the report goes; a file is created before tracing starts, so a bad
/// path fails at once rather than after a long trace.
pub enum Output {
    Stdout,
    File(File, String),
}

impl Output {
    pub fn open(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        Ok(match path {
            None => Output::Stdout,
            Some(path) => Output::File(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                path.display().to_string(),
            ),
        })
    }

    pub fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let result = match self {
            Output::Stdout => io::stdout().lock().write_all(text.as_bytes()),
            Output::File(file, _) => file
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_all()),
        };
        match (result, self) {
            (Ok(()), _) => Ok(()),
            // A closed pipe (`| head`) is the reader's choice, not an error.
            (Err(e), Output::Stdout) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            (Err(e), Output::Stdout) => Err(e).context("cannot write the report to stdout"),
            (Err(e), Output::File(_, path)) => {
                Err(e).with_context(|| format!("cannot write the report to {path}"))
            }
        }
    }
}
