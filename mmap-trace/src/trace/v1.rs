//! Version 1 of the trace format: one JSON object per line. These types are
//! the format; they convert to and from the in-memory model, which may
//! change without changing what is on disk.

use std::{borrow::Cow, collections::HashMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    account::{Header, RecordingEnd, Sample},
    model::{
        Call, Event, FrameAddress, FrameKind, ObjectId, ProcessEvent, PyFrameRaw, Resume,
        StackSource, StopReason, SyscallEvent,
    },
    resolve::{Attribution, Frame, ObjectInfo, Resolved, ResolvedStack, SymbolInfo},
};

/// One line of a trace.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Line<'a> {
    Header(Header),
    #[serde(borrow)]
    Event(EventLine<'a>),
    StackSeen {
        id: u32,
        attribution: Attribution,
    },
    Lost {
        records: u64,
    },
    Sample(Cow<'a, Sample>),
    Stack {
        id: u32,
        stack: StackLine,
    },
    Resident {
        id: u32,
        bytes: u64,
    },
    End(RecordingEnd),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventLine<'a> {
    #[serde(borrow)]
    Syscall(SyscallLine<'a>),
    Exec(Cow<'a, ProcessEvent>),
    Exit(Cow<'a, ProcessEvent>),
    Fork(Cow<'a, ProcessEvent>),
    Join(Cow<'a, ProcessEvent>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SyscallLine<'a> {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
    /// When the call entered (added within version 1; 0 or absent: unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enter_ns: u64,
    pub call: Call,
    pub ret: i64,
    pub user_ip: u64,
    pub user_sp: u64,
    pub sp_word: u64,
    pub asid: u64,
    pub source: StackSource,
    #[serde(borrow)]
    pub stack: Cow<'a, [u64]>,
    /// The walk stopped before the outermost frame.
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Resume::is_default")]
    pub resume: Resume,
    #[serde(default, skip_serializing_if = "<[u8]>::is_empty")]
    pub window: Cow<'a, [u8]>,
    pub stack_error: i64,
    /// Why (added within version 1: older traces say only `truncated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopReason>,
    /// A shared mapping of a file in memory (memfd, /dev/shm).
    #[serde(default, skip_serializing_if = "is_false")]
    pub shmem: bool,
    /// madvise: resident bytes the range held at the last sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_returned: Option<u64>,
    /// Python frames (CPython processes).
    #[serde(default, skip_serializing_if = "<[PyFrameRaw]>::is_empty")]
    pub python: Cow<'a, [PyFrameRaw]>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A stop reason from a trace that only says whether the walk was cut.
fn stop_from(truncated: bool, stop: Option<StopReason>) -> StopReason {
    match (stop, truncated) {
        (Some(stop), _) => stop,
        (None, false) => StopReason::Complete,
        (None, true) => StopReason::Unknown,
    }
}

impl<'a> From<&'a Event> for EventLine<'a> {
    fn from(event: &'a Event) -> Self {
        match event {
            Event::Syscall(e) => EventLine::Syscall(SyscallLine {
                pid: e.pid,
                tid: e.tid,
                time_ns: e.time_ns,
                enter_ns: e.enter_ns,
                call: e.call,
                ret: e.ret,
                user_ip: e.user_ip,
                user_sp: e.user_sp,
                sp_word: e.sp_word,
                asid: e.asid,
                source: e.source,
                stack: Cow::Borrowed(&e.stack),
                truncated: !e.stop.is_complete(),
                resume: e.resume,
                window: Cow::Borrowed(&e.window),
                stack_error: e.stack_error,
                stop: Some(e.stop),
                shmem: e.shmem,
                resident_returned: e.resident_returned,
                python: Cow::Borrowed(&e.python),
            }),
            Event::Exec(e) => EventLine::Exec(Cow::Borrowed(e)),
            Event::Exit(e) => EventLine::Exit(Cow::Borrowed(e)),
            Event::Fork(e) => EventLine::Fork(Cow::Borrowed(e)),
            Event::Join(e) => EventLine::Join(Cow::Borrowed(e)),
        }
    }
}

impl From<EventLine<'_>> for Event {
    fn from(line: EventLine<'_>) -> Self {
        match line {
            EventLine::Syscall(e) => Event::Syscall(SyscallEvent {
                pid: e.pid,
                tid: e.tid,
                time_ns: e.time_ns,
                enter_ns: e.enter_ns,
                call: e.call,
                ret: e.ret,
                user_ip: e.user_ip,
                user_sp: e.user_sp,
                sp_word: e.sp_word,
                asid: e.asid,
                source: e.source,
                stack: e.stack.into_owned(),
                stop: stop_from(e.truncated, e.stop),
                resume: e.resume,
                window: e.window.into_owned(),
                stack_error: e.stack_error,
                shmem: e.shmem,
                resident_returned: e.resident_returned,
                python: e.python.into_owned(),
            }),
            EventLine::Exec(e) => Event::Exec(e.into_owned()),
            EventLine::Exit(e) => Event::Exit(e.into_owned()),
            EventLine::Fork(e) => Event::Fork(e.into_owned()),
            EventLine::Join(e) => Event::Join(e.into_owned()),
        }
    }
}

/// A resolved stack: frames name their objects (no ids on disk).
#[derive(Debug, Serialize, Deserialize)]
pub struct StackLine {
    pub frames: Vec<FrameLine>,
    pub source: StackSource,
    pub truncated: bool,
    pub attribution: Attribution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopReason>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub python_cut: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FrameLine {
    pub addr: u64,
    /// (Older traces also say where the recording read the object, as
    /// `access`: meaningless elsewhere, and ignored.)
    pub object: Option<String>,
    pub build_id: Option<String>,
    pub offset: u64,
    pub recovered: bool,
    pub symbol: Option<SymbolInfo>,
    /// Python and JIT frames say so (native ones, and older traces, don't).
    #[serde(default, skip_serializing_if = "FrameKind::is_native")]
    pub kind: FrameKind,
}

impl StackLine {
    pub fn new(stack: &ResolvedStack, resolved: &Resolved) -> Self {
        StackLine {
            frames: stack
                .frames
                .iter()
                .map(|frame| {
                    let object = frame.object.map(|id| resolved.object(id));
                    FrameLine {
                        addr: frame.address.address(),
                        object: object.map(|o| o.display.clone()),
                        build_id: object.and_then(|o| o.build_id.clone()),
                        offset: frame.offset,
                        recovered: frame.recovered,
                        symbol: frame.symbol.clone(),
                        kind: frame.kind,
                    }
                })
                .collect(),
            source: stack.source,
            truncated: !stack.stop.is_complete(),
            attribution: stack.attribution.clone(),
            stop: Some(stack.stop),
            python_cut: stack.python_cut,
        }
    }
}

/// Interns the objects named in a trace's stacks.
#[derive(Default)]
pub struct ObjectNames {
    ids: HashMap<(String, Option<String>), ObjectId>,
    pub objects: Vec<ObjectInfo>,
}

impl ObjectNames {
    fn intern(&mut self, name: String, build_id: Option<String>) -> ObjectId {
        let key = (name, build_id);
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = ObjectId(self.objects.len() as u32);
        self.objects
            .push(ObjectInfo::new(PathBuf::from(&key.0), key.1.clone()));
        self.ids.insert(key, id);
        id
    }

    pub fn stack(&mut self, line: StackLine) -> ResolvedStack {
        ResolvedStack {
            frames: line
                .frames
                .into_iter()
                .enumerate()
                .map(|(index, frame)| Frame {
                    // A Python frame's address is its code object's.
                    address: match frame.kind {
                        FrameKind::Python => FrameAddress::InstructionPointer(frame.addr),
                        _ => FrameAddress::of_frame(index, frame.addr),
                    },
                    object: frame.object.map(|name| self.intern(name, frame.build_id)),
                    offset: frame.offset,
                    recovered: frame.recovered,
                    symbol: frame.symbol,
                    kind: frame.kind,
                })
                .collect(),
            source: line.source,
            stop: stop_from(line.truncated, line.stop),
            attribution: line.attribution,
            python_cut: line.python_cut,
        }
    }
}

/// An event line that owns what it holds.
pub fn owned_event(event: Event) -> EventLine<'static> {
    EventLine::from(&event).into_owned()
}

impl EventLine<'_> {
    /// The same line, owning what it borrowed.
    pub fn into_owned(self) -> EventLine<'static> {
        let owned = |cow: Cow<'_, ProcessEvent>| Cow::Owned(cow.into_owned());
        match self {
            EventLine::Syscall(e) => EventLine::Syscall(SyscallLine {
                stack: Cow::Owned(e.stack.into_owned()),
                window: Cow::Owned(e.window.into_owned()),
                python: Cow::Owned(e.python.into_owned()),
                ..e
            }),
            EventLine::Exec(e) => EventLine::Exec(owned(e)),
            EventLine::Exit(e) => EventLine::Exit(owned(e)),
            EventLine::Fork(e) => EventLine::Fork(owned(e)),
            EventLine::Join(e) => EventLine::Join(owned(e)),
        }
    }
}
