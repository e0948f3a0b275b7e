//! `mmap-trace record`: check what can be checked, load and attach, run
//! the session, then resolve and report.

use std::os::unix::ffi::OsStrExt as _;

use anyhow::Context as _;

use super::{
    cli::{EXIT_GROWTH, RecordArgs},
    files,
    live::{self, attach},
    metrics_server::{self, Metrics},
    output::{EXIT_FAILURE, Failure, Output, render},
    status::StatusLine,
};
use crate::{
    account::{Header, Recorder, Recorders, Recording, RecordingEnd},
    model::TracerUsage,
    report::{self, Pattern},
    resolve::resolve_all,
    session::{Session, SessionEnd, Signals, StopWhen},
    sys::{
        self,
        launch::{self, LaunchError},
        loader::Tracer,
        pidfd::{Watched, pidfd_open},
        targets::{self, Selection},
    },
    trace::{self, TraceWriter},
};

/// Runs `record`; returns the exit code (the command's, if one was run).
pub fn run(args: RecordArgs, verbose: bool) -> Result<i32, Failure> {
    let plan = Plan::check(&args)?;
    sys::priority::raise();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let Plan {
        command,
        targets,
        patterns,
        mut output,
        trace,
        metrics,
    } = plan;
    let (recording, exit_code) = runtime.block_on(trace_session(
        &args, command, targets, trace, metrics, verbose,
    ))?;
    let report = report::build(&recording, &patterns, &args.verdict.judging());
    output.write(&render(&report, args.format, args.top, args.weight)?)?;
    Ok(match exit_code {
        0 if args.verdict.fail_on_growth && report.any_flagged() => EXIT_GROWTH,
        code => code,
    })
}

/// Everything checked before the kernel is asked for anything: a bad
/// argument fails at once, not after a long trace.
struct Plan {
    command: Option<launch::Command>,
    targets: Selection,
    patterns: Vec<Pattern>,
    output: Output,
    trace: Option<TraceWriter>,
    /// `--metrics-addr`, listening already: a port in use fails here.
    metrics: Option<std::net::TcpListener>,
}

impl Plan {
    fn check(args: &RecordArgs) -> Result<Self, Failure> {
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
        sys::privileges::check()?;
        let metrics = args
            .metrics_addr
            .as_deref()
            .map(metrics_server::bind)
            .transpose()?;
        let patterns = report::patterns::load(&args.patterns)?;
        // A trace file gets the recording; the report then goes to stdout.
        let trace_path = args.output.as_deref().filter(|p| trace::is_trace_path(p));
        let output = Output::open(
            args.output.as_deref().filter(|_| trace_path.is_none()),
            args.format,
        )?;
        let trace = match trace_path {
            Some(path) => {
                let path = match files::destination(path)? {
                    files::Destination::Replace(path) => path,
                    files::Destination::Special(path) => {
                        return Err(anyhow::anyhow!(
                            "a trace goes to a regular file, and {} is not one",
                            path.display()
                        )
                        .into());
                    }
                };
                Some(
                    TraceWriter::create(&path, header(args))
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )
            }
            None => None,
        };
        Ok(Plan {
            command,
            targets,
            patterns,
            output,
            trace,
            metrics,
        })
    }
}

fn header(args: &RecordArgs) -> Header {
    Header {
        format: trace::FORMAT.into(),
        version: trace::VERSION,
        tool: env!("CARGO_PKG_VERSION").into(),
        command: (!args.command.is_empty()).then(|| {
            args.command
                .iter()
                .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
                .collect()
        }),
        unwinder: args.tracing.unwind,
        interposers: args.tracing.interposers.clone(),
    }
}

