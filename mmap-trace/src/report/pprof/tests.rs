//! The profile, decoded back from our own gzip and protobuf bytes.

use std::io::Read as _;

use flate2::read::GzDecoder;
use prost::Message as _;

use super::{proto::Profile, *};
use crate::report::sample_report::{LIBLAB, lab_report};

fn decode(bytes: &[u8]) -> Profile {
    let mut raw = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut raw).expect("gzip");
    Profile::decode(raw.as_slice()).expect("a profile.proto message")
}

/// A function's name, by location line.
fn names(profile: &Profile, location_id: u64) -> Vec<String> {
    let s = |i: i64| profile.string_table[i as usize].clone();
    let location = &profile.location[location_id as usize - 1];
    assert_eq!(location.id, location_id);
    location
        .line
        .iter()
        .map(|line| {
            let function = &profile.function[line.function_id as usize - 1];
            assert_eq!(function.id, line.function_id);
            assert_eq!(function.start_line, 0);
            format!(
                "{} {}:{}",
                s(function.name),
                s(function.filename),
                line.line
            )
        })
        .collect()
}

#[test]
fn round_trip_keeps_values_types_and_strings() {
    let report = lab_report();
    let profile = decode(&render_pprof(&report));
    let s = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!(s(0), "", "the string table starts with \"\"");
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(
        types,
        [
            ("inuse_space", "bytes"),
            ("inuse_objects", "count"),
            ("alloc_space", "bytes"),
            ("alloc_objects", "count"),
            ("resident_space", "bytes"),
        ]
    );
    assert_eq!(s(profile.default_sample_type), "inuse_space");
    let period = profile.period_type.as_ref().unwrap();
    assert_eq!(
        (s(period.r#type), s(period.unit), profile.period),
        ("space", "bytes", 1)
    );
    assert_eq!(profile.duration_nanos, 1_500_000_000);
    assert_eq!(profile.sample.len(), 3, "one sample per stack row");

    let leak = &profile.sample[0];
    // 16 live regions of 256 KiB, 64 mapped by 64 mmaps, 10 pages resident.
    assert_eq!(leak.value, [16 * 262144, 16, 64 * 262144, 64, 10 * 4096]);
    let labels: Vec<(&str, &str)> = leak.label.iter().map(|l| (s(l.key), s(l.str))).collect();
    assert_eq!(labels, [("issuer", LIBLAB), ("requester", LIBLAB)]);
    // Leaf first; the inlined functions come before the one they are in.
    let frames: Vec<Vec<String>> = leak
        .location_id
        .iter()
        .map(|&id| names(&profile, id))
        .collect();
    assert_eq!(
        frames,
        [
            vec!["syscall /src/liblab.c:13".to_owned()],
            vec![
                "raw_mmap /src/raw.h:3".to_owned(),
                "region_alloc /src/region.h:7".to_owned(),
                "lab_region_get /src/liblab.c:13".to_owned(),
            ],
            vec!["cache_register /src/liblab.c:13".to_owned()],
            vec!["main /src/liblab.c:13".to_owned()],
        ]
    );
    // Resident bytes unknown (exited): 0.
    assert_eq!(profile.sample[1].value[4], 0);
    assert_eq!(profile.sample[2].value, [0, 0, 0, 0, 0]);
}

#[test]
fn python_and_jit_frames_have_no_mapping_and_native_ones_do() {
    let profile = decode(&render_pprof(&lab_report()));
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let from_python = &profile.sample[1];
    let locations: Vec<&proto::Location> = from_python
        .location_id
        .iter()
        .map(|&id| &profile.location[id as usize - 1])
        .collect();
    // mmap64 (libc), liblab.so+0x2000 (no symbol), jitted_fn, two Python.
    assert_eq!(locations.len(), 5);
    assert_ne!(locations[0].mapping_id, 0);
    let unsymbolized = locations[1];
    assert!(unsymbolized.line.is_empty());
    let liblab = &profile.mapping[unsymbolized.mapping_id as usize - 1];
    assert_eq!(s(liblab.filename), LIBLAB);
    assert_eq!(s(liblab.build_id), "abcdef01");
    assert!(!liblab.has_functions, "a frame in it lacks a symbol");
    assert_eq!(
        unsymbolized.address - liblab.memory_start + liblab.file_offset,
        0x2000,
        "the address leads to the file offset"
    );
    assert!(unsymbolized.address < liblab.memory_limit);
    assert_eq!(locations[2].mapping_id, 0, "JIT");
    assert_eq!(
        names(&profile, from_python.location_id[2]),
        ["jitted_fn :0"]
    );
    for python in &locations[3..] {
        assert_eq!((python.mapping_id, python.address), (0, 0));
    }
    assert_eq!(
        names(&profile, from_python.location_id[3]),
        ["BlockPool.allocate /app/pool.py:88"]
    );
    assert_eq!(
        names(&profile, from_python.location_id[4]),
        ["<module> /app/main.py:3"]
    );
    // Every id is its index + 1, and every reference points at one.
    for (i, mapping) in profile.mapping.iter().enumerate() {
        assert_eq!(mapping.id, i as u64 + 1);
    }
    for sample in &profile.sample {
        assert_eq!(sample.value.len(), SAMPLE_TYPES.len());
        for &id in &sample.location_id {
            assert!(id >= 1 && id as usize <= profile.location.len());
        }
    }
}

#[test]
fn shared_frames_share_locations_and_functions() {
    let report = lab_report();
    let mut twice = report.clone();
    twice.stacks.push(report.stacks[0].clone());
    let once = profile(&report);
    let again = profile(&twice);
    assert_eq!(once.location.len(), again.location.len());
    assert_eq!(once.function.len(), again.function.len());
    assert_eq!(again.sample[3].location_id, again.sample[0].location_id);
    let mut strings = again.string_table.clone();
    strings.sort();
    strings.dedup();
    assert_eq!(strings.len(), again.string_table.len(), "each string once");
}
