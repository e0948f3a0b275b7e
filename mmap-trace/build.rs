//! Builds the eBPF programs (crate `mmap-trace-ebpf`) for the bpf target with
//! the nightly toolchain and bpf-linker, into OUT_DIR, where `sys/loader.rs`
//! embeds them. `cargo xtask setup` installs what this needs.
//!
//! With AYA_BUILD_SKIP=1 (`cargo xtask lint` sets it: clippy checks the
//! user-space code, and the eBPF crate on its own) an empty object stands
//! in, and the loader refuses to run with it.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let skip = std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true");
    if skip {
        let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
        let stub = std::path::Path::new(&out_dir).join("mmap-trace-ebpf");
        std::fs::write(&stub, b"").with_context(|| format!("writing {}", stub.display()))?;
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "mmap-trace-ebpf")
        .ok_or_else(|| anyhow!("the mmap-trace-ebpf package is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building the eBPF programs failed; `cargo xtask setup` installs the nightly \
         rust-src component and bpf-linker they need",
    )
}
