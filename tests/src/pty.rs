//! Pseudo-terminals: running mmap-trace with a terminal of a known size
//! on some of its streams, reading what it draws and typing keys.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// How long a run on a terminal may take before the test gives up on it.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A pseudo-terminal, not yet given to a process.
pub struct Pty {
    master: File,
    slave: OwnedFd,
}

impl Pty {
    /// A terminal of `rows` × `columns`.
    pub fn open(rows: u16, columns: u16) -> Pty {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the integers it is
        // given and reads the window size; no name buffer or termios is
        // passed (null is allowed for both).
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened for us, and nothing else
        // owns them.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        Pty { master, slave }
    }

    /// The terminal, for one of a child's standard streams.
    pub fn stream(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("duplicate the terminal"))
    }

    /// Starts `command` (its streams set up by the caller, some of them
    /// with [`Pty::stream`]) in a session of its own whose controlling
    /// terminal this is, as a shell would; then reads what it writes.
    /// The command is dropped once started: its copies of the terminal
    /// must close for the reading to end when the process exits.
    pub fn spawn(self, mut command: Command) -> OnTerminal {
        // SAFETY: the closure runs in the child between fork and exec, and
        // calls only async-signal-safe functions (setsid, isatty, ioctl).
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The first standard stream that is a terminal is ours.
                if let Some(fd) = (0..3).find(|&fd| libc::isatty(fd) == 1)
                    && libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = command.spawn().expect("start the command on a terminal");
        // Only the child holds the terminal now: when it exits, reading
        // the master ends.
        drop(command);
        drop(self.slave);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut master = self.master.try_clone().expect("duplicate the master");
        let written = Arc::clone(&output);
        let reader = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            // Linux says EIO once no process holds the terminal.
            while let Ok(n @ 1..) = master.read(&mut chunk) {
                written.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        OnTerminal {
            child,
            keyboard: self.master,
            output,
            reader: Some(reader),
        }
    }
}

/// A process running on a [`Pty`].
pub struct OnTerminal {
    child: Child,
    keyboard: File,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl OnTerminal {
    /// Waits until what it wrote so far satisfies `done`; fails the test
    /// (after killing it) if it never does, or if it exits first.
    pub fn wait_until(&mut self, what: &str, mut done: impl FnMut(&[u8]) -> bool) {
        let started = Instant::now();
        loop {
            if done(&self.output.lock().unwrap()) {
                return;
            }
            let exited = self.child.try_wait().expect("poll the child");
            if exited.is_some() || started.elapsed() > TIMEOUT {
                if exited.is_none() {
                    self.child.kill().expect("kill the child");
                }
                let output = self.output.lock().unwrap();
                panic!(
                    "never {what} ({exited:?}); it wrote:\n{}",
                    String::from_utf8_lossy(&output)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.keyboard.write_all(keys).expect("type on the terminal");
    }

    /// Waits for it to exit, and for all it wrote to the terminal to be
    /// read ([`OnTerminal::output`]).
    pub fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                break status;
            }
            if started.elapsed() > TIMEOUT {
                self.child.kill().expect("kill the child");
                panic!("it ran for over {TIMEOUT:?} on the terminal; killed");
            }
            thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            // Reading ends when nobody holds the terminal any more.
            while !reader.is_finished() {
                assert!(
                    started.elapsed() < TIMEOUT,
                    "the terminal stayed open after the process exited"
                );
                thread::sleep(Duration::from_millis(20));
            }
            reader.join().expect("the terminal reader");
        }
        status
    }

    /// What it wrote to the terminal so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Whether the terminal is in line mode with echo, as a shell leaves it
    /// for a program and expects it back (not raw).
    pub fn is_cooked(&self) -> bool {
        // SAFETY: termios is plain data; all zeros is a valid value to be
        // overwritten.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one termios through the pointer, which
        // points at `termios`; the descriptor is the terminal's master,
        // open while `self` lives (it reports the pair's settings).
        let rc = unsafe { libc::tcgetattr(self.keyboard.as_raw_fd(), &mut termios) };
        assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
        let cooked = libc::ICANON | libc::ECHO;
        termios.c_lflag & cooked == cooked
    }
}

/// A test that fails while its process runs must not leave it running:
/// the next test would find its programs still loaded.
impl Drop for OnTerminal {
    fn drop(&mut self) {
        crate::run::end_if_running(&mut self.child);
    }
}
