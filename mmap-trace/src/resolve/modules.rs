//! Which object was mapped where, in which process, and when.
//!
//! Fed by the kernel's own mapping records (perf `MMAP2`, `FORK`, `COMM`
//! exec, `EXIT`; see `sys::perf`) and by `/proc/PID/maps` for processes that
//! were running before tracing began. Stacks are resolved against it after
//! the fact — by then a short-lived process may be long gone — so every
//! mapping keeps the time it appeared and lookups are by `(pid, addr, time)`,
//! following a forked child back to its parent's mappings at fork time.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use super::objects::{ObjectInfo, Objects};
use crate::{model::ObjectId, unwind::CodeAt};

/// An executable mapping of an object (or pseudo-object such as `[vdso]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub file_offset: u64,
    pub object: ObjectId,
    /// When it appeared (0 for mappings found at attach).
    pub time_ns: u64,
}

impl Mapping {
    pub fn file_offset_of(&self, addr: u64) -> u64 {
        addr - self.start + self.file_offset
    }
}

/// A mapping as the kernel (or /proc/PID/maps) describes it.
#[derive(Clone, Copy, Debug)]
pub struct NewMapping<'a> {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// Path or pseudo-name, see `objects::name_from_kernel`.
    pub name: &'a Path,
    pub inode: u64,
    pub time_ns: u64,
}

#[derive(Debug, Default)]
struct ProcessMaps {
    mappings: Vec<Mapping>,
    /// Times of execs, ascending.
    execs: Vec<u64>,
    /// (parent pid, fork time) if we saw it being forked.
    parent: Option<(u32, u64)>,
    exited_ns: Option<u64>,
}

impl ProcessMaps {
    fn last_exec_at_or_before(&self, time_ns: u64) -> Option<u64> {
        self.execs.iter().rev().find(|&&t| t <= time_ns).copied()
    }
}

/// How long the maps of an exited process that nobody asked about are kept
/// (its traced events may still be on their way through the other buffer).
const UNCLAIMED_GRACE_NS: u64 = 10_000_000_000;

/// Mapping timelines of every process we may need to resolve stacks of.
#[derive(Default)]
pub struct ModuleMaps {
    processes: HashMap<u32, ProcessMaps>,
    /// Pids whose maps are needed (traced): never pruned.
    claimed: HashSet<u32>,
    /// Records the kernel could not deliver (perf ring full).
    pub lost: u64,
    /// Every object mapped, interned; those of traced processes are opened
    /// while the processes live.
    objects: Objects,
}

impl ModuleMaps {
    /// Records a new code mapping; returns the object mapped.
    pub fn on_mmap(&mut self, pid: u32, new: NewMapping<'_>) -> ObjectId {
        let object = self.objects.intern(new.name, new.inode);
        if self.is_traced_or_descendant(pid) {
            self.objects.open(object, pid);
        }
        self.processes
            .entry(pid)
            .or_default()
            .mappings
            .push(Mapping {
                start: new.start,
                end: new.end,
                file_offset: new.file_offset,
                object,
                time_ns: new.time_ns,
            });
        object
    }

    /// The code mappings `pid` made itself (or had when tracing began),
    /// oldest first.
    pub fn own_mappings(&self, pid: u32) -> &[Mapping] {
        self.processes
            .get(&pid)
            .map_or(&[], |process| &process.mappings)
    }

