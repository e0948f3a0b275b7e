//! Trace files (`record --output FILE.mtrace`): record now, report later,
//! anywhere.
//!
//! A trace is a sequence of lines (`v1::Line`), written as tracing goes (a
//! crash leaves a readable prefix, and an error that says so):
//!
//! 1. the header: format "mmap-trace/trace", version, command.
//! 2. streamed: events (decoded and unwound, in the order they took effect),
//!    `stack_seen` (a stack's issuer and requester, right after the event
//!    that first gave it bytes), `lost`, `sample` (the time series).
//! 3. at the end: `stack` per stack (frames placed in objects, with build
//!    ids and symbols, resolved while the processes lived), `resident`, and
//!    `end` last.
//!
//! Version 2 (written) stores them as compressed blocks of binary records
//! (`v2`); version 1 (still read) is one JSON object per line, which is
//! also what `mmap-trace dump` prints. Replaying the events through the
//! same books gives the same stack ids, so the report built from a trace is
//! the live run's report.

mod lines;
mod reader;
mod v1;
pub mod v2;
mod writer;

use std::path::Path;

pub use lines::{Flow, Position, for_each_line};
pub use reader::{TraceFileError, replay, replay_from};
pub use v1::Line;
pub use writer::TraceWriter;

pub const FORMAT: &str = "mmap-trace/trace";
/// The version written (version 1 is still read).
pub const VERSION: u32 = 2;

/// Files named like this are traces; other `--output`s are reports.
pub fn is_trace_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "mtrace")
}
