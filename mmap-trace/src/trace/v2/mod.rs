//! Trace format version 2: compact, for hours of recording. Events are
//! binary records (`codec`: interned stacks, delta-encoded numbers), every
//! other record is the JSON of its version 1 line; records go in blocks
//! compressed with zstd (`blocks`), written as tracing goes. About 3 bytes
//! an event on `cargo xtask bench`'s workload (version 1: about 390).

pub mod blocks;
pub mod codec;

pub use blocks::{BlockError, BlockReader, BlockWriter, MAGIC};
pub use codec::{BadRecord, Cursor, Decoder, Encoder};
