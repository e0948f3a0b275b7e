//! Who is growing: verdicts about resident memory, from the time series.
//!
//! - No verdict without evidence: a window shorter than the minimum, or
//!   with too few samples of running processes, is not judged: nothing is
//!   flagged and no rate is given.
//! - An object is **flagged** when its resident bytes grow steadily
//!   (`account::growth`: the slope of the steady part, ≥ 1 MiB/min with a
//!   good fit). Mapped bytes that grow while resident bytes do not are
//!   **address space growing**: reported, but no leak verdict.
//! - The processes' RSS slope over the same samples says how much of the
//!   growth the flagged objects explain.

use std::collections::{BTreeMap, BTreeSet};

use super::{Basis, GrowthRow, RssGrowth, StackRow, build::Judging, patterns::Pattern};
use crate::account::{Role, Sample, SteadyFit, fit_steady};

/// Who is growing: whether growth could be judged (and if not, why), a
/// row per object, and the RSS growth the flagged rows explain.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdicts {
    pub judged: bool,
    pub note: Option<String>,
    pub rows: Vec<GrowthRow>,
    pub rss: Option<RssGrowth>,
}

/// Who is growing so far, from the samples alone: what a live view shows
/// while the session runs, before any stack is resolved. The rows are the
/// report's, without hints (patterns match resolved stacks) and without
/// resident bytes per row (the last sample has those).
pub fn so_far(timeline: &[Sample], judging: &Judging) -> Verdicts {
    verdicts(timeline, &[], &[], judging)
}

/// The samples taken while some traced process ran.
fn running(timeline: &[Sample]) -> Vec<&Sample> {
    timeline.iter().filter(|s| !s.rss.is_empty()).collect()
}

pub(super) fn verdicts(
    timeline: &[Sample],
    stacks: &[StackRow],
    patterns: &[Pattern],
    judging: &Judging,
) -> Verdicts {
    let running = running(timeline);
    let window = match (running.first(), running.last()) {
        (Some(first), Some(last)) => last.time_s - first.time_s,
        _ => 0.0,
    };
    let judged = running.len() >= judging.min_samples && window >= judging.min_window_s;
    let note = (!judged).then(|| {
        format!(
            "growth cannot be judged yet: {window:.1} s and {} sample{} of running processes were \
             traced, and a verdict needs {} s and {} samples (see --min-window)",
            running.len(),
            if running.len() == 1 { "" } else { "s" },
            judging.min_window_s,
            judging.min_samples,
        )
    });
    let mut rows: Vec<GrowthRow> = objects(timeline)
        .into_iter()
        .map(|(role, object)| row(timeline, stacks, patterns, judging, judged, role, object))
        .collect();
    rows.sort_by(|a, b| {
        rank(b)
            .partial_cmp(&rank(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.live_bytes.cmp(&a.live_bytes))
            .then_with(|| (a.role, &a.object).cmp(&(b.role, &b.object)))
    });
    let rss = judged.then(|| rss_growth(&running, &rows)).flatten();
    Verdicts {
        judged,
        note,
        rows,
        rss,
    }
}

/// Flagged first, by resident growth; then address space growing, by
/// mapped growth; then the rest by resident growth.
fn rank(row: &GrowthRow) -> (u8, f64) {
    let resident = row.resident_bytes_per_min.unwrap_or(f64::MIN);
    if row.flagged {
        (2, resident)
    } else if row.address_space_growing {
        (1, row.bytes_per_min.unwrap_or(f64::MIN))
    } else {
        (0, resident)
    }
}

/// Every (role, object) any sample names.
fn objects(timeline: &[Sample]) -> BTreeSet<(Role, String)> {
    let mut objects = BTreeSet::new();
    for sample in timeline {
        for (role, live, resident) in [
            (Role::Issuer, &sample.by_issuer, &sample.resident_by_issuer),
            (
                Role::Requester,
                &sample.by_requester,
                &sample.resident_by_requester,
            ),
        ] {
            objects.extend(live.keys().map(|o| (role, o.clone())));
            objects.extend(resident.keys().map(|o| (role, o.clone())));
        }
    }
    objects
}

fn row(
    timeline: &[Sample],
    stacks: &[StackRow],
    patterns: &[Pattern],
    judging: &Judging,
    judged: bool,
    role: Role,
    object: String,
) -> GrowthRow {
    let live_points: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| {
            (
                s.time_s,
                by_role(s, role).get(&object).copied().unwrap_or(0) as f64,
            )
        })
        .collect();
    let resident_points: Vec<(f64, f64)> = timeline
        .iter()
        .filter_map(|s| Some((s.time_s, *resident_by_role(s, role).get(&object)? as f64)))
        .collect();
    let live_fit = judged.then(|| fit_steady(&live_points)).flatten();
    let resident_fit = judged.then(|| fit_steady(&resident_points)).flatten();
    let grows = |fit: Option<SteadyFit>| fit.is_some_and(|f| judging.thresholds.grows(&f));
    let flagged = grows(resident_fit);
    let address_space_growing = !flagged && grows(live_fit);
    let of_object = |stack: &&StackRow| match role {
        Role::Issuer => stack.issuer == object,
        Role::Requester => stack.requester == object,
    };
    let resident_bytes = stacks
        .iter()
        .filter(of_object)
        .filter_map(|s| s.resident_bytes)
        .fold(None, |total: Option<u64>, bytes| {
            Some(total.unwrap_or(0) + bytes)
        });
    let since_s = if flagged {
        resident_fit.map(|f| f.since_s)
    } else {
        live_fit.or(resident_fit).map(|f| f.since_s)
    };
    let mut row = GrowthRow {
        role,
        bytes_per_min: live_fit.map(|f| f.bytes_per_min()),
        fit_r2: live_fit.map(|f| f.r2),
        live_bytes: timeline
            .last()
            .and_then(|s| by_role(s, role).get(&object).copied())
            .unwrap_or(0),
        resident_bytes,
        resident_bytes_per_min: resident_fit.map(|f| f.bytes_per_min()),
        resident_fit_r2: resident_fit.map(|f| f.r2),
        basis: judged.then_some(if resident_points.is_empty() {
            Basis::Live
        } else {
            Basis::Resident
        }),
        since_s,
        flagged,
        address_space_growing,
        hints: Vec::new(),
        patterns: Vec::new(),
        object: object.clone(),
    };
    if flagged {
        for pattern in patterns {
            let holds = stacks.iter().filter(of_object).any(|stack| {
                let symbols = stack.frames.iter().filter_map(|f| f.symbol.as_deref());
                (stack.live_bytes > 0 || stack.resident_bytes.unwrap_or(0) > 0)
                    && pattern.matches(&stack.issuer, &stack.requester, symbols)
            });
            if holds {
                row.patterns.push(pattern.name.clone());
                row.hints.extend(pattern.hints.iter().cloned());
            }
        }
    }
    row
}

