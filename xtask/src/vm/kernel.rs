//! The guest's kernel and initramfs: a Debian kernel package fetched with
//! apt, unpacked, and the initramfs `/init` boots from.

use std::{
    collections::HashSet,
    fs,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::cmd::{describe, run_quietly};

const BUSYBOX: &str = "/bin/busybox";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The guest's /init.
const GUEST_INIT: &str = include_str!("../vm-init.sh");
/// What the guest needs loaded to reach the host's files (with their
/// dependencies; those built into a kernel are skipped).
const MODULES: &[&str] = &["virtio_pci", "virtiofs", "overlay", "virtio_rng"];

/// apt for one Debian suite, with its own lists and configuration under
/// the cache: the host's sources and pins play no part.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(suite: &str, cache: &Path) -> anyhow::Result<Apt> {
        let dir = cache.join(format!("apt-{suite}"));
        for sub in ["etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let mirror = |path: &str, suite: &str| {
            format!("deb [signed-by={KEYRING}] http://deb.debian.org/{path} {suite} main\n")
        };
        fs::write(
            dir.join("etc/sources.list"),
            mirror("debian", suite)
                + &mirror("debian", &format!("{suite}-updates"))
                + &mirror("debian-security", &format!("{suite}-security")),
        )?;
        let apt = Apt { dir };
        // Lists over a day old may name kernel versions the mirror has
        // since replaced (security updates), which fail to download.
        let stamp = apt.dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(86_400));
        if !fresh {
            println!(
                "xtask: apt-get update for {suite} (lists in {})",
                apt.dir.display()
            );
            apt.run(apt.command("apt-get").args(["update", "-qq"]))?;
            fs::write(&stamp, "")?;
        }
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut command = Command::new(program);
        for option in [
            format!("Dir::Etc={d}/etc"),
            format!("Dir::Etc::sourcelist={d}/etc/sources.list"),
            format!("Dir::Etc::sourceparts={d}/etc/sources.list.d"),
            format!("Dir::Etc::preferences={d}/etc/preferences"),
            format!("Dir::Etc::preferencesparts={d}/etc/preferences.d"),
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            "APT::Architecture=amd64".into(),
            "Debug::NoLocking=1".into(),
        ] {
            command.arg("-o").arg(option);
        }
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    }

    fn run(&self, command: &mut Command) -> anyhow::Result<String> {
        let out = command
            .output()
            .with_context(|| format!("cannot run {}", describe(command)))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                describe(command),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The kernel package behind `name`, downloaded once into `cache/debs`;
/// later runs take the same package without asking apt (delete
/// `cache/kernel-<name>` for the newest).
pub fn package(name: &str, suite: &str, package: &str, cache: &Path) -> anyhow::Result<PathBuf> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let memo = cache.join(format!("kernel-{name}"));
    if let Ok(file) = fs::read_to_string(&memo) {
        let deb = debs.join(file.trim());
        if deb.exists() {
            return Ok(deb);
        }
    }
    let apt = Apt::new(suite, cache)?;
    // The metapackage depends on the real one, linux-image-<release>.
    let depends = apt.run(apt.command("apt-cache").args(["depends", package]))?;
    let real = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|dep| {
            dep.strip_prefix("linux-image-")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .with_context(|| format!("{package} ({suite}) names no linux-image-<release>"))?
        .to_owned();
    println!("xtask: downloading {real} ({suite})");
    apt.run(
        apt.command("apt-get")
            .args(["download", "-qq", &real])
            .current_dir(&debs),
    )?;
    let prefix = format!("{real}_");
    let mut found: Vec<String> = fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        .collect();
    found.sort();
    let file = found
        .pop()
        .with_context(|| format!("{real} was not downloaded"))?;
    fs::write(&memo, &file)?;
    Ok(debs.join(file))
}

/// An unpacked kernel package.
pub struct Unpacked {
    dir: PathBuf,
    pub root: PathBuf,
    pub release: String,
}

impl Unpacked {
    pub fn new(deb: &Path, kernels: &Path) -> anyhow::Result<Unpacked> {
        let dir = kernels.join(deb.file_stem().context("a .deb file")?);
        let root = dir.join("root");
        if !dir.join(".unpacked").exists() {
            println!("xtask: unpacking {}", deb.display());
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::create_dir_all(&root)?;
            run_quietly(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
            let release = only_entry(&root.join("lib/modules"))?;
            // Debian's packages leave modules.dep to the installation.
            run_quietly(
                Command::new(BUSYBOX)
                    .args(["depmod", "-b"])
                    .arg(&root)
                    .arg(&release),
            )?;
            fs::write(dir.join(".unpacked"), "")?;
        }
        let release = only_entry(&root.join("lib/modules"))?;
        Ok(Unpacked { dir, root, release })
    }

    /// The modules to load, dependencies first (modules.dep lists only
    /// the loadable ones: built-in ones are skipped).
    fn module_order(&self) -> anyhow::Result<Vec<PathBuf>> {
        let modules = self.root.join("lib/modules").join(&self.release);
        let dep = fs::read_to_string(modules.join("modules.dep"))?;
        let name_of = |path: &str| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.split(".ko").next().unwrap_or(file).replace('-', "_")
        };
        let entries: Vec<(String, &str, Vec<String>)> = dep
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(path, deps)| {
                let deps = deps.split_whitespace().map(name_of).collect();
                (name_of(path), path, deps)
            })
            .collect();
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<(String, bool)> = MODULES
            .iter()
            .rev()
            .map(|m| (m.to_string(), false))
            .collect();
        // Depth first; a module goes out after (`true`) its dependencies.
        while let Some((name, deps_done)) = stack.pop() {
            let Some((_, path, deps)) = entries.iter().find(|e| e.0 == name) else {
                continue;
            };
            if deps_done {
                order.push(modules.join(path));
            } else if seen.insert(name.clone()) {
                stack.push((name, true));
                stack.extend(deps.iter().rev().map(|d| (d.clone(), false)));
            }
        }
        Ok(order)
    }

    /// The initramfs (newc cpio, uncompressed): busybox, /init, modules.
    /// Named by a hash of what goes in; rebuilt when that changes.
    pub fn initramfs(&self) -> anyhow::Result<PathBuf> {
        let modules = self.module_order()?;
        let busybox = fs::read(BUSYBOX).context("busybox-static is not installed")?;
        let mut hasher = DefaultHasher::new();
        (GUEST_INIT, &modules, &busybox).hash(&mut hasher);
        let path = self
            .dir
            .join(format!("initramfs-{:016x}.cpio", hasher.finish()));
        if path.exists() {
            return Ok(path);
        }
        let mut cpio = Cpio::default();
        for dir in ["bin", "dev", "modules", "proc", "sys"] {
            cpio.entry(dir, 0o040_755, &[]);
        }
        cpio.entry("bin/busybox", 0o100_755, &busybox);
        cpio.entry("init", 0o100_755, GUEST_INIT.as_bytes());
        let mut order = String::new();
        for module in &modules {
            // Debian's kernels (up to 6.12) ship modules uncompressed.
            let name = module
                .file_name()
                .context("a module file")?
                .to_string_lossy();
            cpio.entry(&format!("modules/{name}"), 0o100_644, &fs::read(module)?);
            order.push_str(&name);
            order.push('\n');
        }
        cpio.entry("modules/load-order", 0o100_644, order.as_bytes());
        let partial = path.with_extension("partial");
        fs::write(&partial, cpio.finish())?;
        fs::rename(&partial, &path)?;
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("initramfs-") && entry.path() != path {
                fs::remove_file(entry.path()).ok(); // a stale image
            }
        }
        Ok(path)
    }
}

fn only_entry(dir: &Path) -> anyhow::Result<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.len() != 1 {
        bail!("expected one entry in {}, found {names:?}", dir.display());
    }
    Ok(names.remove(0))
}

/// The "newc" cpio format, which the kernel unpacks as its initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        // magic, inode, mode, uid, gid, nlink, mtime, size, dev major and
        // minor, rdev major and minor, name size (with its NUL), checksum
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut cpio = Cpio::default();
        cpio.entry("init", 0o100_755, b"#!/bin/sh\n");
        let out = cpio.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let trailer = out.windows(10).position(|w| w == b"TRAILER!!!");
        assert!(trailer.is_some());
    }
}
