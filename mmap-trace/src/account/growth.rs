//! Who is growing: a robust slope of a series of samples, over its steady
//! part.
//!
//! The question is whether memory grows *steadily*, and by how much per
//! minute. Two things make an ordinary least-squares line over the whole
//! window answer it badly: a start-up burst (a service loads its models,
//! fills its caches) weighs as much as an hour of slow leaking, and a
//! single large step (a reservation) looks like a slope. So:
//!
//! 1. **Where the steady part starts.** Fit the second half of the series
//!    with Theil–Sen (the median of the slopes between every pair of
//!    points: it ignores up to ~29% of points that do not follow the
//!    trend), take the residuals of every point against that line, and
//!    let the steady part start after the last point of the *first* half
//!    that lies further from it than the noise allows (four robust
//!    standard deviations, 1.4826 × the median absolute residual, and at
//!    least 2% of the second half's range or 64 KiB). A start-up burst
//!    ends there; the second half is taken as steady.
//! 2. **The slope of the steady part**: Theil–Sen again, over the points
//!    from there on, with how well the line explains them (r², 1 minus
//!    the residual sum of squares over the total).
//!
//! Theil–Sen looks at every pair of points, so a series is thinned to at
//! most `MAX_POINTS` evenly spread samples first: an hour at one sample a
//! second costs the same as four minutes.

/// Points a fit looks at, at most.
const MAX_POINTS: usize = 240;

/// A line through the steady part of a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SteadyFit {
    pub bytes_per_s: f64,
    /// How well the line explains the steady part (0 to 1; 0 for a flat
    /// series, which a line explains but says nothing about).
    pub r2: f64,
    /// When the steady part starts (seconds, as the points are timed).
    pub since_s: f64,
    /// Points in the steady part.
    pub points: usize,
}

impl SteadyFit {
    pub fn bytes_per_min(&self) -> f64 {
        self.bytes_per_s * 60.0
    }
}

/// When a fit says "grows steadily".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub min_bytes_per_min: f64,
    pub min_r2: f64,
    /// Points the steady part needs.
    pub min_points: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_bytes_per_min: 1024.0 * 1024.0,
            min_r2: 0.6,
            min_points: 5,
        }
    }
}

impl Thresholds {
    pub fn grows(&self, fit: &SteadyFit) -> bool {
        fit.bytes_per_min() >= self.min_bytes_per_min
            && fit.r2 >= self.min_r2
            && fit.points >= self.min_points
    }
}

