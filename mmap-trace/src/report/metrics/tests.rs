use std::collections::BTreeMap;

use super::{window::REFIT_S, *};
use crate::model::{Call, PAGE_SIZE as P, ProcessRss, SyscallEvent};

const MIB: u64 = 1 << 20;

fn map<T: Copy>(entries: &[(&str, T)]) -> BTreeMap<String, T> {
    entries.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

/// pid 7 ("server") runs and holds three issuers' bytes, all asked for by
/// "app"; pid 8 exited (no RSS) and held some of liba's.
fn sample_at(time_s: f64) -> Sample {
    let server = ProcessLive {
        pid: 7,
        live_bytes: 14 * P as i64,
        by_issuer: map(&[
            ("liba", 4 * P as i64),
            ("libb", 8 * P as i64),
            ("libc", 2 * P as i64),
        ]),
        by_requester: map(&[("app", 14 * P as i64)]),
        resident_by_issuer: map(&[("liba", 3 * P), ("libb", P)]),
        resident_by_requester: map(&[("app", 4 * P)]),
        reserved_by_issuer: map(&[("libc", 2 * P)]),
        reserved_by_requester: map(&[("app", 2 * P)]),
    };
    let exited = ProcessLive {
        pid: 8,
        live_bytes: P as i64,
        by_issuer: map(&[("liba", P as i64)]),
        by_requester: map(&[("app", P as i64)]),
        ..Default::default()
    };
    Sample {
        time_s,
        rss: vec![ProcessRss {
            pid: 7,
            vm_rss: 100 * P,
            ..Default::default()
        }],
        processes: vec![server, exited],
        comms: BTreeMap::from([(7, "server".to_owned())]),
        by_issuer: map(&[("liba", 5 * P as i64), ("libb", 8 * P as i64)]),
        by_requester: map(&[("app", 15 * P as i64)]),
        resident_by_issuer: map(&[("liba", 3 * P), ("libb", P)]),
        resident_by_requester: map(&[("app", 4 * P)]),
        ..Default::default()
    }
}

/// The exposition's sample lines (classic text format) of `metric`, sorted.
fn lines(exposition: &Exposition, metric: &str) -> Vec<String> {
    let text = exposition.encode(ExpositionFormat::Text).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn objects_outside_the_top_are_summed_as_other_and_exited_processes_left_out() {
    let (mut recorder, exposition) = MetricsRecorder::new(MetricsConfig {
        top: 1,
        ..Default::default()
    });
    recorder.sample(&sample_at(1.0));
    let labels = |role: &str, object: &str| {
        format!(r#"{{pid="7",comm="server",role="{role}",object="{object}"}}"#)
    };
    // liba holds the most resident bytes; libb and libc are "other".
    assert_eq!(
        lines(&exposition, "mmap_trace_live_bytes"),
        [
            format!("mmap_trace_live_bytes{} 16384", labels("issuer", "liba")),
            format!("mmap_trace_live_bytes{} 40960", labels("issuer", "other")),
            format!("mmap_trace_live_bytes{} 57344", labels("requester", "app")),
        ]
    );
    assert_eq!(
        lines(&exposition, "mmap_trace_resident_bytes"),
        [
            format!(
                "mmap_trace_resident_bytes{} 12288",
                labels("issuer", "liba")
            ),
            format!(
                "mmap_trace_resident_bytes{} 4096",
                labels("issuer", "other")
            ),
            format!(
                "mmap_trace_resident_bytes{} 16384",
                labels("requester", "app")
            ),
        ]
    );
    assert_eq!(
        lines(&exposition, "mmap_trace_reserved_bytes"),
        [
            format!("mmap_trace_reserved_bytes{} 0", labels("issuer", "liba")),
            format!(
                "mmap_trace_reserved_bytes{} 8192",
                labels("issuer", "other")
            ),
            format!(
                "mmap_trace_reserved_bytes{} 8192",
                labels("requester", "app")
            ),
        ]
    );
    assert_eq!(
        lines(&exposition, "mmap_trace_process_rss_bytes"),
        [r#"mmap_trace_process_rss_bytes{pid="7",comm="server"} 409600"#]
    );
    // One second is no window for a rate.
    assert!(lines(&exposition, "mmap_trace_growth_bytes_per_minute").is_empty());

    // The process exits: its series go.
    let mut gone = sample_at(2.0);
    gone.rss.clear();
    recorder.sample(&gone);
    assert!(lines(&exposition, "mmap_trace_live_bytes").is_empty());
    assert!(lines(&exposition, "mmap_trace_process_rss_bytes").is_empty());
}

#[test]
fn with_room_every_object_has_its_own_label() {
    let (mut recorder, exposition) = MetricsRecorder::new(MetricsConfig::default());
    recorder.sample(&sample_at(1.0));
    let objects: Vec<String> = lines(&exposition, "mmap_trace_live_bytes")
        .iter()
        .map(|line| line.split("object=\"").nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(
        objects,
        [
            "liba\"} 16384",
            "libb\"} 32768",
            "libc\"} 8192",
            "app\"} 57344"
        ]
    );
}

#[test]
fn calls_and_lost_records_are_counted() {
    let (mut recorder, exposition) = MetricsRecorder::new(MetricsConfig::default());
    let call = |call: Call| Event::Syscall(SyscallEvent::for_test(7, 1, call, 0, &[1]));
    recorder.event(&call(Call::anonymous_mmap(P)));
    recorder.event(&call(Call::anonymous_mmap(P)));
    recorder.event(&call(Call::Munmap { addr: 0, len: P }));
    recorder.lost(3);
    let mut kernel = recorder.kernel_lost();
    kernel.update(5);
    kernel.update(7);
    kernel.update(7);
    let events = lines(&exposition, "mmap_trace_events_total");
    assert_eq!(events.len(), 8, "every call, 0 or not: {events:?}");
    assert!(events.contains(&r#"mmap_trace_events_total{call="mmap"} 2"#.to_owned()));
    assert!(events.contains(&r#"mmap_trace_events_total{call="munmap"} 1"#.to_owned()));
    assert!(events.contains(&r#"mmap_trace_events_total{call="madvise"} 0"#.to_owned()));
    assert_eq!(
        lines(&exposition, "mmap_trace_lost_records_total"),
        ["mmap_trace_lost_records_total 10"]
    );
}

#[test]
fn openmetrics_has_types_units_and_an_end() {
    let (mut recorder, exposition) = MetricsRecorder::new(MetricsConfig::default());
    recorder.sample(&sample_at(1.0));
    let text = exposition.encode(ExpositionFormat::OpenMetrics).unwrap();
    for line in [
        "# TYPE mmap_trace_live_bytes gauge",
        "# UNIT mmap_trace_live_bytes bytes",
        "# TYPE mmap_trace_events counter",
        "# TYPE mmap_trace_process_rss_bytes gauge",
        r#"mmap_trace_events_total{call="brk"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    let classic = exposition.encode(ExpositionFormat::Text).unwrap();
    assert!(!classic.contains("# EOF"), "{classic}");
    assert!(classic.contains("# TYPE mmap_trace_events_total counter\n"));
}

#[test]
fn odd_names_are_escaped() {
    let (mut recorder, exposition) = MetricsRecorder::new(MetricsConfig::default());
    let mut sample = sample_at(1.0);
    sample.comms.insert(7, "a \"b\"\\c".to_owned());
    recorder.sample(&sample);
    let rss = lines(&exposition, "mmap_trace_process_rss_bytes");
    assert_eq!(
        rss,
        [r#"mmap_trace_process_rss_bytes{pid="7",comm="a \"b\"\\c"} 409600"#]
    );
}

#[test]
fn the_format_follows_the_accept_header() {
    let open = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    assert_eq!(
        ExpositionFormat::for_accept(Some(open)),
        ExpositionFormat::OpenMetrics
    );
    assert_eq!(
        ExpositionFormat::for_accept(Some("*/*")),
        ExpositionFormat::Text
    );
    assert_eq!(ExpositionFormat::for_accept(None), ExpositionFormat::Text);
    assert_eq!(
        ExpositionFormat::Text.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

/// liba's resident bytes grow by 1 MiB a second, its live bytes by 2.
fn growing(time_s: f64) -> Sample {
    let mut sample = sample_at(time_s);
    let t = time_s as u64;
    sample.resident_by_issuer.insert("liba".into(), t * MIB);
    sample.by_issuer.insert("liba".into(), (2 * t * MIB) as i64);
    sample
}

#[test]
fn growth_is_the_steady_slope_once_the_window_allows_a_verdict() {
    let (mut recorder, exposition) = MetricsRecorder::new(MetricsConfig::default());
    for t in 0..10 {
        recorder.sample(&growing(t as f64));
    }
    // 9 s of samples: under --min-window's 10 s.
    let rates = || lines(&exposition, "mmap_trace_growth_bytes_per_minute");
    assert!(rates().is_empty(), "{:?}", rates());
    recorder.sample(&growing(10.0));
    let liba = |basis: &str| {
        format!(
            r#"mmap_trace_growth_bytes_per_minute{{role="issuer",object="liba",basis="{basis}"}}"#
        )
    };
    let found = rates();
    assert!(
        found.contains(&format!("{} 62914560.0", liba("resident"))),
        "60 MiB/min: {found:?}"
    );
    assert!(
        found.contains(&format!("{} 125829120.0", liba("live"))),
        "{found:?}"
    );
    // libb holds steady.
    assert!(
        found.contains(
            &r#"mmap_trace_growth_bytes_per_minute{role="issuer",object="libb",basis="resident"} 0.0"#
                .to_owned()
        ),
        "{found:?}"
    );
}

#[test]
fn the_window_is_bounded_and_forgets_objects_that_hold_nothing() {
    let mut window = Window::default();
    let mut sample = sample_at(0.0);
    sample.by_issuer.insert("once".into(), P as i64);
    window.push(&sample);
    assert_eq!(window.objects(Role::Issuer), 3);
    for t in 1..=WINDOW + 100 {
        window.push(&sample_at(t as f64));
    }
    assert_eq!(
        window.objects(Role::Issuer),
        2,
        "`once` left the window: {window:?}"
    );
    let top: HashSet<(Role, &str)> = [(Role::Issuer, "liba")].into();
    let rows = window.growth(&top, &Judging::default()).unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.object, r.basis)).collect::<Vec<_>>(),
        [("liba", Basis::Resident), ("liba", Basis::Live)],
        "only the top objects"
    );
    assert_eq!(
        window.growth(&top, &Judging::default()),
        None,
        "not due again within {REFIT_S} s"
    );
}
