//! Reading a trace back into a [`Recording`], through the same books a
//! live session keeps.

use std::{collections::HashMap, io, path::Path};

use super::{
    FORMAT, VERSION,
    lines::{Flow, Position, for_each_line, parse},
    v1::{Line, ObjectNames},
};
use crate::{
    account::{
        Book, Header, Recording, RecordingEnd,
        check::{Timekeeper, check},
    },
    model::{Event, StackId},
    resolve::{Attribution, Resolved, ResolvedStack},
};

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
    #[error("{path}: record {record}: {problem}")]
    AtRecord {
        path: String,
        record: usize,
        problem: String,
    },
    #[error(
        "{path}: ends after line {lines} without its final record: the recording was cut short"
    )]
    Truncated { path: String, lines: usize },
    #[error(
        "{path}: ends after record {records} without its final record: the recording was cut short"
    )]
    TruncatedRecords { path: String, records: usize },
    #[error("{path}: empty, not a trace")]
    Empty { path: String },
}

/// Replays a trace file (version 1 or 2) into a recording.
pub fn replay(path: &Path) -> Result<Recording, TraceFileError> {
    let name = path.display().to_string();
    let mut replay = Replay::new(&name);
    let mut end = None;
    for_each_line(path, |position, line| {
        end = replay.line(position, line)?;
        Ok(if end.is_some() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })?;
    match end {
        Some(end) => Ok(replay.finish(end)),
        None => Err(replay.cut_short()),
    }
}

/// Replays version 1 trace lines from `input` (`name` is for errors).
pub fn replay_from(input: impl io::BufRead, name: &str) -> Result<Recording, TraceFileError> {
    let mut replay = Replay::new(name);
    for (index, text) in input.lines().enumerate() {
        let position = Position::Line(index + 1);
        let text = text.map_err(|e| replay.at(position, format!("unreadable: {e}")))?;
        let line = parse(&text).map_err(|problem| replay.at(position, problem))?;
        if let Some(end) = replay.line(position, line)? {
            return Ok(replay.finish(end));
        }
    }
    Err(replay.cut_short())
}

/// A replay under way.
struct Replay<'n> {
    name: &'n str,
    header: Option<Header>,
    book: Book,
    /// Attributions by stack, from `stack_seen` lines.
    seen: HashMap<StackId, Attribution>,
    /// An event waits for the `stack_seen` lines that follow it, with its
    /// position.
    pending: Option<(Position, Event)>,
    objects: ObjectNames,
    stacks: HashMap<StackId, ResolvedStack>,
    /// Where the last line read was.
    last: Option<Position>,
    /// Events keep time.
    clock: Timekeeper,
}

impl<'n> Replay<'n> {
    fn new(name: &'n str) -> Self {
        Replay {
            name,
            header: None,
            book: Book::new(0),
            seen: HashMap::new(),
            pending: None,
            objects: ObjectNames::default(),
            stacks: HashMap::new(),
            last: None,
            clock: Timekeeper::default(),
        }
    }

    fn at(&self, position: Position, problem: String) -> TraceFileError {
        position.error(self.name, problem)
    }

    /// Takes one line; returns the ending once the last line is in.
    fn line(
        &mut self,
        number: Position,
        line: Line<'_>,
    ) -> Result<Option<RecordingEnd>, TraceFileError> {
        self.last = Some(number);
        if !matches!(line, Line::StackSeen { .. }) {
            self.apply_pending()?;
        }
        if self.header.is_none() {
            return match line {
                Line::Header(header) => self.start(number, header).map(|()| None),
                _ => Err(self.at(number, "a trace starts with its header".into())),
            };
        }
        match line {
            Line::Header(_) => return Err(self.at(number, "a second header".into())),
            Line::Event(event) => self.pending = Some((number, event.into())),
            Line::StackSeen { id, attribution } => {
                self.seen.insert(StackId(id), attribution);
            }
            Line::Lost { records } => self.book.lost(records, &mut ()),
            Line::Sample(sample) => {
                if let Some(last) = self.book.timeline.last()
                    // (NaN is no time either.)
                    && sample.time_s.partial_cmp(&last.time_s).is_none_or(|o| o.is_lt())
                {
                    let problem = format!(
                        "time runs backwards: a sample at {} s after one at {} s",
                        sample.time_s, last.time_s
                    );
                    return Err(self.at(number, problem));
                }
                self.book.timeline.push(sample.into_owned());
            }
            Line::Stack { id, stack } => {
                if !self.book.collector.stacks.contains(StackId(id)) {
                    return Err(self.at(number, format!("stack {id} was never used")));
                }
                let stack = self.objects.stack(stack);
                self.stacks.insert(StackId(id), stack);
            }
            Line::Resident { id, bytes } => {
                self.book.resident.insert(StackId(id), bytes);
            }
            Line::End(end) => return Ok(Some(end)),
        }
        Ok(None)
    }

