//! Recognising a CPython interpreter in an ELF file: the object that
//! defines `_PyRuntime` (the executable of a static build such as Debian's
//! `python3.11`, else `libpython3.X.so`), its version, and where its eval
//! loop's code lies.

use std::{
    fs::File,
    ops::Range,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use gimli::{EhFrame, LittleEndian, UnwindSection as _};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

use super::layout::Layout;

/// A CPython interpreter object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub minor: u8,
    pub layout: Layout,
    /// Stated (link-time) addresses of `_PyRuntime` and `PyCode_Type`.
    pub runtime: u64,
    pub code_type: u64,
    /// Where to read the object again.
    path: PathBuf,
    /// Stated address ranges of `_PyEval_EvalFrameDefault`, its `.cold`
    /// part included: frames there run Python code. Found when first
    /// needed (stacks are resolved at the end): the kernel must learn of
    /// the interpreter at once, before the process runs much Python code.
    eval_ranges: OnceLock<Vec<Range<u64>>>,
    /// PT_LOAD segments: (file offset, file size, stated address).
    segments: Vec<(u64, u64, u64)>,
}

/// Why an object is not a CPython interpreter mmap-trace can walk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotInterpreter {
    #[error("cannot read it as an ELF file")]
    Unreadable,
    #[error("it does not define _PyRuntime")]
    NoRuntime,
    #[error("its version cannot be told")]
    UnknownVersion,
    #[error("Python 3.{0} is not supported (mmap-trace knows 3.10 to 3.13)")]
    Unsupported(u8),
    #[error("Python 3.13 without the debug offsets it should publish (a free-threaded build?)")]
    NoDebugOffsets,
}

impl Interpreter {
    /// Inspects the object at `path`, named `name` in its process (the name
    /// gives 3.10's version, which has no `Py_Version`).
    pub fn inspect(path: &Path, name: &Path) -> Result<Interpreter, NotInterpreter> {
        let file = File::open(path).map_err(|_| NotInterpreter::Unreadable)?;
        // SAFETY: a read-only private mapping of a file we hold open; a file
        // truncated under us could fault, as for any tool reading objects.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|_| NotInterpreter::Unreadable)?;
        let elf = object::File::parse(&*data).map_err(|_| NotInterpreter::Unreadable)?;
        let symbol = |wanted: &str| {
            elf.dynamic_symbols()
                .chain(elf.symbols())
                .find(|s| s.name() == Ok(wanted))
                .map(|s| (s.address(), s.size()))
        };
        let (runtime, runtime_size) = symbol("_PyRuntime").ok_or(NotInterpreter::NoRuntime)?;
        let segments: Vec<(u64, u64, u64)> = elf
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, size, s.address())
            })
            .collect();
        let bytes_at = |address: u64, len: u64| -> Option<&[u8]> {
            let (offset, _, start) = segments
                .iter()
                .find(|(_, size, start)| (*start..start + size).contains(&address))?;
            let at = usize::try_from(address - start + offset).ok()?;
            data.get(at..at + usize::try_from(len).ok()?)
        };
        let minor = match symbol("Py_Version") {
            Some((address, _)) => {
                let version = u64::from_ne_bytes(
                    bytes_at(address, 8)
                        .ok_or(NotInterpreter::UnknownVersion)?
                        .try_into()
                        .map_err(|_| NotInterpreter::UnknownVersion)?,
                );
                if version >> 24 != 3 {
                    return Err(NotInterpreter::UnknownVersion);
                }
                ((version >> 16) & 0xff) as u8
            }
            None => minor_from_name(name).ok_or(NotInterpreter::UnknownVersion)?,
        };
        let layout = if minor >= 13 {
            let published = bytes_at(runtime, runtime_size.min(1024))
                .and_then(|bytes| Layout::from_debug_offsets(minor, bytes));
            match (published, Layout::of_version(minor)) {
                (Some(layout), _) => layout,
                (None, Some(_)) => return Err(NotInterpreter::NoDebugOffsets),
                (None, None) => return Err(NotInterpreter::Unsupported(minor)),
            }
        } else {
            Layout::of_version(minor).ok_or(NotInterpreter::Unsupported(minor))?
        };
        let code_type = symbol("PyCode_Type").map_or(0, |(address, _)| address);
        Ok(Interpreter {
            minor,
            layout,
            runtime,
            code_type,
            path: path.to_owned(),
            eval_ranges: OnceLock::new(),
            segments,
        })
    }

    /// The eval loop's address ranges (empty if the file cannot be read
    /// again).
    pub fn eval_ranges(&self) -> &[Range<u64>] {
        self.eval_ranges.get_or_init(|| {
            let Ok(file) = File::open(&self.path) else {
                return Vec::new();
            };
            // SAFETY: as in `inspect`.
            let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
                return Vec::new();
            };
            match object::File::parse(&*data) {
                Ok(elf) => eval_ranges(&elf, &data),
                Err(_) => Vec::new(),
            }
        })
    }

    /// The stated address of a file offset.
    pub fn address_of(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(offset, size, _)| (*offset..offset + size).contains(&file_offset))
            .map(|(offset, _, address)| file_offset - offset + address)
    }

    /// Where `_PyRuntime` is in a process that maps this object's
    /// `file_offset` at `start`.
    pub fn runtime_in_process(&self, start: u64, file_offset: u64) -> Option<u64> {
        let stated = self.address_of(file_offset)?;
        Some(start.wrapping_sub(stated).wrapping_add(self.runtime))
    }

    /// Does the code at this file offset run Python frames?
    pub fn is_eval_loop(&self, file_offset: u64) -> bool {
        self.address_of(file_offset)
            .is_some_and(|address| self.eval_ranges().iter().any(|r| r.contains(&address)))
    }
}

