//! Prometheus metrics of a live recording (`record --metrics-addr`): a
//! [`Recorder`] that keeps gauges, counters and growth rates up to date as
//! events and samples arrive, and the [`Exposition`] a scrape gets, encoded
//! by `prometheus-client` (OpenMetrics, or the classic text format). Pure:
//! `app` serves it over HTTP.
//!
//! What a scrape sees:
//!
//! - Per running process and object (`pid`, `comm`, `role`, `object`): live,
//!   resident and reserved bytes, as of the last sample. Processes that
//!   exited have no series (their memory is gone), nor do objects a process
//!   holds nothing of.
//! - Per object (`role`, `object`, `basis`): the slope of the steady part of
//!   its resident (or live) bytes over the last [`WINDOW`] samples, once the
//!   window is long enough for a verdict (as the report's, see
//!   `--min-window`).
//! - Per running process: its RSS. Counters: traced calls by `call`, lost
//!   records.
//!
//! Label cardinality is bounded: each role has its own `object` label for
//! the `top` objects holding the most resident (then live) bytes in running
//! processes at the last sample; the rest of a process's bytes are summed
//! under `object="other"`, and get no growth rate (slopes do not add up).

mod window;

#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    sync::{Arc, atomic::AtomicU64},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{Basis, Judging};
use crate::{
    account::{Recorder, Role, Sample, timeline::ProcessLive},
    model::{CallKind, Event, StackId},
    resolve::Attribution,
};
pub use window::WINDOW;
use window::Window;

/// An object in one of its roles.
type Object<'s> = (Role, &'s str);

/// The `object` label of the objects outside the top N.
pub const OTHER: &str = "other";

/// How the metrics are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricsConfig {
    /// Objects per role with a label of their own (`--metrics-top`).
    pub top: usize,
    /// When a growth rate is given (`--min-window`, as the report's
    /// verdicts).
    pub judging: Judging,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            top: 50,
            judging: Judging::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    pid: u32,
    comm: String,
    role: Role,
    object: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrowthLabels {
    role: Role,
    object: String,
    basis: Basis,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    pid: u32,
    comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: CallKind,
}

impl EncodeLabelValue for Role {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.name())
    }
}

impl EncodeLabelValue for Basis {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Basis::Resident => "resident",
            Basis::Live => "live",
        })
    }
}

impl EncodeLabelValue for CallKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.name())
    }
}

type RateGauge = Gauge<f64, AtomicU64>;

/// The listener that keeps the metrics. Its metrics are shared with the
/// [`Exposition`] it was made with (`prometheus-client`'s metrics are
/// handles on shared atomics): a sample updates every gauge at once,
/// between two scrapes, since both run on the session's thread.
pub struct MetricsRecorder {
    config: MetricsConfig,
    live: Family<ObjectLabels, Gauge>,
    resident: Family<ObjectLabels, Gauge>,
    reserved: Family<ObjectLabels, Gauge>,
    growth: Family<GrowthLabels, RateGauge>,
    rss: Family<ProcessLabels, Gauge>,
    /// One counter per call, indexed by `CallKind as usize` (handles on the
    /// family's members: counting an event is one atomic add).
    events: Vec<Counter>,
    lost: Counter,
    window: Window,
}

/// The metrics as a scrape gets them.
#[derive(Clone)]
pub struct Exposition(Arc<Registry>);

/// The text formats a scrape can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// OpenMetrics 1.0 (what Prometheus asks for).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (curl, promtool, older
    /// scrapers).
    Text,
}

impl ExpositionFormat {
    /// The format a request's `Accept` header asks for: OpenMetrics if it
    /// names it, else the classic text format.
    pub fn for_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => {
                ExpositionFormat::OpenMetrics
            }
            _ => ExpositionFormat::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExpositionFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
            ExpositionFormat::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode the metrics")]
pub struct EncodeError(#[from] std::fmt::Error);

impl Exposition {
    pub fn encode(&self, format: ExpositionFormat) -> Result<String, EncodeError> {
        let mut text = String::new();
        match format {
            ExpositionFormat::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.0)?
            }
            ExpositionFormat::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.0)?
            }
        }
        Ok(text)
    }
}

