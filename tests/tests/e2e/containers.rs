//! A process in its own mount namespace, run from a filesystem the host
//! cannot see: its objects are read through /proc/PID/root while it lives,
//! so its frames are still named after it (and its namespace) are gone.

use mmap_trace_tests::{PAGE, basename, begin, fixture, frames, record_json, scratch_path, sum};

#[test]
fn frames_of_a_process_in_a_private_mount_namespace_are_symbolized() {
    let _e2e = begin();
    // An empty directory on the host; inside the namespace, a tmpfs on it
    // holds the program and its library.
    let mount_point = scratch_path("nsmnt");
    std::fs::create_dir_all(&mount_point).unwrap();
    let program = fixture("nsfix");
    let library = fixture("libnsmap.so");
    let script = format!(
        "mount -t tmpfs tmpfs {m} && cp {p} {l} {m}/ && exec {m}/nsfix",
        m = mount_point.display(),
        p = program.display(),
        l = library.display()
    );
    let (report, run) = record_json(
        &[],
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    let host_view = std::fs::read_dir(&mount_point).unwrap().count();
    std::fs::remove_dir(&mount_point).unwrap();
    assert_eq!(host_view, 0, "the host never saw the tmpfs");

    let stacks = report.stacks_through("ns_map");
    assert_eq!(sum(&stacks, "mapped_bytes"), 3 * PAGE);
    let frame = frames(stacks[0])
        .iter()
        .find(|f| f["symbol"] == "ns_map")
        .unwrap();
    let object = frame["object"].as_str().unwrap();
    assert_eq!(
        object,
        format!("{}/libnsmap.so", mount_point.display()),
        "named by its path inside the namespace"
    );
    assert!(frame["build_id"].as_str().is_some_and(|id| id.len() == 40));
    let main = frames(stacks[0])
        .iter()
        .find(|f| f["symbol"] == "main")
        .unwrap();
    assert_eq!(basename(main["object"].as_str().unwrap()), "nsfix");
}
