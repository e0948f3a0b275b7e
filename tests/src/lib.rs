//! Helpers for mmap-trace's end-to-end tests (`tests/e2e`): they run the
//! real binary (real eBPF programs, real kernel) on fixture programs the
//! tests start, and read its JSON report.
//!
//! These tests need root. Run them with `cargo xtask test`, which builds the
//! binary first; without root they fail, they never skip.
//!
//! - [`system`]: one traced test at a time, root, nothing left attached.
//! - [`run`]: running mmap-trace (on a command, or attached to processes).
//! - [`fixtures`]: the compiled fixture programs.
//! - [`report`]: reading its JSON report.
//! - [`pty`]: running it on a pseudo-terminal (the live view, the status
//!   line).

pub mod fixtures;
pub mod pty;
pub mod report;
pub mod run;
pub mod system;

pub use fixtures::{Waiting, fixture};
pub use pty::{OnTerminal, Pty};
pub use report::{Report, basename, calls_of_size, describe_stacks, frames, pids, sum, symbols};
pub use run::{
    Run, Tracing, mmap_trace, mmap_trace_bin, record_json, run_as_nobody, scratch_path,
    wait_with_timeout,
};
pub use system::{E2e, TestCgroup, assert_nothing_attached, begin};

pub const PAGE: u64 = 4096;
