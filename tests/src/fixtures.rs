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

/// A test that fails while its fixture waits must not leave it running.
impl Drop for Waiting {
    fn drop(&mut self) {
        crate::run::end_if_running(&mut self.child);
    }
}

/// A Python fixture script (tests/fixtures/python).
pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/python")
        .join(name)
}

/// The line of `script` marked with the comment `# @mark`.
pub fn marked_line(script: &Path, mark: &str) -> u64 {
    let text = std::fs::read_to_string(script)
        .unwrap_or_else(|e| panic!("read {}: {e}", script.display()));
    let wanted = format!("# @{mark}");
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.trim_end().ends_with(&wanted))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{} marks @{mark} once", script.display());
    lines[0] as u64
}

/// A CPython interpreter on this machine.
#[derive(Clone, Debug)]
pub struct Python {
    pub path: PathBuf,
    /// 10 for 3.10.
    pub minor: u32,
}

impl Python {
    /// Whether it names functions by their qualified names (3.11+).
    pub fn has_qualnames(&self) -> bool {
        self.minor >= 11
    }
}

/// Every CPython 3.10 to 3.13 found: Debian's `python3`, and pyenv's builds
/// (`$PYENV_ROOT` or `~/.pyenv`). At least one must be there: the tests that
/// use them fail otherwise.
pub fn pythons() -> Vec<Python> {
    let mut found: Vec<Python> = Vec::new();
    let mut candidates = vec![PathBuf::from("/usr/bin/python3")];
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv")));
    if let Some(versions) = root.map(|r| r.join("versions"))
        && let Ok(entries) = std::fs::read_dir(&versions)
    {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let mut parts = name.split('.');
            if let (Some("3"), Some(minor)) = (parts.next(), parts.next()) {
                candidates.push(versions.join(&name).join(format!("bin/python3.{minor}")));
            }
        }
    }
    for path in candidates {
        let Some(minor) = python_minor(&path) else {
            continue;
        };
        if (10..=13).contains(&minor) {
            found.push(Python { path, minor });
        }
    }
    assert!(
        !found.is_empty(),
        "no CPython 3.10 to 3.13 on this machine (`cargo xtask setup` installs Debian's python3)"
    );
    found
}

fn python_minor(path: &Path) -> Option<u32> {
    let output = Command::new(path)
        .args(["-c", "import sys; print(sys.version_info[1])"])
        .output()
        .ok()?;
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}
