//! mmap-trace: which library, through which stack, made the memory mappings
//! a process holds.
//!
//! Data flows one way: the eBPF programs write records (`decode`), the
//! `collector` applies them to per-process `ledger`s and the `stacks` table,
//! `resolve` places frames in the objects the kernel reported as mapped
//! (`perf_mmap`, `modules`) and symbolizes them, `attribute` names issuer and
//! requester, and `report` renders the result. Only `loader`, `perf_mmap`,
//! `launch` and `session` touch the kernel.

pub mod attribute;
pub mod callsite;
pub mod cli;
pub mod collector;
pub mod decode;
pub mod error;
pub mod growth;
pub mod launch;
pub mod ledger;
pub mod loader;
pub mod modules;
pub mod objects;
pub mod patterns;
pub mod perf_mmap;
pub mod privileges;
pub mod procmaps;
pub mod record;
pub mod recording;
pub mod replay;
pub mod report;
pub mod residency;
pub mod resolve;
pub mod session;
pub mod stacks;
pub mod symbolize;
pub mod targets;
pub mod timeline;
pub mod tracefile;
pub mod trends;
pub mod unwind;
