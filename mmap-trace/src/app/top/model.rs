//! What the live view shows, computed from the books between ticks: pure,
//! so it is tested without a terminal or a kernel.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    account::{Book, Role, Sample},
    report::{GrowthRow, Judging, RssGrowth, growth_so_far},
};

/// Samples the verdict looks at, at most: the growth fit thins its series
/// to this many anyway, and an hour of samples must cost what four
/// minutes do.
const MAX_SAMPLES: usize = 240;

/// One frame of the live view.
#[derive(Clone, Debug, PartialEq)]
pub struct Screen {
    pub elapsed: Duration,
    pub interval: Duration,
    pub samples: usize,
    /// Calls traced so far, and per second over the last interval.
    pub events: u64,
    pub events_per_s: Option<f64>,
    /// Records lost on the way (the kernel's ring buffer, decoding).
    pub lost: u64,
    /// Running processes, largest RSS first.
    pub processes: Vec<ProcessLine>,
    /// Traced processes that have exited.
    pub exited: usize,
    pub growth: Growth,
    /// Largest resident first, then largest live.
    pub requesters: Vec<ObjectLine>,
    pub issuers: Vec<ObjectLine>,
}

/// A running traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessLine {
    pub pid: u32,
    pub comm: String,
    /// VmRSS at the last sample (`None` before one).
    pub rss: Option<u64>,
    /// Live bytes its traced mappings held at the last sample.
    pub live: i64,
}

/// Who is growing, so far.
#[derive(Clone, Debug, PartialEq)]
pub enum Growth {
    /// Not enough evidence yet, and why.
    NotYet(String),
    Judged {
        /// Flagged rows first, then address space growing.
        rows: Vec<GrowthLine>,
        rss: Option<RssGrowth>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Resident memory grows steadily.
    Growing,
    /// Mapped bytes grow, resident ones do not: no leak verdict.
    AddressSpace,
}

/// An object that grows.
#[derive(Clone, Debug, PartialEq)]
pub struct GrowthLine {
    pub verdict: Verdict,
    pub role: Role,
    pub object: String,
    /// The slope of what grows (resident bytes, or mapped bytes for
    /// address space) over its steady part.
    pub bytes_per_min: f64,
    pub fit_r2: f64,
    pub since_s: Option<f64>,
    pub live: i64,
    pub resident: Option<u64>,
}

/// An object's bytes, as requester or as issuer.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectLine {
    pub object: String,
    pub live: i64,
    /// At the last sample; `None` when only exited processes hold it.
    pub resident: Option<u64>,
    /// The slope of its resident bytes, once growth can be judged.
    pub resident_per_min: Option<f64>,
    pub flagged: bool,
}

/// What the books do not know: the time, the kernel's losses, the rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moment {
    pub elapsed: Duration,
    pub interval: Duration,
    pub kernel_lost: u64,
    pub events_per_s: Option<f64>,
}

impl Screen {
    pub fn build(book: &Book, moment: Moment, judging: &Judging) -> Screen {
        let last = book.timeline.last();
        let verdicts = growth_so_far(&recent(&book.timeline), judging);
        let row_of: BTreeMap<(Role, &str), &GrowthRow> = verdicts
            .rows
            .iter()
            .map(|row| ((row.role, row.object.as_str()), row))
            .collect();
        let growth = if verdicts.judged {
            Growth::Judged {
                rows: verdicts
                    .rows
                    .iter()
                    .filter_map(|row| growth_line(row, last))
                    .collect(),
                rss: verdicts.rss.clone(),
            }
        } else {
            Growth::NotYet(verdicts.note.clone().unwrap_or_default())
        };
        let objects = |role| {
            let mut lines: Vec<ObjectLine> = object_bytes(book, last, role)
                .into_iter()
                .map(|(object, (live, resident))| {
                    let row = row_of.get(&(role, object.as_str()));
                    ObjectLine {
                        resident_per_min: row.and_then(|r| r.resident_bytes_per_min),
                        flagged: row.is_some_and(|r| r.flagged),
                        object,
                        live,
                        resident,
                    }
                })
                .collect();
            lines.sort_by(|a, b| {
                (b.resident.unwrap_or(0), b.live, &a.object).cmp(&(
                    a.resident.unwrap_or(0),
                    a.live,
                    &b.object,
                ))
            });
            lines
        };
        let (processes, exited) = processes(book, last);
        let counts = &book.collector.counts;
        Screen {
            elapsed: moment.elapsed,
            interval: moment.interval,
            samples: book.timeline.len(),
            events: counts.calls.total(),
            events_per_s: moment.events_per_s,
            lost: counts.lost + moment.kernel_lost,
            processes,
            exited,
            growth,
            requesters: objects(Role::Requester),
            issuers: objects(Role::Issuer),
        }
    }
}

