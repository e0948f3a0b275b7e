//! `cargo xtask demo`: trace the bundled lab (examples/lab) and print the
//! report. The lab leaks every fourth 256 KiB region it gets from liblab.so,
//! which maps them through raw syscall(SYS_mmap) as UCX's hooks do, and
//! touches what it maps: its resident memory grows. It runs 12 seconds, so
//! the growth can be judged.

use std::path::Path;

use anyhow::bail;

use crate::cmd::{self, command, run as run_cmd};

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !cmd::is_root() {
        bail!("the demo loads eBPF programs: run it as root");
    }
    run_cmd(command("cargo").args(["build", "--release", "-p", "mmap-trace"]))?;
    let root = cmd::workspace_root();
    let out = root.join("target/lab");
    build_lab(&root.join("examples/lab"), &out)?;
    println!(
        "\nxtask: tracing the lab for 12 s: 160 rounds 75 ms apart, every fourth 256 KiB region \
         leaks. liblab plays UCX's libucm, so it is declared an interposer: the requester is \
         the code that asked.\n"
    );
    run_cmd(
        command(
            root.join("target/release/mmap-trace")
                .to_str()
                .expect("utf-8 path"),
        )
        .args(["record", "--top", "2", "--interval", "500ms"])
        .args(["--interposer", "liblab"])
        .args(extra)
        .arg("--")
        .arg(out.join("lab"))
        .args(["160", "leaky", "75"]),
    )
}

fn build_lab(sources: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    run_cmd(
        command("gcc")
            .args(["-O2", "-g", "-fPIC", "-shared", "-o"])
            .arg(out.join("liblab.so"))
            .arg(sources.join("liblab.c")),
    )?;
    run_cmd(
        command("gcc")
            .args(["-O2", "-g", "-o"])
            .arg(out.join("lab"))
            .arg(sources.join("lab.c"))
            .arg(format!("-L{}", out.display()))
            .args(["-llab", "-Wl,-rpath,$ORIGIN"]),
    )
}
