//! Writing a trace as tracing goes.

use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
};

use super::v1::{Line, StackLine};
use crate::{
    account::{Header, Recorder, RecordingEnd, Sample},
    model::{Event, StackId},
    resolve::{Attribution, Resolved},
};

/// Writes a trace as tracing goes; the first write error is kept and
/// reported when the trace is finished (tracing itself goes on).
pub struct TraceWriter {
    out: BufWriter<File>,
    path: PathBuf,
    error: Option<io::Error>,
}

impl TraceWriter {
    pub fn create(path: &Path, header: Header) -> io::Result<Self> {
        let mut writer = TraceWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            path: path.to_owned(),
            error: None,
        };
        writer.write(&Line::Header(header));
        match writer.error.take() {
            Some(error) => Err(error),
            None => Ok(writer),
        }
    }

    fn write(&mut self, line: &Line<'_>) {
        if self.error.is_some() {
            return;
        }
        let result = serde_json::to_writer(&mut self.out, line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
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
        if self.error.is_none()
            && let Err(error) = self
                .out
                .flush()
                .and_then(|()| self.out.get_ref().sync_all())
        {
            self.error = Some(error);
        }
        match self.error {
            Some(error) => Err(anyhow::anyhow!(
                "cannot write the trace to {}: {error}",
                self.path.display()
            )),
            None => Ok(()),
        }
    }
}

impl Recorder for TraceWriter {
    fn event(&mut self, event: &Event) {
        self.write(&Line::Event(event.into()));
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
    }
}
