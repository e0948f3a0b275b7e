//! `cargo xtask test`: every test, unit and end-to-end. The end-to-end
//! tests load eBPF programs and trace the fixtures they start: root only,
//! and they fail rather than skip without it.
//!
//! `cargo xtask test --vm KERNEL [-- FILTER...]`: the end-to-end tests
//! only, on a Debian kernel under QEMU (see `vm.rs`). A kernel older than
//! mmap-trace supports gets a check that mmap-trace refuses it in one line
//! instead.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, command, run as run_cmd, workspace_root},
    vm::{self, Guest, quote},
};

/// The oldest kernel mmap-trace loads on (`mmap-trace/src/sys/loader.rs`).
const MIN_KERNEL: (u32, u32) = (5, 17);
/// The whole suite takes about 19 min under TCG on 2 cores; a guest that
/// hangs must still end. XTASK_VM_TIMEOUT (seconds) sets another bound.
const VM_TIMEOUT: Duration = Duration::from_secs(45 * 60);

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    let (kernel, extra) = split_vm(extra)?;
    crate::setup::run()?;
    if !cmd::is_root() {
        bail!("the end-to-end tests load eBPF programs: run `cargo xtask test` as root");
    }
    // The end-to-end tests run this binary. For a VM, all it runs is built
    // here first: cargo under TCG would be slow, and the guest must not see
    // files change under it.
    run_cmd(command("cargo").args(["build", "-p", "mmap-trace"]))?;
    if let Some(kernel) = kernel {
        return in_vm(&kernel, &extra);
    }
    run_cmd(
        command("cargo")
            .args(["test", "--workspace", "--exclude", "mmap-trace-ebpf"])
            .args(extra),
    )
}

/// `--vm KERNEL` (or `--vm=KERNEL`) and the other arguments.
fn split_vm(args: &[String]) -> anyhow::Result<(Option<String>, Vec<String>)> {
    let (mut kernel, mut rest) = (None, Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            rest.push(arg.clone());
            rest.extend(args.by_ref().cloned());
        } else if arg == "--vm" {
            let name = args
                .next()
                .context("--vm needs a kernel: 6.1, 6.12 or 5.10")?;
            kernel = Some(name.clone());
        } else if let Some(name) = arg.strip_prefix("--vm=") {
            kernel = Some(name.to_owned());
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((kernel, rest))
}

fn in_vm(kernel: &str, extra: &[String]) -> anyhow::Result<()> {
    crate::setup::packages(vm::PACKAGES)?;
    let root = workspace_root();
    let guest = Guest::prepare(kernel, &root.join("target/vm"))?;
    let supported = guest.version().is_none_or(|version| version >= MIN_KERNEL);
    let script = if supported {
        // Past `--`, as for libtest: test name filters and options.
        let filters = extra.strip_prefix(&["--".to_owned()]).unwrap_or(extra);
        suite_script(&e2e_executable()?, filters)
    } else {
        refusal_script(&root.join("target/debug/mmap-trace"))
    };
    let started = Instant::now();
    let timeout = std::env::var("XTASK_VM_TIMEOUT")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .map_or(VM_TIMEOUT, Duration::from_secs);
    let status = guest.run(&root.join("tests"), &script, timeout)?;
    let took = started.elapsed().as_secs();
    let what = if supported {
        "the end-to-end tests"
    } else {
        "the refusal check"
    };
    if status != 0 {
        bail!(
            "{what} failed on Linux {} (status {status}, {took} s)",
            guest.release
        );
    }
    println!("xtask: {what} passed on Linux {} ({took} s)", guest.release);
    Ok(())
}

/// The guest's first line names its kernel and how long it took to boot.
const HELLO: &str = "read up _ < /proc/uptime\necho \"guest kernel: $(uname -r) (up ${up} s)\"\n";

/// The end-to-end tests, one at a time (each loads its own programs).
fn suite_script(e2e: &std::path::Path, filters: &[String]) -> String {
    let mut script = format!(
        "{HELLO}exec {} --test-threads=1",
        quote(e2e.as_os_str().as_encoded_bytes())
    );
    for filter in filters {
        script.push(' ');
        script.push_str(&quote(filter.as_bytes()));
    }
    script + "\n"
}

/// On a kernel mmap-trace does not support: `record -- true` must fail
/// with status 1 and exactly one line naming the kernel and what it lacks.
fn refusal_script(mmap_trace: &std::path::Path) -> String {
    let (major, minor) = MIN_KERNEL;
    format!(
        r#"{HELLO}out=$({} record -- true 2>&1); status=$?
printf '%s\n' "$out"
expected="mmap-trace: needs Linux {major}.{minor} or newer (bpf_loop, bpf_find_vma); this is Linux $(uname -r)"
if [ "$status" = 1 ] && [ "$out" = "$expected" ]; then
    echo "refusal check: ok (status 1, one line)"
    exit 0
fi
echo "refusal check: expected status 1 and only this line: $expected"
echo "refusal check: got status $status and the output above"
exit 1
"#,
        quote(mmap_trace.as_os_str().as_encoded_bytes())
    )
}

/// The end-to-end test binary, built (not run) by cargo, which says where
/// it put it.
fn e2e_executable() -> anyhow::Result<PathBuf> {
    let mut build = command("cargo");
    build.args([
        "test",
        "-p",
        "mmap-trace-tests",
        "--no-run",
        "--message-format=json",
    ]);
    println!("xtask: $ {}", cmd::describe(&build));
    let out = build
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    let mut executable = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match message["reason"].as_str() {
            // With JSON output, compiler errors come only here.
            Some("compiler-message") => {
                if let Some(text) = message["message"]["rendered"].as_str() {
                    eprint!("{text}");
                }
            }
            Some("compiler-artifact") if message["target"]["name"] == "e2e" => {
                if let Some(path) = message["executable"].as_str() {
                    executable = Some(PathBuf::from(path));
                }
            }
            _ => {}
        }
    }
    if !out.status.success() {
        bail!("building the end-to-end tests failed ({})", out.status);
    }
    executable.context("cargo built no `e2e` test executable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn vm_flag_and_filters() {
        let (kernel, rest) = split_vm(&strings(&["--vm", "6.1", "--", "growth::"])).unwrap();
        assert_eq!(kernel.as_deref(), Some("6.1"));
        assert_eq!(rest, strings(&["--", "growth::"]));
        let (kernel, rest) = split_vm(&strings(&["--vm=5.10"])).unwrap();
        assert_eq!(kernel.as_deref(), Some("5.10"));
        assert!(rest.is_empty());
        // After `--`, everything is the tests'.
        let (kernel, rest) = split_vm(&strings(&["--", "--vm", "x"])).unwrap();
        assert_eq!(kernel, None);
        assert_eq!(rest, strings(&["--", "--vm", "x"]));
        assert!(split_vm(&strings(&["--vm"])).is_err());
    }

    #[test]
    fn the_suite_script_quotes_filters() {
        let script = suite_script(
            std::path::Path::new("/t/e2e-1"),
            &strings(&["growth::", "a b"]),
        );
        assert!(script.ends_with("exec '/t/e2e-1' --test-threads=1 'growth::' 'a b'\n"));
        assert!(script.starts_with(HELLO));
    }
}
