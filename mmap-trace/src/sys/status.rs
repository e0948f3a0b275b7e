//! A process's resident set as the kernel counts it (/proc/PID/status).

use crate::model::ProcessRss;

/// Reads the figures of `pid`; `None` once it is gone, or going: a zombie,
/// or a process whose memory is already torn down (no `VmRSS`), has no
/// resident set to speak of, and a 0 would read as memory given back.
pub fn read(pid: u32) -> Option<ProcessRss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    of_living(pid, &status)
}

fn of_living(pid: u32, status: &str) -> Option<ProcessRss> {
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))?
        .trim_start();
    if state.starts_with(['Z', 'X']) || !status.lines().any(|l| l.starts_with("VmRSS:")) {
        return None;
    }
    Some(parse(pid, status))
}

fn parse(pid: u32, status: &str) -> ProcessRss {
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
        rss_shmem: kib("RssShmem:"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dying_have_no_resident_set() {
        let zombie = "Name:\tx\nState:\tZ (zombie)\n";
        assert_eq!(of_living(3, zombie), None);
        let torn_down = "Name:\tx\nState:\tR (running)\n";
        assert_eq!(
            of_living(3, torn_down),
            None,
            "no VmRSS: its memory is gone"
        );
        let alive = "Name:\tx\nState:\tS (sleeping)\nVmRSS:\t4 kB\n";
        assert_eq!(of_living(3, alive).map(|r| r.vm_rss), Some(4096));
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tx\nVmRSS:\t    2048 kB\nRssAnon:\t    1024 kB\nRssFile:\t     512 kB\nRssShmem:\t       8 kB\n";
        assert_eq!(
            parse(3, status),
            ProcessRss {
                pid: 3,
                vm_rss: 2 << 20,
                rss_anon: 1 << 20,
                rss_file: 512 << 10,
                rss_shmem: 8 << 10,
                ..Default::default()
            }
        );
        assert!(read(std::process::id()).unwrap().vm_rss > 0);
    }
}
