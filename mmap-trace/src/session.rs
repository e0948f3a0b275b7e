//! The event loop: drain the kernel's records into the collector until the
//! command exits, the targets exit, the duration ends, or a signal arrives.

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    time::Duration,
};

use aya::maps::{Array, MapData, RingBuf};
use mmap_trace_common::RuleSlot;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::Instant,
};

use crate::{
    collector::Collector,
    decode::{Event, StackSource, SyscallEvent},
    launch::{self, ExitStatus},
    modules::{Mapping, ModuleMaps},
    perf_mmap::{PerfRecord, PerfRing},
    procmaps,
    tracefile::TraceWriter,
    trends::Trends,
    unwind::{copies::CopyUnwinder, learn::SlotWriter},
};

/// How often the ring buffers and process exits are polled. The eBPF side
/// wakes the reader only when its ring buffer fills past an eighth.
const TICK: Duration = Duration::from_millis(10);
/// How long a launched command gets to exit after being asked to.
const GRACE: Duration = Duration::from_secs(3);

/// A process whose exit ends the session.
pub struct Watched {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

pub struct Session {
    pub events: RingBuf<MapData>,
    pub perf: Vec<PerfRing>,
    pub collector: Collector,
    pub modules: ModuleMaps,
    /// Unwinds stack copies and teaches the kernel (CFI modes only).
    pub unwinder: Option<CopyUnwinder<RulesMap>>,
    /// Growth fits and the time series.
    pub trends: Trends,
    /// The trace file being written, if any.
    pub trace: Option<TraceWriter>,
}

/// The eBPF rule cache, written through the bpf syscall.
pub struct RulesMap(pub Array<MapData, RuleSlot>);

impl SlotWriter for RulesMap {
    fn write(&mut self, index: u32, slot: RuleSlot) {
        if let Err(error) = self.0.set(index, slot, 0) {
            log::debug!("cannot write unwind rule {index}: {error}");
        }
    }
}

/// Why the session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub reason: String,
    /// When tracing stopped (CLOCK_MONOTONIC ns).
    pub time_ns: u64,
    /// How the launched command ended, if there was one.
    pub command_status: Option<ExitStatus>,
}

/// What ends the session.
pub struct StopWhen {
    pub command: Option<Watched>,
    /// Stop when all of these have exited; `None`: never for that reason.
    pub targets: Option<Vec<Watched>>,
    pub duration: Option<Duration>,
}

impl Session {
    pub async fn run(&mut self, stop: StopWhen) -> std::io::Result<Ending> {
        // SAFETY: the ring buffer's descriptor stays open (owned by `self`)
        // for as long as this registration, which ends with this function.
        let mut ring = unsafe {
            AsyncFd::register_with_interest(self.events.as_raw_fd(), tokio::io::Interest::READABLE)?
        };
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(TICK);
        let mut stopper = Stopper::new(stop);

        let reason = loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain_events();
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    self.drain_events();
                    self.drain_perf();
                    self.sample(false);
                    if let Some(reason) = stopper.check() {
                        break reason;
                    }
                }
                // Ctrl-C reaches the command too (same process group): give
                // it a moment to exit on its own before forwarding.
                _ = interrupt.recv() => stopper.on_signal("SIGINT", libc::SIGINT, true),
                _ = terminate.recv() => stopper.on_signal("SIGTERM", libc::SIGTERM, false),
                _ = hangup.recv() => stopper.on_signal("SIGHUP", libc::SIGHUP, false),
            }
        };
        // Every record of an exited process was submitted before it exited.
        self.drain_events();
        self.drain_perf();
        self.sample(true);
        let command_status = match &stopper.stop.command {
            Some(command) => Some(launch::reap(command.pid)?),
            None => None,
        };
        Ok(Ending {
            reason,
            time_ns: crate::loader::monotonic_ns(),
            command_status,
        })
    }

    /// Decodes every record in the ring buffer into the collector.
    pub fn drain_events(&mut self) {
        loop {
            let decoded = match self.events.next() {
                Some(item) => Event::try_from(&*item),
                None => break,
            };
            match decoded {
                Ok(mut event) => {
                    match &mut event {
                        Event::Fork(e) | Event::Exec(e) => self.modules.claim(e.pid),
                        Event::Join(e) => self.seed(e.pid),
                        Event::Syscall(call) => self.unwind(call),
                        Event::Exit(_) => {}
                    }
                    let time_ns = event.time_ns();
                    if let Some(trace) = &mut self.trace {
                        trace.event(&event);
                    }
                    self.collector.handle(event);
                    let first_seen = self
                        .trends
                        .on_event(&self.collector, &self.modules, time_ns);
                    if let Some(trace) = &mut self.trace {
                        for (id, attribution) in &first_seen {
                            trace.stack_seen(*id, attribution);
                        }
                    }
                }
                Err(error) => {
                    log::warn!("dropping a malformed record: {error}");
                    self.collector.add_lost(1);
                    if let Some(trace) = &mut self.trace {
                        trace.lost(1);
                    }
                }
            }
        }
    }

    fn sample(&mut self, force: bool) {
        let sample = self.trends.sample_if_due(&self.collector, force);
        if let (Some(sample), Some(trace)) = (sample, &mut self.trace) {
            trace.sample(sample);
        }
    }

    /// Records what a running process already has mapped (a `--pid`
    /// target, or a process that joined the traced cgroup).
    pub fn seed(&mut self, pid: u32) {
        let read_at = crate::loader::monotonic_ns();
        let entries = match procmaps::read(pid) {
            Ok(entries) => entries,
            Err(error) => {
                log::info!("{error}");
                return;
            }
        };
        self.modules.seed(pid, &entries);
        if let Some(heap) = entries.iter().find(|e| e.name.as_deref() == Some("[heap]")) {
            self.collector.seed_brk(pid, heap.end);
        }
        for entry in entries
            .iter()
            .filter(|e| e.name.as_deref() != Some("[vsyscall]"))
        {
            self.collector
                .seed_preexisting(pid, entry.start, entry.end, read_at);
        }
    }

    fn unwind(&mut self, call: &mut SyscallEvent) {
        if self.unwinder.is_none() {
            return;
        }
        if call.source == StackSource::Window {
            // The code's mapping records were written before the call ran;
            // make sure they are read before its stack is placed.
            self.drain_perf();
        }
        if let Some(unwinder) = &mut self.unwinder {
            unwinder.unwind(call, &self.modules);
        }
    }

    /// Moves the kernel's mapping records into the module maps.
    pub fn drain_perf(&mut self) {
        let modules = &mut self.modules;
        let mut sink = |record: PerfRecord| match record {
            PerfRecord::Mmap2 {
                pid,
                addr,
                len,
                pgoff,
                inode,
                name,
                time_ns,
            } => modules.on_mmap(
                pid,
                Mapping {
                    start: addr,
                    end: addr + len,
                    file_offset: pgoff,
                    name: Mapping::name_from_kernel(Some(&name)),
                    inode,
                    time_ns,
                },
            ),
            PerfRecord::Fork {
                pid, ppid, time_ns, ..
            } if pid != ppid => modules.on_fork(pid, ppid, time_ns),
            PerfRecord::Exec { pid, time_ns } => modules.on_exec(pid, time_ns),
            PerfRecord::Exit { pid, tid, time_ns } if pid == tid => modules.on_exit(pid, time_ns),
            PerfRecord::Lost { count } => modules.lost += count,
            _ => {}
        };
        for ring in &mut self.perf {
            ring.drain(&mut sink);
        }
    }
}

