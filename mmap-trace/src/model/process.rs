//! What the kernel says about a traced process's memory.

/// `/proc/PID/status` figures, in bytes, and how much of them the traced
/// mappings hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRss {
    pub pid: u32,
    pub vm_rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    /// Shared memory (memfd, /dev/shm, System V, shared anonymous).
    #[serde(default)]
    pub rss_shmem: u64,
    /// Resident bytes inside traced live ranges (from /proc/PID/pagemap).
    pub traced_resident: u64,
    /// Anonymous RSS no traced mapping explains: the brk heap, mappings made
    /// before tracing, untraced calls.
    pub unexplained_anon: u64,
}