    /// Claimed, or forked (perhaps not yet seen running) from a claimed
    /// process: its objects are worth opening now.
    pub fn is_traced_or_descendant(&self, pid: u32) -> bool {
        let mut next = Some(pid);
        for _ in 0..64 {
            let Some(pid) = next else {
                return false;
            };
            if self.claimed.contains(&pid) {
                return true;
            }
            next = self
                .processes
                .get(&pid)
                .and_then(|p| p.parent)
                .map(|(parent, _)| parent);
        }
        false
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    pub fn object(&self, id: ObjectId) -> &ObjectInfo {
        self.objects.info(id)
    }

    /// Where the code at `addr` of `pid` lived at `time_ns`, for the
    /// unwinder.
    pub fn code_at(&self, pid: u32, addr: u64, time_ns: u64) -> CodeAt<'_> {
        match self.lookup(pid, addr, time_ns) {
            None => CodeAt::Unknown,
            Some(mapping) if self.object(mapping.object).is_file() => CodeAt::File {
                object: mapping.object,
                path: self.objects.access_path(mapping.object),
                offset: mapping.file_offset_of(addr),
            },
            Some(_) => CodeAt::Anonymous,
        }
    }

    pub fn on_fork(&mut self, pid: u32, parent: u32, time_ns: u64) {
        let child = self.processes.entry(pid).or_default();
        child.parent = Some((parent, time_ns));
    }

    pub fn on_exec(&mut self, pid: u32, time_ns: u64) {
        let process = self.processes.entry(pid).or_default();
        let at = process.execs.partition_point(|&t| t <= time_ns);
        process.execs.insert(at, time_ns);
    }

