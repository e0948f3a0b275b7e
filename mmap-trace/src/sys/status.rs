//! A process's resident set as the kernel counts it (/proc/PID/status).

use crate::model::ProcessRss;

/// Reads the figures of `pid`; `None` once it is gone.
pub fn read(pid: u32) -> Option<ProcessRss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse(pid, &status))
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
