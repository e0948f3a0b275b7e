//! Where CPython keeps what a frame walk needs, per minor version.
//!
//! 3.10 to 3.12 publish nothing: the offsets below were measured on those
//! releases (pyenv builds and Debian's 3.11.2, which agree) and are checked
//! against the running interpreter where it says something (`Py_Version`,
//! `PyCode_Type.tp_basicsize`). 3.13 publishes most of them in
//! `_Py_DebugOffsets` at the start of `_PyRuntime` (cookie `xdebugpy`);
//! those override the table when present.

#[cfg(test)]
use mmap_trace_common::PY_IDENTITY_WORDS;
use mmap_trace_common::{PyConfig, py_style};

/// How positions and eval-loop boundaries are kept (see `py_style`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// 3.10: `f_lasti`, every frame its own eval-loop call.
    LastI,
    /// 3.11: `prev_instr`, `is_entry` ends a run.
    IsEntry,
    /// 3.12+: `prev_instr`/`instr_ptr`, C-stack-owned entry frames separate
    /// runs.
    CstackOwner,
}

/// A CPython version's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub minor: u8,
    pub interpreters_head: u32,
    pub interpreter_next: u32,
    pub threads_head: u32,
    pub thread_next: u32,
    pub thread_id: u32,
    /// `PyThreadState` → `frame` (3.10), `cframe` (3.11, 3.12),
    /// `current_frame` (3.13).
    pub thread_frame: u32,
    /// `_PyCFrame.current_frame` (3.11, 3.12).
    pub cframe_frame: Option<u32>,
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_position: u32,
    pub frame_marker: Option<u32>,
    pub style: Style,
    pub code: CodeLayout,
}

/// Where a code object keeps its names and line table, and what its
/// strings look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeLayout {
    /// Bytes of a code object to read (`sizeof(PyCodeObject)`).
    pub size: u32,
    pub firstlineno: u32,
    pub filename: u32,
    pub name: u32,
    /// 3.11+.
    pub qualname: Option<u32>,
    pub linetable: u32,
    /// Where the words that say which code object this is begin (see
    /// `mmap_trace_common::py_code_identity`): 3.10 from `co_argcount` to
    /// `co_varnames`; 3.11+ from `co_posonlyargcount` to `co_filename`,
    /// with 3.12+'s `co_version`, a number no two code objects share. All
    /// are set when the object is made: measured unchanged across
    /// specialization, tracing and 20,000 calls on each version.
    pub identity: u32,
    /// 3.11+: frames whose position is before this (in code units) are
    /// still in their prologue, and CPython hides them.
    pub firsttraceable: Option<u32>,
    /// 3.11+: where the bytecode starts (`co_code_adaptive`).
    pub adaptive: u32,
    /// Where a compact ASCII string's characters start, and a compact
    /// non-ASCII one's.
    pub ascii_data: u32,
    pub compact_data: u32,
}

