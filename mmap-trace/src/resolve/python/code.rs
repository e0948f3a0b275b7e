//! Code objects, read from the traced process while it lives: a function's
//! qualified name, its file, and the line an instruction offset is on.

use mmap_trace_common::{PY_IDENTITY_WORDS, py_code_identity};

use super::layout::{CodeLayout, Style};

/// Reads another process's memory (`sys::memory` does it for real; tests
/// use a byte buffer).
pub trait ReadMemory {
    /// Fills `buffer` from `address`; false if that memory cannot be read.
    fn read(&mut self, address: u64, buffer: &mut [u8]) -> bool;
}

/// What a code object says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// `co_qualname` (3.11+), else `co_name`.
    pub name: String,
    pub filename: String,
    pub firstlineno: u32,
    /// 3.11+: the first code unit a traceback shows (see `Frame`).
    pub firsttraceable: Option<u32>,
    linetable: Vec<u8>,
    style: Style,
}

/// Why a code object could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotRead {
    #[error("its memory cannot be read")]
    Object,
    /// Its type is not `PyCode_Type`: the frame was not a frame.
    #[error("it is not a code object")]
    NotCode,
    /// Another code object than the one the frame ran: that one was freed
    /// and its memory reused before it could be read.
    #[error("it was freed and its memory reused before it was read")]
    Changed,
    #[error("its name cannot be read")]
    Name,
    #[error("its file name cannot be read")]
    Filename,
    #[error("its line table cannot be read")]
    LineTable,
}

/// Longest string or line table read (a guard against garbage).
const MAX_READ: usize = 1 << 20;

impl CodeInfo {
    /// Reads the code object at `address`, which must still be the one
    /// whose identity the kernel saw (`mmap_trace_common::py_code_identity`).
    pub fn read(
        memory: &mut dyn ReadMemory,
        address: u64,
        identity: u32,
        layout: &CodeLayout,
        style: Style,
        code_type: Option<u64>,
    ) -> Result<CodeInfo, NotRead> {
        let mut object = vec![0u8; layout.size as usize];
        if !memory.read(address, &mut object) {
            return Err(NotRead::Object);
        }
        let u64_at = |at: u32| -> Option<u64> {
            let at = at as usize;
            Some(u64::from_ne_bytes(object.get(at..at + 8)?.try_into().ok()?))
        };
        let i32_at = |at: u32| -> Option<i32> {
            let at = at as usize;
            Some(i32::from_ne_bytes(object.get(at..at + 4)?.try_into().ok()?))
        };
        let field = |at: u32| u64_at(at).ok_or(NotRead::Object);
        if let Some(code_type) = code_type
            && field(8)? != code_type
        {
            return Err(NotRead::NotCode);
        }
        let mut words = [0u64; PY_IDENTITY_WORDS];
        for (at, word) in (layout.identity..).step_by(8).zip(&mut words) {
            *word = field(at)?;
        }
        if py_code_identity(&words) != identity {
            return Err(NotRead::Changed);
        }
        let name_field = layout.qualname.unwrap_or(layout.name);
        let int = |at: u32| i32_at(at).map_or(0, |v| u32::try_from(v).unwrap_or(0));
        Ok(CodeInfo {
            name: read_str(memory, field(name_field)?, layout).ok_or(NotRead::Name)?,
            filename: read_str(memory, field(layout.filename)?, layout).ok_or(NotRead::Filename)?,
            firstlineno: int(layout.firstlineno),
            firsttraceable: layout.firsttraceable.map(int),
            linetable: read_bytes(memory, field(layout.linetable)?).ok_or(NotRead::LineTable)?,
            style,
        })
    }

    /// A code object made of parts (tests, and traces read back).
    pub fn new(name: &str, filename: &str, firstlineno: u32) -> CodeInfo {
        CodeInfo {
            name: name.to_owned(),
            filename: filename.to_owned(),
            firstlineno,
            firsttraceable: None,
            linetable: Vec::new(),
            style: Style::CstackOwner,
        }
    }

    /// The line the instruction at byte `offset` is on, if the line table
    /// says; before the first instruction, the function's first line.
    pub fn line(&self, offset: i32) -> Option<u32> {
        if offset < 0 {
            return Some(self.firstlineno);
        }
        match self.style {
            Style::LastI => line_310(&self.linetable, self.firstlineno, offset as u32),
            _ => line_311(&self.linetable, self.firstlineno, offset as u32 / 2),
        }
    }

    /// A frame still running its prologue, which CPython's own tracebacks
    /// hide (and 3.13's `__init__` shim, which never leaves it).
    pub fn is_incomplete(&self, offset: i32) -> bool {
        self.firsttraceable
            .is_some_and(|first| offset < 0 || (offset as u32 / 2) < first)
    }
}

