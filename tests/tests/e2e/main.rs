//! End-to-end tests: the real mmap-trace binary, its real eBPF programs, on
//! real processes the tests start, with exact numbers. One binary, one
//! module per area; every test begins with `begin()` (root, one at a time)
//! and ends with nothing of mmap-trace's left loaded.

mod attach;
mod bad_input;
mod containers;
mod demo;
mod fallback;
mod faults;
mod growth;
mod ledger;
mod live;
mod metrics;
mod pictures;
mod python;
mod resident;
mod safety;
mod stopping;
mod traces;
mod tracing;
mod unwinding;
