//! Up-front check that we may load eBPF programs and open perf events.
//!
//! Loading needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which root has).
//! Reading the memory maps, pagemap and files of processes owned by other
//! users also needs CAP_SYS_PTRACE; without it those reads fail one by one
//! and the report says less, so it is not checked here.

use std::fs;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "permission denied: tracing needs root (or CAP_BPF and CAP_PERFMON, plus CAP_SYS_PTRACE \
     for other users' processes); run it with sudo"
)]
pub struct NotPrivileged;

/// Fails unless this process holds what loading and attaching needs.
pub fn check() -> Result<(), NotPrivileged> {
    let effective = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_caps(&status))
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(NotPrivileged)
    }
}

fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }
}
