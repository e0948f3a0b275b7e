//! Python frames: which objects are CPython interpreters, what their code
//! objects say, and how the Python frames the kernel found fit into the
//! native stack: each native eval-loop frame (`_PyEval_EvalFrameDefault`)
//! is replaced by the Python frames it was running, innermost first.

pub mod code;
pub mod elf;
pub mod layout;

use std::{collections::HashMap, sync::Arc};

pub use code::{CodeInfo, NotRead, ReadMemory};
pub use elf::{Interpreter, NotInterpreter, may_be_interpreter};
pub use layout::Layout;

use super::{place::Frame, symbolize::SymbolInfo};
use crate::model::{CodeKey, FrameAddress, FrameKind, ObjectId, PyFrameRaw};

/// What a session learned of its Python processes.
#[derive(Default)]
pub struct PythonInfo {
    /// Interpreters, by the object that holds them.
    pub interpreters: HashMap<ObjectId, Arc<Interpreter>>,
    /// Code objects, or why one could not be read (most often: the process
    /// exited before it was read).
    pub codes: HashMap<CodeKey, Result<Arc<CodeInfo>, NotRead>>,
}

impl PythonInfo {
    fn code(
        &self,
        raw: &PyFrameRaw,
        pid: u32,
        asid: u64,
    ) -> Option<&Result<Arc<CodeInfo>, NotRead>> {
        self.codes.get(&raw.code_key(pid, asid))
    }
}

/// The frames of one stack with its Python frames put in place. `is_eval`
/// says whether a native frame runs Python code.
pub fn merge(
    native: Vec<Frame>,
    python: &[PyFrameRaw],
    (pid, asid): (u32, u64),
    info: &PythonInfo,
    is_eval: impl Fn(&Frame) -> bool,
) -> Vec<Frame> {
    if python.is_empty() {
        return native;
    }
    let python = valid_prefix(python, |raw| {
        matches!(info.code(raw, pid, asid), Some(Err(NotRead::NotCode)))
    });
    let mut groups = groups(python).into_iter();
    let mut merged = Vec::with_capacity(native.len() + python.len());
    for frame in native {
        if is_eval(&frame)
            && let Some(group) = groups.next()
        {
            merged.extend(
                group
                    .iter()
                    .filter_map(|raw| python_frame(raw, pid, asid, info)),
            );
            continue;
        }
        merged.push(frame);
    }
    // The native walk ended before the eval loops it ran in: the rest of
    // the Python stack goes after it.
    for group in groups {
        merged.extend(
            group
                .iter()
                .filter_map(|raw| python_frame(raw, pid, asid, info)),
        );
    }
    merged
}

/// The Python frames before the first that ran no code object: the kernel
/// read a frame chain that changed under it (a thread state being set up
/// or torn down), and what follows is not a stack.
fn valid_prefix(python: &[PyFrameRaw], not_code: impl Fn(&PyFrameRaw) -> bool) -> &[PyFrameRaw] {
    let end = python
        .iter()
        .position(|raw| !raw.is_empty_group() && not_code(raw))
        .unwrap_or(python.len());
    &python[..end]
}

