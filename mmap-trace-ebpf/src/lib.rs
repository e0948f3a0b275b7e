#![no_std]
// This library target only exists so that mmap-trace can name this crate as
// a build dependency (and be rebuilt when it changes); the programs are the
// `mmap-trace-ebpf` binary, built for the bpf target by mmap-trace's build.rs.
