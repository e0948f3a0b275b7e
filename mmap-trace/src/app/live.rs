//! What `record` and `top` share: the tracing options, loading the eBPF
//! programs, a session over them, and attaching to running targets.

use std::time::Duration;

use clap::Args;

use super::{
    cli::{Family, Switch, parse_buffer_mib, parse_duration, parse_stack_bytes},
    output::Failure,
};
use crate::{
    account::Recorder,
    model::UnwindMode,
    resolve::AttributionRules,
    session::{Parts, Session},
    sys::{
        self,
        loader::{self, Tracer},
        perf::PerfRing,
        targets::Selection,
    },
};

/// How the kernel traces and the session samples: the options of `record`
/// that `top` has too.
#[derive(Clone, Debug, Args)]
pub struct TracingArgs {
    /// Also treat objects with this soname stem as pass-through, so the
    /// requester is looked for beyond them (repeatable; e.g. libmyalloc).
    #[arg(long = "interposer", value_name = "NAME")]
    pub interposers: Vec<String>,

    /// How often to sample live and resident bytes per object and the
    /// processes' RSS: the timeline growth is judged on (and how often
    /// `top` redraws).
    #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Which calls to trace: mmap (mmap, munmap, mremap), brk (the heap),
    /// shm (System V shmat/shmdt), mprotect (reserved address space made
    /// accessible and back), madvise (only advice that gives pages back:
    /// DONTNEED, FREE, REMOVE, PAGEOUT). Comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "mmap,brk,shm,mprotect,madvise"
    )]
    pub syscalls: Vec<Family>,

    /// How stacks are unwound. auto and dwarf use the objects' call-frame
    /// information (.eh_frame), so stacks go through code built without frame
    /// pointers (most distributions' libraries); auto takes a frame-pointer
    /// step where a pc has none; fp is cheapest and stops at such code.
    #[arg(long, value_enum, default_value_t = UnwindMode::Auto)]
    pub unwind: UnwindMode,

    /// Python frames in the stacks of CPython processes (3.10 to 3.13): the
    /// function and line that asked, captured in the kernel at each call.
    /// `off` traces Python processes like any other.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub python: Switch,

    /// With auto/dwarf: how much of the user stack the kernel copies when it
    /// cannot unwind a stack itself yet (e.g. 32K, 65536; at most 64K). A
    /// stack deeper than this is cut, and the report says so.
    #[arg(long, value_name = "BYTES", default_value = "32K", value_parser = parse_stack_bytes)]
    pub stack_bytes: u32,

    /// Size of the kernel-to-user ring buffer in MiB (a power of two). If the
    /// report counts lost records, make it larger. (mmap-trace runs at nice
    /// -10 where it may, so that it drains the buffer when traced threads
    /// keep every CPU busy; the command it starts keeps its own priority.)
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = parse_buffer_mib)]
    pub buffer_size: u32,
}

/// Loads the eBPF programs and attaches them; nothing is traced yet.
pub(super) fn load(
    tracing: &TracingArgs,
    targets: &Selection,
    verbose: bool,
) -> Result<Tracer, Failure> {
    Ok(Tracer::load(loader::Config {
        ring_bytes: tracing.buffer_size << 20,
        unwind: tracing.unwind,
        stack_bytes: tracing.stack_bytes,
        cgroup: targets.cgroup.as_ref().map(|c| (c.id, c.level)),
        syscalls: Family::mask(&tracing.syscalls),
        verbose,
        task_fsbase: match tracing.python {
            Switch::On => sys::btf::task_fsbase_offset().unwrap_or_else(|error| {
                log::warn!("no Python frames: {error}");
                0
            }),
            Switch::Off => 0,
        },
    })?)
}

/// A session over `tracer`'s rings, telling `recorder` what happens.
pub(super) fn session<'r>(
    tracer: &mut Tracer,
    tracing: &TracingArgs,
    recorder: &'r mut dyn Recorder,
) -> Result<Session<'r>, Failure> {
    Ok(Session::new(Parts {
        events: tracer.take_events()?,
        perf: open_perf_rings()?,
        rules_map: match tracing.unwind {
            UnwindMode::Fp => None,
            _ => Some(tracer.take_rules()?),
        },
        unwind: tracing.unwind,
        rules: AttributionRules::new(&tracing.interposers),
        interval: tracing.interval,
        recorder,
        python: match tracing.python {
            Switch::On => Some(tracer.take_python()?),
            Switch::Off => None,
        },
    }))
}

/// Traces the running targets, then reads what they had mapped already.
pub(super) fn attach(
    tracer: &mut Tracer,
    session: &mut Session<'_>,
    targets: &Selection,
) -> Result<(), Failure> {
    for pid in targets.all_pids() {
        // Trace first, then read the maps: a mapping made in between is
        // seen twice, and the traced call wins.
        tracer.add_target(pid)?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        session.book.collector.add_target(pid, comm.trim_end(), 0);
        session.seed(pid);
    }
    announce(targets);
    Ok(())
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
        .map(|cpu| PerfRing::open(cpu).map_err(sys::error::TraceError::Perf))
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}