/// Decides when the session ends, and winds a launched command down.
struct Stopper {
    stop: StopWhen,
    deadline: Option<Instant>,
    stopping: Option<Stopping>,
}

/// Winding down: why, which signal, and whether/when it was sent.
struct Stopping {
    reason: String,
    signal: i32,
    sent: bool,
    since: Instant,
}

impl Stopper {
    fn new(stop: StopWhen) -> Self {
        Stopper {
            deadline: stop.duration.map(|d| Instant::now() + d),
            stop,
            stopping: None,
        }
    }

    /// A signal arrived. The first one starts winding down (at once, or
    /// after a grace period if `deferred`); a second one kills the command.
    fn on_signal(&mut self, name: &str, signal: i32, deferred: bool) {
        match &mut self.stopping {
            None => self.begin(name, signal, deferred),
            Some(stopping) => {
                stopping.signal = libc::SIGKILL;
                if let Some(command) = &self.stop.command {
                    stopping.send(command.pid);
                }
            }
        }
    }

    fn begin(&mut self, reason: &str, signal: i32, deferred: bool) {
        let mut stopping = Stopping {
            reason: reason.to_owned(),
            signal,
            sent: false,
            since: Instant::now(),
        };
        if let (Some(command), false) = (&self.stop.command, deferred) {
            stopping.send(command.pid);
        }
        self.stopping = Some(stopping);
    }

    /// Called every tick: the reason to stop now, if there is one.
    fn check(&mut self) -> Option<String> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) && self.stopping.is_none() {
            self.begin("duration", libc::SIGTERM, false);
        }
        match &self.stop.command {
            Some(command) => {
                if has_exited(&command.pidfd) {
                    let reason = self.stopping.as_ref().map(|s| s.reason.clone());
                    return Some(reason.unwrap_or_else(|| "command exit".to_owned()));
                }
                if let Some(stopping) = &mut self.stopping {
                    stopping.escalate(command.pid);
                }
                None
            }
            None => {
                if let Some(stopping) = &self.stopping {
                    return Some(stopping.reason.clone());
                }
                let targets = self.stop.targets.as_mut()?;
                targets.retain(|w| !has_exited(&w.pidfd));
                targets.is_empty().then(|| "target exit".to_owned())
            }
        }
    }
}

impl Stopping {
    fn send(&mut self, pid: u32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, self.signal) };
        self.sent = true;
        self.since = Instant::now();
    }

    /// Sends the signal once the grace period is over, then SIGKILL.
    fn escalate(&mut self, pid: u32) {
        if self.since.elapsed() < GRACE {
            return;
        }
        if !self.sent {
            self.send(pid);
        } else if self.signal != libc::SIGKILL {
            log::warn!("the command outlived signal {}; killing it", self.signal);
            self.signal = libc::SIGKILL;
            self.send(pid);
        }
    }
}

/// Has the process behind `pidfd` exited? (A pidfd polls readable then.)
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents != 0
}

/// A pidfd for `pid`; fails if there is no such process.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel gave us.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}
