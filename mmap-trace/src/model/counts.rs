//! Counters: calls by kind, what the kernel could not deliver, how stacks
//! were unwound, and what tracing cost the tracer.

use std::ops::{Index, IndexMut};

/// The traced calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallKind {
    Mmap,
    Munmap,
    Mremap,
    Brk,
    Shmat,
    Shmdt,
    Mprotect,
    Madvise,
}

impl CallKind {
    pub const ALL: [CallKind; 8] = [
        CallKind::Mmap,
        CallKind::Munmap,
        CallKind::Mremap,
        CallKind::Brk,
        CallKind::Shmat,
        CallKind::Shmdt,
        CallKind::Mprotect,
        CallKind::Madvise,
    ];

    /// The system call's name.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Mmap => "mmap",
            CallKind::Munmap => "munmap",
            CallKind::Mremap => "mremap",
            CallKind::Brk => "brk",
            CallKind::Shmat => "shmat",
            CallKind::Shmdt => "shmdt",
            CallKind::Mprotect => "mprotect",
            CallKind::Madvise => "madvise",
        }
    }
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for CallKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One count per call kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts([u64; CallKind::ALL.len()]);

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Index<CallKind> for CallCounts {
    type Output = u64;
    fn index(&self, kind: CallKind) -> &u64 {
        &self.0[kind as usize]
    }
}

impl IndexMut<CallKind> for CallCounts {
    fn index_mut(&mut self, kind: CallKind) -> &mut u64 {
        &mut self.0[kind as usize]
    }
}

/// Loss and error counters the eBPF side keeps, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelCounters {
    /// Records dropped because the ring buffer was full.
    pub lost_records: u64,
    /// Calls whose user stack could not be read at all.
    pub stack_errors: u64,
}

/// How many stacks each side unwound (CFI modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnwindCounts {
    /// Unwound by the eBPF program with learned rules.
    pub in_kernel: u64,
    /// Unwound in user space, from a copy of the stack.
    pub from_copies: u64,
    /// Rules written into the kernel's cache.
    pub rules_taught: u64,
}

/// What tracing cost the tracer itself.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TracerUsage {
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub peak_rss_bytes: u64,
    /// Samples taken, and how long they took (reading /proc: RSS, and the
    /// resident pages of every live range).
    #[serde(default)]
    pub samples: u64,
    #[serde(default)]
    pub sample_seconds_total: f64,
    #[serde(default)]
    pub sample_seconds_max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_indexed_by_kind() {
        let mut counts = CallCounts::default();
        counts[CallKind::Munmap] += 2;
        counts[CallKind::Shmdt] += 1;
        assert_eq!(counts[CallKind::Munmap], 2);
        assert_eq!(counts[CallKind::Mmap], 0);
        assert_eq!(counts.total(), 3);
        let names: Vec<_> = CallKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "mmap", "munmap", "mremap", "brk", "shmat", "shmdt", "mprotect", "madvise"
            ]
        );
    }
}
