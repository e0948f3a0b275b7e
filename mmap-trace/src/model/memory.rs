//! Kinds of memory, and what mmap's arguments say about it.

/// `PROT_*` bits; a mapping with none of them is reserved address space.
pub mod prot {
    pub const NONE: u32 = 0;
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const EXEC: u32 = 4;
}

/// `MAP_*` flags mmap-trace looks at.
pub mod map_flags {
    pub const SHARED: u32 = 0x01;
    pub const PRIVATE: u32 = 0x02;
    pub const ANONYMOUS: u32 = 0x20;
    pub const FIXED: u32 = 0x10;
    pub const FIXED_NOREPLACE: u32 = 0x10_0000;
}

/// What kind of memory a mapping is: what its resident pages count as in
/// the kernel's RSS (RssAnon, RssShmem, RssFile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryKind {
    /// Private anonymous memory (malloc arenas, stacks, most of what leaks).
    PrivateAnon,
    /// Shared memory: `MAP_SHARED|MAP_ANONYMOUS`, memfd and /dev/shm files,
    /// System V segments; pinned host memory of GPU drivers lands here.
    Shared,
    /// Mapped files (their private copies too).
    File,
    /// The brk heap.
    Heap,
}

impl MemoryKind {
    pub const ALL: [MemoryKind; 4] = [
        MemoryKind::PrivateAnon,
        MemoryKind::Shared,
        MemoryKind::File,
        MemoryKind::Heap,
    ];

    /// The stable name (JSON).
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::PrivateAnon => "private_anon",
            MemoryKind::Shared => "shared",
            MemoryKind::File => "file",
            MemoryKind::Heap => "heap",
        }
    }

    /// The kind an mmap with these flags and descriptor makes; `shmem`: the
    /// descriptor's file lives in memory (memfd, /dev/shm).
    pub fn of_mmap(flags: u32, fd: i32, shmem: bool) -> Self {
        let shared = flags & map_flags::SHARED != 0;
        if flags & map_flags::ANONYMOUS != 0 || fd < 0 {
            if shared {
                MemoryKind::Shared
            } else {
                MemoryKind::PrivateAnon
            }
        } else if shared && shmem {
            MemoryKind::Shared
        } else {
            MemoryKind::File
        }
    }

    /// The kind of a mapping /proc/PID/maps describes.
    pub fn of_maps_entry(name: Option<&std::path::Path>, shared: bool) -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        let Some(name) = name else {
            return if shared {
                MemoryKind::Shared
            } else {
                MemoryKind::PrivateAnon
            };
        };
        let bytes = name.as_os_str().as_bytes();
        if bytes == b"[heap]" {
            MemoryKind::Heap
        } else if is_shmem_path(bytes) {
            MemoryKind::Shared
        } else if bytes.starts_with(b"/") {
            MemoryKind::File
        } else if shared {
            MemoryKind::Shared
        } else {
            // [stack], [vvar], [vdso] and other pseudo-mappings.
            MemoryKind::PrivateAnon
        }
    }
}

/// Does a mapped file's path (as /proc/PID/maps shows it) name memory:
/// a memfd, a /dev/shm file, a System V segment, or shared anonymous
/// memory?
pub fn is_shmem_path(path: &[u8]) -> bool {
    path.starts_with(b"/memfd:")
        || path.starts_with(b"/dev/shm/")
        || path.starts_with(b"/SYSV")
        || path.starts_with(b"/dev/zero")
}

impl serde::Serialize for MemoryKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn kinds_from_mmap_arguments() {
        let anon = map_flags::ANONYMOUS;
        assert_eq!(
            MemoryKind::of_mmap(anon | map_flags::PRIVATE, -1, false),
            MemoryKind::PrivateAnon
        );
        assert_eq!(
            MemoryKind::of_mmap(anon | map_flags::SHARED, -1, false),
            MemoryKind::Shared
        );
        assert_eq!(
            MemoryKind::of_mmap(map_flags::SHARED, 3, true),
            MemoryKind::Shared,
            "a memfd"
        );
        assert_eq!(
            MemoryKind::of_mmap(map_flags::SHARED, 3, false),
            MemoryKind::File
        );
        assert_eq!(
            MemoryKind::of_mmap(map_flags::PRIVATE, 3, true),
            MemoryKind::File,
            "a private copy of a file"
        );
    }

    #[test]
    fn kinds_from_proc_maps() {
        let kind =
            |name: Option<&str>, shared| MemoryKind::of_maps_entry(name.map(Path::new), shared);
        assert_eq!(kind(Some("[heap]"), false), MemoryKind::Heap);
        assert_eq!(
            kind(Some("/memfd:pool (deleted)"), true),
            MemoryKind::Shared
        );
        assert_eq!(kind(Some("/usr/lib/libc.so.6"), false), MemoryKind::File);
        assert_eq!(kind(None, false), MemoryKind::PrivateAnon);
        assert_eq!(kind(None, true), MemoryKind::Shared);
        assert_eq!(kind(Some("[stack]"), false), MemoryKind::PrivateAnon);
    }
}
