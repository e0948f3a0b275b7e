//! Writing a trace (version 2) as tracing goes: to a temporary file next
//! to the one asked for, renamed into place once the trace is complete, so
//! a failed or cut-short recording never leaves a file that looks whole.
//! (A recording killed outright leaves the temporary file, readable up to
//! its last block, under a name that says it is partial.)

use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    io::{self, BufWriter},
    path::{Path, PathBuf},
};

use super::{
    v1::{Line, StackLine},
    v2::{BlockWriter, Encoder},
};
use crate::{
    account::{Header, Recorder, RecordingEnd, Sample},
    model::{Event, StackId},
    resolve::{Attribution, Resolved},
};

/// Writes a trace as tracing goes; the first write error is kept and
/// reported when the trace is finished (tracing itself goes on).
pub struct TraceWriter {
    /// `None` once finished.
    blocks: Option<BlockWriter<BufWriter<File>>>,
    encoder: Encoder,
    /// Where the trace goes once complete, and where it is written until.
    path: PathBuf,
    partial: PathBuf,
    error: Option<io::Error>,
}

impl TraceWriter {
    pub fn create(path: &Path, header: Header) -> io::Result<Self> {
        let partial = partial_path(path);
        // A new file (never through a link, never over another file): the
        // rename at the end replaces whatever `path` is, not what it points
        // to.
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&partial)?;
        let blocks = match BlockWriter::new(BufWriter::with_capacity(1 << 20, file)) {
            Ok(blocks) => blocks,
            Err(error) => {
                remove(&partial);
                return Err(error);
            }
        };
        let mut writer = TraceWriter {
            blocks: Some(blocks),
            encoder: Encoder::default(),
            path: path.to_owned(),
            partial,
            error: None,
        };
        writer.write(&Line::Header(header));
        match writer.error.take() {
            // (Dropping the writer removes its file.)
            Some(error) => Err(error),
            None => Ok(writer),
        }
    }

    fn write(&mut self, line: &Line<'_>) {
        let (Some(blocks), None) = (&mut self.blocks, &self.error) else {
            return;
        };
        let result = self
            .encoder
            .encode(line, blocks.buffer())
            .map_err(io::Error::from)
            .and_then(|()| blocks.record_done());
        self.keep_error(result);
    }

    fn keep_error(&mut self, result: io::Result<()>) {
        if let Err(error) = result {
            self.error = Some(error);
        }
    }

    /// Writes the resolutions and the ending, and flushes.
    pub fn finish(
        mut self,
        resolved: &Resolved,
        resident: &HashMap<StackId, u64>,
        end: &RecordingEnd,
    ) -> anyhow::Result<()> {
        let mut ids: Vec<&StackId> = resolved.stacks.keys().collect();
        ids.sort();
        for id in ids {
            self.write(&Line::Stack {
                id: id.0,
                stack: StackLine::new(&resolved.stacks[id], resolved),
            });
        }
        let mut resident: Vec<(&StackId, &u64)> = resident.iter().collect();
        resident.sort();
        for (id, bytes) in resident {
            self.write(&Line::Resident {
                id: id.0,
                bytes: *bytes,
            });
        }
        self.write(&Line::End(end.clone()));
        let written = match (self.error.take(), self.blocks.take()) {
            (Some(error), _) => Err(error),
            (None, None) => Err(io::Error::other("the trace was finished already")),
            (None, Some(blocks)) => blocks
                .finish()
                .and_then(|out| out.into_inner().map_err(io::Error::from))
                .and_then(|file| file.sync_all())
                .and_then(|()| std::fs::rename(&self.partial, &self.path)),
        };
        // (On failure, dropping the writer removes its file.)
        written.map_err(|error| {
            anyhow::anyhow!("cannot write the trace to {}: {error}", self.path.display())
        })
    }
}

/// A trace that was not finished is no trace: its file goes (a recording
/// killed outright cannot remove it, and leaves it under its partial name).
impl Drop for TraceWriter {
    fn drop(&mut self) {
        if self.partial.exists() {
            remove(&self.partial);
        }
    }
}

/// `dir/.name.partial-PID` for `dir/name`.
fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "trace".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn remove(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        log::debug!("cannot remove {}: {error}", path.display());
    }
}

impl Recorder for TraceWriter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Syscall(call) => {
                let (Some(blocks), None) = (&mut self.blocks, &self.error) else {
                    return;
                };
                let result = self
                    .encoder
                    .syscall(call, blocks.buffer())
                    .map_err(io::Error::from)
                    .and_then(|()| blocks.record_done());
                self.keep_error(result);
            }
            other => self.write(&Line::Event(other.into())),
        }
    }

    fn stack_seen(&mut self, id: StackId, attribution: &Attribution) {
        self.write(&Line::StackSeen {
            id: id.0,
            attribution: attribution.clone(),
        });
    }

    fn lost(&mut self, records: u64) {
        self.write(&Line::Lost { records });
    }

    fn sample(&mut self, sample: &Sample) {
        self.write(&Line::Sample(Cow::Borrowed(sample)));
        // What is written so far survives a crash from now on.
        if let (Some(blocks), None) = (&mut self.blocks, &self.error) {
            let result = blocks.flush_block();
            self.keep_error(result);
        }
    }
}
