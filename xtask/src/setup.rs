//! Installs what building and testing mmap-trace need, idempotently:
//! Debian packages, the nightly toolchain's rust-src, and bpf-linker built
//! against nightly's own libLLVM.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, probe, run as run_cmd};

/// Debian packages: the C compiler for fixtures, Debian's UCX for the UCX
/// tests, setpriv (util-linux) for the unprivileged test, glibc's debug
/// symbols so tests can name its internal functions (`__libc_start_call_main`),
/// gdb to check our stacks against its backtraces; the real consumers of
/// the report's pictures: headless Chromium (the HTML report) and Go's
/// `go tool pprof` (the pprof profile).
const PACKAGES: &[&str] = &[
    "chromium",
    "gcc",
    "gdb",
    "golang-go",
    "libc6-dev",
    "libc6-dbg",
    "libucx0",
    "libucx-dev",
    "prometheus",
    "ucx-utils",
    "util-linux",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    packages(PACKAGES)?;
    nightly()?;
    bpf_linker()?;
    println!("xtask: setup complete");
    Ok(())
}

/// Installs the Debian packages of `wanted` that are missing.
pub fn packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect();
    if missing.is_empty() {
        println!("xtask: Debian packages present: {}", wanted.join(" "));
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing Debian packages {}; install them as root: apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("xtask: installing Debian packages: {}", missing.join(" "));
    run_cmd(
        command("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_cmd(
        command("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn installed(package: &str) -> bool {
    probe(command("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn nightly() -> anyhow::Result<()> {
    let has_nightly = probe(command("rustup").args(["run", "nightly", "rustc", "--version"]))
        .is_some_and(|out| out.status.success());
    if !has_nightly {
        println!("xtask: installing the nightly toolchain (it builds the eBPF programs)");
        run_cmd(command("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let components = probe(command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        println!("xtask: nightly rust-src present");
        return Ok(());
    }
    run_cmd(command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker must link the very libLLVM that nightly rustc uses. Its build
/// finds LLVM through LLVM_PREFIX, so we point that at a folder whose
/// lib/libLLVM.so is nightly's library; the binary keeps an rpath to it, so
/// the folder lives in the home directory, not in /tmp.
fn bpf_linker() -> anyhow::Result<()> {
    let linker = cmd::cargo_bin_dir().join("bpf-linker");
    let works = probe(command(linker.to_str().unwrap_or("bpf-linker")).arg("--version"))
        .is_some_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
        });
    let (llvm, major) = nightly_libllvm()?;
    let prefix = cmd::home_dir().join(".local/share/mmap-trace/llvm");
    // lib/libLLVM.so is what the build looks for; the binary then asks for
    // the library by its soname, which must be in the rpath folder too.
    let soname = llvm.file_name().expect("a file name").to_owned();
    let links = [
        prefix.join("lib/libLLVM.so"),
        prefix.join("lib").join(&soname),
    ];
    let linked_to_current = links
        .iter()
        .all(|link| fs::read_link(link).is_ok_and(|target| target == llvm));
    if works && linked_to_current {
        println!("xtask: bpf-linker {BPF_LINKER_VERSION} present (LLVM {major})");
        return Ok(());
    }
    println!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} ({})",
        llvm.display()
    );
    fs::create_dir_all(prefix.join("lib")).context("creating the LLVM prefix folder")?;
    for link in &links {
        match fs::remove_file(link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", link.display())),
        }
        std::os::unix::fs::symlink(&llvm, link)
            .with_context(|| format!("linking {} to {}", link.display(), llvm.display()))?;
    }
    run_cmd(
        command("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
}

/// Nightly's shared libLLVM and its major version.
fn nightly_libllvm() -> anyhow::Result<(PathBuf, String)> {
    let out = probe(command("rustc").args(["+nightly", "--print", "sysroot"]))
        .filter(|out| out.status.success())
        .context("cannot ask nightly rustc for its sysroot")?;
    let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // libLLVM.so.22.1-rust-1.97.0-nightly
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            let major = version.split('.').next().unwrap_or_default().to_owned();
            if major.chars().all(|c| c.is_ascii_digit()) && !major.is_empty() {
                return Ok((lib.join(&name), major));
            }
        }
    }
    bail!(
        "no libLLVM.so.* in {}; is the nightly toolchain complete?",
        lib.display()
    )
}
