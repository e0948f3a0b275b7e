//! The event loop: drain the kernel's records into the books until the
//! command exits, the targets exit, the duration ends, or a signal arrives.
//! Whoever keeps a record of the session (a trace file) listens through a
//! [`Recorder`]; the loop does not know who.

mod feed;
mod probe;
mod python;
mod stopper;

use std::{os::fd::AsRawFd as _, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

pub use probe::ProcProbe;
pub use python::Languages;
pub use stopper::StopWhen;

use crate::{
    account::{Book, Recorder, order::Reorder},
    model::{ExitStatus, StoppedBy, UnwindMode},
    resolve::{AttributionRules, CodeFiles, ModuleMaps},
    sys::{
        clock::monotonic_ns, launch, perf::PerfRing, python_map::PythonMap, rules_map::RulesMap,
    },
    unwind::CopyUnwinder,
};
use stopper::Stopper;

/// How often the ring buffers and process exits are polled. The eBPF side
/// wakes the reader only when its ring buffer fills past an eighth (or at
/// once for a stack copy, so rules are learned quickly).
const TICK: Duration = Duration::from_millis(10);

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEnd {
    pub stopped_by: StoppedBy,
    /// When tracing stopped (CLOCK_MONOTONIC ns).
    pub time_ns: u64,
    /// How the launched command ended, if there was one.
    pub command_status: Option<ExitStatus>,
}

pub struct Session<'r> {
    events: RingBuf<MapData>,
    perf: Vec<PerfRing>,
    pub book: Book,
    pub modules: ModuleMaps,
    /// Unwinds stack copies and teaches the kernel (CFI modes only).
    pub unwinder: Option<CopyUnwinder<RulesMap>>,
    rules: AttributionRules,
    code: CodeFiles,
    /// Python and JIT processes: what names their frames.
    pub languages: Languages,
    /// Events held until they can be applied in the order they took
    /// effect.
    order: Reorder,
    /// Records that did not decode, or were impossible (`account::check`).
    pub malformed: u64,
    recorder: &'r mut dyn Recorder,
    interval_ns: u64,
    next_sample_ns: u64,
    /// How many samples took how long.
    pub sampling: SamplingCost,
}

/// The signals that stop a session, caught from before the user is told
/// tracing began (a Ctrl-C right after that line stops it cleanly).
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catches SIGINT, SIGTERM and SIGHUP from now on (inside the runtime).
    pub fn catch() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// Looks at the books while the session runs (a live view, a status
/// line), once per tick, and may end the session. The session does not
/// know who watches, as it does not know who records.
pub trait Watcher {
    /// The books after a tick's records and sample; `Some(reason)` ends the
    /// session as that signal would (a launched command gets SIGTERM).
    fn tick(&mut self, book: &Book) -> Option<StoppedBy>;
}

/// Nobody watches.
impl Watcher for () {
    fn tick(&mut self, _: &Book) -> Option<StoppedBy> {
        None
    }
}

/// Somebody watches, or nobody.
impl<W: Watcher> Watcher for Option<W> {
    fn tick(&mut self, book: &Book) -> Option<StoppedBy> {
        self.as_mut()?.tick(book)
    }
}

/// What sampling cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplingCost {
    pub samples: u64,
    pub seconds_total: f64,
    pub seconds_max: f64,
}

/// What a session is made of.
pub struct Parts<'r> {
    pub events: RingBuf<MapData>,
    pub perf: Vec<PerfRing>,
    pub rules_map: Option<RulesMap>,
    pub unwind: UnwindMode,
    pub rules: AttributionRules,
    pub interval: Duration,
    pub recorder: &'r mut dyn Recorder,
    /// The kernel's Python configuration (absent: no Python frames).
    pub python: Option<PythonMap>,
}

impl<'r> Session<'r> {
    pub fn new(parts: Parts<'r>) -> Self {
        let now = monotonic_ns();
        Session {
            events: parts.events,
            perf: parts.perf,
            book: Book::new(now),
            modules: ModuleMaps::default(),
            unwinder: match (parts.unwind, parts.rules_map) {
                (UnwindMode::Fp, _) | (_, None) => None,
                (mode, Some(map)) => Some(CopyUnwinder::new(mode, map)),
            },
            rules: parts.rules,
            code: CodeFiles::default(),
            languages: Languages::new(parts.python),
            order: Reorder::default(),
            malformed: 0,
            recorder: parts.recorder,

            interval_ns: parts.interval.as_nanos() as u64,
            next_sample_ns: now,
            sampling: SamplingCost::default(),
        }
    }

    pub fn rules(&self) -> &AttributionRules {
        &self.rules
    }

    /// Records that came too late to be put in order.
    pub fn out_of_order(&self) -> u64 {
        self.order.late
    }

    /// Runs until `stop` (or `watcher`) says so; then drains what is left
    /// and reaps a launched command.
    pub async fn run(
        &mut self,
        stop: StopWhen,
        signals: Signals,
        watcher: &mut dyn Watcher,
    ) -> std::io::Result<SessionEnd> {
        // SAFETY: the ring buffer's descriptor stays open (owned by `self`)
        // for as long as this registration, which ends with this function.
        let mut ring = unsafe {
            AsyncFd::register_with_interest(self.events.as_raw_fd(), tokio::io::Interest::READABLE)?
        };
        let Signals {
            mut interrupt,
            mut terminate,
            mut hangup,
        } = signals;
        let mut tick = tokio::time::interval(TICK);
        let mut stopper = Stopper::new(stop);

        let stopped_by = loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain_events();
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    self.drain_events();
                    self.release(monotonic_ns());
                    self.drain_perf();
                    self.sample_if_due(false);
                    if let Some(reason) = watcher.tick(&self.book) {
                        stopper.on_signal(reason, libc::SIGTERM, false);
                    }
                    if let Some(reason) = stopper.check() {
                        break reason;
                    }
                }
                // Ctrl-C reaches the command too (same process group): give
                // it a moment to exit on its own before forwarding.
                _ = interrupt.recv() => stopper.on_signal(StoppedBy::Sigint, libc::SIGINT, true),
                _ = terminate.recv() => stopper.on_signal(StoppedBy::Sigterm, libc::SIGTERM, false),
                _ = hangup.recv() => stopper.on_signal(StoppedBy::Sighup, libc::SIGHUP, false),
            }
        };
        // Every record of an exited process was submitted before it exited.
        self.drain_events();
        self.drain_perf();
        self.release_all();
        self.sample_if_due(true);
        let command_status = match &stopper.stop.command {
            Some(command) => Some(launch::reap(command.pid)?),
            None => None,
        };
        Ok(SessionEnd {
            stopped_by,
            time_ns: monotonic_ns(),
            command_status,
        })
    }

    /// Takes a sample if one is due (and always when `force`).
    fn sample_if_due(&mut self, force: bool) {
        let now = monotonic_ns();
        if now < self.next_sample_ns && !force {
            return;
        }
        self.next_sample_ns = now + self.interval_ns;
        self.book.sample(now, &mut ProcProbe, self.recorder);
        let seconds = monotonic_ns().saturating_sub(now) as f64 / 1e9;
        self.sampling.samples += 1;
        self.sampling.seconds_total += seconds;
        self.sampling.seconds_max = self.sampling.seconds_max.max(seconds);
    }
}
