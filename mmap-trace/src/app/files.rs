//! Output files, written so that a failure never leaves one that looks
//! whole, and never through another user's symbolic link.
//!
//! A regular file is written beside its final name (`.NAME.partial-PID`,
//! created new) and renamed over it once complete: a full disk or an
//! error leaves the old file, or none. A device, FIFO or socket
//! (`/dev/stdout`, `/dev/full`, a named pipe) is written directly. A
//! symbolic link is followed only if the user owns it: in a shared
//! directory such as /tmp, a link another user planted would otherwise
//! make a root-run tracer overwrite a file of their choosing.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// Where an output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A regular file, or none yet: written beside, then renamed.
    Replace(PathBuf),
    /// A device, FIFO or socket: written in place.
    Special(PathBuf),
}

/// Decides where `path` is written, before anything is.
pub fn destination(path: &Path) -> anyhow::Result<Destination> {
    let target = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            if meta.uid() != euid {
                anyhow::bail!(
                    "refusing to write through {}: a symbolic link owned by another user (uid {})",
                    path.display(),
                    meta.uid()
                );
            }
            fs::canonicalize(path)
                .or_else(|_| fs::read_link(path).map(|to| path.with_file_name(to)))
                .with_context(|| format!("cannot follow {}", path.display()))?
        }
        _ => path.to_owned(),
    };
    match fs::metadata(&target) {
        Ok(meta) if !meta.file_type().is_file() => {
            let kind = meta.file_type();
            if kind.is_dir() {
                anyhow::bail!("{} is a directory", target.display());
            }
            debug_assert!(
                kind.is_char_device()
                    || kind.is_block_device()
                    || kind.is_fifo()
                    || kind.is_socket()
            );
            Ok(Destination::Special(target))
        }
        _ => Ok(Destination::Replace(target)),
    }
}

/// A file being written (see the module comment).
pub struct OutputFile {
    file: File,
    path: PathBuf,
    /// Where it is written until it is complete (`Replace` only).
    partial: Option<PathBuf>,
}

impl OutputFile {
    /// Creates the file (so a bad path fails now).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let cannot = || format!("cannot create {}", path.display());
        match destination(path)? {
            Destination::Special(path) => Ok(OutputFile {
                file: File::options()
                    .write(true)
                    .open(&path)
                    .with_context(cannot)?,
                path,
                partial: None,
            }),
            Destination::Replace(path) => {
                let partial = partial_path(&path);
                let file = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&partial)
                    .with_context(cannot)?;
                Ok(OutputFile {
                    file,
                    path,
                    partial: Some(partial),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes all of `bytes`, and puts the file in place.
    pub fn write_all_and_commit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.flush()?;
        if let Some(partial) = &self.partial {
            self.file.sync_all()?;
            fs::rename(partial, &self.path)?;
            self.partial = None;
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(partial) = &self.partial
            && let Err(error) = fs::remove_file(partial)
        {
            log::debug!("cannot remove {}: {error}", partial.display());
        }
    }
}

/// `dir/.name.partial-PID` for `dir/name`.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mmap-trace-files-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_appears_only_when_complete() {
        let dir = scratch("complete");
        let path = dir.join("report.json");
        fs::write(&path, "old").unwrap();
        {
            let _abandoned = OutputFile::create(&path).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        }
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no partial file left"
        );
        let mut out = OutputFile::create(&path).unwrap();
        out.write_all_and_commit(b"new").unwrap();
        drop(out);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_written_in_place_and_own_links_followed() {
        assert_eq!(
            destination(Path::new("/dev/null")).unwrap(),
            Destination::Special("/dev/null".into())
        );
        let dir = scratch("links");
        let target = dir.join("target.json");
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            destination(&link).unwrap(),
            Destination::Replace(target.clone())
        );
        assert!(destination(&dir).is_err(), "a directory");
        fs::remove_dir_all(&dir).unwrap();
    }
}