/// Records the kernel dropped (its ring buffer was full), read from its
/// counters now and then: they count towards `mmap_trace_lost_records`.
pub struct KernelLost {
    lost: Counter,
    seen: u64,
}

impl KernelLost {
    /// The kernel's total so far.
    pub fn update(&mut self, total: u64) {
        self.lost.inc_by(total.saturating_sub(self.seen));
        self.seen = self.seen.max(total);
    }
}

impl MetricsRecorder {
    pub fn new(config: MetricsConfig) -> (MetricsRecorder, Exposition) {
        let events = Family::<CallLabels, Counter>::default();
        let recorder = MetricsRecorder {
            config,
            live: Family::default(),
            resident: Family::default(),
            reserved: Family::default(),
            growth: Family::default(),
            rss: Family::default(),
            // Every call has its series from the start, 0 or not.
            events: CallKind::ALL
                .iter()
                .map(|&call| events.get_or_create_owned(&CallLabels { call }))
                .collect(),
            lost: Counter::default(),
            window: Window::default(),
        };
        let mut registry = Registry::with_prefix("mmap_trace");
        let per_object = "Per traced process (pid, comm) and object (role issuer: the object that \
                          made the call; requester: the code that asked for it), as of the last \
                          sample";
        registry.register_with_unit(
            "live",
            format!("Bytes mapped and still mapped. {per_object}"),
            Unit::Bytes,
            recorder.live.clone(),
        );
        registry.register_with_unit(
            "resident",
            format!("Resident bytes (pages in memory) of live mappings. {per_object}"),
            Unit::Bytes,
            recorder.resident.clone(),
        );
        registry.register_with_unit(
            "reserved",
            format!("Live bytes mapped PROT_NONE (address space set aside). {per_object}"),
            Unit::Bytes,
            recorder.reserved.clone(),
        );
        registry.register_with_unit(
            "growth",
            "The slope of the steady part of an object's resident (basis resident) or live \
             (basis live) bytes over the last samples, over all traced processes; given once the \
             window is long enough to judge (--min-window)",
            Unit::Other("bytes_per_minute".into()),
            recorder.growth.clone(),
        );
        registry.register_with_unit(
            "process_rss",
            "The resident set (VmRSS) of a traced process, as of the last sample",
            Unit::Bytes,
            recorder.rss.clone(),
        );
        registry.register("events", "Traced calls, failed ones included", events);
        registry.register(
            "lost_records",
            "Records lost on the way from the kernel (its ring buffer was full) or that did not \
             decode",
            recorder.lost.clone(),
        );
        (recorder, Exposition(Arc::new(registry)))
    }

    /// What feeds the kernel's lost records into the lost counter.
    pub fn kernel_lost(&self) -> KernelLost {
        KernelLost {
            lost: self.lost.clone(),
            seen: 0,
        }
    }

    /// Every gauge from `sample`.
    fn update(&mut self, sample: &Sample) {
        self.window.push(sample);
        let top = top_objects(sample, self.config.top);
        for family in [&self.live, &self.resident, &self.reserved] {
            family.clear();
        }
        for (labels, held) in per_process(sample, &top) {
            self.live.get_or_create(&labels).set(held.live);
            self.resident.get_or_create(&labels).set(held.resident);
            self.reserved.get_or_create(&labels).set(held.reserved);
        }
        self.rss.clear();
        for rss in &sample.rss {
            let labels = ProcessLabels {
                pid: rss.pid,
                comm: comm(sample, rss.pid),
            };
            self.rss.get_or_create(&labels).set(to_i64(rss.vm_rss));
        }
        if let Some(rows) = self.window.growth(&top, &self.config.judging) {
            self.growth.clear();
            for row in rows {
                let labels = GrowthLabels {
                    role: row.role,
                    object: row.object.to_owned(),
                    basis: row.basis,
                };
                self.growth.get_or_create(&labels).set(row.bytes_per_min);
            }
        }
    }
}

impl Recorder for MetricsRecorder {
    fn event(&mut self, event: &Event) {
        if let Event::Syscall(call) = event {
            self.events[call.call.kind() as usize].inc();
        }
    }

