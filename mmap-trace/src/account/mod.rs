//! The books, pure: per-process ledgers of live mappings, per-stack
//! statistics, growth fits, the time series. Events come in (from a live
//! session or a trace replay) through [`Book::apply`]; a [`Recording`]
//! comes out.

pub mod book;
pub mod check;
pub mod collector;
pub mod growth;
pub mod ledger;
pub mod live;
pub mod order;
pub mod recorder;
pub mod recording;
pub mod timeline;

pub use book::{Book, MemoryProbe, UNKNOWN};
pub use collector::Collector;
pub use growth::{SteadyFit, Thresholds, fit_steady};
pub use live::{LiveByObject, Role};
pub use recorder::{Recorder, Recorders};
pub use recording::{Header, Recording, RecordingEnd};
pub use timeline::{KindBytes, Sample};
