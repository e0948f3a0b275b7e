//! Trace files (`record --output FILE.mtrace`): record now, report later,
//! anywhere.
//!
//! One JSON object per line, written as tracing goes (a crash leaves a
//! readable prefix, and an error that says so):
//!
//! 1. `{"header": ...}`: format "mmap-trace/trace", version 1, command.
//! 2. streamed: `{"event": ...}` (decoded and unwound, in handling order),
//!    `{"stack_seen": ...}` (a stack's issuer and requester, right after the
//!    event that first gave it bytes), `{"lost": ...}`, `{"sample": ...}`
//!    (the time series).
//! 3. at the end: `{"stack": ...}` per stack (frames placed in objects, with
//!    build ids and symbols, resolved while the processes lived),
//!    `{"resident": ...}`, and `{"end": ...}` last.
//!
//! Replaying the events through the same books gives the same stack ids,
//! so the report built from a trace is the live run's report.

mod reader;
mod v1;
mod writer;

use std::path::Path;

pub use reader::{TraceFileError, replay, replay_from};
pub use writer::TraceWriter;

pub const FORMAT: &str = "mmap-trace/trace";
pub const VERSION: u32 = 1;

/// Files named like this are traces; other `--output`s are reports.
pub fn is_trace_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "mtrace")
}
