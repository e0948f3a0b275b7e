use std::{convert::Infallible, ops::Range};

use super::*;
use crate::{
    account::{MemoryProbe, Recorder},
    model::{Call, Event, ProcessRss, RawStack, StackId, SyscallEvent},
    resolve::Attribution,
};

const MIB: u64 = 1 << 20;

/// Every page is resident; the process's RSS stays at 50 MiB.
struct Touched;

impl MemoryProbe for Touched {
    fn rss(&mut self, pid: u32) -> Option<ProcessRss> {
        Some(ProcessRss {
            pid,
            vm_rss: 50 * MIB,
            rss_anon: 50 * MIB,
            ..Default::default()
        })
    }

    fn resident(&mut self, _: u32, ranges: &[Range<u64>]) -> Option<Vec<u64>> {
        Some(ranges.iter().map(|r| r.end - r.start).collect())
    }
}

/// Stack [1]: liba.so for app; stack [2]: libb.so for other.
fn attribute(_: StackId, raw: &RawStack, _: u64) -> Result<Attribution, Infallible> {
    let (issuer, requester) = match raw.frames[0] {
        1 => ("liba.so", "app"),
        _ => ("libb.so", "other"),
    };
    Ok(Attribution {
        issuer: Some(issuer.into()),
        requester: Some(requester.into()),
    })
}

fn mmap(book: &mut Book, time_ns: u64, len: u64, addr: u64, frame: u64) {
    let event = Event::Syscall(SyscallEvent::for_test(
        7,
        time_ns,
        Call::anonymous_mmap(len),
        addr as i64,
        &[frame],
    ));
    book.apply(event, &mut (), attribute).unwrap();
}

/// app (through liba.so) maps and touches 1 MiB a second from 0 s to
/// `seconds`, sampled every second after its call; other (libb.so) maps
/// 64 KiB once.
pub(in crate::app::top) fn growing_book(seconds: u64) -> Book {
    let mut book = Book::new(0);
    let recorder: &mut dyn Recorder = &mut ();
    book.collector.add_target(7, "app", 0);
    mmap(&mut book, 1, 64 << 10, 0x7000_0000, 2);
    for second in 0..=seconds {
        let now = second * 1_000_000_000;
        mmap(&mut book, now + 2, MIB, 0x1000_0000 + second * 2 * MIB, 1);
        book.sample(now + 3, &mut Touched, recorder);
    }
    book.lost(2, recorder);
    book
}

pub(in crate::app::top) fn moment() -> Moment {
    Moment {
        elapsed: Duration::from_secs(12),
        interval: Duration::from_secs(1),
        kernel_lost: 3,
        events_per_s: Some(1.5),
    }
}

#[test]
fn growth_is_not_judged_before_the_window_and_samples_it_needs() {
    let screen = Screen::build(&growing_book(2), moment(), &Judging::default());
    let Growth::NotYet(note) = &screen.growth else {
        panic!("judged on 3 samples: {:?}", screen.growth)
    };
    assert!(note.starts_with("growth cannot be judged yet: 2.0 s and 3 samples"));
    // The tables are there before any verdict.
    assert_eq!(screen.requesters[0].object, "app");
    assert_eq!(screen.requesters[0].resident_per_min, None);
    assert!(!screen.requesters[0].flagged);
}

#[test]
fn a_steady_climb_is_flagged_with_its_rate_and_the_tables_agree() {
    let screen = Screen::build(&growing_book(12), moment(), &Judging::default());
    let Growth::Judged { rows, .. } = &screen.growth else {
        panic!("not judged after 12 s: {:?}", screen.growth)
    };
    let shown: Vec<(Verdict, Role, &str)> = rows
        .iter()
        .map(|r| (r.verdict, r.role, r.object.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            (Verdict::Growing, Role::Issuer, "liba.so"),
            (Verdict::Growing, Role::Requester, "app"),
        ]
    );
    let app = &rows[1];
    assert_eq!(app.bytes_per_min, 60.0 * MIB as f64);
    assert_eq!(app.fit_r2, 1.0);
    assert_eq!((app.live, app.resident), (13 * MIB as i64, Some(13 * MIB)));

    let requesters: Vec<(&str, i64, Option<u64>, bool)> = screen
        .requesters
        .iter()
        .map(|o| (o.object.as_str(), o.live, o.resident, o.flagged))
        .collect();
    assert_eq!(
        requesters,
        [
            ("app", 13 * MIB as i64, Some(13 * MIB), true),
            ("other", 64 << 10, Some(64 << 10), false),
        ]
    );
    assert_eq!(
        screen.requesters[0].resident_per_min,
        Some(60.0 * MIB as f64)
    );
    assert_eq!(screen.requesters[1].resident_per_min, Some(0.0));
    assert_eq!(screen.issuers[0].object, "liba.so");

    assert_eq!(
        screen.processes,
        [ProcessLine {
            pid: 7,
            comm: "app".into(),
            rss: Some(50 * MIB),
            live: 13 * MIB as i64 + (64 << 10),
        }]
    );
    assert_eq!(screen.exited, 0);
    assert_eq!((screen.events, screen.lost, screen.samples), (14, 5, 13));
    assert_eq!(screen.events_per_s, Some(1.5));
}

#[test]
fn long_timelines_are_thinned_to_the_fits_size() {
    let book = growing_book(600);
    let thinned = recent(&book.timeline);
    assert_eq!(thinned.len(), MAX_SAMPLES);
    assert_eq!(thinned[0], book.timeline[0]);
    assert_eq!(thinned.last(), book.timeline.last());
    let screen = Screen::build(&book, moment(), &Judging::default());
    let Growth::Judged { rows, .. } = &screen.growth else {
        panic!("not judged")
    };
    assert_eq!(rows[0].bytes_per_min, 60.0 * MIB as f64);
}

#[test]
fn rates_are_per_second_between_samples() {
    let mut rate = Rate::default();
    assert_eq!(rate.update(Duration::from_secs(1), 100), None);
    assert_eq!(rate.update(Duration::from_secs(3), 600), Some(250.0));
    // No time passed: the last rate stands.
    assert_eq!(rate.update(Duration::from_secs(3), 700), Some(250.0));
    assert_eq!(rate.per_s(), Some(250.0));
}