async fn trace_session(
    args: &RecordArgs,
    command: Option<launch::Command>,
    targets: Selection,
    mut trace: Option<TraceWriter>,
    metrics: Option<std::net::TcpListener>,
    verbose: bool,
) -> Result<(Recording, i32), Failure> {
    let tracing = &args.tracing;
    let mut tracer = live::load(tracing, &targets, verbose)?;
    let mut metrics = match metrics {
        Some(listener) => Some(Metrics::start(listener, args)?),
        None => None,
    };
    let (metrics_recorder, kernel_lost) = metrics.as_mut().map(Metrics::parts).unzip();
    let mut recorders: Vec<&mut dyn Recorder> = Vec::new();
    if let Some(writer) = &mut trace {
        recorders.push(writer);
    }
    if let Some(metrics) = metrics_recorder {
        recorders.push(metrics);
    }
    let mut recorders = Recorders(recorders);
    let recorder: &mut dyn Recorder = &mut recorders;
    let mut session = live::session(&mut tracer, tracing, recorder)?;
    let signals = Signals::catch().context("catching signals")?;
    attach(&mut tracer, &mut session, &targets)?;
    let command = start(&mut tracer, &mut session, command)?;
    let stop = StopWhen {
        command,
        // A traced cgroup has no last process: it ends by time or signal.
        targets: match targets.cgroup {
            Some(_) => None,
            None => Some(targets.watched),
        },
        duration: args.duration,
    };
    let mut status = StatusLine::wanted(args).then(|| StatusLine::new(&tracer));
    let end = metrics_server::alongside(
        session.run(stop, signals, &mut status),
        &tracer,
        kernel_lost,
        args.tracing.interval,
    )
    .await
    .context("tracing")?;
    drop(status); // the line is cleared before anything else is said
    let kernel = tracer.counters();
    drop(tracer); // detach before the (slower) symbolization
    let (recording, recording_end) = finish(args, session, end, kernel);
    if let Some(trace) = trace {
        trace.finish(&recording.resolved, &recording.resident, &recording_end)?;
    }
    Ok((
        recording,
        end.command_status.map_or(0, |s| s.as_exit_code()),
    ))
}

/// Starts the command, traced from its first instruction: it waits at a
/// gate until its pid is a target.
fn start(
    tracer: &mut Tracer,
    session: &mut Session<'_>,
    command: Option<launch::Command>,
) -> Result<Option<Watched>, Failure> {
    let Some(command) = command else {
        return Ok(None);
    };
    let gated = command.spawn_gated()?;
    let pidfd = pidfd_open(gated.pid).with_context(|| format!("watching {}", command.name()))?;
    tracer.add_target(gated.pid)?;
    session
        .book
        .collector
        .add_target(gated.pid, command.name(), 0);
    session.modules.claim(gated.pid);
    let pid = gated.release().map_err(|e| Failure {
        code: 127,
        source: e.into(),
    })?;
    log::info!("started {} as pid {pid}", command.name());
    Ok(Some(Watched { pid, pidfd }))
}

/// Resolves the stacks and closes the books.
fn finish(
    args: &RecordArgs,
    mut session: Session<'_>,

    end: SessionEnd,
    kernel: crate::model::KernelCounters,
) -> (Recording, RecordingEnd) {
    log::info!(
        "resolving {} stacks; tracing stopped by {}",
        session.book.collector.stacks.len(),
        end.stopped_by
    );
    let pids: Vec<u32> = session.book.collector.processes().map(|p| p.pid).collect();
    session.languages.refresh_perf_maps(pids);
    let resolved = resolve_all(
        &session.book.collector.stacks,
        &session.modules,
        session.rules(),
        &session.languages.runtimes,
    );

    let executables = session
        .book
        .collector
        .processes()
        .filter_map(|p| {
            let exe = session.modules.executable(p.pid, u64::MAX)?;
            Some((p.pid, session.modules.object(exe).display.clone()))
        })
        .collect();
    let recording_end = RecordingEnd {
        stopped_by: end.stopped_by,
        command_status: end.command_status,
        time_ns: end.time_ns,
        kernel,
        unwinding: session
            .unwinder
            .as_ref()
            .map(|u| u.counts)
            .unwrap_or_default(),
        tracer: TracerUsage {
            samples: session.sampling.samples,
            sample_seconds_total: session.sampling.seconds_total,
            sample_seconds_max: session.sampling.seconds_max,
            ..sys::usage::tracer_usage()
        },
        lost_mapping_records: session.modules.lost,
        out_of_order: session.out_of_order(),
        malformed: session.malformed,
        executables,
    };
    let recording = session
        .book
        .into_recording(header(args), resolved, recording_end.clone());
    (recording, recording_end)
}
