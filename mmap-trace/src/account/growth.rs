//! Who is growing: the least-squares slope of each object's live bytes
//! over time, fitted to the step function the events themselves draw.
//!
//! Live bytes change only at events, so between two events they are
//! constant. Fitting `live(t) ≈ a + b·t` over the whole window by
//! minimizing ∫(live(t) - a - b·t)² dt needs six integrals, each a sum over
//! constant pieces; they are kept as running sums. Memory is O(1) per
//! object, and the fit is as exact for a command that ran two seconds as
//! for a service traced for an hour, whatever the sampling interval.

use std::collections::HashMap;

/// Which attribution an object is growing in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Issuer,
    Requester,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Issuer => "issuer",
            Role::Requester => "requester",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An object name interned by a [`GrowthTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameId(u32);

/// One object's live bytes as a step function, with the integrals the fit
/// needs. Times are seconds since the window's start.
#[derive(Clone, Debug, Default)]
struct Series {
    live: f64,
    last: f64,
    s0: f64,
    st: f64,
    stt: f64,
    sy: f64,
    sty: f64,
    syy: f64,
}

impl Series {
    /// Integrates the current (constant) live bytes up to `t`.
    fn advance(&mut self, t: f64) {
        let (a, b) = (self.last, t.max(self.last));
        let y = self.live;
        let d1 = b - a;
        let d2 = (b * b - a * a) / 2.0;
        let d3 = (b * b * b - a * a * a) / 3.0;
        self.s0 += d1;
        self.st += d2;
        self.stt += d3;
        self.sy += y * d1;
        self.sty += y * d2;
        self.syy += y * y * d1;
        self.last = b;
    }

    fn fit(&self, end: f64) -> Fit {
        let mut s = self.clone();
        s.advance(end);
        let n = s.s0;
        if n <= 0.0 {
            return Fit::default();
        }
        let mean_t = s.st / n;
        let mean_y = s.sy / n;
        let var_t = s.stt / n - mean_t * mean_t;
        let var_y = s.syy / n - mean_y * mean_y;
        let cov = s.sty / n - mean_t * mean_y;
        if var_t <= f64::EPSILON {
            return Fit::default();
        }
        let slope = cov / var_t;
        // A flat line explains a flat series perfectly but says nothing.
        let r2 = if var_y > f64::EPSILON * mean_y.abs().max(1.0) {
            (cov * cov / (var_t * var_y)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Fit {
            bytes_per_s: slope,
            r2,
        }
    }
}

/// A fitted line: slope in bytes per second and how well it fits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fit {
    pub bytes_per_s: f64,
    /// The coefficient of determination, 0 to 1.
    pub r2: f64,
}

/// An object's growth over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct Growing {
    pub role: Role,
    pub object: String,
    pub fit: Fit,
    pub live_bytes: i64,
}

/// When a fit says "leak": a steady climb that the line explains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub min_bytes_per_min: f64,
    pub min_r2: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_bytes_per_min: 1024.0 * 1024.0,
            min_r2: 0.6,
        }
    }
}

impl Thresholds {
    pub fn flags(&self, growing: &Growing) -> bool {
        growing.fit.bytes_per_s * 60.0 >= self.min_bytes_per_min && growing.fit.r2 >= self.min_r2
    }
}

/// Live bytes per (role, object), over time. Objects are named once
/// ([`GrowthTracker::name`]) and referred to by id after, so a change costs
/// no allocation.
#[derive(Debug, Default)]
pub struct GrowthTracker {
    start_ns: Option<u64>,
    names: Vec<String>,
    ids: HashMap<String, NameId>,
    series: HashMap<(Role, NameId), Series>,
}

impl GrowthTracker {
    /// Starts the window (tracing began) at `time_ns`.
    pub fn start(&mut self, time_ns: u64) {
        self.start_ns.get_or_insert(time_ns);
    }

    fn seconds(&self, time_ns: u64) -> f64 {
        time_ns.saturating_sub(self.start_ns.unwrap_or(time_ns)) as f64 / 1e9
    }

    /// The id of `object`'s name.
    pub fn name(&mut self, object: &str) -> NameId {
        if let Some(&id) = self.ids.get(object) {
            return id;
        }
        let id = NameId(self.names.len() as u32);
        self.names.push(object.to_owned());
        self.ids.insert(object.to_owned(), id);
        id
    }

    pub fn name_str(&self, id: NameId) -> &str {
        &self.names[id.0 as usize]
    }

    /// `object`'s live bytes changed by `delta` at `time_ns`.
    pub fn change(&mut self, time_ns: u64, role: Role, object: NameId, delta: i64) {
        self.start(time_ns);
        let t = self.seconds(time_ns);
        let series = self.series.entry((role, object)).or_default();
        series.advance(t);
        series.live += delta as f64;
    }

    /// Current live bytes per object of `role`.
    pub fn live(&self, role: Role) -> impl Iterator<Item = (&str, i64)> {
        self.series
            .iter()
            .filter(move |((r, _), _)| *r == role)
            .map(|((_, object), s)| (self.name_str(*object), s.live as i64))
    }

    /// Every object's fit over [start, `end_ns`], fastest growing first.
    pub fn fits(&self, end_ns: u64) -> Vec<Growing> {
        let end = self.seconds(end_ns);
        let mut all: Vec<Growing> = self
            .series
            .iter()
            .map(|((role, object), series)| Growing {
                role: *role,
                object: self.name_str(*object).to_owned(),
                fit: series.fit(end),
                live_bytes: series.live as i64,
            })
            .collect();
        all.sort_by(|a, b| {
            b.fit
                .bytes_per_s
                .total_cmp(&a.fit.bytes_per_s)
                .then_with(|| (a.role, &a.object).cmp(&(b.role, &b.object)))
        });
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_steady_leak_has_its_rate_and_a_good_fit() {
        let mut growth = GrowthTracker::default();
        growth.start(0);
        // 64 KiB every 100 ms for 10 s: 640 KiB/s.
        let leak = growth.name("libleak.so");
        for i in 1..=100 {
            growth.change(i * S / 10, Role::Issuer, leak, 65536);
        }
        let fits = growth.fits(10 * S);
        let leak = &fits[0];
        assert_eq!(leak.object, "libleak.so");
        let rate = leak.fit.bytes_per_s;
        assert!((rate - 655_360.0).abs() / 655_360.0 < 0.02, "{rate}");
        assert!(leak.fit.r2 > 0.99, "{}", leak.fit.r2);
        assert!(Thresholds::default().flags(leak));
    }

    #[test]
    fn balanced_traffic_is_not_a_leak() {
        let mut growth = GrowthTracker::default();
        growth.start(0);
        let balanced = growth.name("libbalanced.so");
        for i in 0..100u64 {
            let t = i * S / 10;
            growth.change(t, Role::Issuer, balanced, 65536);
            growth.change(t + S / 20, Role::Issuer, balanced, -65536);
        }
        let fits = growth.fits(10 * S);
        assert!(fits[0].fit.bytes_per_s.abs() < 1000.0, "{:?}", fits[0]);
        assert!(!Thresholds::default().flags(&fits[0]));
        assert_eq!(fits[0].live_bytes, 0);
    }

    #[test]
    fn one_allocation_is_a_step_not_a_trend() {
        let mut growth = GrowthTracker::default();
        growth.start(0);
        let app = growth.name("app");
        growth.change(S, Role::Requester, app, 100 << 20);
        let fits = growth.fits(60 * S);
        // 100 MiB at the first second, flat for the 59 after.
        assert!(fits[0].fit.r2 < 0.6, "{:?}", fits[0]);
        assert!(!Thresholds::default().flags(&fits[0]));
    }

    #[test]
    fn nothing_to_fit() {
        let growth = GrowthTracker::default();
        assert!(growth.fits(S).is_empty());
        let mut growth = GrowthTracker::default();
        let x = growth.name("x");
        growth.change(S, Role::Issuer, x, 10);
        assert_eq!(
            growth.fits(S)[0].fit,
            Fit::default(),
            "a zero-length window"
        );
    }
}
