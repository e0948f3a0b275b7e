//! Starting the traced command so that it is traced from its first
//! instruction: fork, hold the child at a gate until its pid is in the
//! target set, then let it exec.

use std::{
    ffi::{CString, OsStr, OsString},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    },
    path::{Path, PathBuf},
};

use crate::model::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot run {0:?}: command not found")]
    NotFound(String),
    #[error("cannot run {0:?}: not an executable file")]
    NotExecutable(String),
    #[error("cannot run {name:?}: {cause}")]
    Exec { name: String, cause: io::Error },
    #[error("cannot start {name:?}: {cause}")]
    Spawn { name: String, cause: io::Error },
    #[error("argument contains a NUL byte: {0:?}")]
    NulByte(OsString),
}

/// A command resolved against PATH, with its argv and environment ready for
/// execve (nothing may be allocated between fork and exec).
pub struct Command {
    name: String,
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Command {
    pub fn new(args: &[OsString]) -> Result<Self, LaunchError> {
        let first = args.first().expect("clap requires a command");
        let name = first.to_string_lossy().into_owned();
        let program = resolve(first).ok_or_else(|| LaunchError::NotFound(name.clone()))?;
        let metadata =
            std::fs::metadata(&program).map_err(|_| LaunchError::NotFound(name.clone()))?;
        if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
            return Err(LaunchError::NotExecutable(name));
        }
        let cstring =
            |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| LaunchError::NulByte(s.to_owned()));
        let argv = args.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
        let envp = std::env::vars_os()
            .map(|(k, v)| {
                let mut pair = k;
                pair.push("=");
                pair.push(v);
                cstring(&pair)
            })
            .collect::<Result<_, _>>()?;
        Ok(Command {
            name,
            program: cstring(program.as_os_str())?,
            argv,
            envp,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Forks the child and holds it before exec.
    pub fn spawn_gated(&self) -> Result<Gated, LaunchError> {
        let spawn_error = |cause| LaunchError::Spawn {
            name: self.name.clone(),
            cause,
        };
        let (gate_read, gate_write) = pipe().map_err(spawn_error)?;
        let (error_read, error_write) = pipe().map_err(spawn_error)?;
        let argv = null_terminated(&self.argv);
        let envp = null_terminated(&self.envp);
        // SAFETY: the child only makes async-signal-safe calls before exec.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(spawn_error(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: in the child; see `child_after_fork`.
            unsafe {
                child_after_fork(
                    gate_read.as_raw_fd(),
                    error_write.as_raw_fd(),
                    &self.program,
                    &argv,
                    &envp,
                )
            }
        }
        drop(gate_read);
        drop(error_write);
        Ok(Gated {
            pid: pid as u32,
            name: self.name.clone(),
            gate: gate_write,
            exec_error: error_read,
        })
    }
}

/// A forked child waiting at the gate.
pub struct Gated {
    pub pid: u32,
    name: String,
    gate: OwnedFd,
    exec_error: OwnedFd,
}

impl Gated {
    /// Lets the child exec; returns once it has, or with the exec's error.
    pub fn release(self) -> Result<u32, LaunchError> {
        let byte = [1u8];
        // SAFETY: writing one byte from a valid buffer to our pipe.
        unsafe { libc::write(self.gate.as_raw_fd(), byte.as_ptr().cast(), 1) };
        drop(self.gate);
        let mut errno = [0u8; 4];
        loop {
            // SAFETY: reading into a valid 4-byte buffer. The pipe closes on
            // a successful exec (O_CLOEXEC), which reads as 0 bytes.
            let n =
                unsafe { libc::read(self.exec_error.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
            if n == 0 {
                return Ok(self.pid);
            }
            if n == 4 {
                // The child exited at once; reaping only keeps it from
                // lingering as a zombie, and the exec error is the news.
                if let Err(error) = reap(self.pid) {
                    log::debug!("reaping pid {}: {error}", self.pid);
                }
                return Err(LaunchError::Exec {
                    name: self.name,
                    cause: io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
                });
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Ok(self.pid);
            }
        }
    }
}

/// # Safety
/// Only async-signal-safe calls: we are the child of a forked process.
unsafe fn child_after_fork(
    gate: i32,
    error: i32,
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: raw system calls on descriptors and buffers that are ours and
    // valid: the gate and error pipes, a byte, a signal set on the stack,
    // and argv/envp arrays that end in null pointers; nothing allocates.
    unsafe {
        let mut byte = 0u8;
        loop {
            let n = libc::read(gate, (&raw mut byte).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // The tracer went away before releasing us.
            libc::_exit(127);
        }
        libc::close(gate);
        // The tracer may run at a higher priority; the command must not.
        super::priority::restore_in_child();
        // Rust ignores SIGPIPE; the command should get the default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let errno = *libc::__errno_location();
        libc::write(error, (&raw const errno).cast(), 4);
        libc::_exit(127)
    }
}

/// Waits for our child `pid` (blocking) and returns how it ended.
pub fn reap(pid: u32) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if r == pid as i32 {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    })
}

fn resolve(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_through_path_and_reports_missing_commands() {
        assert!(Command::new(&["true".into()]).is_ok());
        assert!(matches!(
            Command::new(&["no-such-command-mmap-trace".into()]),
            Err(LaunchError::NotFound(_))
        ));
        let plain = std::env::temp_dir().join(format!("mmap-trace-plain-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        let result = Command::new(&[plain.clone().into_os_string()]);
        std::fs::remove_file(&plain).unwrap();
        assert!(matches!(result, Err(LaunchError::NotExecutable(_))));
    }

    #[test]
    fn gated_child_runs_after_release() {
        let command = Command::new(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        let gated = command.spawn_gated().unwrap();
        let pid = gated.release().unwrap();
        assert_eq!(reap(pid).unwrap(), ExitStatus::Code(7));
    }

    #[test]
    fn exec_failure_is_reported() {
        let dir = std::env::temp_dir().join(format!("mmap-trace-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("bad-interpreter");
        std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let command = Command::new(&[script.into_os_string()]).unwrap();
        let result = command.spawn_gated().unwrap().release();
        assert!(
            matches!(result, Err(LaunchError::Exec { .. })),
            "{:?}",
            result.err()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