fn by_role(sample: &Sample, role: Role) -> &BTreeMap<String, i64> {
    match role {
        Role::Issuer => &sample.by_issuer,
        Role::Requester => &sample.by_requester,
    }
}

fn resident_by_role(sample: &Sample, role: Role) -> &BTreeMap<String, u64> {
    match role {
        Role::Issuer => &sample.resident_by_issuer,
        Role::Requester => &sample.resident_by_requester,
    }
}

/// The RSS slope of the running processes, and the flagged issuers' share
/// of it (issuers only: every byte has one issuer and one requester).
fn rss_growth(running: &[&Sample], rows: &[GrowthRow]) -> Option<RssGrowth> {
    let series = |value: fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        running
            .iter()
            .map(|s| (s.time_s, value(s) as f64))
            .collect()
    };
    let rss = fit_steady(&series(|s| s.rss.iter().map(|r| r.vm_rss).sum()))?;
    let slope =
        |value: fn(&Sample) -> u64| fit_steady(&series(value)).map_or(0.0, |f| f.bytes_per_min());
    let explained: f64 = rows
        .iter()
        .filter(|r| r.flagged && r.role == Role::Issuer)
        .filter_map(|r| r.resident_bytes_per_min)
        .sum();
    let rss_per_min = rss.bytes_per_min();
    Some(RssGrowth {
        bytes_per_min: rss_per_min,
        fit_r2: rss.r2,
        since_s: rss.since_s,
        explained_bytes_per_min: explained,
        explained_fraction: (rss_per_min > 0.0).then(|| explained / rss_per_min),
        file_bytes_per_min: slope(|s| s.rss.iter().map(|r| r.rss_file).sum()),
        untraced_anon_bytes_per_min: slope(|s| s.rss.iter().map(|r| r.unexplained_anon).sum()),
    })
}
