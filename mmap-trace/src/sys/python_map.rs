//! The eBPF side's Python configuration: which processes run a CPython it
//! can walk, where their `_PyRuntime` is, and which exec image that holds
//! for (an address-space id read from the target map, so that a process
//! that exec's something else is not walked with stale offsets).

use std::os::fd::AsFd as _;

use aya::maps::{HashMap, IterableMap as _, Map, MapData};
use mmap_trace_common::PyConfig;

use super::error::TraceError;

pub struct PythonMap {
    configs: HashMap<MapData, u32, PyConfig>,
    /// Signatures of the Python stacks whose code objects were read.
    seen: HashMap<MapData, u64, u8>,
    /// A second handle on the target map (`TARGETS`), read only.
    targets: HashMap<MapData, u32, u64>,
}

impl PythonMap {
    pub(super) fn new(
        configs: Map,
        seen: Map,
        targets: &HashMap<MapData, u32, u64>,
    ) -> Result<PythonMap, TraceError> {
        let configs =
            HashMap::try_from(configs).map_err(|e| TraceError::Map("PYTHON", e.to_string()))?;
        let seen = HashMap::try_from(seen)
            .map_err(|e| TraceError::Map("PY_STACKS_SEEN", e.to_string()))?;
        let fd = targets
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| TraceError::Map("TARGETS", e.to_string()))?;
        let targets = MapData::from_fd(fd)
            .map(Map::HashMap)
            .and_then(HashMap::try_from)
            .map_err(|e| TraceError::Map("TARGETS", e.to_string()))?;
        Ok(PythonMap {
            configs,
            seen,
            targets,
        })
    }

    /// The current address-space id of a traced process.
    pub fn asid(&self, pid: u32) -> Option<u64> {
        self.targets.get(&pid, 0).ok()
    }

    /// Walks `pid`'s Python frames from now on.
    pub fn set(&mut self, pid: u32, config: PyConfig) {
        // A full map (4096 Python processes) leaves this one without
        // Python frames; its native stacks are still whole.
        if let Err(error) = self.configs.insert(pid, config, 0) {
            log::warn!("cannot walk the Python frames of pid {pid}: {error}");
        }
    }

    /// The code objects of the Python stack with this signature were read:
    /// records with it need not wake user space.
    pub fn mark_seen(&mut self, signature: u64) {
        // An LRU map: a failure only costs an early wakeup later.
        self.seen.insert(signature, 1, 0).ok();
    }

    pub fn remove(&mut self, pid: u32) {
        // Absent already: nothing to do.
        self.configs.remove(&pid).ok();
    }
}