impl Layout {
    /// The table's layout for 3.`minor`, if it is a version mmap-trace
    /// knows.
    pub fn of_version(minor: u8) -> Option<Layout> {
        let old_strings = (48, 72);
        let new_strings = (40, 56);
        Some(match minor {
            10 => Layout {
                minor,
                interpreters_head: 32,
                interpreter_next: 0,
                threads_head: 8,
                thread_next: 8,
                thread_id: 176,
                thread_frame: 24,
                cframe_frame: None,
                frame_code: 32,
                frame_previous: 24,
                frame_position: 96,
                frame_marker: None,
                style: Style::LastI,
                code: code_layout(176, (40, 104, 112, None, 120, None, 0), old_strings, 16),
            },
            11 => Layout {
                minor,
                interpreters_head: 40,
                interpreter_next: 0,
                threads_head: 16,
                thread_next: 8,
                thread_id: 152,
                thread_frame: 56,
                cframe_frame: Some(8),
                frame_code: 32,
                frame_previous: 48,
                frame_position: 56,
                frame_marker: Some(68),
                style: Style::IsEntry,
                code: code_layout(
                    192,
                    (72, 112, 120, Some(128), 136, Some(168), 184),
                    old_strings,
                    56,
                ),
            },
            12 => Layout {
                minor,
                interpreters_head: 40,
                interpreter_next: 0,
                threads_head: 72,
                thread_next: 8,
                thread_id: 136,
                thread_frame: 56,
                cframe_frame: Some(0),
                frame_code: 0,
                frame_previous: 8,
                frame_position: 56,
                frame_marker: Some(70),
                style: Style::CstackOwner,
                code: code_layout(
                    200,
                    (68, 112, 120, Some(128), 136, Some(176), 192),
                    new_strings,
                    56,
                ),
            },
            13 => Layout {
                minor,
                interpreters_head: 632,
                interpreter_next: 7264,
                threads_head: 7344,
                thread_next: 8,
                thread_id: 152,
                thread_frame: 72,
                cframe_frame: None,
                frame_code: 0,
                frame_previous: 8,
                frame_position: 56,
                frame_marker: Some(70),
                style: Style::CstackOwner,
                code: code_layout(
                    208,
                    (68, 112, 120, Some(128), 136, Some(184), 200),
                    new_strings,
                    56,
                ),
            },
            _ => return None,
        })
    }

    /// 3.13+: the table's layout with what `_Py_DebugOffsets` (the first
    /// bytes of `_PyRuntime`) says, if it says it; `None` when the cookie
    /// or the version do not match, or it is a free-threaded build.
    pub fn from_debug_offsets(minor: u8, bytes: &[u8]) -> Option<Layout> {
        let mut layout = Layout::of_version(minor)?;
        let field = |at: usize| -> Option<u32> {
            let value = u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
            u32::try_from(value).ok()
        };
        if bytes.get(..8)? != b"xdebugpy" {
            return None;
        }
        let version = u64::from_ne_bytes(bytes.get(8..16)?.try_into().ok()?);
        if (version >> 24, (version >> 16) & 0xff) != (3, u64::from(minor)) {
            return None;
        }
        if u64::from_ne_bytes(bytes.get(16..24)?.try_into().ok()?) != 0 {
            // free_threaded: another object header altogether.
            return None;
        }
        layout.interpreters_head = field(40)?;
        layout.interpreter_next = field(64)?;
        layout.threads_head = field(72)?;
        layout.thread_next = field(168)?;
        layout.thread_frame = field(184)?;
        layout.thread_id = field(192)?;
        layout.frame_previous = field(232)?;
        layout.frame_code = field(240)?;
        layout.frame_position = field(248)?;
        layout.frame_marker = Some(field(264)?);
        layout.code.size = field(272)?;
        layout.code.filename = field(280)?;
        layout.code.name = field(288)?;
        layout.code.qualname = Some(field(296)?);
        layout.code.linetable = field(304)?;
        layout.code.firstlineno = field(312)?;
        // Not published: the counts before `co_firstlineno` keep their
        // order in 3.13 (three of them, then the first line).
        layout.code.identity = layout.code.firstlineno.checked_sub(12)?;
        layout.code.adaptive = field(344)?;
        layout.code.ascii_data = field(560)?;
        // Not published: a compact non-ASCII string's header is 16 bytes
        // longer than an ASCII one's (its UTF-8 cache pointer and length).
        layout.code.compact_data = layout.code.ascii_data + 16;
        Some(layout)
    }

    /// What the eBPF side needs, for a process whose `_PyRuntime` is at
    /// `runtime`, in address space `asid`.
    pub fn config(&self, runtime: u64, asid: u64) -> PyConfig {
        PyConfig {
            asid,
            runtime,
            interpreters_head: self.interpreters_head,
            interpreter_next: self.interpreter_next,
            threads_head: self.threads_head,
            thread_next: self.thread_next,
            thread_id: self.thread_id,
            thread_frame: self.thread_frame,
            cframe_frame: self.cframe_frame.unwrap_or(py_style::NO_FIELD),
            frame_code: self.frame_code,
            frame_previous: self.frame_previous,
            frame_position: self.frame_position,
            frame_marker: self.frame_marker.unwrap_or(py_style::NO_FIELD),
            code_adaptive: self.code.adaptive,
            style: match self.style {
                Style::LastI => py_style::LASTI,
                Style::IsEntry => py_style::IS_ENTRY,
                Style::CstackOwner => py_style::CSTACK_OWNER,
            },
            code_identity: self.code.identity,
        }
    }
}

