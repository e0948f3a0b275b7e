//! The perf maps processes write for their JIT code
//! (`/tmp/perf-PID.map`), read where the process sees its `/tmp` and under
//! the pid it knows itself by (a container has its own of both).

use std::path::PathBuf;

/// The text of `pid`'s perf map, if it has one.
pub fn read(pid: u32) -> Option<String> {
    std::fs::read_to_string(path(pid)).ok()
}

/// The size of `pid`'s perf map (to tell whether it grew since read).
pub fn size(pid: u32) -> Option<u64> {
    std::fs::metadata(path(pid)).ok().map(|m| m.len())
}

fn path(pid: u32) -> PathBuf {
    let own = namespace_pid(pid).unwrap_or(pid);
    let inside = PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{own}.map"));
    if std::fs::metadata(&inside).is_ok() {
        return inside;
    }
    // The process is gone (its root with it): its /tmp is most likely ours.
    PathBuf::from(format!("/tmp/perf-{pid}.map"))
}

/// The pid `pid` has in its own pid namespace (the last `NSpid` field).
fn namespace_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_nspid(&status)
}

fn parse_nspid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_pid_is_the_innermost() {
        assert_eq!(parse_nspid("Name:\tx\nNSpid:\t4242\t7\n"), Some(7));
        assert_eq!(parse_nspid("NSpid:\t4242\n"), Some(4242));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
    }
}
