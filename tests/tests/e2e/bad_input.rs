//! Bad input: one clear line on stderr, a non-zero exit, no panic, and
//! nothing left attached.

use std::process::Command;

use mmap_trace_tests::{Run, begin, mmap_trace};

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
    let run = mmap_trace_tests::run_as_nobody("", &[], &["record", "--", "true"]);
    assert_one_clear_line(&run, 1, "permission denied");
}

#[test]
fn a_full_disk() {
    let _e2e = begin();
    let run = mmap_trace(&["record", "-o", "/dev/full", "--", "true"]);
    assert_one_clear_line(&run, 1, "No space left on device");
    // A trace on a tiny filesystem (one page) fills it.
    let dir = mmap_trace_tests::scratch_path("full");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4k", "tmpfs"])
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
        "400",
    ]);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    let unmounted = Command::new("umount").arg(&dir).status().unwrap();
    assert!(unmounted.success(), "umount {}", dir.display());
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains("cannot write the trace") && lines[0].contains("No space left on device")
    );
    assert!(
        left.is_empty(),
        "no file that looks like a trace is left: {left:?}"
    );
}

/// A link another user planted (say in /tmp) is never written through: the
/// file it points to stays as it was.
#[test]
fn another_users_symlink_is_not_followed() {
    let _e2e = begin();
    let dir = mmap_trace_tests::scratch_path("links");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep").unwrap();
    let link = dir.join("report.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // nobody (65534) owns the link.
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let run = mmap_trace(&["record", "-o", link.to_str().unwrap(), "--", "true"]);
    let said = std::fs::read_to_string(&victim).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_one_clear_line(&run, 1, "refusing to write through");
    assert!(
        run.stderr
            .contains("a symbolic link owned by another user (uid 65534)")
    );
    assert_eq!(said, "keep");
}