    fn stack_seen(&mut self, _: StackId, _: &Attribution) {}

    fn lost(&mut self, records: u64) {
        self.lost.inc_by(records);
    }

    fn sample(&mut self, sample: &Sample) {
        self.update(sample);
    }
}

/// The objects of each role with labels of their own: the `top` holding
/// the most resident bytes, then live bytes, in the processes running at
/// `sample` (ties by name, so the choice is stable).
fn top_objects(sample: &Sample, top: usize) -> HashSet<Object<'_>> {
    // (resident, live) bytes.
    let mut held: HashMap<Object, (u64, i64)> = HashMap::new();
    for process in running(sample) {
        for role in Role::BOTH {
            let (live, resident, _) = by_role(process, role);
            for (object, &bytes) in live {
                held.entry((role, object)).or_default().1 += bytes;
            }
            for (object, &bytes) in resident {
                held.entry((role, object)).or_default().0 += bytes;
            }
        }
    }
    let mut ranked: Vec<(Object, (u64, i64))> = held.into_iter().collect();
    ranked.sort_by(|(a, a_bytes), (b, b_bytes)| b_bytes.cmp(a_bytes).then_with(|| a.cmp(b)));
    let mut chosen = HashSet::new();
    for role in Role::BOTH {
        chosen.extend(
            ranked
                .iter()
                .filter(|((r, _), _)| *r == role)
                .take(top)
                .map(|(key, _)| *key),
        );
    }
    chosen
}

/// What a process holds of an object (or of the objects summed as
/// `other`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Held {
    live: i64,
    resident: i64,
    reserved: i64,
}

/// Live, resident and reserved bytes per running process and object, the
/// objects outside `top` summed as [`OTHER`].
fn per_process(sample: &Sample, top: &HashSet<Object>) -> HashMap<ObjectLabels, Held> {
    let mut rows: HashMap<ObjectLabels, Held> = HashMap::new();
    for process in running(sample) {
        let comm = comm(sample, process.pid);
        for role in Role::BOTH {
            let (live, resident, reserved) = by_role(process, role);
            let mut add = |object: &str, held: Held| {
                let object = if top.contains(&(role, object)) {
                    object
                } else {
                    OTHER
                };
                let row = rows
                    .entry(ObjectLabels {
                        pid: process.pid,
                        comm: comm.clone(),
                        role,
                        object: object.to_owned(),
                    })
                    .or_default();
                row.live += held.live;
                row.resident += held.resident;
                row.reserved += held.reserved;
            };
            for (object, &live) in live {
                add(
                    object,
                    Held {
                        live,
                        ..Held::default()
                    },
                );
            }
            for (object, &bytes) in resident {
                let resident = to_i64(bytes);
                add(
                    object,
                    Held {
                        resident,
                        ..Held::default()
                    },
                );
            }
            for (object, &bytes) in reserved {
                let reserved = to_i64(bytes);
                add(
                    object,
                    Held {
                        reserved,
                        ..Held::default()
                    },
                );
            }
        }
    }
    rows
}

type ByObject<T> = std::collections::BTreeMap<String, T>;

fn by_role(process: &ProcessLive, role: Role) -> (&ByObject<i64>, &ByObject<u64>, &ByObject<u64>) {
    match role {
        Role::Issuer => (
            &process.by_issuer,
            &process.resident_by_issuer,
            &process.reserved_by_issuer,
        ),
        Role::Requester => (
            &process.by_requester,
            &process.resident_by_requester,
            &process.reserved_by_requester,
        ),
    }
}

/// The processes of `sample` that ran then (an exited process has an RSS
/// no longer, and its memory is gone).
fn running(sample: &Sample) -> impl Iterator<Item = &ProcessLive> {
    let running: HashSet<u32> = sample.rss.iter().map(|r| r.pid).collect();
    sample
        .processes
        .iter()
        .filter(move |p| running.contains(&p.pid))
}

fn comm(sample: &Sample, pid: u32) -> String {
    sample.comms.get(&pid).cloned().unwrap_or_default()
}

/// Bytes as a gauge holds them (i64: 8 EiB is out of reach).
fn to_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
