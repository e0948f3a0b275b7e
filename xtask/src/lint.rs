//! `cargo xtask lint`: formatting and clippy, warnings as errors, for the
//! user-space crates and for the eBPF crate (nightly, bpf target).

use crate::cmd::{command, run as run_cmd};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    run_cmd(command("cargo").args(["fmt", "--all", "--check"]))?;
    // The eBPF programs are linted on their own below; building them inside
    // mmap-trace's build script again, for clippy, would only cost time.
    run_cmd(
        command("cargo")
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                "mmap-trace-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env("AYA_BUILD_SKIP", "1"),
    )?;
    run_cmd(command("cargo").args([
        "+nightly",
        "clippy",
        "-p",
        "mmap-trace-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}
