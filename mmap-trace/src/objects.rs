//! Object files of traced processes, opened while the process lives.
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

struct Opened {
    /// Kept open: the file stays reachable through /proc/self/fd.
    _file: File,
    access: PathBuf,
    build_id: Option<String>,
}

/// Opened objects by (path in the process, inode).
#[derive(Default)]
pub struct ObjectFiles {
    opened: HashMap<(String, u64), Option<Opened>>,
}

impl ObjectFiles {
    /// Opens `name` as process `pid` sees it, once per (name, inode).
    pub fn open(&mut self, pid: u32, name: &str, inode: u64) {
        if !name.starts_with('/') {
            return;
        }
        self.opened
            .entry((name.to_owned(), inode))
            .or_insert_with(|| open_as_seen_by(pid, name, inode));
    }

    /// Where to read the object: its kept descriptor, or its path.
    pub fn access_path(&self, name: &str, inode: u64) -> PathBuf {
        match self.opened.get(&(name.to_owned(), inode)) {
            Some(Some(opened)) => opened.access.clone(),
            _ => PathBuf::from(name),
        }
    }

    pub fn build_id(&self, name: &str, inode: u64) -> Option<&str> {
        self.opened
            .get(&(name.to_owned(), inode))?
            .as_ref()?
            .build_id
            .as_deref()
    }
}

fn open_as_seen_by(pid: u32, name: &str, inode: u64) -> Option<Opened> {
    let through_root = PathBuf::from(format!("/proc/{pid}/root{name}"));
    [through_root.as_path(), Path::new(name)]
        .into_iter()
        .find_map(|path| {
            let file = File::open(path).ok()?;
            let metadata = file.metadata().ok()?;
            // The same path may be another file on the host.
            (inode == 0 || metadata.ino() == inode).then_some(file)
        })
        .map(|file| Opened {
            access: PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
            build_id: build_id(&file),
            _file: file,
        })
}

/// The GNU build id of an ELF file, in hex.
fn build_id(file: &File) -> Option<String> {
    // SAFETY: a read-only private mapping of a file we hold open.
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
        let name = exe.to_str().unwrap();
        let inode = std::fs::metadata(&exe).unwrap().ino();
        let mut files = ObjectFiles::default();
        files.open(std::process::id(), name, inode);
        let access = files.access_path(name, inode);
        assert!(access.starts_with("/proc/self/fd/"), "{}", access.display());
        assert_eq!(
            std::fs::metadata(&access).unwrap().ino(),
            inode,
            "the kept descriptor reads the same file"
        );
        assert!(files.build_id(name, inode).is_some_and(|id| id.len() >= 16));
        // A wrong inode is another file: not opened, the path is used.
        files.open(std::process::id(), name, inode + 1);
        assert_eq!(files.access_path(name, inode + 1), PathBuf::from(name));
    }
}
