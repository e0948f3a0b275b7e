//! Python frames at the call, for CPython processes (3.10 to 3.13).
//!
//! The calling thread's `PyThreadState` is found without the GIL: the
//! interpreters' thread lists are walked for the state whose `thread_id`
//! (`pthread_self()`, which on x86_64 is the thread's FS base) equals the
//! task's FS base, and remembered per thread. A thread that released the
//! GIL (a ctypes call, NumPy, I/O) keeps its frame chain in place, and the
//! thread-local "current" state is NULL then from 3.12 on, so neither the
//! GIL holder nor that thread-local would do.
//!
//! Then its frame chain is walked, one `bpf_loop` step per frame, reading
//! one block of each frame, and (code object, bytecode offset) pairs are
//! written after the native frames, each with the code object's identity
//! (64 bytes of it that never change, folded): user space names the code
//! objects, and the identity tells it when an address it has named holds
//! another object now. Where one C call of the eval loop ends and the next
//! begins is marked, so user space can put each run of Python frames in
//! place of its `_PyEval_EvalFrameDefault` frame.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
    generated::{bpf_loop, bpf_probe_read_user as read_user_raw},
};
use mmap_trace_common::{
    MAX_PYTHON_FRAMES, PY_IDENTITY_WORDS, PyFrame, py_code_identity, py_flags, py_signature,
    py_signature_step, py_style,
};

use crate::{
    layout::{
        FRAME_BLOCK, FRAME_INDEX_MASK, PYTHON_FRAME_BYTES, PYTHON_INDEX_MASK, PyWalk, RecordData,
        Scratch,
    },
    maps::{PY_THREADS, PYTHON, TASK_FSBASE, this_cpu_scratch},
};

/// Thread states looked at, at most, to find the caller's.
const MAX_THREADS: u32 = 256;
/// Frames looked at, at most (entry frames take steps but are no frames).
const MAX_STEPS: u32 = 2 * MAX_PYTHON_FRAMES as u32;

/// What a walk found: Python frame entries written, and their signature.
pub struct PyStack {
    pub count: u32,
    pub signature: u64,
}

#[inline(always)]
fn user_u64(address: u64) -> Option<u64> {
    // SAFETY: a read of user memory through the helper; failure is None.
    unsafe { bpf_probe_read_user(address as *const u64) }.ok()
}

