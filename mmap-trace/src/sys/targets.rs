//! Which running processes to trace: `--pid` (with its existing
//! descendants), `--comm`, and `--cgroup` (every process of a cgroup v2 and
//! of the cgroups below it).

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::pidfd::{self, Watched};

/// A cgroup v2 to trace: its id (the directory's inode) and depth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
    pub level: u32,
}

/// The processes found at attach.
pub struct Selection {
    /// Named with --pid or --comm: tracing ends when they have all exited
    /// (unless a cgroup is traced).
    pub watched: Vec<Watched>,
    /// Their descendants, and the cgroup's members: traced, not waited for.
    pub others: Vec<u32>,
    pub cgroup: Option<Cgroup>,
}

impl Selection {
    pub fn all_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.watched
            .iter()
            .map(|w| w.pid)
            .chain(self.others.iter().copied())
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty() && self.others.is_empty() && self.cgroup.is_none()
    }
}

pub fn select(pids: &[u32], comms: &[String], cgroup: Option<&Path>) -> anyhow::Result<Selection> {
    let own = std::process::id();
    let mut named: Vec<u32> = pids.to_vec();
    for comm in comms {
        let found = pids_with_comm(comm, own);
        if found.is_empty() {
            bail!("no running process is named {comm:?} (see /proc/PID/comm)");
        }
        named.extend(found);
    }
    named.sort_unstable();
    named.dedup();
    let watched = named
        .iter()
        .map(|&pid| watch(pid, own))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut others: BTreeSet<u32> = named.iter().flat_map(|&pid| descendants(pid)).collect();
    let cgroup = match cgroup {
        Some(path) => {
            let cgroup = resolve_cgroup(path)?;
            others.extend(cgroup_members(&cgroup.path));
            Some(cgroup)
        }
        None => None,
    };
    others.remove(&own);
    for pid in &named {
        others.remove(pid);
    }
    Ok(Selection {
        watched,
        others: others.into_iter().collect(),
        cgroup,
    })
}

/// A pidfd on `pid`, or why it cannot be traced.
fn watch(pid: u32, own: u32) -> anyhow::Result<Watched> {
    if pid == own {
        bail!("refusing to trace mmap-trace itself (pid {pid})");
    }
    match pidfd::pidfd_open(pid) {
        Ok(pidfd) => Ok(Watched { pid, pidfd }),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => bail!("no process with pid {pid}"),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            bail!("pid {pid} is a thread, not a process; give its process id")
        }
        Err(e) => Err(e).with_context(|| format!("cannot watch pid {pid}")),
    }
}

/// Every live descendant of `pid` (children of all its threads, recursively).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

fn pids_with_comm(name: &str, own: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .collect()
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

fn resolve_cgroup(path: &Path) -> anyhow::Result<Cgroup> {
    let mount = cgroup2_mount().context("no cgroup v2 hierarchy is mounted")?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        mount.join(path)
    };
    let Ok(relative) = full.strip_prefix(&mount) else {
        bail!(
            "{} is not in the cgroup v2 hierarchy (mounted at {})",
            full.display(),
            mount.display()
        );
    };
    let metadata =
        fs::metadata(&full).with_context(|| format!("no cgroup at {}", full.display()))?;
    if !full.join("cgroup.procs").exists() {
        bail!("{} is not a cgroup (no cgroup.procs)", full.display());
    }
    Ok(Cgroup {
        level: relative.components().count() as u32,
        id: metadata.ino(),
        path: full,
    })
}

/// Processes of a cgroup and of every cgroup below it.
fn cgroup_members(path: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_members(&entry.path()));
            }
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&child.id()));
    }

    #[test]
    fn refuses_itself_and_missing_processes() {
        assert!(select(&[std::process::id()], &[], None).is_err());
        assert!(select(&[], &["no-such-comm-xyz".into()], None).is_err());
    }

    #[test]
    fn rejects_paths_outside_the_cgroup_hierarchy() {
        assert!(resolve_cgroup(Path::new("/etc")).is_err());
        assert!(resolve_cgroup(Path::new("no-such-cgroup-xyz")).is_err());
    }
}
