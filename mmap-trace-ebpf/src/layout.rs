//! Sizes and the scratch slot layout shared by `maps` and `unwind` (a leaf:
//! it imports neither).
//!
//! The verifier accepts a variable offset into a buffer only when it can
//! see a bound, so indices are masked; every mask here is derived from the
//! size it bounds, and the sizes are checked at compile time.

use mmap_trace_common::{
    MAX_PYTHON_FRAMES, MAX_RECORD_DATA, MAX_STACK_FRAMES, MAX_STACK_WINDOW, PY_IDENTITY_WORDS,
    PyConfig, PyFrame, SyscallRecord,
};

/// Bytes of stack read at once from the stack pointer (a power of two).
pub const NEAR_BYTES: usize = 1024;
const _: () = assert!(NEAR_BYTES.is_power_of_two());

/// The page size, and the mask of an offset within a page.
pub const PAGE_BYTES: u64 = 4096;
pub const PAGE_MASK: u64 = PAGE_BYTES - 1;

/// Masks a frame index into `0..=MAX_STACK_FRAMES` (which is one less than
/// a power of two, see `mmap_trace_common`).
pub const FRAME_INDEX_MASK: usize = MAX_STACK_FRAMES;

/// Masks a Python frame index into `0..=MAX_PYTHON_FRAMES` (one less than a
/// power of two, see `mmap_trace_common`): a full run of Python frames
/// ends where the window begins, not at its start.
pub const PYTHON_INDEX_MASK: usize = MAX_PYTHON_FRAMES;

/// Bytes of one recorded Python frame.
pub const PYTHON_FRAME_BYTES: usize = size_of::<PyFrame>();

/// Masks an offset into the stack window.
pub const WINDOW_MASK: usize = MAX_STACK_WINDOW - 1;
const _: () = assert!(MAX_STACK_WINDOW.is_power_of_two());

/// Masks one copy chunk (at most a page) for the verifier: any value up to
/// two pages passes unchanged.
pub const CHUNK_MASK: usize = 2 * PAGE_BYTES as usize - 1;

/// Bytes of a Python frame read at once: every field the walk needs lies
/// in them.
pub const FRAME_BLOCK: usize = 128;

/// The data that follows a record (see [`Scratch::data`]).
pub type RecordData = [u8; MAX_RECORD_DATA + PAGE_BYTES as usize];

/// The state of one Python walk (`python`), kept here rather than on the
/// stack: before 6.13 a program and the callbacks it calls share 512 bytes
/// of stack.
#[repr(C)]
pub struct PyWalk {
    pub config: PyConfig,
    pub fsbase: u64,
    pub interpreter: u64,
    pub thread: u64,
    pub frame: u64,
    /// Native frames already in the data area.
    pub native: u32,
    /// Python frame entries written.
    pub count: u32,
    /// Frames written since the last eval-loop boundary.
    pub open: u32,
    /// The thread state was found.
    pub found: u32,
    /// `py_signature` of the frames written.
    pub signature: u64,
}

/// Where a record is assembled before it is copied, at its real size, into
/// the ring buffer (one slot per CPU, in the `SCRATCH` map).
#[repr(C)]
pub struct Scratch {
    pub record: SyscallRecord,
    /// Frames, Python frames, then stack bytes; the page of slack lets the
    /// verifier see that a copy of up to a page at any offset below
    /// MAX_RECORD_DATA stays inside.
    pub data: RecordData,
    /// The top of the user stack (see `unwind::read_near_stack`); after
    /// `data`, so that the record and its data are one contiguous output.
    /// Twice NEAR_BYTES: a masked offset below NEAR_BYTES plus an 8-byte
    /// read stays inside.
    pub near: [u8; 2 * NEAR_BYTES],
    /// A Python walk's state, the frame it reads, and the words of the
    /// frame's code object that say which it is.
    pub py_walk: PyWalk,
    pub py_block: [u8; FRAME_BLOCK],
    pub py_code: [u64; PY_IDENTITY_WORDS],
}

// Frames come first in `data`, then Python frames, then the window: the
// last masked frame offset, plus the last masked Python offset, plus the
// largest masked window offset, plus a page-sized chunk, stays inside
// `data`.
const _: () = assert!(
    FRAME_INDEX_MASK * 8
        + PYTHON_INDEX_MASK * PYTHON_FRAME_BYTES
        + WINDOW_MASK
        + PAGE_BYTES as usize
        <= MAX_RECORD_DATA + PAGE_BYTES as usize
);