/// The Python frames of the calling thread, written after `native` frames
/// in this CPU's scratch data.
#[inline(always)]
pub fn walk_python(tgid: u32, tid: u32, asid: u64, native: u32) -> PyStack {
    let none = PyStack {
        count: 0,
        signature: 0,
    };
    let fsbase_at = TASK_FSBASE.load();
    if fsbase_at == 0 {
        return none;
    }
    // SAFETY: the value is copied out at once.
    let Some(config) = (unsafe { PYTHON.get(tgid) }).copied() else {
        return none;
    };
    if config.asid != asid {
        // Set up for an image this process has replaced.
        return none;
    }
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: a read of kernel memory through the helper: the current
    // task's `thread.fsbase`, at the offset the kernel's BTF gave.
    let Ok(fsbase) =
        (unsafe { bpf_probe_read_kernel((task + u64::from(fsbase_at)) as *const u64) })
    else {
        return none;
    };
    // The walk's state lives in this CPU's scratch slot, not on the
    // stack: kernels before 6.13 give a program and the callbacks it calls
    // 512 bytes of stack between them.
    let Some(scratch) = this_cpu_scratch() else {
        return none;
    };
    scratch.py_walk = PyWalk {
        config,
        fsbase,
        interpreter: 0,
        thread: 0,
        frame: 0,
        native,
        count: 0,
        open: 0,
        found: 0,
        signature: py_signature(tgid),
    };
    let walk = &mut scratch.py_walk;
    if !find_thread(walk, tid) {
        return none;
    }
    let Some(first) = user_u64(walk.thread + u64::from(config.thread_frame)) else {
        return none;
    };
    walk.frame = if config.cframe_frame == py_style::NO_FIELD || first == 0 {
        first
    } else {
        user_u64(first + u64::from(config.cframe_frame)).unwrap_or(0)
    };
    // SAFETY: the callback finds its state in the scratch slot itself.
    unsafe {
        bpf_loop(
            MAX_STEPS,
            frame_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    let Some(scratch) = this_cpu_scratch() else {
        return none;
    };
    let Scratch { py_walk, data, .. } = scratch;
    // Steps ran out with frames left (entry frames take steps too).
    if py_walk.frame != 0 {
        mark_last(data, py_walk, py_flags::CUT);
    }
    PyStack {
        count: py_walk.count,
        signature: py_walk.signature,
    }
}

/// The calling thread's state, remembered or looked for.
#[inline(always)]
fn find_thread(walk: &mut PyWalk, tid: u32) -> bool {
    let config = walk.config;
    // SAFETY: the value is copied out at once.
    if let Some(&thread) = unsafe { PY_THREADS.get(tid) }
        && thread != 0
        && user_u64(thread + u64::from(config.thread_id)) == Some(walk.fsbase)
    {
        walk.thread = thread;
        return true;
    }
    let Some(interpreter) = user_u64(config.runtime + u64::from(config.interpreters_head)) else {
        return false;
    };
    walk.interpreter = interpreter;
    walk.thread = user_u64(interpreter + u64::from(config.threads_head)).unwrap_or(0);
    // SAFETY: the callback finds its state in the scratch slot itself.
    unsafe {
        bpf_loop(
            MAX_THREADS,
            thread_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    let Some(scratch) = this_cpu_scratch() else {
        return false;
    };
    if scratch.py_walk.found == 0 {
        return false;
    }
    // A full map evicts the least recently used thread.
    PY_THREADS.insert(tid, scratch.py_walk.thread, 0).ok();
    true
}

/// One thread state of the walk for the caller's. Returns 1 to stop.
#[inline(never)]
extern "C" fn thread_step(_index: u64, _context: *mut c_void) -> i64 {
    let Some(scratch) = this_cpu_scratch() else {
        return 1;
    };
    let walk = &mut scratch.py_walk;
    let config = walk.config;
    if walk.thread == 0 {
        // This interpreter's list is done: the next interpreter's.
        let next = user_u64(walk.interpreter + u64::from(config.interpreter_next)).unwrap_or(0);
        if next == 0 || walk.interpreter == 0 {
            return 1;
        }
        walk.interpreter = next;
        walk.thread = user_u64(next + u64::from(config.threads_head)).unwrap_or(0);
        return 0;
    }
    match user_u64(walk.thread + u64::from(config.thread_id)) {
        Some(id) if id == walk.fsbase => {
            walk.found = 1;
            1
        }
        Some(_) => {
            walk.thread = user_u64(walk.thread + u64::from(config.thread_next)).unwrap_or(0);
            0
        }
        None => 1,
    }
}

/// The entry at `index` of this record's Python frames.
#[inline(always)]
fn entry_at(data: &mut RecordData, native: u32, index: u32) -> *mut PyFrame {
    let at = (native as usize & FRAME_INDEX_MASK) * 8
        + (index as usize & PYTHON_INDEX_MASK) * PYTHON_FRAME_BYTES;
    // SAFETY: at is within the masked frame area and the masked Python area,
    // inside the data array (see `layout`).
    unsafe { data.as_mut_ptr().add(at).cast::<PyFrame>() }
}

#[inline(always)]
fn push(data: &mut RecordData, walk: &mut PyWalk, frame: PyFrame) {
    let entry = entry_at(data, walk.native, walk.count);
    // SAFETY: inside the data area (see `entry_at`); unaligned is fine.
    unsafe { core::ptr::write_unaligned(entry, frame) };
    walk.count += 1;
    if frame.code != 0 {
        walk.signature = py_signature_step(walk.signature, frame.code, frame.identity);
    }
}

/// Sets `flags` on the last entry written.
#[inline(always)]
fn mark_last(data: &mut RecordData, walk: &PyWalk, flags: u32) {
    if walk.count == 0 {
        return;
    }
    let entry = entry_at(data, walk.native, walk.count - 1);
    // SAFETY: inside the data area (see `entry_at`), an entry written by
    // this walk.
    unsafe {
        let mut frame = core::ptr::read_unaligned(entry);
        frame.flags |= flags;
        core::ptr::write_unaligned(entry, frame);
    }
}

/// The identity of the code object at `code` (see `py_code_identity`), 0
/// if it cannot be read. One more read per frame: without it, a frame whose
/// code object was freed and its memory reused would be named after the
/// new one.
#[inline(always)]
fn code_identity(words: &mut [u64; PY_IDENTITY_WORDS], code: u64, at: u32) -> u32 {
    // SAFETY: the helper writes at most size_of_val(words) bytes into
    // words and checks the user address.
    let read = unsafe {
        read_user_raw(
            words.as_mut_ptr().cast(),
            size_of_val(words) as u32,
            code.wrapping_add(u64::from(at)) as *const _,
        )
    };
    if read != 0 {
        return 0;
    }
    py_code_identity(words)
}

/// A field of the frame block at `at` (8-byte aligned, inside the block).
#[inline(always)]
fn block_u64(block: &[u8; FRAME_BLOCK], at: u32) -> u64 {
    let at = (at as usize) & (FRAME_BLOCK - 8) & !7;
    // SAFETY: at + 8 ≤ FRAME_BLOCK.
    unsafe { core::ptr::read_unaligned(block.as_ptr().add(at).cast::<u64>()) }
}

/// One frame of the chain. Returns 1 to stop.
#[inline(never)]
extern "C" fn frame_step(_index: u64, _context: *mut c_void) -> i64 {
    let Some(scratch) = this_cpu_scratch() else {
        return 1;
    };
    let Scratch {
        py_walk: walk,
        py_block: block,
        py_code: code_words,
        data,
        ..
    } = scratch;
    if walk.frame == 0 {
        return 1;
    }
    if walk.count as usize >= MAX_PYTHON_FRAMES {
        mark_last(data, walk, py_flags::CUT);
        return 1;
    }
    let config = walk.config;
    // SAFETY: FRAME_BLOCK bytes into a buffer of that size; the helper
    // checks the user address.
    let read = unsafe {
        read_user_raw(
            block.as_mut_ptr().cast(),
            FRAME_BLOCK as u32,
            walk.frame as *const _,
        )
    };
    if read != 0 {
        mark_last(data, walk, py_flags::CUT);
        return 1;
    }
    let code = block_u64(block, config.frame_code);
    let previous = block_u64(block, config.frame_previous);
    let marker = block[(config.frame_marker as usize) & (FRAME_BLOCK - 1)];
    if config.style == py_style::CSTACK_OWNER && marker == py_style::OWNED_BY_CSTACK {
        // The boundary between two eval-loop calls, no frame itself.
        if walk.open > 0 {
            mark_last(data, walk, py_flags::GROUP_END);
        } else {
            push(
                data,
                walk,
                PyFrame {
                    flags: py_flags::EMPTY_GROUP | py_flags::GROUP_END,
                    ..PyFrame::default()
                },
            );
        }
        walk.open = 0;
        walk.frame = previous;
        return 0;
    }
    let (offset, flags) = match config.style {
        py_style::LASTI => {
            let lasti =
                block_u64(block, config.frame_position & !7) >> ((config.frame_position & 4) * 8);
            ((lasti as i32).wrapping_mul(2), py_flags::GROUP_END)
        }
        style => {
            let position = block_u64(block, config.frame_position);
            let offset = position
                .wrapping_sub(code)
                .wrapping_sub(u64::from(config.code_adaptive)) as i32;
            let end = style == py_style::IS_ENTRY && marker != 0;
            (offset, if end { py_flags::GROUP_END } else { 0 })
        }
    };
    let identity = code_identity(code_words, code, config.code_identity);
    push(
        data,
        walk,
        PyFrame {
            code,
            offset,
            flags,
            identity,
            _reserved: 0,
        },
    );
    walk.open = if flags & py_flags::GROUP_END != 0 {
        0
    } else {
        walk.open + 1
    };
    walk.frame = previous;
    0
}
