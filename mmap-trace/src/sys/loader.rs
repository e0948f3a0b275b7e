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

use super::{clock::monotonic_ns, error::TraceError, python_map::PythonMap, rules_map::RulesMap};

use crate::model::{KernelCounters, UnwindMode};

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

/// The oldest kernel the programs load on, and what sets it: `bpf_loop`
/// (every unwinding step) and `bpf_find_vma` came in 5.17. The rest is
/// older: callbacks 5.13, `bpf_get_current_task_btf` 5.11, the ring buffer
/// 5.8, `bpf_get_current_ancestor_cgroup_id` 5.7, raw tracepoints 4.17.
pub const MIN_KERNEL: (u32, u32) = (5, 17);
const MIN_KERNEL_FEATURES: &str = "bpf_loop, bpf_find_vma";

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
    /// Where the kernel keeps a task's FS base (`sys::btf`); 0: no Python
    /// frames.
    pub task_fsbase: u32,
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
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned())
            .unwrap_or_default();
        Self::load_and_attach(config).map_err(|error| explain_failure(error, &release))
    }

    fn load_and_attach(config: Config) -> Result<Self, TraceError> {
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
            .override_global("TASK_FSBASE", &config.task_fsbase, true)
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

    /// The kernel's Python configuration (taken once, by the session).
    pub fn take_python(&mut self) -> Result<PythonMap, TraceError> {
        PythonMap::new(
            take_map(&mut self.ebpf, "PYTHON")?,
            take_map(&mut self.ebpf, "PY_STACKS_SEEN")?,
            &self.targets,
        )
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

/// On a kernel older than [`MIN_KERNEL`], a failed load fails for that
/// reason: say so in one line, instead of the verifier's first complaint
/// (5.10's is "number of funcs in func_info doesn't match number of
/// subprogs"; the debug log keeps it). The version alone refuses nothing:
/// distribution kernels (RHEL's 5.14) carry these helpers under an older
/// number, and load fine.
fn explain_failure(error: TraceError, release: &str) -> TraceError {
    match kernel_version(release) {
        Some(version) if version < MIN_KERNEL => {
            log::debug!("{error}");
            TraceError::KernelTooOld {
                needed: MIN_KERNEL,
                features: MIN_KERNEL_FEATURES,
                release: release.to_owned(),
            }
        }
        _ => error,
    }
}

/// (major, minor) of a kernel release such as "6.1.0-56-cloud-amd64".
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let number = |part: Option<&str>| -> Option<u32> {
        let part = part?;
        let end = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        part[..end].parse().ok()
    };
    Some((number(parts.next())?, number(parts.next())?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_give_their_version() {
        assert_eq!(kernel_version("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-46-cloud-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("5.17-rc3"), Some((5, 17)));
        assert_eq!(
            kernel_version("5.14.0-427.13.1.el9_4.x86_64"),
            Some((5, 14))
        );
        assert_eq!(kernel_version("6"), None);
        assert_eq!(kernel_version(""), None);
        assert_eq!(kernel_version("linux"), None);
    }

    #[test]
    fn a_failure_on_an_old_kernel_says_the_kernel_is_too_old() {
        let verifier = || TraceError::attach("mmtrace_exit", "sys_exit", "Invalid argument");
        let explained = explain_failure(verifier(), "5.10.0-46-cloud-amd64").to_string();
        assert_eq!(
            explained,
            "needs Linux 5.17 or newer (bpf_loop, bpf_find_vma); this is Linux 5.10.0-46-cloud-amd64"
        );
        assert_eq!(
            explain_failure(verifier(), "5.15.0-91-generic").to_string(),
            explained.replace("5.10.0-46-cloud-amd64", "5.15.0-91-generic")
        );
        // A new enough (or unknown) kernel keeps the real reason.
        for release in ["5.17.0", "6.1.0-56-cloud-amd64", "6.18.44-fc-v669", ""] {
            assert_eq!(
                explain_failure(verifier(), release).to_string(),
                verifier().to_string(),
                "{release}"
            );
        }
    }
}
