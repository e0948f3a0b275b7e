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

/// Several listeners, each told everything, in order (a trace file and a
/// metrics endpoint, say).
pub struct Recorders<'r>(pub Vec<&'r mut dyn Recorder>);

impl Recorder for Recorders<'_> {
    fn event(&mut self, event: &Event) {
        for recorder in &mut self.0 {
            recorder.event(event);
        }
    }

    fn stack_seen(&mut self, id: StackId, attribution: &Attribution) {
        for recorder in &mut self.0 {
            recorder.stack_seen(id, attribution);
        }
    }

    fn lost(&mut self, records: u64) {
        for recorder in &mut self.0 {
            recorder.lost(records);
        }
    }

    fn sample(&mut self, sample: &Sample) {
        for recorder in &mut self.0 {
            recorder.sample(sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counting {
        lost: u64,
        samples: usize,
    }

    impl Recorder for Counting {
        fn event(&mut self, _: &Event) {}
        fn stack_seen(&mut self, _: StackId, _: &Attribution) {}
        fn lost(&mut self, records: u64) {
            self.lost += records;
        }
        fn sample(&mut self, _: &Sample) {
            self.samples += 1;
        }
    }

    #[test]
    fn every_recorder_hears_everything() {
        let (mut a, mut b) = (Counting::default(), Counting::default());
        let mut both = Recorders(vec![&mut a, &mut b]);
        both.lost(3);
        both.sample(&Sample::default());
        drop(both);
        assert_eq!((a.lost, a.samples, b.lost, b.samples), (3, 1, 3, 1));
    }
}
