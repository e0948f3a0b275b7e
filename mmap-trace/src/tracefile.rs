//! The trace file (`record --output FILE.mtrace`): record now, report later,
//! anywhere.
//!
//! One JSON object per line, written as tracing goes (a crash leaves a
//! readable prefix, and an error that says so):
//!
//! 1. `{"header": ...}`: format "mmap-trace/trace", version 1, command.
//! 2. streamed: `{"event": ...}` (decoded and unwound, in handling order),
//!    `{"stack_seen": ...}` (a stack's issuer and requester, when first
//!    seen), `{"lost": ...}`, `{"sample": ...}` (the time series).
//! 3. at the end: `{"stack": ...}` per stack (frames placed in objects, with
//!    build ids and symbols, resolved while the processes lived),
//!    `{"resident": ...}`, and `{"end": ...}` last.
//!
//! Replaying the events through the same collector gives the same stack
//! ids, so the report built from a trace is the live run's report.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, BufWriter, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    attribute::Attribution,
    collector::Collector,
    decode::Event,
    growth::{GrowthTracker, Role},
    recording::{Ending, Header, Recording},
    report::UNKNOWN,
    resolve::ResolvedStack,
    stacks::StackId,
    timeline::Sample,
};

pub const FORMAT: &str = "mmap-trace/trace";
pub const VERSION: u32 = 1;

/// Files named like this are traces; other `--output`s are reports.
pub fn is_trace_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "mtrace")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header(Header),
    Event(Event),
    StackSeen { id: u32, attribution: Attribution },
    Lost { records: u64 },
    Sample(Sample),
    Stack { id: u32, stack: ResolvedStack },
    Resident { id: u32, bytes: u64 },
    End(Ending),
}

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

    fn write(&mut self, line: &Line) {
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

    pub fn event(&mut self, event: &Event) {
        self.write(&Line::Event(event.clone()));
    }

    pub fn stack_seen(&mut self, id: StackId, attribution: &Attribution) {
        self.write(&Line::StackSeen {
            id: id.0,
            attribution: attribution.clone(),
        });
    }

    pub fn lost(&mut self, records: u64) {
        self.write(&Line::Lost { records });
    }

    pub fn sample(&mut self, sample: &Sample) {
        self.write(&Line::Sample(sample.clone()));
    }

    /// Writes the resolutions and the ending, and flushes.
    pub fn finish(
        mut self,
        stacks: &HashMap<StackId, ResolvedStack>,
        resident: &HashMap<StackId, u64>,
        ending: &Ending,
    ) -> anyhow::Result<()> {
        let mut ids: Vec<&StackId> = stacks.keys().collect();
        ids.sort();
        for id in ids {
            self.write(&Line::Stack {
                id: id.0,
                stack: stacks[id].clone(),
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
        self.write(&Line::End(ending.clone()));
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

/// What is wrong with a trace file, and where.
#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: io::Error },
    #[error("{path}:{line}: {problem}")]
    At {
        path: String,
        line: usize,
        problem: String,
    },
    #[error(
        "{path}: ends after line {lines} without its final record: the recording was cut short"
    )]
    Truncated { path: String, lines: usize },
    #[error("{path}: empty, not a trace")]
    Empty { path: String },
}

/// Replays a trace file into a recording.
pub fn replay(path: &Path) -> Result<Recording, TraceFileError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|cause| TraceFileError::Read {
        path: name.clone(),
        cause,
    })?;
    replay_from(BufReader::new(file), &name)
}

