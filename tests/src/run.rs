//! Running mmap-trace: on a command, or attached to running processes.

use std::{
    ffi::OsStr,
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::report::Report;

/// Longest a single traced run may take before the test kills it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The mmap-trace binary of this build (target/<profile>/mmap-trace).
pub fn mmap_trace_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("mmap-trace");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// The result of one mmap-trace run.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The report written with `--output`, if one was asked for.
    pub output: Option<String>,
}

impl Run {
    /// The JSON report (from `--output`, else stdout).
    pub fn report(&self) -> Report {
        let text = self.output.as_deref().unwrap_or(&self.stdout);
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); status {:?}\nreport:\n{text}\nstderr:\n{}",
                self.status, self.stderr
            )
        });
        Report(value)
    }
}

/// A fresh path for a report file.
pub fn scratch_path(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("mmap-trace-test-{}-{n}-{name}", std::process::id()))
}

/// Removes a scratch file if it is there.
fn remove_scratch(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot remove {}: {e}", path.display()),
    }
}

/// `mmap-trace <args>`, waited for with a timeout.
pub fn mmap_trace<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let child = Command::new(mmap_trace_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmap-trace");
    wait_with_timeout(child)
}

/// `mmap-trace record --format json --output FILE <extra> -- <command>`:
/// the report (the command keeps stdout to itself).
pub fn record_json<S: AsRef<OsStr>>(extra: &[&str], command: &[S]) -> (Report, Run) {
    let path = scratch_path("report.json");
    let mut args: Vec<&OsStr> = vec!["record".as_ref(), "--format".as_ref(), "json".as_ref()];
    args.extend(["--output".as_ref(), path.as_os_str()]);
    args.extend(extra.iter().map(OsStr::new));
    args.push("--".as_ref());
    args.extend(command.iter().map(|a| a.as_ref()));
    let mut run = mmap_trace(&args);
    run.output = std::fs::read_to_string(&path).ok();
    remove_scratch(&path);
    (run.report(), run)
}

/// Waits for `child`, collecting its output; kills it after RUN_TIMEOUT.
pub fn wait_with_timeout(mut child: Child) -> Run {
    wait_for(&mut child)
}

/// [`wait_with_timeout`], for a child owned by someone else.
fn wait_for(child: &mut Child) -> Run {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mmap-trace") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            kill(child);
            panic!("mmap-trace ran for over {RUN_TIMEOUT:?}; killed");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: out.join().expect("stdout reader").expect("read stdout"),
        stderr: err.join().expect("stderr reader").expect("read stderr"),
        output: None,
    }
}

/// Kills and reaps `child` unless it has exited: what a test that failed
/// half-way leaves behind must not outlive it.
pub(crate) fn end_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        kill(child);
        child.wait().map(drop).unwrap_or(());
    }
}

fn kill(child: &mut Child) {
    if let Err(e) = child.kill() {
        eprintln!("cannot kill pid {}: {e}", child.id());
    }
}

/// mmap-trace running in the background, writing a JSON report to a file.
pub struct Tracing {
    child: Child,
    output: PathBuf,
}

impl Tracing {
    /// `mmap-trace record --format json --output FILE <args>`, attached to
    /// running processes; returned once it says it is tracing.
    pub fn start(args: &[&str]) -> Tracing {
        let tracing = Tracing::spawn(args);
        tracing.until_said("mmap-trace: tracing")
    }

    /// The same with a command after `--`; returned once the command runs
    /// (it is then traced: it waits at a gate until it is).
    pub fn launch(args: &[&str], command: &[&str]) -> Tracing {
        let mut all = args.to_vec();
        all.push("--");
        all.extend(command);
        let tracing = Tracing::spawn(&all);
        let name = crate::report::basename(command[0]);
        let started = Instant::now();
        while !tracing.has_child_named(name) {
            assert!(
                started.elapsed() < RUN_TIMEOUT,
                "mmap-trace never started {command:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
        tracing
    }

    fn spawn(args: &[&str]) -> Tracing {
        let output = scratch_path("tracing.json");
        let child = Command::new(mmap_trace_bin())
            .args(["record", "--format", "json", "--output"])
            .arg(&output)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mmap-trace");
        Tracing { child, output }
    }

    /// Reads stderr until `needle` appears.
    fn until_said(mut self, needle: &str) -> Tracing {
        let mut stderr = self.child.stderr.take().expect("piped");
        let mut said = Vec::new();
        let started = Instant::now();
        while !String::from_utf8_lossy(&said).contains(needle) {
            let mut byte = [0u8; 1];
            if stderr.read(&mut byte).unwrap_or(0) == 0 || started.elapsed() > RUN_TIMEOUT {
                kill(&mut self.child);
                panic!(
                    "mmap-trace did not attach: {}",
                    String::from_utf8_lossy(&said)
                );
            }
            said.push(byte[0]);
        }
        self.child.stderr = Some(stderr);
        self
    }

    /// Has mmap-trace a child that runs the program `name` (after exec)?
    fn has_child_named(&self, name: &str) -> bool {
        self.find_child(name).is_some()
    }

    /// The pid of mmap-trace's child that runs the program `name`.
    pub fn child_named(&self, name: &str) -> u32 {
        self.find_child(name)
            .unwrap_or_else(|| panic!("mmap-trace has no child named {name}"))
    }

    fn find_child(&self, name: &str) -> Option<u32> {
        let pid = self.child.id();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        tasks.flatten().find_map(|task| {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            children
                .split_whitespace()
                .find(|child| {
                    std::fs::read_to_string(format!("/proc/{child}/comm"))
                        .is_ok_and(|comm| comm.trim_end() == name)
                })
                .and_then(|child| child.parse().ok())
        })
    }

    /// Sends it `signal` (as Ctrl-C would, with SIGINT).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Stops it as Ctrl-C would.
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Waits for it to finish; the report is in `Run::output`.
    pub fn wait(mut self) -> Run {
        let mut run = wait_for(&mut self.child);
        run.output = std::fs::read_to_string(&self.output).ok();
        remove_scratch(&self.output);
        run
    }

    /// Waits for it to finish successfully.
    pub fn finish(self) -> Run {
        let run = self.wait();
        assert!(run.status.success(), "mmap-trace failed: {}", run.stderr);
        run
    }
}

/// A test that fails while mmap-trace runs must not leave it running: the
/// next test would find its programs still loaded.
impl Drop for Tracing {
    fn drop(&mut self) {
        end_if_running(&mut self.child);
    }
}

/// mmap-trace run as `nobody` holding only `caps` (setpriv's syntax, e.g.
/// "+bpf,+perfmon"; empty: none), from copies anyone may run (the build
/// directory may sit under /root) of the binary and of `programs`, which
/// it gets as `{}` placeholders in `args` (in order).
pub fn run_as_nobody(caps: &str, programs: &[PathBuf], args: &[&str]) -> Run {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch_path("nobody");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("mmap-trace");
    std::fs::copy(mmap_trace_bin(), &bin).unwrap();
    let mut copies = Vec::new();
    for program in programs {
        let copy = dir.join(program.file_name().expect("a program file"));
        std::fs::copy(program, &copy).unwrap();
        copies.push(copy);
    }
    let mut copies = copies.iter();
    let caps = format!("-all{}{caps}", if caps.is_empty() { "" } else { "," });
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg(&bin)
        .args(args.iter().map(|&a| match a {
            "{}" => copies.next().expect("a program for each {}").as_os_str(),
            other => OsStr::new(other),
        }))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let run = wait_with_timeout(child);
    std::fs::remove_dir_all(&dir).unwrap();
    run
}