/// At most MAX_SAMPLES of `timeline`, evenly spread, the first and the
/// last kept.
fn recent(timeline: &[Sample]) -> Vec<Sample> {
    if timeline.len() <= MAX_SAMPLES {
        return timeline.to_vec();
    }
    let last = timeline.len() - 1;
    (0..MAX_SAMPLES)
        .map(|i| timeline[i * last / (MAX_SAMPLES - 1)].clone())
        .collect()
}

fn growth_line(row: &GrowthRow, last: Option<&Sample>) -> Option<GrowthLine> {
    let (verdict, bytes_per_min, fit_r2) = if row.flagged {
        (
            Verdict::Growing,
            row.resident_bytes_per_min?,
            row.resident_fit_r2?,
        )
    } else if row.address_space_growing {
        (Verdict::AddressSpace, row.bytes_per_min?, row.fit_r2?)
    } else {
        return None;
    };
    Some(GrowthLine {
        verdict,
        role: row.role,
        object: row.object.clone(),
        bytes_per_min,
        fit_r2,
        since_s: row.since_s,
        live: row.live_bytes,
        resident: last.and_then(|s| resident_of(s, row.role).get(&row.object).copied()),
    })
}

fn resident_of(sample: &Sample, role: Role) -> &BTreeMap<String, u64> {
    match role {
        Role::Issuer => &sample.resident_by_issuer,
        Role::Requester => &sample.resident_by_requester,
    }
}

/// Live bytes now and resident bytes at the last sample, per object of
/// `role` holding either.
fn object_bytes(
    book: &Book,
    last: Option<&Sample>,
    role: Role,
) -> BTreeMap<String, (i64, Option<u64>)> {
    let mut objects: BTreeMap<String, (i64, Option<u64>)> = book
        .live
        .live(role)
        .filter(|(_, live)| *live != 0)
        .map(|(object, live)| (object.to_owned(), (live, None)))
        .collect();
    if let Some(sample) = last {
        for (object, &resident) in resident_of(sample, role) {
            objects.entry(object.clone()).or_default().1 = Some(resident);
        }
    }
    objects.retain(|_, (live, resident)| *live != 0 || resident.unwrap_or(0) != 0);
    objects
}

/// The running processes, largest RSS first, and how many have exited.
fn processes(book: &Book, last: Option<&Sample>) -> (Vec<ProcessLine>, usize) {
    let mut running = Vec::new();
    let mut exited = 0;
    for process in book.collector.processes() {
        if process.exited() {
            exited += 1;
            continue;
        }
        let pid = process.pid;
        running.push(ProcessLine {
            pid,
            comm: process.comm.clone(),
            rss: last.and_then(|s| s.rss.iter().find(|r| r.pid == pid).map(|r| r.vm_rss)),
            live: last
                .and_then(|s| s.processes.iter().find(|p| p.pid == pid))
                .map_or(0, |p| p.live_bytes),
        });
    }
    running.sort_by(|a, b| (b.rss, a.pid).cmp(&(a.rss, b.pid)));
    (running, exited)
}

/// Events per second between the last two samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    last: Option<(Duration, u64)>,
    per_s: Option<f64>,
}

impl Rate {
    /// `total` events at `at`; the rate since the last update.
    pub fn update(&mut self, at: Duration, total: u64) -> Option<f64> {
        if let Some((then, before)) = self.last
            && at > then
        {
            self.per_s = Some(total.saturating_sub(before) as f64 / (at - then).as_secs_f64());
        }
        self.last = Some((at, total));
        self.per_s
    }

    pub fn per_s(&self) -> Option<f64> {
        self.per_s
    }
}

#[cfg(test)]
pub(super) mod tests;
