//! Bad input: one clear line on stderr, a non-zero exit, no panic, and
//! nothing left attached.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use mmap_trace_tests::{Run, begin, mmap_trace, mmap_trace_bin, wait_with_timeout};

fn assert_one_clear_line(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.status.code(), Some(code), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {}", run.stderr);
    assert!(lines[0].starts_with("mmap-trace: "), "{}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "{:?} does not say {needle:?}",
        lines[0]
    );
    assert!(!run.stderr.contains("panicked"));
    assert!(run.stdout.is_empty(), "no report: {}", run.stdout);
}

#[test]
fn a_pid_that_does_not_exist() {
    let _e2e = begin();
    // pid_max itself is never handed out.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let run = mmap_trace(&["record", "--pid", pid_max.trim()]);
    assert_one_clear_line(&run, 1, &format!("no process with pid {}", pid_max.trim()));
}

#[test]
fn a_command_that_does_not_exist() {
    let _e2e = begin();
    let run = mmap_trace(&["record", "--", "/nonexistent/mmap-trace-fixture"]);
    assert_one_clear_line(&run, 127, "command not found");
    let run = mmap_trace(&["record", "--", "no-such-command-for-mmap-trace"]);
    assert_one_clear_line(&run, 127, "command not found");
}

#[test]
fn nothing_to_trace() {
    let _e2e = begin();
    let run = mmap_trace(&["record"]);
    assert_one_clear_line(&run, 1, "nothing to trace");
}

#[test]
fn without_root() {
    let _e2e = begin();
    // A copy anyone may run (the build directory may sit under /root).
    let dir = std::env::temp_dir().join(format!("mmap-trace-unprivileged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("mmap-trace");
    std::fs::copy(mmap_trace_bin(), &bin).unwrap();
    let child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(["record", "--", "true"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let run = wait_with_timeout(child);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_one_clear_line(&run, 1, "permission denied");
}

#[test]
fn a_full_disk() {
    let _e2e = begin();
    let run = mmap_trace(&["record", "-o", "/dev/full", "--", "true"]);
    assert_one_clear_line(&run, 1, "No space left on device");
    // A trace on a tiny filesystem fills it.
    let dir = mmap_trace_tests::scratch_path("full");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success());
    let trace = dir.join("x.mtrace");
    let lab = mmap_trace_tests::fixture("lab");
    let run = mmap_trace(&[
        "record",
        "-o",
        trace.to_str().unwrap(),
        "--",
        lab.to_str().unwrap(),
        "64",
    ]);
    let unmounted = Command::new("umount").arg(&dir).status().unwrap();
    assert!(unmounted.success(), "umount {}", dir.display());
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains("cannot write the trace") && lines[0].contains("No space left on device")
    );
}