fn code_layout(
    size: u32,
    (firstlineno, filename, name, qualname, linetable, firsttraceable, adaptive): (
        u32,
        u32,
        u32,
        Option<u32>,
        u32,
        Option<u32>,
        u32,
    ),
    (ascii_data, compact_data): (u32, u32),
    identity: u32,
) -> CodeLayout {
    CodeLayout {
        size,
        firstlineno,
        filename,
        name,
        qualname,
        linetable,
        identity,
        firsttraceable,
        adaptive,
        ascii_data,
        compact_data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_outside_the_table_are_refused() {
        assert!(Layout::of_version(9).is_none());
        assert!(Layout::of_version(14).is_none());
        for minor in 10..=13 {
            let layout = Layout::of_version(minor).unwrap();
            // The eBPF side reads one 128-byte block per frame.
            for field in [
                layout.frame_code,
                layout.frame_previous,
                layout.frame_position,
                layout.frame_marker.unwrap_or(0),
            ] {
                assert!(field <= 120, "3.{minor}: {field}");
            }
            // The identity words are inside the code object user space reads.
            let identity_end = layout.code.identity as usize + 8 * PY_IDENTITY_WORDS;
            assert!(identity_end <= layout.code.size as usize, "3.{minor}");
            assert!(
                layout.code.identity > 8,
                "3.{minor}: past the refcount and type"
            );
        }
    }

    #[test]
    fn debug_offsets_override_the_table() {
        let mut bytes = vec![0u8; 584];
        bytes[..8].copy_from_slice(b"xdebugpy");
        bytes[8..16].copy_from_slice(&0x030d00f0u64.to_ne_bytes());
        let put = |bytes: &mut Vec<u8>, at: usize, value: u64| {
            bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes())
        };
        for (at, value) in [
            (40, 632),
            (64, 7264),
            (72, 7344),
            (168, 8),
            (184, 72),
            (192, 152),
            (232, 8),
            (240, 0),
            (248, 56),
            (264, 70),
            (272, 208),
            (280, 112),
            (288, 120),
            (296, 128),
            (304, 136),
            (312, 68),
            (344, 200),
            (560, 40),
        ] {
            put(&mut bytes, at, value);
        }
        let layout = Layout::from_debug_offsets(13, &bytes).unwrap();
        assert_eq!(layout, Layout::of_version(13).unwrap(), "3.13.0 agrees");
        put(&mut bytes, 72, 9999);
        assert_eq!(
            Layout::from_debug_offsets(13, &bytes).unwrap().threads_head,
            9999
        );
        assert!(
            Layout::from_debug_offsets(12, &bytes).is_none(),
            "another version"
        );
        put(&mut bytes, 16, 1);
        assert!(
            Layout::from_debug_offsets(13, &bytes).is_none(),
            "free-threaded"
        );
        bytes[0] = b'X';
        assert!(
            Layout::from_debug_offsets(13, &bytes).is_none(),
            "no cookie"
        );
    }

    #[test]
    fn the_config_says_which_fields_exist() {
        let config = Layout::of_version(10).unwrap().config(0xa5b740, 7);
        assert_eq!(config.cframe_frame, py_style::NO_FIELD);
        assert_eq!(config.style, py_style::LASTI);
        assert_eq!((config.runtime, config.asid), (0xa5b740, 7));
        let config = Layout::of_version(11).unwrap().config(0, 0);
        assert_eq!((config.cframe_frame, config.frame_marker), (8, 68));
    }
}
