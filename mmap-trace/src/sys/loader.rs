//! Loads and attaches the eBPF programs, and owns their maps.
//!
//! Every attachment is a file descriptor owned by [`Tracer`]; dropping it
//! (on exit, error or signal) detaches everything, and the kernel does the
//! same if the process dies.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};
use mmap_trace_common::counter;

use super::{clock::monotonic_ns, error::TraceError, rules_map::RulesMap};
use crate::model::{KernelCounters, UnwindMode};

/// The eBPF object built by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mmap-trace-ebpf"));

/// Program names: the BPF object names `bpftool prog` shows.
pub const PROGRAM_NAMES: [&str; 5] = [
    "mmtrace_exit",
    "mmtrace_fork",
    "mmtrace_exec",
    "mmtrace_pexit",
    "mmtrace_pexit_old",
];

/// How to load the programs.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Size of the ring buffer (a power of two, in bytes).
    pub ring_bytes: u32,
    pub unwind: UnwindMode,
    /// Stack bytes copied for user-space unwinding.
    pub stack_bytes: u32,
    /// A cgroup v2 to trace: (id, depth in the hierarchy).
    pub cgroup: Option<(u64, u32)>,
    /// Syscall families to trace (`mmap_trace_common::families` bits).
    pub syscalls: u32,
    /// Forward the eBPF side's log.
    pub verbose: bool,
}

pub struct Tracer {
    ebpf: Ebpf,
    targets: HashMap<MapData, u32, u64>,
    counters: PerCpuArray<MapData, u64>,
}

impl Tracer {
    /// Loads the programs with a ring buffer of `ring_bytes` and attaches
    /// them. Nothing is traced until [`Tracer::add_target`].
    pub fn load(config: Config) -> Result<Self, TraceError> {
        if PROGRAMS.is_empty() {
            return Err(TraceError::Load(
                "this build has no eBPF programs (it was built with AYA_BUILD_SKIP=1)".into(),
            ));
        }
        raise_memlock_limit();
        let own_pid = std::process::id();
        let cpus = aya::util::nr_cpus()
            .map_err(|(path, e)| TraceError::Load(format!("reading {path}: {e}")))?;
        let unwind_mode: u32 = match config.unwind {
            UnwindMode::Fp => 0,
            UnwindMode::Dwarf | UnwindMode::Auto => 1,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("TRACER_TGID", &own_pid, true)
            .override_global("WAKEUP_BYTES", &(config.ring_bytes / 8), true)
            .override_global("UNWIND_MODE", &unwind_mode, true)
            .override_global("STACK_BYTES", &config.stack_bytes, true)
            .override_global("SYSCALLS", &config.syscalls, true)
            .override_global("CGROUP_ID", &config.cgroup.map_or(0, |c| c.0), true)
            .override_global("CGROUP_LEVEL", &config.cgroup.map_or(0, |c| c.1), true)
            .map_max_entries("EVENTS", config.ring_bytes)
            .map_max_entries("SCRATCH", cpus as u32)
            .load(PROGRAMS)
            .map_err(TraceError::load)?;
        if config.verbose {
            start_ebpf_logger(&mut ebpf);
        }
        for (program, tracepoint) in [
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

    /// The eBPF unwinder's rule cache (taken once, by the session).
    pub fn take_rules(&mut self) -> Result<RulesMap, TraceError> {
        Array::try_from(take_map(&mut self.ebpf, "RULES")?)
            .map(RulesMap)
            .map_err(|e| TraceError::Map("RULES", e.to_string()))
    }

    /// Starts tracing `pid` (and the children it forks from now on).
    /// Returns its address-space id, which its records carry.
    pub fn add_target(&mut self, pid: u32) -> Result<u64, TraceError> {
        let asid = monotonic_ns();
        self.targets
            .insert(pid, asid, 0)
            .map_err(|e| TraceError::Map("TARGETS", e.to_string()))?;
        Ok(asid)
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
