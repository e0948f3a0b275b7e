//! Helpers for mmap-trace's end-to-end tests: they run the real binary
//! (real eBPF programs, real kernel) on fixture programs the tests start, and
//! read its JSON report.
//!
//! These tests need root. Run them with `cargo xtask test`, which builds the
//! binary first; without root they fail, they never skip.

use std::{
    ffi::OsStr,
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const PAGE: u64 = 4096;

/// Longest a single traced run may take before the test kills it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A compiled fixture (see tests/fixtures and tests/build.rs).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("FIXTURES_DIR")).join(name)
}

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

/// Tracing tests run one at a time: each loads its own programs, and the
/// "nothing left attached" checks need a quiet machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Panics (fails the test) unless we are root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests load eBPF programs and need root; run `cargo xtask test` as root"
    );
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
    let _ = std::fs::remove_file(&path);
    (run.report(), run)
}

/// Waits for `child`, collecting its output; kills it after RUN_TIMEOUT.
pub fn wait_with_timeout(mut child: Child) -> Run {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mmap-trace") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            panic!("mmap-trace ran for over {RUN_TIMEOUT:?}; killed");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        output: None,
    }
}

/// Fails if any of mmap-trace's eBPF programs is still loaded. The kernel
/// frees a program shortly after its last descriptor closes (after an RCU
/// grace period), so this waits a little before deciding.
pub fn assert_nothing_attached() {
    let loaded = || -> Vec<String> {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|info| info.name_as_str().map(str::to_owned))
            .filter(|name| name.starts_with("mmtrace_"))
            .collect()
    };
    let started = Instant::now();
    let mut leftovers = loaded();
    while !leftovers.is_empty() && started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
        leftovers = loaded();
    }
    assert!(leftovers.is_empty(), "programs left loaded: {leftovers:?}");
}

/// A JSON report (schema mmap-trace/report/v1).
pub struct Report(pub Value);

impl Report {
    pub fn get(&self, path: &str) -> &Value {
        path.split('.')
            .fold(&self.0, |value, key| match key.parse::<usize>() {
                Ok(index) => &value[index],
                Err(_) => &value[key],
            })
    }

    pub fn u64(&self, path: &str) -> u64 {
        self.get(path)
            .as_u64()
            .unwrap_or_else(|| panic!("{path} is not a number in the report"))
    }

    pub fn stacks(&self) -> &[Value] {
        self.0["stacks"].as_array().expect("stacks[]")
    }

    /// Stacks with a frame in function `symbol`.
    pub fn stacks_through(&self, symbol: &str) -> Vec<&Value> {
        self.stacks()
            .iter()
            .filter(|stack| frames(stack).iter().any(|f| f["symbol"] == symbol))
            .collect()
    }

    /// The by_issuer / by_requester row of the object whose file name is `name`.
    pub fn object_row(&self, table: &str, name: &str) -> Option<&Value> {
        self.0[table]
            .as_array()
            .expect("object table")
            .iter()
            .find(|row| basename(row["object"].as_str().unwrap_or_default()) == name)
    }

    pub fn target(&self, pid: u32) -> Option<&Value> {
        self.0["targets"]
            .as_array()
            .expect("targets[]")
            .iter()
            .find(|t| t["pid"] == pid)
    }
}

pub fn frames(stack: &Value) -> &[Value] {
    stack["frames"].as_array().expect("frames[]")
}

/// Function names of a stack, innermost first (`?` for unknown).
pub fn symbols(stack: &Value) -> Vec<&str> {
    frames(stack)
        .iter()
        .map(|f| f["symbol"].as_str().unwrap_or("?"))
        .collect()
}

/// The pids of stacks, sorted, each once.
pub fn pids(stacks: &[&Value]) -> Vec<u64> {
    let mut pids: Vec<u64> = stacks
        .iter()
        .flat_map(|s| s["pids"].as_array().into_iter().flatten())
        .filter_map(Value::as_u64)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Sum of a numeric field over stacks.
pub fn sum(stacks: &[&Value], field: &str) -> u64 {
    stacks.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum()
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Calls of `call` with length `bytes` over stacks (from their `sizes`).
pub fn calls_of_size(stacks: &[&Value], call: &str, bytes: u64) -> u64 {
    stacks
        .iter()
        .flat_map(|s| s["sizes"].as_array().into_iter().flatten())
        .filter(|size| size["call"] == call && size["bytes"] == bytes)
        .map(|size| size["calls"].as_u64().unwrap_or(0))
        .sum()
}

impl Report {
    /// Position of `name` in the by_issuer table (0 = most live bytes).
    pub fn by_issuer_rank(&self, name: &str) -> usize {
        self.0["by_issuer"]
            .as_array()
            .expect("by_issuer[]")
            .iter()
            .position(|row| basename(row["object"].as_str().unwrap_or_default()) == name)
            .unwrap_or_else(|| panic!("{name} is not in by_issuer"))
    }
}

/// A fixture that said "ready" and waits for a line on stdin.
pub struct Waiting {
    child: Child,
    /// Kept open so the fixture can print without a broken pipe.
    _out: std::io::BufReader<std::process::ChildStdout>,
}

impl Waiting {
    pub fn start<S: AsRef<OsStr>>(program: &std::path::Path, args: &[S]) -> Waiting {
        use std::io::BufRead as _;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
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
        use std::io::Write as _;
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

/// mmap-trace attached to running processes, writing a JSON report.
pub struct Tracing {
    child: Child,
    output: PathBuf,
}

impl Tracing {
    /// `mmap-trace record --format json --output FILE <args>`, returned once
    /// it says it is tracing.
    pub fn start(args: &[&str]) -> Tracing {
        let output = scratch_path("tracing.json");
        let mut child = Command::new(mmap_trace_bin())
            .args(["record", "--format", "json", "--output"])
            .arg(&output)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mmap-trace");
        let mut stderr = child.stderr.take().expect("piped");
        let mut said = Vec::new();
        let started = Instant::now();
        while !String::from_utf8_lossy(&said).contains("mmap-trace: tracing") {
            let mut byte = [0u8; 1];
            if stderr.read(&mut byte).unwrap_or(0) == 0 || started.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                panic!(
                    "mmap-trace did not attach: {}",
                    String::from_utf8_lossy(&said)
                );
            }
            said.push(byte[0]);
        }
        child.stderr = Some(stderr);
        Tracing { child, output }
    }

    /// Stops it as Ctrl-C would.
    pub fn interrupt(&self) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits for it to finish; the report is in `Run::output`.
    pub fn finish(self) -> Run {
        let mut run = wait_with_timeout(self.child);
        run.output = std::fs::read_to_string(&self.output).ok();
        let _ = std::fs::remove_file(&self.output);
        assert!(run.status.success(), "mmap-trace failed: {}", run.stderr);
        run
    }
}

/// A fresh cgroup v2 for a test, removed when dropped (once empty).
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create(name: &str) -> TestCgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mount = mountinfo
            .lines()
            .find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .expect("a cgroup v2 hierarchy is mounted");
        let path = mount.join(format!("mmap-trace-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
