//! The time series: what each traced process holds, sampled every
//! `--interval`, next to its resident set as the kernel counts it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::growth::{GrowthTracker, Role};

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
    /// The same, per process.
    #[serde(default)]
    pub processes: Vec<ProcessLive>,
}

/// One process's live bytes by object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ProcessLive {
    pub pid: u32,
    pub live_bytes: i64,
    pub by_issuer: BTreeMap<String, i64>,
    pub by_requester: BTreeMap<String, i64>,
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

/// `/proc/PID/status` figures, in bytes, and how much of them the traced
/// mappings hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProcessRss {
    pub pid: u32,
    pub vm_rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    /// Resident bytes inside traced live ranges (from /proc/PID/pagemap).
    pub traced_resident: u64,
    /// Anonymous RSS no traced mapping explains: the brk heap, mappings made
    /// before tracing, untraced calls.
    pub unexplained_anon: u64,
}

impl ProcessRss {
    /// Reads the figures of `pid`; `None` once it is gone.
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Self::parse(pid, &status))
    }

    fn parse(pid: u32, status: &str) -> Self {
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .map_or(0, |n| n * 1024)
        };
        ProcessRss {
            pid,
            vm_rss: kib("VmRSS:"),
            rss_anon: kib("RssAnon:"),
            rss_file: kib("RssFile:"),
            ..Default::default()
        }
    }
}

/// A sample at `time_s` from the growth series and the given processes.
pub fn sample(
    time_s: f64,
    growth: &GrowthTracker,
    mapped_bytes: u64,
    unmapped_bytes: u64,
    live_pids: impl Iterator<Item = u32>,
) -> Sample {
    let by = |role| -> BTreeMap<String, i64> {
        growth
            .live(role)
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
        rss: live_pids.filter_map(ProcessRss::read).collect(),
        by_requester: by(Role::Requester),
        by_issuer,
        processes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let status =
            "Name:\tx\nVmRSS:\t    2048 kB\nRssAnon:\t    1024 kB\nRssFile:\t     512 kB\n";
        assert_eq!(
            ProcessRss::parse(3, status),
            ProcessRss {
                pid: 3,
                vm_rss: 2 << 20,
                rss_anon: 1 << 20,
                rss_file: 512 << 10,
                ..Default::default()
            }
        );
        assert!(ProcessRss::read(std::process::id()).unwrap().vm_rss > 0);
    }

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
        let mut growth = GrowthTracker::default();
        growth.change(10, Role::Issuer, "liba", 4096);
        growth.change(10, Role::Requester, "app", 4096);
        growth.change(20, Role::Issuer, "libb", 0);
        let s = sample(1.5, &growth, 8192, 4096, std::iter::empty());
        assert_eq!(s.live_bytes, 4096);
        assert_eq!(s.by_issuer.len(), 1, "objects holding nothing are left out");
        assert_eq!(s.by_requester["app"], 4096);
    }
}
