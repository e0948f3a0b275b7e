//! The last samples of each object, for its growth rate. Bounded: an agent
//! that runs for weeks keeps the last [`WINDOW`] samples, and forgets an
//! object once it held nothing for all of them.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::{
    account::{Role, Sample, fit_steady},
    report::{Basis, Judging},
};

/// Samples kept (10 minutes at the default `--interval` of 1 s).
pub const WINDOW: usize = 600;

/// Growth rates are fitted again at most this often (seconds of sample
/// time): a rate over minutes hardly moves in seconds, and a fit costs
/// far more than a sample.
pub(super) const REFIT_S: f64 = 10.0;

/// Points a fit looks at, at most (evenly spread over the window): the
/// robust fit looks at every pair of points.
const FIT_POINTS: usize = 120;

#[derive(Debug, Default)]
pub(super) struct Window {
    /// When each sample kept was taken, and whether a traced process ran
    /// then.
    times: VecDeque<(f64, bool)>,
    /// Per role (`Role as usize`), per object: its bytes at each sample
    /// kept, aligned with `times`.
    series: [HashMap<String, Series>; 2],
    /// Sample time from which the rates are due to be fitted again.
    refit_at_s: f64,
}

#[derive(Debug, Default)]
struct Series {
    /// Live bytes (0 where the object held none).
    live: VecDeque<i64>,
    /// Resident bytes; `None` where no running process held the object
    /// (unknown, as in the report's series).
    resident: VecDeque<Option<u64>>,
}

impl Series {
    fn holds_nothing(&self) -> bool {
        self.live.iter().all(|&b| b == 0) && self.resident.iter().all(|b| b.unwrap_or(0) == 0)
    }
}

/// One object's rate.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct GrowthRow<'w> {
    pub role: Role,
    pub object: &'w str,
    pub basis: Basis,
    pub bytes_per_min: f64,
}

impl Window {
    pub fn push(&mut self, sample: &Sample) {
        if self.times.len() == WINDOW {
            self.times.pop_front();
            for series in self.series.iter_mut().flat_map(|s| s.values_mut()) {
                series.live.pop_front();
                series.resident.pop_front();
            }
        }
        let before = self.times.len();
        self.times
            .push_back((sample.time_s, !sample.rss.is_empty()));
        for role in Role::BOTH {
            let (live, resident) = match role {
                Role::Issuer => (&sample.by_issuer, &sample.resident_by_issuer),
                Role::Requester => (&sample.by_requester, &sample.resident_by_requester),
            };
            let series = &mut self.series[role as usize];
            for object in live.keys().chain(resident.keys()) {
                if !series.contains_key(object) {
                    // It held nothing at the samples before.
                    series.insert(
                        object.clone(),
                        Series {
                            live: VecDeque::from(vec![0; before]),
                            resident: VecDeque::from(vec![None; before]),
                        },
                    );
                }
            }
            series.retain(|object, series| {
                let (live, resident) = (live.get(object), resident.get(object));
                series.live.push_back(live.copied().unwrap_or(0));
                series.resident.push_back(resident.copied());
                live.is_some() || resident.is_some() || !series.holds_nothing()
            });
        }
    }

    /// The rates of the `top` objects, when they are due to be fitted again
    /// (`None`: keep the last ones). No rates at all (an empty list) until
    /// the samples of running processes span the window a verdict needs.
    pub fn growth(
        &mut self,
        top: &HashSet<super::Object>,
        judging: &Judging,
    ) -> Option<Vec<GrowthRow<'_>>> {
        let now = self.times.back()?.0;
        if !self.judged(judging) {
            self.refit_at_s = 0.0;
            return Some(Vec::new());
        }
        if now < self.refit_at_s {
            return None;
        }
        self.refit_at_s = now + REFIT_S;
        let mut rows = Vec::new();
        for role in Role::BOTH {
            for (object, series) in &self.series[role as usize] {
                if !top.contains(&(role, object.as_str())) {
                    continue;
                }
                let times = self.times.iter().map(|&(t, _)| t);
                let live: Vec<(f64, f64)> = times
                    .clone()
                    .zip(&series.live)
                    .map(|(t, &bytes)| (t, bytes as f64))
                    .collect();
                let resident: Vec<(f64, f64)> = times
                    .zip(&series.resident)
                    .filter_map(|(t, bytes)| Some((t, (*bytes)? as f64)))
                    .collect();
                for (basis, points) in [(Basis::Resident, resident), (Basis::Live, live)] {
                    if let Some(fit) = fit_steady(&thin(&points)) {
                        rows.push(GrowthRow {
                            role,
                            object,
                            basis,
                            bytes_per_min: fit.bytes_per_min(),
                        });
                    }
                }
            }
        }
        Some(rows)
    }

    /// Do the samples of running processes kept span what a verdict needs?
    fn judged(&self, judging: &Judging) -> bool {
        let running: Vec<f64> = self
            .times
            .iter()
            .filter(|(_, running)| *running)
            .map(|&(t, _)| t)
            .collect();
        match (running.first(), running.last()) {
            (Some(first), Some(last)) => {
                running.len() >= judging.min_samples && last - first >= judging.min_window_s
            }
            _ => false,
        }
    }

    #[cfg(test)]
    pub fn objects(&self, role: Role) -> usize {
        self.series[role as usize].len()
    }
}

/// At most FIT_POINTS of `points`, evenly spread, first and last kept.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= FIT_POINTS {
        return points.to_vec();
    }
    let last = points.len() - 1;
    (0..FIT_POINTS)
        .map(|i| points[i * last / (FIT_POINTS - 1)])
        .collect()
}
