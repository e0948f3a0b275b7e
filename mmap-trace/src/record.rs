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
    report::{self, ReportInputs},
    resolve,
    session::{self, RulesMap, Session, StopWhen, Watched},
    targets::{self, Selection},
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
    let mut output = Output::open(args.output.as_deref())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let traced = runtime.block_on(trace(&args, command, targets, verbose))?;

    let text = match args.format {
        Format::Text => report::render_text(&traced.report, args.top),
        Format::Json => traced.report.to_json() + "\n",
    };
    output.write(&text)?;
    Ok(traced.exit_code)
}

struct Traced {
    report: report::Report,
    exit_code: i32,
}

async fn trace(
    args: &RecordArgs,
    command: Option<launch::Command>,
    targets: Selection,
    verbose: bool,
) -> Result<Traced, Failure> {
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
    let patterns = patterns::load(&args.patterns)?;
    let mut session = Session {
        events: tracer.take_events()?,
        perf: open_perf_rings()?,
        collector: Collector::default(),
        modules: ModuleMaps::default(),
        unwinder,
        trends: Trends::new(rules.clone(), args.interval),
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
    let command_argv: Option<Vec<String>> = command.as_ref().map(|_| {
        args.command
            .iter()
            .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
            .collect()
    });
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
    let resolved = resolve::resolve_all(&session.collector.stacks, &session.modules, &rules);
    let report = report::build(&ReportInputs {
        collector: &session.collector,
        resolved: &resolved,
        modules: &session.modules,
        kernel,
        command: command_argv,
        command_status: ending.command_status.map(|s| s.to_string()),
        stopped_by: ending.reason,
        unwinder: args.unwind.name(),
        unwinding: session
            .unwinder
            .as_ref()
            .map(|u| u.counts)
            .unwrap_or_default(),
        resident: &session.trends.resident,
        growth: session.trends.growth.fits(ending.time_ns),
        thresholds: Thresholds::default(),
        patterns: &patterns,
        timeline: std::mem::take(&mut session.trends.timeline),
    });
    Ok(Traced {
        report,
        exit_code: ending.command_status.map_or(0, |s| s.as_exit_code()),
    })
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
enum Output {
    Stdout,
    File(File, String),
}

impl Output {
    fn open(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        Ok(match path {
            None => Output::Stdout,
            Some(path) => Output::File(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                path.display().to_string(),
            ),
        })
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
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
