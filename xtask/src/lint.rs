//! `cargo xtask lint`: formatting and clippy, warnings as errors, for the
//! user-space crates and for the eBPF crate (nightly, bpf target).

use crate::cmd::{command, run as run_cmd};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    run_cmd(command("cargo").args(["fmt", "--all", "--check"]))?;
    run_cmd(command("cargo").args([
        "clippy",
        "--workspace",
        "--exclude",
        "mmap-trace-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
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
