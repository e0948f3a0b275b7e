//! Parsing `/proc/PID/maps`. Read as bytes: paths need not be UTF-8.

use crate::model::prot;
use std::{ffi::OsStr, fs, io, os::unix::ffi::OsStrExt as _, path::PathBuf};

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    /// `PROT_*` bits from the permissions (`rwx`).
    pub prot: u32,
    /// `s` rather than `p`: a shared mapping.
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    /// The path or pseudo-name (`[heap]`, `[vdso]`), if any.
    pub name: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: io::Error },
    #[error("{path}:{line}: cannot parse {text:?}")]
    Parse {
        path: String,
        line: usize,
        text: String,
    },
}

/// Reads and parses `/proc/<pid>/maps`.
pub fn read(pid: u32) -> Result<Vec<MapsEntry>, MapsError> {
    let path = format!("/proc/{pid}/maps");
    let bytes = fs::read(&path).map_err(|cause| MapsError::Read {
        path: path.clone(),
        cause,
    })?;
    parse_bytes(&bytes).map_err(|(line, text)| MapsError::Parse { path, line, text })
}

/// Parses the text of a maps file; on error, the 1-based line and its text.
pub fn parse(text: &str) -> Result<Vec<MapsEntry>, (usize, String)> {
    parse_bytes(text.as_bytes())
}

fn parse_bytes(bytes: &[u8]) -> Result<Vec<MapsEntry>, (usize, String)> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(i, line)| {
            parse_line(line).ok_or_else(|| (i + 1, String::from_utf8_lossy(line).into_owned()))
        })
        .collect()
}

fn parse_line(line: &[u8]) -> Option<MapsEntry> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let range = std::str::from_utf8(fields.next()?).ok()?;
    let (start, end) = range.split_once('-')?;
    let perms = fields.next()?;
    let offset = std::str::from_utf8(fields.next()?).ok()?;
    let _dev = fields.next()?;
    let inode = std::str::from_utf8(fields.next()?).ok()?;
    let name = fields
        .next()
        .map(<[u8]>::trim_ascii_start)
        .filter(|n| !n.is_empty());
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.first() == Some(&b'r'),
        executable: perms.get(2) == Some(&b'x'),
        prot: [(b'r', prot::READ), (b'w', prot::WRITE), (b'x', prot::EXEC)]
            .into_iter()
            .zip(perms)
            .filter(|((letter, _), given)| letter == *given)
            .fold(prot::NONE, |all, ((_, bit), _)| all | bit),
        shared: perms.get(3) == Some(&b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        name: name.map(|n| PathBuf::from(OsStr::from_bytes(n))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let text = "\
55d4c3a00000-55d4c3a02000 r--p 00000000 fe:00 247497                     /usr/bin/cat
7f601ab54000-7f601acaa000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1e5f0000-7ffd1e611000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].start, 0x7f601ab54000);
        assert_eq!(entries[1].offset, 0x26000);
        assert!(entries[1].executable);
        assert_eq!(
            entries[1].name.as_deref(),
            Some(std::path::Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            entries[2].name.as_deref(),
            Some(std::path::Path::new("[stack]"))
        );
        assert_eq!(entries[3].name, None);
    }

    #[test]
    fn paths_with_spaces_survive() {
        let entries =
            parse("1000-2000 r-xp 00000000 fe:00 12 /tmp/a dir/lib x.so (deleted)\n").unwrap();
        assert_eq!(
            entries[0].name.as_deref(),
            Some(std::path::Path::new("/tmp/a dir/lib x.so (deleted)"))
        );
    }

    #[test]
    fn paths_need_not_be_utf8() {
        let entries = parse_bytes(b"1000-2000 r-xp 00000000 fe:00 12 /tmp/\xff.so\n").unwrap();
        assert_eq!(
            entries[0].name.as_deref().map(|p| p.as_os_str().as_bytes()),
            Some(&b"/tmp/\xff.so"[..])
        );
    }

    #[test]
    fn reports_the_bad_line() {
        assert_eq!(parse("1000-2000 r-xp\n"), Err((1, "1000-2000 r-xp".into())));
    }
}