/// A `str` object's text (compact strings: every code object's are).
fn read_str(memory: &mut dyn ReadMemory, address: u64, layout: &CodeLayout) -> Option<String> {
    let mut header = [0u8; 40];
    if address == 0 || !memory.read(address, &mut header) {
        return None;
    }
    let length = u64::from_ne_bytes(header[16..24].try_into().ok()?) as usize;
    let state = u32::from_ne_bytes(header[32..36].try_into().ok()?);
    let kind = ((state >> 2) & 7) as usize;
    let ascii = state & (1 << 6) != 0;
    if state & (1 << 5) == 0 || length.saturating_mul(kind.max(1)) > MAX_READ {
        return None;
    }
    if ascii {
        let mut text = vec![0u8; length];
        return memory
            .read(address + u64::from(layout.ascii_data), &mut text)
            .then(|| String::from_utf8_lossy(&text).into_owned());
    }
    let mut data = vec![0u8; length * kind];
    if !memory.read(address + u64::from(layout.compact_data), &mut data) {
        return None;
    }
    let chars: Option<String> = match kind {
        1 => Some(data.iter().map(|&b| char::from(b)).collect()),
        2 => data
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_ne_bytes([c[0], c[1]]))))
            .collect(),
        4 => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_ne_bytes(c.try_into().ok()?)))
            .collect(),
        _ => None,
    };
    chars
}

/// A `bytes` object's contents.
fn read_bytes(memory: &mut dyn ReadMemory, address: u64) -> Option<Vec<u8>> {
    let mut header = [0u8; 32];
    if address == 0 || !memory.read(address, &mut header) {
        return None;
    }
    let length = usize::try_from(i64::from_ne_bytes(header[16..24].try_into().ok()?)).ok()?;
    if length > MAX_READ {
        return None;
    }
    let mut data = vec![0u8; length];
    memory.read(address + 32, &mut data).then_some(data)
}

/// 3.10's `co_linetable`: (bytes advanced, line delta) pairs, a delta of
/// -128 meaning "no line".
fn line_310(table: &[u8], firstlineno: u32, offset: u32) -> Option<u32> {
    let mut line = i64::from(firstlineno);
    let mut end = 0u32;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += u32::from(pair[0]);
        let delta = pair[1] as i8;
        let current = if delta == -128 {
            None
        } else {
            line += i64::from(delta);
            u32::try_from(line).ok()
        };
        if (start..end).contains(&offset) {
            return current;
        }
    }
    None
}

/// 3.11+'s location table: entries of (code, length) with variable-length
/// line deltas and columns; `unit` in code units.
fn line_311(table: &[u8], firstlineno: u32, unit: u32) -> Option<u32> {
    let mut line = i64::from(firstlineno);
    let mut address = 0u32;
    let mut bytes = table.iter().copied();
    let mut next = || bytes.next();
    while let Some(first) = next() {
        if first & 0x80 == 0 {
            return None;
        }
        let code = (first >> 3) & 15;
        let length = u32::from(first & 7) + 1;
        let varint = |next: &mut dyn FnMut() -> Option<u8>| -> Option<u64> {
            let mut byte = next()?;
            let mut value = u64::from(byte & 63);
            let mut shift = 0;
            while byte & 64 != 0 {
                byte = next()?;
                shift += 6;
                value |= u64::from(byte & 63) << shift;
            }
            Some(value)
        };
        let (delta, has_line) = match code {
            15 => (0, false),
            14 => {
                let delta = signed(varint(&mut next)?);
                for _ in 0..3 {
                    varint(&mut next)?;
                }
                (delta, true)
            }
            13 => (signed(varint(&mut next)?), true),
            10..=12 => {
                next()?;
                next()?;
                (i64::from(code) - 10, true)
            }
            _ => {
                next()?;
                (0, true)
            }
        };
        line += delta;
        if (address..address + length).contains(&unit) {
            return if has_line {
                u32::try_from(line).ok()
            } else {
                None
            };
        }
        address += length;
    }
    None
}

