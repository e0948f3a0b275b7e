//! Version 2 records: events in a compact binary form, everything else as
//! the JSON of its version 1 line.
//!
//! A record is a tag byte and its fields. Numbers are LEB128 varints;
//! signed ones and deltas are zigzag-encoded first. What repeats is sent
//! once and referred to:
//!
//! - a call's stack (its frames, the word at the stack pointer, Python
//!   frames, who unwound it and why it stopped) is interned: a `STACK`
//!   record defines it the first time, events name it by number;
//! - a process's address space id is sent when it changes;
//! - times are deltas from the previous event's, entry times from the
//!   call's return; addresses are deltas from the previous address, stack
//!   pointers from the thread's previous one, the ip from its stack's
//!   first frame.
//!
//! Stack copies (`window`, `resume`) are not kept: an event is written
//! after its stack was unwound, and a replay does not unwind.
//!
//! The encoder and decoder keep the same state, so each decodes only what
//! the other encoded, in order: a block of records (`blocks`) starts from
//! where the previous one left off.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    model::{Call, Event, PyFrameRaw, Resume, StackSource, StopReason, SyscallEvent},
    trace::v1::{Line, owned_event},
};

/// Record tags.
mod tag {
    pub const SYSCALL: u8 = 1;
    /// A stack's definition (JSON), before the first event that names it.
    pub const STACK: u8 = 2;
    /// Any other line, as its version 1 JSON.
    pub const JSON: u8 = 3;
}

/// Call tags.
mod call {
    pub const MMAP: u8 = 1;
    pub const MUNMAP: u8 = 2;
    pub const MREMAP: u8 = 3;
    pub const BRK: u8 = 4;
    pub const SHMAT: u8 = 5;
    pub const SHMDT: u8 = 6;
    pub const MPROTECT: u8 = 7;
    pub const MADVISE: u8 = 8;
}

/// `flags` bits of a syscall record.
mod bit {
    pub const SHMEM: u8 = 1;
    pub const RESIDENT_RETURNED: u8 = 2;
    pub const NEW_ASID: u8 = 4;
    pub const STACK_ERROR: u8 = 8;
}

/// What repeats across records, interned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct StackKey {
    stack: Vec<u64>,
    sp_word: u64,
    source: StackSource,
    stop: StopReason,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    python: Vec<PyFrameRaw>,
}

/// The state both sides keep.
#[derive(Default)]
struct State {
    time_ns: u64,
    address: u64,
    sp: HashMap<u32, u64>,
    asid: HashMap<u32, u64>,
}

impl State {
    fn address_delta(&mut self, address: u64) -> u64 {
        let delta = zigzag(address.wrapping_sub(self.address) as i64);
        self.address = address;
        delta
    }

    fn address_from(&mut self, delta: u64) -> u64 {
        self.address = self.address.wrapping_add(unzigzag(delta) as u64);
        self.address
    }
}

/// Turns lines into records.
#[derive(Default)]
pub struct Encoder {
    state: State,
    stacks: HashMap<StackKey, u64>,
}

impl Encoder {
    /// Appends the record of `line` (any but a syscall event, which goes
    /// through [`Encoder::syscall`]) to `out`.
    pub fn encode(&mut self, line: &Line<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(tag::JSON);
        bytes(out, &serde_json::to_vec(line)?);
        Ok(())
    }

