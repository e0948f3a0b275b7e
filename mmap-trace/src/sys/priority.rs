//! The tracer's scheduling priority.
//!
//! The kernel fills the ring buffer at the rate the traced threads make
//! calls, and the tracer empties it. When the traced threads keep every CPU
//! busy (8 threads mapping on 2 cores, about 300,000 calls a second), a
//! tracer at their priority gets one share among them, less than its
//! records need, and the buffer overflows however large it is. At nice -10
//! it gets the CPU it needs; it takes nothing more, since it sleeps while
//! the buffer is empty.

use std::sync::atomic::{AtomicI32, Ordering};

/// The nice value the tracer runs at, at most.
pub const NICE: i32 = -10;

/// The nice value before [`raise`] changed it (`UNCHANGED`: it did not).
static BEFORE: AtomicI32 = AtomicI32::new(UNCHANGED);
const UNCHANGED: i32 = i32::MIN;

/// Raises this thread's priority (and so that of the threads it starts
/// later) to [`NICE`], unless it already runs higher. Without the right to
/// (CAP_SYS_NICE) it stays as it is: the run is the same, only more likely
/// to lose records under a load that takes every CPU.
pub fn raise() {
    // SAFETY: getpriority and setpriority take plain integers; `who` 0 is
    // the calling thread. errno is cleared first because -1 is a valid
    // priority.
    unsafe {
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        if (now == -1 && *libc::__errno_location() != 0) || now <= NICE {
            return;
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, NICE) == 0 {
            BEFORE.store(now, Ordering::Relaxed);
        } else {
            log::debug!("staying at nice {now}: {}", std::io::Error::last_os_error());
        }
    }
}

/// In a command the tracer forked, before exec: gives it back the nice
/// value the tracer was started with, so the command runs as it would
/// untraced. Async-signal-safe (an atomic load and one system call).
pub fn restore_in_child() {
    let before = BEFORE.load(Ordering::Relaxed);
    if before != UNCHANGED {
        // SAFETY: a plain system call on the calling thread; lowering
        // priority is always allowed.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, before) };
    }
}
