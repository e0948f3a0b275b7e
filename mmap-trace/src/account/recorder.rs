//! What a session tells whoever keeps a record of it (a trace file, a
//! metrics endpoint), in the order it happens. The session does not know
//! who listens.

use super::timeline::Sample;
use crate::{
    model::{Event, StackId},
    resolve::Attribution,
};

pub trait Recorder {
    /// An event, before the books apply it.
    fn event(&mut self, event: &Event);
    /// A stack's issuer and requester, the first time it holds bytes
    /// (right after the event that made it so).
    fn stack_seen(&mut self, id: StackId, attribution: &Attribution);
    /// Records lost, or that did not decode.
    fn lost(&mut self, records: u64);
    /// A sample of the time series.
    fn sample(&mut self, sample: &Sample);
}

/// Nobody listens.
impl Recorder for () {
    fn event(&mut self, _: &Event) {}
    fn stack_seen(&mut self, _: StackId, _: &Attribution) {}
    fn lost(&mut self, _: u64) {}
    fn sample(&mut self, _: &Sample) {}
}
