//! The fixture programs (tests/fixtures, compiled by tests/build.rs).

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
};

/// A compiled fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("FIXTURES_DIR")).join(name)
}

/// A fixture that said "ready" and waits for a line on stdin.
pub struct Waiting {
    child: Child,
    /// What it says; kept open so it can print without a broken pipe.
    out: BufReader<ChildStdout>,
}

impl Waiting {
    pub fn start<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Waiting {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read the fixture's stdout");
        assert_eq!(line, "ready\n", "{} did not get ready", program.display());
        Waiting { child, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it go on (a line on its stdin).
    pub fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("piped");
        stdin.write_all(b"go\n").expect("write to the fixture");
        stdin.flush().expect("flush the fixture's stdin");
    }

    /// Waits until it says `line`.
    pub fn expect_line(&mut self, line: &str) {
        let mut said = String::new();
        self.out
            .read_line(&mut said)
            .expect("read the fixture's stdout");
        assert_eq!(said.trim_end(), line, "the fixture said something else");
    }

    /// Waits for it to exit successfully (after a last "go", if it waits
    /// for one).
    pub fn finish(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            // It may have exited already: a closed pipe is fine then.
            if let Err(error) = stdin.write_all(b"go\n") {
                assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
            }
        }
        let status = self.child.wait().expect("wait for the fixture");
        assert!(status.success(), "the fixture failed: {status}");
    }

    /// Ends it (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("kill the fixture");
        self.child.wait().expect("reap the fixture");
    }

    /// Lets it go on, and waits for it to exit successfully.
    pub fn go_and_wait(self) {
        self.finish();
    }
}
