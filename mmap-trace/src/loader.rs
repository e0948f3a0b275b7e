//! Loads and attaches the eBPF programs, and owns their maps.
//!
//! Every attachment is a file descriptor owned by [`Tracer`]; dropping it
//! (on exit, error or signal) detaches everything, and the kernel does the
//! same if the process dies.

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};
use mmap_trace_common::counter;

use crate::error::TraceError;

/// The eBPF object built by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mmap-trace-ebpf"));

/// Program names: the BPF object names `bpftool prog` shows.
pub const PROGRAM_NAMES: [&str; 6] = [
    "mmtrace_enter",
    "mmtrace_exit",
    "mmtrace_fork",
    "mmtrace_exec",
    "mmtrace_pexit",
    "mmtrace_pexit_old",
];

/// Loss and error counters summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub lost_records: u64,
    pub stack_errors: u64,
    pub lost_entries: u64,
    pub unpaired_exits: u64,
}

pub struct Tracer {
    ebpf: Ebpf,
    targets: HashMap<MapData, u32, u8>,
    counters: PerCpuArray<MapData, u64>,
}

impl Tracer {
    /// Loads the programs with a ring buffer of `ring_bytes` and attaches
    /// them. Nothing is traced until [`Tracer::add_target`].
    pub fn load(ring_bytes: u32, verbose: bool) -> Result<Self, TraceError> {
        raise_memlock_limit();
        let own_pid = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global("TRACER_TGID", &own_pid, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(PROGRAMS)
            .map_err(TraceError::load)?;
        if verbose {
            start_ebpf_logger(&mut ebpf);
        }
        for (program, tracepoint) in [
            ("mmtrace_enter", "sys_enter"),
            ("mmtrace_exit", "sys_exit"),
            ("mmtrace_fork", "sched_process_fork"),
            ("mmtrace_exec", "sched_process_exec"),
        ] {
            attach(&mut ebpf, program, tracepoint)?;
        }
        // Kernels before 6.16 lack sched_process_exit's group_dead argument,
        // and refuse a program that reads it.
        if let Err(new_err) = attach(&mut ebpf, "mmtrace_pexit", "sched_process_exit") {
            log::debug!("{new_err}; using the leader-exit fallback");
            attach(&mut ebpf, "mmtrace_pexit_old", "sched_process_exit")?;
        }
        let targets = HashMap::try_from(take_map(&mut ebpf, "TARGETS")?)
            .map_err(|e| TraceError::Map("TARGETS", e.to_string()))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)
            .map_err(|e| TraceError::Map("COUNTERS", e.to_string()))?;
        Ok(Tracer {
            ebpf,
            targets,
            counters,
        })
    }

    /// The ring buffer of records (taken once, by the session).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, TraceError> {
        RingBuf::try_from(take_map(&mut self.ebpf, "EVENTS")?)
            .map_err(|e| TraceError::Map("EVENTS", e.to_string()))
    }

    /// Starts tracing `pid` (and the children it forks from now on).
    pub fn add_target(&mut self, pid: u32) -> Result<(), TraceError> {
        self.targets
            .insert(pid, 1, 0)
            .map_err(|e| TraceError::Map("TARGETS", e.to_string()))
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        KernelCounters {
            lost_records: sum(counter::LOST_RECORDS),
            stack_errors: sum(counter::STACK_ERRORS),
            lost_entries: sum(counter::LOST_ENTRIES),
            unpaired_exits: sum(counter::UNPAIRED_EXITS),
        }
    }
}

fn attach(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<(), TraceError> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program)
        .ok_or(TraceError::MissingProgram(program.to_owned()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| TraceError::attach(program, tracepoint, e))?;
    prog.load()
        .map_err(|e| TraceError::attach(program, tracepoint, e))?;
    prog.attach(tracepoint)
        .map_err(|e| TraceError::attach(program, tracepoint, e))?;
    Ok(())
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, TraceError> {
    ebpf.take_map(name)
        .ok_or(TraceError::Map(name, "not in the eBPF object".into()))
}

fn start_ebpf_logger(ebpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => {
            // SAFETY: the AsyncFd owns the logger, and with it the descriptor.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
            };
            let Ok(mut logger) = registered else {
                return;
            };
            tokio::task::spawn(async move {
                while let Ok(mut guard) = logger.readable_mut().await {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
        Err(e) => log::warn!("eBPF logger unavailable: {e}"),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