/// Whether an object of this name is worth inspecting as an interpreter
/// (`python3.11`, `libpython3.12.so.1.0`, a pyenv or conda build's).
pub fn may_be_interpreter(name: &Path) -> bool {
    let Some(base) = name.file_name().and_then(|b| b.to_str()) else {
        return false;
    };
    base.strip_prefix("lib")
        .unwrap_or(base)
        .starts_with("python")
}

/// `python3.10`, `libpython3.10.so.1.0` → 10.
fn minor_from_name(name: &Path) -> Option<u8> {
    let base = name.file_name()?.to_str()?;
    let rest = base
        .strip_prefix("lib")
        .unwrap_or(base)
        .strip_prefix("python3.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `_PyEval_EvalFrameDefault` and its out-of-line part. With a symbol
/// table the part is `_PyEval_EvalFrameDefault.cold`; a stripped build
/// (Debian's) names it nothing, so it is found as the call-frame (FDE)
/// range that most of the function's jumps out of itself land in.
fn eval_ranges(elf: &object::File<'_>, data: &[u8]) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = elf
        .dynamic_symbols()
        .chain(elf.symbols())
        .filter(|s| {
            s.name().is_ok_and(|n| {
                n == "_PyEval_EvalFrameDefault" || n.starts_with("_PyEval_EvalFrameDefault.")
            })
        })
        .map(|s| s.address()..s.address() + s.size())
        .filter(|r| !r.is_empty())
        .collect();
    ranges.sort_by_key(|r| r.start);
    ranges.dedup();
    // With a symbol table a .cold part would be named: look for an unnamed
    // one only in stripped builds.
    let stripped = elf.symbols().next().is_none();
    if let (Some(main), true) = (ranges.first().cloned(), stripped && ranges.len() == 1)
        && let Some(cold) = cold_part(elf, data, main)
    {
        ranges.push(cold);
    }
    ranges
}

/// The FDE range that the most jumps out of `function` land in, if enough
/// of them do to be sure (a stray match of the opcode bytes lands
/// anywhere; the real out-of-line part gets hundreds).
fn cold_part(elf: &object::File<'_>, data: &[u8], function: Range<u64>) -> Option<Range<u64>> {
    let text = elf.section_by_name(".text")?;
    let (text_offset, _) = text.file_range()?;
    let bytes = data.get(
        usize::try_from(function.start - text.address() + text_offset).ok()?
            ..usize::try_from(function.end - text.address() + text_offset).ok()?,
    )?;
    let mut targets = Vec::new();
    for i in 0..bytes.len().saturating_sub(5) {
        let (length, rel) = match bytes[i] {
            0xE9 => (5, &bytes[i + 1..i + 5]),
            0x0F if (0x80..=0x8F).contains(&bytes[i + 1]) && i + 6 <= bytes.len() => {
                (6, &bytes[i + 2..i + 6])
            }
            _ => continue,
        };
        let rel = i32::from_le_bytes(rel.try_into().ok()?);
        let target = (function.start + i as u64 + length).wrapping_add(rel as i64 as u64);
        let in_text = (text.address()..text.address() + text.size()).contains(&target);
        if in_text && !function.contains(&target) {
            targets.push(target);
        }
    }
    let fdes = fde_ranges(elf, data)?;
    let mut hits: Vec<(Range<u64>, usize)> = Vec::new();
    for target in targets {
        let Some(fde) = fdes.iter().find(|r| r.contains(&target)) else {
            continue;
        };
        match hits.iter_mut().find(|(r, _)| r == fde) {
            Some((_, count)) => *count += 1,
            None => hits.push((fde.clone(), 1)),
        }
    }
    let (best, count) = hits.into_iter().max_by_key(|(_, count)| *count)?;
    (count >= 16).then_some(best)
}

/// Every FDE's address range in `.eh_frame`.
fn fde_ranges(elf: &object::File<'_>, data: &[u8]) -> Option<Vec<Range<u64>>> {
    let section = elf.section_by_name(".eh_frame")?;
    let (offset, size) = section.file_range()?;
    let bytes = data.get(usize::try_from(offset).ok()?..usize::try_from(offset + size).ok()?)?;
    let eh_frame = EhFrame::new(bytes, LittleEndian);
    let bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
    let mut entries = eh_frame.entries(&bases);
    let mut ranges = Vec::new();
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(EhFrame::cie_from_offset)
        {
            ranges.push(fde.initial_address()..fde.end_address());
        }
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        assert_eq!(minor_from_name(Path::new("/usr/bin/python3.11")), Some(11));
        assert_eq!(
            minor_from_name(Path::new("/x/lib/libpython3.10.so.1.0")),
            Some(10)
        );
        assert_eq!(minor_from_name(Path::new("/usr/bin/python3")), None);
        assert_eq!(minor_from_name(Path::new("/usr/lib/libc.so.6")), None);
        assert!(may_be_interpreter(Path::new("/usr/bin/python3.11")));
        assert!(may_be_interpreter(Path::new("/p/lib/libpython3.12.so.1.0")));
        assert!(!may_be_interpreter(Path::new("/usr/lib/libc.so.6")));
    }

    #[test]
    fn an_object_without_a_runtime_is_no_interpreter() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            Interpreter::inspect(&exe, &exe),
            Err(NotInterpreter::NoRuntime)
        );
        assert_eq!(
            Interpreter::inspect(Path::new("/nonexistent"), Path::new("/nonexistent")),
            Err(NotInterpreter::Unreadable)
        );
    }
}