fn signed(value: u64) -> i64 {
    if value & 1 != 0 {
        -((value >> 1) as i64)
    } else {
        (value >> 1) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::python::layout::Layout;

    #[test]
    fn lines_from_a_3_10_table() {
        // Bytes 0..6 on line 10 (the first), 6..10 on 12, 10..12 no line.
        let table = [6, 0, 4, 2, 2, 0x80];
        assert_eq!(line_310(&table, 10, 0), Some(10));
        assert_eq!(line_310(&table, 10, 8), Some(12));
        assert_eq!(line_310(&table, 10, 10), None);
        assert_eq!(line_310(&table, 10, 40), None);
    }

    #[test]
    fn lines_from_a_3_11_location_table() {
        let table = [
            // unit 0, 1 unit: no column form (13), line delta +0
            0x80 | (13 << 3),
            0,
            // units 1..3: one-line form (11): +1, two column bytes
            0x80 | (11 << 3) | 1,
            4,
            9,
            // unit 3: long form (14): delta -1 (signed varint 3), 3 more
            0x80 | (14 << 3),
            3,
            0,
            1,
            2,
            // unit 4: no location (15)
            0x80 | (15 << 3),
            // unit 5: short form (0..9): same line, one column byte
            0x80 | (2 << 3),
            7,
        ];
        let line = |unit| line_311(&table, 20, unit);
        assert_eq!(line(0), Some(20));
        assert_eq!(line(1), Some(21));
        assert_eq!(line(2), Some(21));
        assert_eq!(line(3), Some(20));
        assert_eq!(line(4), None);
        assert_eq!(line(5), Some(20));
        assert_eq!(line(6), None);
    }

    /// Process memory as a byte buffer at an address.
    struct Buffer(u64, Vec<u8>);

    impl ReadMemory for Buffer {
        fn read(&mut self, address: u64, buffer: &mut [u8]) -> bool {
            let Some(at) = address.checked_sub(self.0) else {
                return false;
            };
            match self.1.get(at as usize..at as usize + buffer.len()) {
                Some(bytes) => {
                    buffer.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn reads_a_3_12_code_object() {
        let layout = Layout::of_version(12).unwrap();
        let base = 0x7000_0000u64;
        let mut memory = vec![0u8; 4096];
        let put = |memory: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            memory[at..at + bytes.len()].copy_from_slice(bytes)
        };
        // A compact ASCII str at 1024 ("Pool.take"), a compact UCS-2 one at
        // 2048 ("größe.py"), the line table (bytes) at 3072.
        let str_at = |memory: &mut Vec<u8>,
                      at: usize,
                      text: &str,
                      state: u32,
                      data: &[u8],
                      data_at: usize| {
            put(
                memory,
                at + 16,
                &(text.chars().count() as u64).to_ne_bytes(),
            );
            put(memory, at + 32, &state.to_ne_bytes());
            put(memory, at + data_at, data);
        };
        str_at(
            &mut memory,
            1024,
            "Pool.take",
            (1 << 2) | (1 << 5) | (1 << 6),
            b"Pool.take",
            40,
        );
        let ucs2: Vec<u8> = "größe.py"
            .encode_utf16()
            .flat_map(u16::to_ne_bytes)
            .collect();
        str_at(
            &mut memory,
            2048,
            "größe.py",
            (2 << 2) | (1 << 5),
            &ucs2,
            56,
        );
        put(&mut memory, 3072 + 16, &2u64.to_ne_bytes());
        put(&mut memory, 3072 + 32, &[0x80 | (13 << 3) | 3, 4]);
        let code = 0usize;
        put(&mut memory, code + 8, &0xc0de_u64.to_ne_bytes());
        put(&mut memory, code + 68, &40i32.to_ne_bytes());
        put(&mut memory, code + 112, &(base + 2048).to_ne_bytes());
        put(&mut memory, code + 128, &(base + 1024).to_ne_bytes());
        put(&mut memory, code + 136, &(base + 3072).to_ne_bytes());
        // co_version: 3.12+ numbers each code object it makes.
        put(&mut memory, code + 92, &898u32.to_ne_bytes());
        // What the kernel folds at the call: the same words, from 56.
        let identity_of = |memory: &[u8]| {
            let words: Vec<u64> = memory[code + 56..code + 120]
                .chunks_exact(8)
                .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
                .collect();
            py_code_identity(&words.try_into().unwrap())
        };
        let identity = identity_of(&memory);
        let mut buffer = Buffer(base, memory);
        let read = |buffer: &mut Buffer, address, identity, code_type| {
            CodeInfo::read(
                buffer,
                address,
                identity,
                &layout.code,
                layout.style,
                code_type,
            )
        };
        let info = read(&mut buffer, base, identity, Some(0xc0de)).unwrap();
        assert_eq!(info.name, "Pool.take");
        assert_eq!(info.filename, "größe.py");
        assert_eq!(info.line(2), Some(42), "unit 1, +2 lines");
        assert_eq!(info.line(-2), Some(40), "before the first instruction");
        assert_eq!(
            read(&mut buffer, base, identity, Some(0xbad)),
            Err(NotRead::NotCode)
        );
        assert_eq!(read(&mut buffer, 8, identity, None), Err(NotRead::Object));

        // The object was freed and another made in its place: same type,
        // same first line, another version.
        put(&mut buffer.1, code + 92, &899u32.to_ne_bytes());
        let new_identity = identity_of(&buffer.1);
        assert_ne!(new_identity, identity);
        assert_eq!(
            read(&mut buffer, base, identity, Some(0xc0de)),
            Err(NotRead::Changed)
        );
        assert_eq!(
            read(&mut buffer, base, new_identity, Some(0xc0de)).map(|c| c.name),
            Ok("Pool.take".to_owned()),
            "the object now there, under its own identity"
        );
    }
}
