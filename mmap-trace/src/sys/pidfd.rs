//! Process file descriptors: watching a process without racing pid reuse.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// A process whose exit ends the session (a launched command, or a
/// `--pid`/`--comm` target).
pub struct Watched {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

impl Watched {
    /// Has it exited? (A pidfd polls readable then.)
    pub fn has_exited(&self) -> bool {
        has_exited(&self.pidfd)
    }
}

/// Has the process behind `pidfd` exited?
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
    // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor
    // or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel gave us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_sees_its_process_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let watched = Watched {
            pid: child.id(),
            pidfd: pidfd_open(child.id()).unwrap(),
        };
        assert!(!watched.has_exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(watched.has_exited());
        assert!(pidfd_open(u32::MAX >> 1).is_err(), "no such process");
    }
}
