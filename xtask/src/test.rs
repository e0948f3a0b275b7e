//! `cargo xtask test`: every test, unit and end-to-end. The end-to-end
//! tests load eBPF programs and trace the fixtures they start: root only,
//! and they fail rather than skip without it.

use anyhow::bail;

use crate::cmd::{self, command, run as run_cmd};

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !cmd::is_root() {
        bail!("the end-to-end tests load eBPF programs: run `cargo xtask test` as root");
    }
    // The end-to-end tests run this binary.
    run_cmd(command("cargo").args(["build", "-p", "mmap-trace"]))?;
    run_cmd(
        command("cargo")
            .args(["test", "--workspace", "--exclude", "mmap-trace-ebpf"])
            .args(extra),
    )
}