    /// Appends the record of a syscall event (and its stack's, the first
    /// time) to `out`.
    pub fn syscall(&mut self, e: &SyscallEvent, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let key = StackKey {
            stack: e.stack.clone(),
            sp_word: e.sp_word,
            source: e.source,
            stop: e.stop,
            python: e.python.clone(),
        };
        let next = self.stacks.len() as u64;
        let stack = match self.stacks.get(&key) {
            Some(&id) => id,
            None => {
                out.push(tag::STACK);
                bytes(out, &serde_json::to_vec(&key)?);
                self.stacks.insert(key, next);
                next
            }
        };
        let state = &mut self.state;
        out.push(tag::SYSCALL);
        varint(out, u64::from(e.pid));
        varint(out, zigzag(i64::from(e.tid) - i64::from(e.pid)));
        varint(out, zigzag(e.time_ns.wrapping_sub(state.time_ns) as i64));
        state.time_ns = e.time_ns;
        varint(
            out,
            if e.enter_ns == 0 {
                0
            } else {
                e.time_ns.wrapping_sub(e.enter_ns).wrapping_add(1)
            },
        );
        varint(out, stack);
        let new_asid = state.asid.get(&e.pid) != Some(&e.asid);
        let flags = [
            (e.shmem, bit::SHMEM),
            (e.resident_returned.is_some(), bit::RESIDENT_RETURNED),
            (new_asid, bit::NEW_ASID),
            (e.stack_error != 0, bit::STACK_ERROR),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .fold(0, |flags, (_, bit)| flags | bit);
        out.push(flags);
        if new_asid {
            varint(out, e.asid);
            state.asid.insert(e.pid, e.asid);
        }
        if let Some(bytes) = e.resident_returned {
            varint(out, bytes);
        }
        if e.stack_error != 0 {
            varint(out, zigzag(e.stack_error));
        }
        let frame0 = e.stack.first().copied().unwrap_or(0);
        varint(out, zigzag(e.user_ip.wrapping_sub(frame0) as i64));
        let sp = state.sp.insert(e.tid, e.user_sp).unwrap_or(0);
        varint(out, zigzag(e.user_sp.wrapping_sub(sp) as i64));
        call_fields(state, &e.call, out);
        if returns_address(&e.call) {
            varint(out, zigzag(e.ret.wrapping_sub(state.address as i64)));
            if e.ret >= 0 {
                state.address = e.ret as u64;
            }
        } else {
            varint(out, zigzag(e.ret));
        }
        Ok(())
    }
}

/// Does the call return an address (else 0 or an error)?
fn returns_address(call: &Call) -> bool {
    matches!(
        call,
        Call::Mmap { .. } | Call::Mremap { .. } | Call::Brk { .. } | Call::Shmat { .. }
    )
}

fn call_fields(state: &mut State, call: &Call, out: &mut Vec<u8>) {
    match *call {
        Call::Mmap {
            addr,
            len,
            prot,
            flags,
            fd,
            offset,
        } => {
            out.push(call::MMAP);
            // A hint, mostly 0: as it is.
            for value in [
                addr,
                len,
                u64::from(prot),
                u64::from(flags),
                zigzag(i64::from(fd)),
                offset,
            ] {
                varint(out, value);
            }
        }
        Call::Munmap { addr, len } => {
            out.push(call::MUNMAP);
            let addr = state.address_delta(addr);
            varint(out, addr);
            varint(out, len);
        }
        Call::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            new_addr,
        } => {
            out.push(call::MREMAP);
            let old = state.address_delta(old_addr);
            let new = state.address_delta(new_addr);
            for value in [old, old_len, new_len, u64::from(flags), new] {
                varint(out, value);
            }
        }
        Call::Brk { requested } => {
            out.push(call::BRK);
            let requested = state.address_delta(requested);
            varint(out, requested);
        }
        Call::Shmat {
            shmid,
            addr,
            flags,
            size,
        } => {
            out.push(call::SHMAT);
            let addr = state.address_delta(addr);
            for value in [zigzag(i64::from(shmid)), addr, u64::from(flags), size] {
                varint(out, value);
            }
        }
        Call::Shmdt { addr } => {
            out.push(call::SHMDT);
            let addr = state.address_delta(addr);
            varint(out, addr);
        }
        Call::Mprotect { addr, len, prot } => {
            out.push(call::MPROTECT);
            let addr = state.address_delta(addr);
            for value in [addr, len, u64::from(prot)] {
                varint(out, value);
            }
        }
        Call::Madvise { addr, len, advice } => {
            out.push(call::MADVISE);
            let addr = state.address_delta(addr);
            for value in [addr, len, u64::from(advice)] {
                varint(out, value);
            }
        }
    }
}

/// Why a record does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("the record is cut short")]
    Short,
    #[error("unknown record tag {0}")]
    Tag(u8),
    #[error("unknown call tag {0}")]
    Call(u8),
    #[error("a number does not fit")]
    Overflow,
    #[error("stack {0} was never defined")]
    UnknownStack(u64),
    #[error("not a trace record ({0})")]
    Json(String),
}

/// Turns records back into lines.
#[derive(Default)]
pub struct Decoder {
    state: State,
    stacks: Vec<StackKey>,
}

/// Reads records from a block's bytes.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn byte(&mut self) -> Result<u8, BadRecord> {
        let byte = *self.bytes.get(self.at).ok_or(BadRecord::Short)?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, BadRecord> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(BadRecord::Overflow);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BadRecord::Overflow)
    }

    fn u32(&mut self) -> Result<u32, BadRecord> {
        u32::try_from(self.varint()?).map_err(|_| BadRecord::Overflow)
    }

    fn i32(&mut self) -> Result<i32, BadRecord> {
        i32::try_from(unzigzag(self.varint()?)).map_err(|_| BadRecord::Overflow)
    }

    fn slice(&mut self) -> Result<&'a [u8], BadRecord> {
        let len = usize::try_from(self.varint()?).map_err(|_| BadRecord::Overflow)?;
        let end = self.at.checked_add(len).ok_or(BadRecord::Overflow)?;
        let slice = self.bytes.get(self.at..end).ok_or(BadRecord::Short)?;
        self.at = end;
        Ok(slice)
    }
}

