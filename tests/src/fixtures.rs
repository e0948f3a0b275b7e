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
    /// Kept open so the fixture can print without a broken pipe.
    _out: BufReader<ChildStdout>,
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
        Waiting { child, _out: out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it go on, and waits for it to exit successfully.
    pub fn go_and_wait(mut self) {
        self.child
            .stdin
            .take()
            .expect("piped")
            .write_all(b"go\n")
            .expect("write to the fixture");
        let status = self.child.wait().expect("wait for the fixture");
        assert!(status.success(), "the fixture failed: {status}");
    }
}