/// The steady fit of `points` (time in seconds, bytes), in time order;
/// `None` with fewer than three points.
pub fn fit_steady(points: &[(f64, f64)]) -> Option<SteadyFit> {
    let points = thin(points);
    let n = points.len();
    if n < 3 {
        return None;
    }
    let second_half = &points[n / 2..];
    let (slope, intercept) = theil_sen(second_half);
    let residual = |&(t, y): &(f64, f64)| y - (intercept + slope * t);
    let mut deviations: Vec<f64> = second_half.iter().map(|p| residual(p).abs()).collect();
    let spread = 1.4826 * median(&mut deviations);
    let range = second_half.iter().map(|p| p.1).fold(f64::MIN, f64::max)
        - second_half.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let tolerance = (4.0 * spread).max(0.02 * range).max(64.0 * 1024.0);
    let start = points[..n / 2]
        .iter()
        .rposition(|p| residual(p).abs() > tolerance)
        .map_or(0, |last_outlier| last_outlier + 1);
    let steady = &points[start..];
    let (slope, intercept) = theil_sen(steady);
    let mean = steady.iter().map(|p| p.1).sum::<f64>() / steady.len() as f64;
    let total: f64 = steady.iter().map(|p| (p.1 - mean).powi(2)).sum();
    let unexplained: f64 = steady
        .iter()
        .map(|&(t, y)| (y - intercept - slope * t).powi(2))
        .sum();
    let r2 = if total > f64::EPSILON * mean.abs().max(1.0) {
        (1.0 - unexplained / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(SteadyFit {
        bytes_per_s: slope,
        r2,
        since_s: steady[0].0,
        points: steady.len(),
    })
}

/// At most MAX_POINTS of `points`, evenly spread, first and last kept.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let last = points.len() - 1;
    (0..MAX_POINTS)
        .map(|i| points[i * last / (MAX_POINTS - 1)])
        .collect()
}

/// Theil–Sen: the median slope over all pairs, and the median intercept
/// for it. Pairs at the same time are skipped.
fn theil_sen(points: &[(f64, f64)]) -> (f64, f64) {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, &(t1, y1)) in points.iter().enumerate() {
        for &(t2, y2) in &points[i + 1..] {
            if t2 > t1 {
                slopes.push((y2 - y1) / (t2 - t1));
            }
        }
    }
    let slope = if slopes.is_empty() {
        0.0
    } else {
        median(&mut slopes)
    };
    let mut intercepts: Vec<f64> = points.iter().map(|&(t, y)| y - slope * t).collect();
    (slope, median(&mut intercepts))
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn series(from: f64, to: f64, step: f64, bytes: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        let mut points = Vec::new();
        let mut t = from;
        while t <= to + 1e-9 {
            points.push((t, bytes(t)));
            t += step;
        }
        points
    }

    #[test]
    fn a_steady_leak_has_its_rate_and_a_good_fit() {
        // 64 KiB every 100 ms, sampled every second for 20 s: 640 KiB/s.
        let points = series(0.0, 20.0, 1.0, |t| (t * 10.0).floor() * 65536.0);
        let fit = fit_steady(&points).unwrap();
        assert!(
            (fit.bytes_per_s - 655_360.0).abs() / 655_360.0 < 0.02,
            "{fit:?}"
        );
        assert!(fit.r2 > 0.99, "{fit:?}");
        assert_eq!(fit.since_s, 0.0);
        assert!(Thresholds::default().grows(&fit));
    }

    #[test]
    fn a_start_up_burst_does_not_hide_the_climb_after_it() {
        // 128 MiB in the first half second, then 10 MiB/s, sampled every
        // 250 ms for 6 s.
        let points = series(0.0, 6.0, 0.25, |t| {
            if t < 0.5 {
                t * 256.0 * MIB
            } else {
                128.0 * MIB + (t - 0.5) * 10.0 * MIB
            }
        });
        let fit = fit_steady(&points).unwrap();
        let rate = fit.bytes_per_s / MIB;
        assert!((rate - 10.0).abs() / 10.0 < 0.05, "{fit:?}");
        assert!(
            fit.since_s >= 0.5,
            "the steady part starts after the burst: {fit:?}"
        );
        assert!(fit.r2 > 0.99);
        // Least squares over the whole window would say 26 MiB/s.
    }

    #[test]
    fn one_step_is_not_a_trend() {
        // 100 MiB at the first second, flat for the 59 after.
        let points = series(0.0, 60.0, 1.0, |t| if t >= 1.0 { 100.0 * MIB } else { 0.0 });
        let fit = fit_steady(&points).unwrap();
        assert_eq!(fit.bytes_per_s, 0.0, "{fit:?}");
        assert!(!Thresholds::default().grows(&fit));
        // A step halfway through a short window is no trend either.
        let points = series(0.0, 10.0, 1.0, |t| {
            if t > 5.5 { 64.0 * 1024.0 * MIB } else { 0.0 }
        });
        let fit = fit_steady(&points).unwrap();
        assert!(!Thresholds::default().grows(&fit), "{fit:?}");
    }

    #[test]
    fn balanced_traffic_is_not_growth() {
        let points = series(0.0, 20.0, 0.5, |t| {
            if ((t * 2.0) as u64).is_multiple_of(2) {
                65536.0
            } else {
                0.0
            }
        });
        let fit = fit_steady(&points).unwrap();
        assert!(fit.bytes_per_s.abs() < 1000.0, "{fit:?}");
        assert!(!Thresholds::default().grows(&fit));
    }

    #[test]
    fn long_series_are_thinned_and_short_ones_refused() {
        let points = series(0.0, 3600.0, 1.0, |t| t * MIB);
        let fit = fit_steady(&points).unwrap();
        assert!((fit.bytes_per_s - MIB).abs() < 1.0, "{fit:?}");
        assert_eq!(fit.points, MAX_POINTS);
        assert_eq!(fit_steady(&points[..2]), None);
        let flat = series(0.0, 10.0, 1.0, |_| 5.0 * MIB);
        let fit = fit_steady(&flat).unwrap();
        assert_eq!((fit.bytes_per_s, fit.r2), (0.0, 0.0));
    }
}