/// Replays trace lines from `input` (`name` is for errors).
pub fn replay_from(input: impl io::BufRead, name: &str) -> Result<Recording, TraceFileError> {
    let at = |line: usize, problem: String| TraceFileError::At {
        path: name.to_owned(),
        line,
        problem,
    };
    let mut header = None;
    let mut collector = Collector::default();
    let mut growth = GrowthTracker::default();
    let mut seen: HashMap<StackId, Attribution> = HashMap::new();
    let mut stacks = HashMap::new();
    let mut resident = HashMap::new();
    let mut timeline = Vec::new();
    let mut lines = 0;
    // An event's changes wait for the stack_seen lines that follow it.
    let mut pending: Vec<(u64, StackId, i64)> = Vec::new();
    let mut pending_line = 0;
    let apply = |pending: &mut Vec<(u64, StackId, i64)>,
                 seen: &HashMap<StackId, Attribution>,
                 growth: &mut GrowthTracker,
                 line: usize|
     -> Result<(), TraceFileError> {
        for (time_ns, id, delta) in pending.drain(..) {
            let attribution = seen
                .get(&id)
                .ok_or_else(|| at(line, format!("stack {} changed before it was seen", id.0)))?;
            let issuer = attribution.issuer.as_deref().unwrap_or(UNKNOWN);
            let requester = attribution.requester.as_deref().unwrap_or(UNKNOWN);
            growth.change(time_ns, Role::Issuer, issuer, delta);
            growth.change(time_ns, Role::Requester, requester, delta);
        }
        Ok(())
    };
    for (index, text) in input.lines().enumerate() {
        let number = index + 1;
        let text = text.map_err(|e| at(number, format!("unreadable: {e}")))?;
        lines = number;
        let line: Line = serde_json::from_str(&text).map_err(|e| {
            let problem = if e.is_eof() {
                "the record is cut short".to_owned()
            } else {
                format!("not a trace record ({e})")
            };
            at(number, problem)
        })?;
        if !matches!(line, Line::StackSeen { .. }) {
            apply(&mut pending, &seen, &mut growth, pending_line)?;
        }
        match (&header, line) {
            (None, Line::Header(h)) => {
                if h.format != FORMAT {
                    return Err(at(
                        number,
                        format!("format {:?} is not {FORMAT:?}", h.format),
                    ));
                }
                if h.version != VERSION {
                    return Err(at(
                        number,
                        format!(
                            "trace version {} is not supported (this mmap-trace reads {VERSION})",
                            h.version
                        ),
                    ));
                }
                header = Some(h);
            }
            (None, _) => return Err(at(number, "a trace starts with its header".into())),
            (Some(_), Line::Header(_)) => return Err(at(number, "a second header".into())),
            (Some(_), Line::Event(event)) => {
                let time_ns = event.time_ns();
                collector.handle(event);
                pending.extend(
                    collector
                        .last_deltas()
                        .iter()
                        .map(|&(id, delta)| (time_ns, id, delta)),
                );
                pending_line = number;
            }
            (Some(_), Line::StackSeen { id, attribution }) => {
                seen.insert(StackId(id), attribution);
            }
            (Some(_), Line::Lost { records }) => collector.add_lost(records),
            (Some(_), Line::Sample(sample)) => timeline.push(sample),
            (Some(_), Line::Stack { id, stack }) => {
                if id as usize >= collector.stacks.len() {
                    return Err(at(number, format!("stack {id} was never used")));
                }
                stacks.insert(StackId(id), stack);
            }
            (Some(_), Line::Resident { id, bytes }) => {
                resident.insert(StackId(id), bytes);
            }
            (Some(h), Line::End(ending)) => {
                return Ok(Recording {
                    header: h.clone(),
                    collector,
                    stacks,
                    growth,
                    resident,
                    timeline,
                    ending,
                });
            }
        }
    }
    if header.is_none() {
        return Err(TraceFileError::Empty {
            path: name.to_owned(),
        });
    }
    Err(TraceFileError::Truncated {
        path: name.to_owned(),
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Call, SyscallEvent};

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            tool: "test".into(),
            command: Some(vec!["./x".into()]),
            unwinder: "auto".into(),
            interposers: vec![],
        }
    }

    fn lines(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap() + "\n")
            .collect()
    }

    fn mmap_event() -> Event {
        Event::Syscall(SyscallEvent::for_test(
            7,
            1_000,
            Call::anonymous_mmap(8192),
            0x10000,
            &[0x1000, 0x2000],
        ))
    }

    fn valid() -> String {
        lines(&[
            Line::Header(header()),
            Line::Event(mmap_event()),
            Line::StackSeen {
                id: 0,
                attribution: Attribution {
                    issuer: Some("/lib/liba.so".into()),
                    requester: Some("/app".into()),
                },
            },
            Line::End(Ending {
                stopped_by: "command exit".into(),
                time_ns: 5_000,
                ..Default::default()
            }),
        ])
    }

    #[test]
    fn replays_events_into_the_collector_and_growth() {
        let recording = replay_from(valid().as_bytes(), "t.mtrace").unwrap();
        assert_eq!(recording.collector.counts.mmap, 1);
        assert_eq!(recording.collector.bytes.mapped, 8192);
        let fits = recording.growth.fits(5_000);
        assert!(
            fits.iter()
                .any(|g| g.object == "/lib/liba.so" && g.live_bytes == 8192)
        );
        assert_eq!(recording.ending.stopped_by, "command exit");
    }

    #[test]
    fn truncated_and_corrupt_files_say_where() {
        let text = valid();
        let without_end: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        let error = replay_from(without_end.as_bytes(), "t.mtrace").unwrap_err();
        assert_eq!(
            error.to_string(),
            "t.mtrace: ends after line 3 without its final record: the recording was cut short"
        );
        let cut = &text[..text.len() - 20];
        let error = replay_from(cut.as_bytes(), "t.mtrace").unwrap_err();
        assert_eq!(error.to_string(), "t.mtrace:4: the record is cut short");
        let error = replay_from("garbage\n".as_bytes(), "t.mtrace").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("t.mtrace:1: not a trace record"),
            "{error}"
        );
        let error = replay_from("".as_bytes(), "t.mtrace").unwrap_err();
        assert_eq!(error.to_string(), "t.mtrace: empty, not a trace");
        let no_header = lines(&[Line::Event(mmap_event())]);
        let error = replay_from(no_header.as_bytes(), "t.mtrace").unwrap_err();
        assert_eq!(
            error.to_string(),
            "t.mtrace:1: a trace starts with its header"
        );
        let mut future = header();
        future.version = 9;
        let error = replay_from(lines(&[Line::Header(future)]).as_bytes(), "t.mtrace").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("trace version 9 is not supported"),
            "{error}"
        );
    }

    #[test]
    fn a_change_to_an_unseen_stack_is_an_error_not_a_panic() {
        let text = lines(&[
            Line::Header(header()),
            Line::Event(mmap_event()),
            Line::Lost { records: 1 },
        ]);
        let error = replay_from(text.as_bytes(), "t.mtrace").unwrap_err();
        assert_eq!(
            error.to_string(),
            "t.mtrace:2: stack 0 changed before it was seen"
        );
    }
}