    fn start(&mut self, number: Position, header: Header) -> Result<(), TraceFileError> {
        if header.format != FORMAT {
            let problem = format!("format {:?} is not {FORMAT:?}", header.format);
            return Err(self.at(number, problem));
        }
        if !(1..=VERSION).contains(&header.version) {
            let problem = format!(
                "trace version {} is not supported (this mmap-trace reads 1 to {VERSION})",
                header.version
            );
            return Err(self.at(number, problem));
        }
        self.header = Some(header);
        Ok(())
    }

    /// Applies the event waiting for its attributions, if it can be.
    fn apply_pending(&mut self) -> Result<(), TraceFileError> {
        let Some((number, event)) = self.pending.take() else {
            return Ok(());
        };
        check(&event)
            .and_then(|()| self.clock.check(&event))
            .map_err(|impossible| self.at(number, impossible.to_string()))?;
        let seen = &self.seen;
        let result = self
            .book
            .apply(event, &mut (), |id, _, _| seen.get(&id).cloned().ok_or(id));
        result.map_err(|id| self.at(number, format!("stack {} changed before it was seen", id.0)))
    }

    fn finish(self, end: RecordingEnd) -> Recording {
        let header = self.header.expect("a header came first");
        let resolved = Resolved {
            objects: self.objects.objects,
            stacks: self.stacks,
        };
        self.book.into_recording(header, resolved, end)
    }

    fn cut_short(&self) -> TraceFileError {
        match self.last {
            _ if self.header.is_none() => TraceFileError::Empty {
                path: self.name.to_owned(),
            },
            Some(Position::Record(records)) => TraceFileError::TruncatedRecords {
                path: self.name.to_owned(),
                records,
            },
            last => TraceFileError::Truncated {
                path: self.name.to_owned(),
                lines: last.map_or(0, Position::number),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Call, KernelCounters, StoppedBy, SyscallEvent, TracerUsage, UnwindCounts, UnwindMode,
    };

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            tool: "test".into(),
            command: Some(vec!["./x".into()]),
            unwinder: UnwindMode::Auto,
            interposers: vec![],
        }
    }

    fn end() -> RecordingEnd {
        RecordingEnd {
            stopped_by: StoppedBy::CommandExit,
            command_status: None,
            time_ns: 5_000,
            kernel: KernelCounters::default(),
            unwinding: UnwindCounts::default(),
            tracer: TracerUsage::default(),
            lost_mapping_records: 0,
            out_of_order: 0,
            malformed: 0,
            executables: Default::default(),
        }
    }

    fn lines(lines: &[Line<'_>]) -> String {
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
        let event = mmap_event();
        lines(&[
            Line::Header(header()),
            Line::Event((&event).into()),
            Line::StackSeen {
                id: 0,
                attribution: Attribution {
                    issuer: Some("/lib/liba.so".into()),
                    requester: Some("/app".into()),
                },
            },
            Line::End(end()),
        ])
    }

    #[test]
    fn replays_events_into_the_books() {
        let recording = replay_from(valid().as_bytes(), "t.mtrace").unwrap();
        assert_eq!(
            recording.collector.counts.calls[crate::model::CallKind::Mmap],
            1
        );
        assert_eq!(recording.collector.bytes.mapped, 8192);
        assert_eq!(recording.collector.live_by_stack()[&StackId(0)], (8192, 1));
        assert_eq!(recording.end.stopped_by, StoppedBy::CommandExit);
        assert_eq!(recording.header.unwinder, UnwindMode::Auto);
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
        let event = mmap_event();
        let no_header = lines(&[Line::Event((&event).into())]);
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
        let event = mmap_event();
        let text = lines(&[
            Line::Header(header()),
            Line::Event((&event).into()),
            Line::Lost { records: 1 },
        ]);
        let error = replay_from(text.as_bytes(), "t.mtrace").unwrap_err();
        assert_eq!(
            error.to_string(),
            "t.mtrace:2: stack 0 changed before it was seen"
        );
    }

    #[test]
    fn events_round_trip_through_the_format() {
        let mut event = mmap_event();
        if let Event::Syscall(call) = &mut event {
            call.stop = crate::model::StopReason::CopyExhausted;
            call.window = vec![1, 2, 3];
        }
        let text = serde_json::to_string(&Line::Event((&event).into())).unwrap();
        let Line::Event(line) = serde_json::from_str(&text).unwrap() else {
            panic!("not an event: {text}")
        };
        assert_eq!(Event::from(line), event);
        // Older traces say only whether the walk was cut.
        let old = text.replace(r#","stop":"copy_exhausted""#, "");
        assert_ne!(old, text);
        let Line::Event(line) = serde_json::from_str(&old).unwrap() else {
            panic!("not an event: {old}")
        };
        let Event::Syscall(call) = Event::from(line) else {
            panic!("not a call")
        };
        assert_eq!(call.stop, crate::model::StopReason::Unknown);
    }
}
