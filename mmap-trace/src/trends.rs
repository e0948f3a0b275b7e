//! Following live bytes over time while tracing: each stack's issuer and
//! requester are worked out when the stack first appears, every change is
//! fed to the growth fits, and a sample is taken every `--interval`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use crate::{
    attribute::{Attribution, Rules},
    collector::Collector,
    growth::{GrowthTracker, Role},
    ledger::Origin,
    loader::monotonic_ns,
    modules::ModuleMaps,
    report::UNKNOWN,
    residency::Residency,
    resolve::{CodeFiles, attribute_raw},
    stacks::StackId,
    timeline::{self, ProcessLive, Sample},
};

pub struct Trends {
    pub growth: GrowthTracker,
    pub timeline: Vec<Sample>,
    rules: Rules,
    interval_ns: u64,
    next_sample_ns: u64,
    started_ns: u64,
    attribution: HashMap<StackId, Attribution>,
    code: CodeFiles,
    /// Resident bytes in each stack's live ranges, at the last sample its
    /// process was alive for.
    pub resident: HashMap<StackId, u64>,
    /// Live bytes by object, per process.
    per_process: BTreeMap<u32, ProcessLive>,
}

impl Trends {
    pub fn new(rules: Rules, interval: Duration) -> Self {
        let now = monotonic_ns();
        Trends {
            // The fits' window opens at the first event.
            growth: GrowthTracker::default(),
            timeline: Vec::new(),
            rules,
            interval_ns: interval.as_nanos() as u64,
            next_sample_ns: now,
            started_ns: now,
            attribution: HashMap::new(),
            code: CodeFiles::default(),
            resident: HashMap::new(),
            per_process: BTreeMap::new(),
        }
    }

    /// Feeds the live-byte changes of the event the collector just handled;
    /// returns the stacks it attributed for the first time.
    pub fn on_event(
        &mut self,
        collector: &Collector,
        modules: &ModuleMaps,
        time_ns: u64,
    ) -> Vec<(StackId, Attribution)> {
        let mut first_seen = Vec::new();
        for &(id, delta) in collector.last_deltas() {
            let attribution = self.attribution.entry(id).or_insert_with(|| {
                let (raw, seen) = collector.stacks.get(id);
                let attribution = attribute_raw(raw, seen, modules, &self.rules, &mut self.code);
                first_seen.push((id, attribution.clone()));
                attribution
            });
            let issuer = attribution.issuer.as_deref().unwrap_or(UNKNOWN);
            let requester = attribution.requester.as_deref().unwrap_or(UNKNOWN);
            let pid = collector.stacks.get(id).0.pid;
            let process = self.per_process.entry(pid).or_default();
            process.pid = pid;
            process.change(issuer, requester, delta);
            self.growth.change(time_ns, Role::Issuer, issuer, delta);
            self.growth
                .change(time_ns, Role::Requester, requester, delta);
        }
        first_seen
    }

    /// Takes a sample if one is due (and always when `force`); returns it.
    pub fn sample_if_due(&mut self, collector: &Collector, force: bool) -> Option<&Sample> {
        let now = monotonic_ns();
        if now < self.next_sample_ns && !force {
            return None;
        }
        self.next_sample_ns = now + self.interval_ns;
        let live: Vec<u32> = collector
            .processes()
            .filter(|p| !p.exited())
            .map(|p| p.pid)
            .collect();
        let traced_resident = self.measure_residency(collector, &live);
        let mut sample = timeline::sample(
            (now - self.started_ns) as f64 / 1e9,
            &self.growth,
            collector.bytes.mapped,
            collector.bytes.unmapped,
            live.iter().copied(),
        );
        sample.processes = self
            .per_process
            .values()
            .filter(|p| p.live_bytes != 0)
            .cloned()
            .collect();
        for rss in &mut sample.rss {
            rss.traced_resident = traced_resident.get(&rss.pid).copied().unwrap_or(0);
            rss.unexplained_anon = rss.rss_anon.saturating_sub(rss.traced_resident);
        }
        self.timeline.push(sample);
        self.timeline.last()
    }

    /// Resident bytes per stack in the live ranges of running processes
    /// (stacks of exited processes keep their last figure); returns the
    /// traced resident bytes per process.
    fn measure_residency(&mut self, collector: &Collector, live: &[u32]) -> HashMap<u32, u64> {
        let live_pids: HashSet<u32> = live.iter().copied().collect();
        self.resident
            .retain(|id, _| !live_pids.contains(&collector.stacks.get(*id).0.pid));
        let mut per_process = HashMap::new();
        for process in collector.processes().filter(|p| live_pids.contains(&p.pid)) {
            let Some(residency) = Residency::open(process.pid) else {
                continue;
            };
            let mut total = 0;
            for region in process.space.regions() {
                let Origin::Traced(id) = region.origin else {
                    continue;
                };
                let Some(bytes) = residency.resident_bytes(region.start, region.end) else {
                    break;
                };
                *self.resident.entry(id).or_default() += bytes;
                total += bytes;
            }
            per_process.insert(process.pid, total);
        }
        per_process
    }

    pub fn started_ns(&self) -> u64 {
        self.started_ns
    }
}