impl Decoder {
    /// The next line from `cursor`, or `None` for a stack definition (it
    /// only prepares what follows).
    pub fn decode(&mut self, cursor: &mut Cursor<'_>) -> Result<Option<Line<'static>>, BadRecord> {
        match cursor.byte()? {
            tag::JSON => {
                let json = cursor.slice()?;
                let line: Line<'_> =
                    serde_json::from_slice(json).map_err(|e| BadRecord::Json(e.to_string()))?;
                Ok(Some(into_owned(line)))
            }
            tag::STACK => {
                let json = cursor.slice()?;
                let key =
                    serde_json::from_slice(json).map_err(|e| BadRecord::Json(e.to_string()))?;
                self.stacks.push(key);
                Ok(None)
            }
            tag::SYSCALL => {
                let event = self.syscall(cursor)?;
                Ok(Some(Line::Event(owned_event(Event::Syscall(event)))))
            }
            other => Err(BadRecord::Tag(other)),
        }
    }

    fn syscall(&mut self, c: &mut Cursor<'_>) -> Result<SyscallEvent, BadRecord> {
        let state = &mut self.state;
        let pid = c.u32()?;
        let tid = u32::try_from(i64::from(pid) + unzigzag(c.varint()?))
            .map_err(|_| BadRecord::Overflow)?;
        let time_ns = state.time_ns.wrapping_add(unzigzag(c.varint()?) as u64);
        state.time_ns = time_ns;
        let enter = c.varint()?;
        let enter_ns = if enter == 0 {
            0
        } else {
            time_ns.wrapping_sub(enter - 1)
        };
        let id = c.varint()?;
        let key = usize::try_from(id)
            .ok()
            .and_then(|i| self.stacks.get(i))
            .ok_or(BadRecord::UnknownStack(id))?;
        let flags = c.byte()?;
        if flags & bit::NEW_ASID != 0 {
            state.asid.insert(pid, c.varint()?);
        }
        let asid = state.asid.get(&pid).copied().unwrap_or(0);
        let resident_returned = if flags & bit::RESIDENT_RETURNED != 0 {
            Some(c.varint()?)
        } else {
            None
        };
        let stack_error = if flags & bit::STACK_ERROR != 0 {
            unzigzag(c.varint()?)
        } else {
            0
        };
        let frame0 = key.stack.first().copied().unwrap_or(0);
        let user_ip = frame0.wrapping_add(unzigzag(c.varint()?) as u64);
        let sp = state.sp.get(&tid).copied().unwrap_or(0);
        let user_sp = sp.wrapping_add(unzigzag(c.varint()?) as u64);
        state.sp.insert(tid, user_sp);
        let call = read_call(state, c)?;
        let ret = if returns_address(&call) {
            let ret = (state.address as i64).wrapping_add(unzigzag(c.varint()?));
            if ret >= 0 {
                state.address = ret as u64;
            }
            ret
        } else {
            unzigzag(c.varint()?)
        };
        Ok(SyscallEvent {
            pid,
            tid,
            time_ns,
            enter_ns,
            call,
            ret,
            user_ip,
            user_sp,
            sp_word: key.sp_word,
            asid,
            source: key.source,
            stack: key.stack.clone(),
            stop: key.stop,
            python: key.python.clone(),
            resume: Resume::default(),
            window: Vec::new(),
            stack_error,
            shmem: flags & bit::SHMEM != 0,
            resident_returned,
        })
    }
}

fn read_call(state: &mut State, c: &mut Cursor<'_>) -> Result<Call, BadRecord> {
    Ok(match c.byte()? {
        call::MMAP => {
            let addr = c.varint()?;
            Call::Mmap {
                addr,
                len: c.varint()?,
                prot: c.u32()?,
                flags: c.u32()?,
                fd: c.i32()?,
                offset: c.varint()?,
            }
        }
        call::MUNMAP => Call::Munmap {
            addr: state.address_from(c.varint()?),
            len: c.varint()?,
        },
        call::MREMAP => {
            let old_addr = state.address_from(c.varint()?);
            let (old_len, new_len, flags) = (c.varint()?, c.varint()?, c.u32()?);
            let new_addr = state.address_from(c.varint()?);
            Call::Mremap {
                old_addr,
                old_len,
                new_len,
                flags,
                new_addr,
            }
        }
        call::BRK => Call::Brk {
            requested: state.address_from(c.varint()?),
        },
        call::SHMAT => {
            let shmid = c.i32()?;
            Call::Shmat {
                shmid,
                addr: state.address_from(c.varint()?),
                flags: c.u32()?,
                size: c.varint()?,
            }
        }
        call::SHMDT => Call::Shmdt {
            addr: state.address_from(c.varint()?),
        },
        call::MPROTECT => Call::Mprotect {
            addr: state.address_from(c.varint()?),
            len: c.varint()?,
            prot: c.u32()?,
        },
        call::MADVISE => Call::Madvise {
            addr: state.address_from(c.varint()?),
            len: c.varint()?,
            advice: c.u32()?,
        },
        other => return Err(BadRecord::Call(other)),
    })
}

/// A line that owns what it holds.
fn into_owned(line: Line<'_>) -> Line<'static> {
    match line {
        Line::Event(event) => Line::Event(owned_event(Event::from(event))),
        Line::Sample(sample) => Line::Sample(std::borrow::Cow::Owned(sample.into_owned())),
        Line::Header(h) => Line::Header(h),
        Line::StackSeen { id, attribution } => Line::StackSeen { id, attribution },
        Line::Lost { records } => Line::Lost { records },
        Line::Stack { id, stack } => Line::Stack { id, stack },
        Line::Resident { id, bytes } => Line::Resident { id, bytes },
        Line::End(end) => Line::End(end),
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests;
