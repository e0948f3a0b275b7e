//! When a session ends, and winding a launched command down.

use std::time::Duration;

use tokio::time::Instant;

use crate::{model::StoppedBy, sys::pidfd::Watched};

/// How long a launched command gets to exit after being asked to.
const GRACE: Duration = Duration::from_secs(3);

/// What ends the session.
pub struct StopWhen {
    pub command: Option<Watched>,
    /// Stop when all of these have exited; `None`: never for that reason.
    pub targets: Option<Vec<Watched>>,
    pub duration: Option<Duration>,
}

/// Decides when the session ends, and winds a launched command down.
pub(super) struct Stopper {
    pub(super) stop: StopWhen,
    deadline: Option<Instant>,
    stopping: Option<Stopping>,
}

/// Winding down: why, which signal, and whether/when it was sent.
struct Stopping {
    reason: StoppedBy,
    signal: i32,
    sent: bool,
    since: Instant,
}

impl Stopper {
    pub(super) fn new(stop: StopWhen) -> Self {
        Stopper {
            deadline: stop.duration.map(|d| Instant::now() + d),
            stop,
            stopping: None,
        }
    }

    /// A signal arrived. The first one starts winding down (at once, or
    /// after a grace period if `deferred`); a second one kills the command.
    pub(super) fn on_signal(&mut self, reason: StoppedBy, signal: i32, deferred: bool) {
        match &mut self.stopping {
            None => self.begin(reason, signal, deferred),
            Some(stopping) => {
                stopping.signal = libc::SIGKILL;
                if let Some(command) = &self.stop.command {
                    stopping.send(command.pid);
                }
            }
        }
    }

    fn begin(&mut self, reason: StoppedBy, signal: i32, deferred: bool) {
        let mut stopping = Stopping {
            reason,
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
    pub(super) fn check(&mut self) -> Option<StoppedBy> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) && self.stopping.is_none() {
            self.begin(StoppedBy::Duration, libc::SIGTERM, false);
        }
        match &self.stop.command {
            Some(command) => {
                if command.has_exited() {
                    let reason = self.stopping.as_ref().map(|s| s.reason);
                    return Some(reason.unwrap_or(StoppedBy::CommandExit));
                }
                if let Some(stopping) = &mut self.stopping {
                    stopping.escalate(command.pid);
                }
                None
            }
            None => {
                if let Some(stopping) = &self.stopping {
                    return Some(stopping.reason);
                }
                let targets = self.stop.targets.as_mut()?;
                targets.retain(|w| !w.has_exited());
                targets.is_empty().then_some(StoppedBy::TargetExit)
            }
        }
    }
}

impl Stopping {
    fn send(&mut self, pid: u32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, which we have not reaped yet.
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
