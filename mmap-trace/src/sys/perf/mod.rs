//! Mapping, fork, exec and exit records, from the kernel's perf events.

mod record;
mod ring;

pub use record::{PerfRecord, parse_record};
pub use ring::PerfRing;