/// The runs of Python frames, one per eval-loop call, innermost first.
fn groups(python: &[PyFrameRaw]) -> Vec<Vec<PyFrameRaw>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    for raw in python {
        if raw.is_empty_group() {
            groups.push(std::mem::take(&mut current));
            continue;
        }
        current.push(*raw);
        if raw.ends_group() {
            groups.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// One Python frame, named; `None` for a frame CPython itself hides (one
/// still in its prologue).
fn python_frame(raw: &PyFrameRaw, pid: u32, asid: u64, info: &PythonInfo) -> Option<Frame> {
    let code = info.code(raw, pid, asid).and_then(|c| c.as_deref().ok());
    if code.is_some_and(|c| c.is_incomplete(raw.offset)) {
        return None;
    }

    let symbol = code.map(|code| SymbolInfo {
        name: code.name.clone(),
        offset: 0,
        file: Some(code.filename.clone()),
        line: code.line(raw.offset),
        inlined: Vec::new(),
    });
    Some(Frame {
        address: FrameAddress::InstructionPointer(raw.code),
        object: None,
        offset: u64::try_from(raw.offset).unwrap_or(0),
        recovered: false,
        symbol,
        kind: FrameKind::Python,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmap_trace_common::py_flags;

    fn native(name: &str) -> Frame {
        Frame {
            address: FrameAddress::ReturnAddress(0x1000),
            object: Some(ObjectId(0)),
            offset: 0,
            recovered: false,
            symbol: Some(SymbolInfo {
                name: name.to_owned(),
                ..Default::default()
            }),
            kind: FrameKind::Native,
        }
    }

    fn raw(code: u64, flags: u32) -> PyFrameRaw {
        PyFrameRaw {
            code,
            offset: 0,
            flags,
            identity: 1,
        }
    }

    fn names(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let name = f.symbol.as_ref().map_or("?", |s| s.name.as_str());
                match f.kind {
                    FrameKind::Python => format!("py:{name}"),
                    _ => name.to_owned(),
                }
            })
            .collect()
    }

    #[test]
    fn each_eval_loop_frame_is_replaced_by_its_run_of_python_frames() {
        let mut info = PythonInfo::default();
        for (address, name) in [(1, "inner"), (2, "middle"), (3, "Outer.run")] {
            info.codes.insert(
                raw(address, 0).code_key(7, 9),
                Ok(Arc::new(CodeInfo::new(name, "w.py", 10))),
            );
        }
        let stack = vec![
            native("syscall"),
            native("_PyEval_EvalFrameDefault"),
            native("method_vectorcall"),
            native("_PyEval_EvalFrameDefault"),
            native("PyObject_Call"),
            native("_PyEval_EvalFrameDefault"),
            native("main"),
        ];
        // inner and middle run in one eval loop; an empty run between;
        // Outer.run in the outermost.
        let python = [
            raw(1, 0),
            raw(2, py_flags::GROUP_END),
            raw(0, py_flags::EMPTY_GROUP | py_flags::GROUP_END),
            raw(3, py_flags::GROUP_END),
        ];
        let is_eval = |f: &Frame| f.symbol.as_ref().unwrap().name == "_PyEval_EvalFrameDefault";
        let merged = merge(stack.clone(), &python, (7, 9), &info, is_eval);
        assert_eq!(
            names(&merged),
            [
                "syscall",
                "py:inner",
                "py:middle",
                "method_vectorcall",
                "PyObject_Call",
                "py:Outer.run",
                "main"
            ],
            "the second eval loop ran no frame of its own"
        );

        let python = [
            raw(1, 0),
            raw(2, py_flags::GROUP_END),
            raw(3, py_flags::GROUP_END),
        ];
        let merged = merge(stack[..2].to_vec(), &python, (7, 9), &info, is_eval);
        assert_eq!(
            names(&merged),
            ["syscall", "py:inner", "py:middle", "py:Outer.run"],
            "a cut native stack: the rest goes after it"
        );
    }

    #[test]
    fn an_address_reused_by_another_code_object_names_each_frame_after_its_own() {
        // `made_1` was freed and `made_2` made in its memory: one address,
        // two identities. The first was read while it lived; the third
        // frame's object was replaced before it could be read.
        let mut info = PythonInfo::default();
        let at = |identity| PyFrameRaw {
            identity,
            ..raw(0x7f00, py_flags::GROUP_END)
        };
        info.codes.insert(
            at(11).code_key(7, 9),
            Ok(Arc::new(CodeInfo::new("made_1", "gen.py", 1))),
        );
        info.codes.insert(
            at(13).code_key(7, 9),
            Ok(Arc::new(CodeInfo::new("made_2", "gen.py", 11))),
        );
        info.codes
            .insert(at(15).code_key(7, 9), Err(NotRead::Changed));
        let stack = vec![native("syscall"), native("_PyEval_EvalFrameDefault")];
        let is_eval = |f: &Frame| f.symbol.as_ref().unwrap().name == "_PyEval_EvalFrameDefault";
        let named = |identity| {
            let merged = merge(stack.clone(), &[at(identity)], (7, 9), &info, is_eval);
            names(&merged)
        };
        assert_eq!(named(11), ["syscall", "py:made_1"]);
        assert_eq!(named(13), ["syscall", "py:made_2"]);
        assert_eq!(
            named(15),
            ["syscall", "py:?"],
            "a frame whose object is gone is not named after another"
        );
    }
}
