//! The time series: what each traced process holds, sampled every
//! `--interval`, next to its resident set as the kernel counts it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::live::{LiveByObject, Role};
use crate::model::{MemoryKind, ProcessRss};

/// One sample, over all traced processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since tracing began.
    pub time_s: f64,
    /// Live traced bytes, and cumulative mapped and unmapped bytes.
    pub live_bytes: i64,
    pub mapped_bytes: u64,
    pub unmapped_bytes: u64,
    /// Resident memory of the traced processes still running.
    pub rss: Vec<ProcessRss>,
    /// Live bytes per issuer and per requester (objects holding none are
    /// left out).
    pub by_issuer: BTreeMap<String, i64>,
    pub by_requester: BTreeMap<String, i64>,
    /// Resident bytes per issuer and per requester, for the objects that
    /// running processes hold (an object only exited processes held is
    /// unknown, so absent).
    #[serde(default)]
    pub resident_by_issuer: BTreeMap<String, u64>,
    #[serde(default)]
    pub resident_by_requester: BTreeMap<String, u64>,
    /// Resident bytes of traced mappings in running processes, by kind.
    #[serde(default)]
    pub resident_by_kind: KindBytes,
    /// The same, per process.
    #[serde(default)]
    pub processes: Vec<ProcessLive>,
    /// The name (comm) of each process sampled running, by pid.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub comms: BTreeMap<u32, String>,
}

/// Bytes per kind of memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KindBytes {
    pub private_anon: u64,
    pub shared: u64,
    pub file: u64,
    pub heap: u64,
}

impl KindBytes {
    pub fn get_mut(&mut self, kind: MemoryKind) -> &mut u64 {
        match kind {
            MemoryKind::PrivateAnon => &mut self.private_anon,
            MemoryKind::Shared => &mut self.shared,
            MemoryKind::File => &mut self.file,
            MemoryKind::Heap => &mut self.heap,
        }
    }

    pub fn get(&self, kind: MemoryKind) -> u64 {
        match kind {
            MemoryKind::PrivateAnon => self.private_anon,
            MemoryKind::Shared => self.shared,
            MemoryKind::File => self.file,
            MemoryKind::Heap => self.heap,
        }
    }

    pub fn total(&self) -> u64 {
        self.private_anon + self.shared + self.file + self.heap
    }
}

/// One process's live bytes by object; and, while it runs, the resident
/// and the reserved (`PROT_NONE`) bytes of those objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ProcessLive {
    pub pid: u32,
    pub live_bytes: i64,
    pub by_issuer: BTreeMap<String, i64>,
    pub by_requester: BTreeMap<String, i64>,
    /// Resident bytes per object, in a process sampled running (an object
    /// holding none is left out, so absent means 0 there; an exited process
    /// has none of these: unknown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resident_by_issuer: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resident_by_requester: BTreeMap<String, u64>,
    /// Live bytes mapped `PROT_NONE` per object (as `resident_by_*`: running
    /// processes, objects with none left out).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reserved_by_issuer: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reserved_by_requester: BTreeMap<String, u64>,
}

impl ProcessLive {
    /// Adds `delta` live bytes of `issuer` and `requester`.
    pub fn change(&mut self, issuer: &str, requester: &str, delta: i64) {
        self.live_bytes += delta;
        for (map, object) in [
            (&mut self.by_issuer, issuer),
            (&mut self.by_requester, requester),
        ] {
            // Looked up before inserting: no allocation on the hot path.
            let live = match map.get_mut(object) {
                Some(live) => live,
                None => map.entry(object.to_owned()).or_default(),
            };
            *live += delta;
            if *live == 0 {
                map.remove(object);
            }
        }
    }
}

/// A sample at `time_s` of live bytes per object and the processes' RSS
/// (resident bytes per object are added by the caller).
pub fn sample(
    time_s: f64,
    live: &LiveByObject,
    mapped_bytes: u64,
    unmapped_bytes: u64,
    rss: Vec<ProcessRss>,
) -> Sample {
    let by = |role| -> BTreeMap<String, i64> {
        live.live(role)
            .filter(|(_, live)| *live != 0)
            .map(|(object, live)| (object.to_owned(), live))
            .collect()
    };
    let by_issuer = by(Role::Issuer);
    Sample {
        time_s,
        live_bytes: by_issuer.values().sum(),
        mapped_bytes,
        unmapped_bytes,
        rss,
        by_requester: by(Role::Requester),
        by_issuer,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_process_live_bytes_drop_objects_that_hold_nothing() {
        let mut process = ProcessLive::default();
        process.change("liba", "app", 4096);
        process.change("libb", "app", 8192);
        process.change("liba", "app", -4096);
        assert_eq!(process.live_bytes, 8192);
        assert_eq!(process.by_issuer.keys().collect::<Vec<_>>(), ["libb"]);
        assert_eq!(process.by_requester["app"], 8192);
    }

    #[test]
    fn samples_live_bytes_per_object() {
        let mut live = LiveByObject::default();
        let (liba, libb, app) = (live.name("liba"), live.name("libb"), live.name("app"));
        live.change(Role::Issuer, liba, 4096);
        live.change(Role::Requester, app, 4096);
        live.change(Role::Issuer, libb, 0);
        let s = sample(1.5, &live, 8192, 4096, Vec::new());
        assert_eq!(s.live_bytes, 4096);
        assert_eq!(s.by_issuer.len(), 1, "objects holding nothing are left out");
        assert_eq!(s.by_requester["app"], 4096);
    }
}
