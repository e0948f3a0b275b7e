//! The report: one model built from a [`Recording`](crate::account::Recording),
//! rendered as text or JSON, or drawn: folded stacks, flame graphs (SVG),
//! pprof profiles, an HTML page. The JSON field names are a contract
//! (`docs/report.md`): add fields freely, never rename.

mod build;
pub mod folded;
mod growth;
pub mod html;
pub mod metrics;
mod model;
pub mod patterns;
pub mod pprof;
#[cfg(test)]
mod sample_report;
mod stacks;
pub mod svg;
pub mod text;

pub use build::{Judging, build};
pub use growth::{Verdicts, so_far as growth_so_far};
pub use model::*;
pub use patterns::Pattern;
pub use text::render_text;

pub const SCHEMA: &str = "mmap-trace/report/v1";

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::model::{StoppedBy, UnwindMode};

    /// A report of nothing, to fill in.
    pub(crate) fn empty_report() -> Report {
        Report {
            schema: SCHEMA,
            version: "0",
            command: None,
            command_status: None,
            stopped_by: StoppedBy::TargetExit,
            complete: true,
            duration_s: 0.0,
            unwinder: UnwindMode::Auto,
            targets: Vec::new(),
            growth_judged: false,
            growth_note: None,
            growth: Vec::new(),
            rss_growth: None,
            events: Events::default(),
            unwinding: Unwinding::default(),
            tracer: Default::default(),
            totals: Totals::default(),
            by_issuer: Vec::new(),
            by_requester: Vec::new(),
            by_python_caller: Vec::new(),
            stacks: Vec::new(),
            timeline: Vec::new(),
        }
    }
}
