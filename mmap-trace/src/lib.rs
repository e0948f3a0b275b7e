//! mmap-trace: which library, through which stack, made the memory mappings
//! a process holds.
//!
//! The layers, each importing only those before it (see
//! docs/architecture.md):
//!
//! - [`model`]: plain data shared by all: events, calls, stacks, counters.
//! - [`unwind`]: unwinding stack copies with CFI rules, teaching the kernel.
//! - [`resolve`]: placing frames in objects, symbolizing, attributing.
//! - [`sys`]: everything that touches the kernel or /proc.
//! - [`account`]: the books: ledgers, growth fits, the time series (pure).
//! - [`trace`] and [`session`]: trace files, and the live event loop.
//! - [`report`]: the report model and its renderers.
//! - [`app`]: the commands, which wire the others together.

pub mod account;
pub mod app;
pub mod model;
pub mod report;
pub mod resolve;
pub mod session;
pub mod sys;
pub mod trace;
pub mod unwind;
