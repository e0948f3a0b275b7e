//! Everything that touches the kernel or /proc: loading and attaching the
//! eBPF programs, decoding their records, the kernel's mapping records,
//! the unwinder's rule cache, launching and watching processes, and reading
//! what /proc says about them. The layers above take plain data from here.

pub mod btf;
pub mod clock;
pub mod decode;
pub mod error;
pub mod launch;
pub mod loader;
pub mod memory;
pub mod pagemap;
pub mod perf;
pub mod perf_map;
pub mod pidfd;
pub mod priority;
pub mod privileges;
pub mod procmaps;
pub mod python_map;
pub mod rules_map;

pub mod status;
pub mod targets;
pub mod terminal;
pub mod usage;
