//! Objects of traced processes, interned once and opened while they live.
//!
//! Every mapping of code refers to its object by [`ObjectId`]; frames,
//! unwind-rule caches and symbol caches do too, so nothing on the way from
//! an event to a report copies a path per frame.
//!
//! A process in a container sees its libraries at paths that may not exist
//! on the host, or exist as other files. Each object is opened through
//! `/proc/PID/root` (checked against the inode the kernel reported) and kept
//! open, so unwinding, call-site checks and symbolization can still read it
//! through `/proc/self/fd/N` after the process, and its mount namespace, are
//! gone. Reports keep naming it by its path inside the process, with its
//! build id.

use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use object::Object as _;

use crate::model::ObjectId;

/// What a report needs to know of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its path as the process saw it, or a pseudo-name (`[vdso]`,
    /// [`ANONYMOUS_CODE`]).
    pub name: PathBuf,
    /// `name` as text (lossy where the path is not UTF-8), made once.
    pub display: String,
    /// The GNU build id, in hex, when the file could be read.
    pub build_id: Option<String>,
}

impl ObjectInfo {
    pub fn new(name: PathBuf, build_id: Option<String>) -> Self {
        ObjectInfo {
            display: name.to_string_lossy().into_owned(),
            name,
            build_id,
        }
    }

    /// Is this a file we can read (not `[vdso]` or anonymous code)?
    pub fn is_file(&self) -> bool {
        self.name.is_absolute()
    }
}

/// Our name for anonymous executable memory (JIT code); perf calls it
/// `//anon` and /proc/PID/maps leaves it blank.
pub const ANONYMOUS_CODE: &str = "[anonymous code]";

/// The name to keep for a mapping the kernel reported as `name`.
pub fn name_from_kernel(name: Option<&Path>) -> PathBuf {
    match name {
        None => PathBuf::from(ANONYMOUS_CODE),
        Some(name) if name.as_os_str().is_empty() || name == Path::new("//anon") => {
            PathBuf::from(ANONYMOUS_CODE)
        }
        Some(name) => name.to_owned(),
    }
}

/// One interned object.
struct Entry {
    info: ObjectInfo,
    /// Where to read it (its kept descriptor, else its path).
    access: PathBuf,
    /// Kept open so the file stays reachable through /proc/self/fd.
    file: Option<File>,
    /// Whether opening it was tried (once is enough).
    opened: bool,
    inode: u64,
}

/// Every object seen, by path in the process, then inode.
#[derive(Default)]
pub struct Objects {
    ids: HashMap<PathBuf, Vec<(u64, ObjectId)>>,
    entries: Vec<Entry>,
}

impl Objects {
    /// The id of the object at `name` (as the process sees it) with
    /// `inode`, interning it without opening it.
    pub fn intern(&mut self, name: &Path, inode: u64) -> ObjectId {
        // Looked up by reference first: no allocation for a known object.
        let known = self.ids.get(name).and_then(|by_inode| {
            by_inode
                .iter()
                .find(|(known, _)| *known == inode)
                .map(|(_, id)| *id)
        });
        if let Some(id) = known {
            return id;
        }
        let id = ObjectId(self.entries.len() as u32);
        self.ids
            .entry(name.to_owned())
            .or_default()
            .push((inode, id));
        self.entries.push(Entry {
            info: ObjectInfo::new(name.to_owned(), None),
            access: name.to_owned(),
            file: None,
            opened: false,
            inode,
        });
        id
    }

    /// Opens `id` as process `pid` sees it, unless that was tried already.
    pub fn open(&mut self, id: ObjectId, pid: u32) {
        let entry = &mut self.entries[id.index()];
        if entry.opened || !entry.info.is_file() {
            return;
        }
        entry.opened = true;
        if let Some(file) = open_as_seen_by(pid, &entry.info.name, entry.inode) {
            entry.access = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            entry.info.build_id = build_id(&file);
            entry.file = Some(file);
        }
    }

    pub fn info(&self, id: ObjectId) -> &ObjectInfo {
        &self.entries[id.index()].info
    }

    /// Where to read the object: its kept descriptor, or its path.
    pub fn access_path(&self, id: ObjectId) -> &Path {
        &self.entries[id.index()].access
    }

    /// What reports need of every object, indexed by id.
    pub fn infos(&self) -> Vec<ObjectInfo> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }
}

fn open_as_seen_by(pid: u32, name: &Path, inode: u64) -> Option<File> {
    let mut through_root = PathBuf::from(format!("/proc/{pid}/root"));
    through_root.push(name.strip_prefix("/").unwrap_or(name));
    [through_root.as_path(), name].into_iter().find_map(|path| {
        let file = File::open(path).ok()?;
        let metadata = file.metadata().ok()?;
        // The same path may be another file on the host.
        (inode == 0 || metadata.ino() == inode).then_some(file)
    })
}

/// The GNU build id of an ELF file, in hex.
fn build_id(file: &File) -> Option<String> {
    // SAFETY: a read-only private mapping of a file we hold open; a file
    // truncated under us could fault, as for any tool reading objects.
    let data = unsafe { memmap2::Mmap::map(file) }.ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let id = elf.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_through_the_process_root_and_reads_the_build_id() {
        let exe = std::env::current_exe().unwrap();
        let inode = std::fs::metadata(&exe).unwrap().ino();
        let mut objects = Objects::default();
        let id = objects.intern(&exe, inode);
        assert_eq!(objects.intern(&exe, inode), id, "interned once");
        assert_eq!(objects.access_path(id), exe, "not opened yet");
        objects.open(id, std::process::id());
        let access = objects.access_path(id);
        assert!(access.starts_with("/proc/self/fd/"), "{}", access.display());
        assert_eq!(
            std::fs::metadata(access).unwrap().ino(),
            inode,
            "the kept descriptor reads the same file"
        );
        assert!(
            objects
                .info(id)
                .build_id
                .as_ref()
                .is_some_and(|id| id.len() >= 16)
        );
        // A wrong inode is another file: not opened, the path is used.
        let other = objects.intern(&exe, inode + 1);
        objects.open(other, std::process::id());
        assert_eq!(objects.access_path(other), exe);
        assert_eq!(objects.info(other).build_id, None);
    }

    #[test]
    fn kernel_names_for_anonymous_code() {
        assert_eq!(name_from_kernel(None), Path::new(ANONYMOUS_CODE));
        assert_eq!(
            name_from_kernel(Some(Path::new("//anon"))),
            Path::new(ANONYMOUS_CODE)
        );
        assert_eq!(
            name_from_kernel(Some(Path::new("/lib/x.so"))),
            Path::new("/lib/x.so")
        );
        assert!(!ObjectInfo::new(PathBuf::from("[vdso]"), None).is_file());
    }
}
