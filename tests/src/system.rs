//! The machine the tests run on: one traced test at a time, as root, and
//! nothing of mmap-trace's left loaded after each.

use std::{
    path::PathBuf,
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

/// Held for the whole of an end-to-end test (see [`begin`]).
pub struct E2e {
    _serial: MutexGuard<'static, ()>,
}

/// Starts an end-to-end test: waits for the other tests (each loads its own
/// programs, and the "nothing left attached" check needs a quiet machine),
/// and fails unless we are root. When the test ends without failing, the
/// guard checks that no program of mmap-trace's is still loaded.
pub fn begin() -> E2e {
    static LOCK: Mutex<()> = Mutex::new(());
    let serial = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests load eBPF programs and need root; run `cargo xtask test` as root"
    );
    E2e { _serial: serial }
}

impl Drop for E2e {
    fn drop(&mut self) {
        if !thread::panicking() {
            assert_nothing_attached();
        }
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
        // The kernel refuses while the cgroup still has members; they are
        // exiting, so try for a while.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