    /// A process ended; maps of processes never claimed are dropped after a
    /// grace period, so tracing a busy machine for hours stays bounded.
    pub fn on_exit(&mut self, pid: u32, time_ns: u64) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.exited_ns = Some(time_ns);
        }
        let claimed = &self.claimed;
        self.processes.retain(|pid, process| {
            claimed.contains(pid)
                || process
                    .exited_ns
                    .is_none_or(|exited| exited + UNCLAIMED_GRACE_NS > time_ns)
        });
    }

    /// Keeps the maps of `pid` (and of the processes it was forked from),
    /// and opens the objects it has mapped.
    pub fn claim(&mut self, pid: u32) {
        if let Some(process) = self.processes.get(&pid) {
            for mapping in &process.mappings {
                self.objects.open(mapping.object, pid);
            }
        }
        let mut next = Some(pid);
        while let Some(pid) = next {
            if !self.claimed.insert(pid) {
                break;
            }
            next = self
                .processes
                .get(&pid)
                .and_then(|p| p.parent)
                .map(|(parent, _)| parent);
        }
    }

    /// Adds the executable mappings of a process found running at attach
    /// (their `time_ns` is 0: there since before tracing).
    pub fn seed<'a>(&mut self, pid: u32, executable: impl IntoIterator<Item = NewMapping<'a>>) {
        self.claim(pid);
        for new in executable {
            self.on_mmap(pid, new);
        }
    }

    /// The mapping that held `addr` in `pid` at `time_ns`.
    pub fn lookup(&self, pid: u32, addr: u64, time_ns: u64) -> Option<&Mapping> {
        let (mut pid, mut time_ns) = (pid, time_ns);
        // Follow fork links; the depth bound guards against pid-reuse cycles.
        for _ in 0..64 {
            let process = self.processes.get(&pid)?;
            let since = process.last_exec_at_or_before(time_ns);
            let found = process
                .mappings
                .iter()
                .filter(|m| m.start <= addr && addr < m.end)
                .filter(|m| m.time_ns <= time_ns && since.is_none_or(|exec| m.time_ns >= exec))
                .max_by_key(|m| m.time_ns);
            if found.is_some() {
                return found;
            }
            let (parent, forked_ns) = process.parent?;
            if since.is_some_and(|exec| exec >= forked_ns) {
                return None;
            }
            (pid, time_ns) = (parent, forked_ns);
        }
        None
    }

    /// The main executable of `pid` at `time_ns`: the first file mapped by
    /// its latest exec, else the one inherited from its parent.
    pub fn executable(&self, pid: u32, time_ns: u64) -> Option<ObjectId> {
        let process = self.processes.get(&pid)?;
        let since = process.last_exec_at_or_before(time_ns);
        let first = process
            .mappings
            .iter()
            .filter(|m| self.object(m.object).is_file() && m.time_ns <= time_ns)
            .filter(|m| since.is_none_or(|exec| m.time_ns >= exec))
            .min_by_key(|m| m.time_ns)
            .map(|m| m.object);
        match (first, since, process.parent) {
            (Some(name), _, _) => Some(name),
            (None, None, Some((parent, forked))) => self.executable(parent, forked),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(maps: &mut ModuleMaps, pid: u32, start: u64, name: &str, time_ns: u64) {
        maps.on_mmap(
            pid,
            NewMapping {
                start,
                end: start + 0x1000,
                file_offset: 0x2000,
                name: Path::new(name),
                inode: 1,
                time_ns,
            },
        );
    }

    fn name_at(maps: &ModuleMaps, pid: u32, addr: u64, time_ns: u64) -> Option<&str> {
        let mapping = maps.lookup(pid, addr, time_ns)?;
        Some(maps.object(mapping.object).display.as_str())
    }

    #[test]
    fn lookup_respects_time_and_exec() {
        let mut maps = ModuleMaps::default();
        map(&mut maps, 1, 0x1000, "/old", 10);
        maps.on_exec(1, 20);
        map(&mut maps, 1, 0x1000, "/new", 30);
        assert_eq!(name_at(&maps, 1, 0x1800, 15), Some("/old"));
        assert_eq!(name_at(&maps, 1, 0x1800, 25), None, "the exec unmapped it");
        assert_eq!(name_at(&maps, 1, 0x1800, 35), Some("/new"));
        assert_eq!(
            maps.lookup(1, 0x1800, 35).unwrap().file_offset_of(0x1800),
            0x2800
        );
        assert!(maps.lookup(1, 0x3000, 35).is_none());
    }

    #[test]
    fn children_see_parent_mappings_until_they_exec() {
        let mut maps = ModuleMaps::default();
        map(&mut maps, 1, 0x1000, "/parent", 10);
        map(&mut maps, 1, 0x5000, "/later", 50);
        maps.on_fork(2, 1, 20);
        assert_eq!(name_at(&maps, 2, 0x1000, 30), Some("/parent"));
        assert_eq!(name_at(&maps, 2, 0x5000, 60), None, "mapped after the fork");
        let exe = maps.executable(2, 30).unwrap();
        assert_eq!(maps.object(exe).display, "/parent");
        maps.on_exec(2, 40);
        assert!(maps.lookup(2, 0x1000, 45).is_none());
    }

    #[test]
    fn unclaimed_exited_processes_are_pruned_after_a_grace_period() {
        let mut maps = ModuleMaps::default();
        map(&mut maps, 1, 0x1000, "/a", 10);
        map(&mut maps, 2, 0x1000, "/b", 10);
        maps.claim(2);
        maps.on_exit(1, 100);
        maps.on_exit(2, 100);
        assert!(
            maps.lookup(1, 0x1000, 50).is_some(),
            "still in its grace period"
        );
        maps.on_exit(3, 100 + UNCLAIMED_GRACE_NS);
        assert!(maps.lookup(1, 0x1000, 50).is_none());
        assert!(maps.lookup(2, 0x1000, 50).is_some());
    }

    #[test]
    fn code_at_tells_files_from_anonymous_code() {
        let mut maps = ModuleMaps::default();
        map(&mut maps, 1, 0x1000, "/bin/x", 0);
        map(
            &mut maps,
            1,
            0x8000,
            super::super::objects::ANONYMOUS_CODE,
            0,
        );
        assert!(matches!(
            maps.code_at(1, 0x1010, 5),
            CodeAt::File { offset: 0x2010, .. }
        ));
        assert_eq!(maps.code_at(1, 0x8010, 5), CodeAt::Anonymous);
        assert_eq!(maps.code_at(1, 0x20000, 5), CodeAt::Unknown);
    }
}
