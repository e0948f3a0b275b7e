//! Folded stacks: frame names, order, weights, merging.

use super::*;
use crate::report::sample_report::{LIBC, LIBLAB, lab_report, native, stack};

#[test]
fn frames_are_root_first_with_inlined_callees_after_their_caller() {
    let report = lab_report();
    let folded = Folded::from_stacks(&report.stacks, Weight::Live);
    let lines: Vec<(&str, u64)> = folded.iter().collect();
    assert_eq!(
        lines,
        vec![
            (
                "<module> (main.py:3);BlockPool.allocate (pool.py:88);jitted_fn;liblab.so+0x2000;mmap64",
                2 * 262144
            ),
            (
                "main;cache_register;lab_region_get;region_alloc;raw_mmap;syscall",
                16 * 262144
            ),
        ],
        "the balanced stack (0 live bytes) is left out"
    );
    assert_eq!(folded.total(), 18 * 262144);
    assert_eq!(
        folded.to_text(),
        "<module> (main.py:3);BlockPool.allocate (pool.py:88);jitted_fn;liblab.so+0x2000;mmap64 524288\n\
         main;cache_register;lab_region_get;region_alloc;raw_mmap;syscall 4194304\n"
    );
}

#[test]
fn each_weight_picks_its_figure() {
    let report = lab_report();
    let weigh = |weight| Folded::from_stacks(&report.stacks, weight);
    // Resident: unknown (exited) counts as 0, so only the leak is left.
    assert_eq!(
        weigh(Weight::Resident).to_text(),
        "main;cache_register;lab_region_get;region_alloc;raw_mmap;syscall 40960\n"
    );
    assert_eq!(weigh(Weight::Mapped).total(), 4 * 18 * 262144);
    // 16 leaked regions: 64 mmap + 48 munmap; 2 regions: 8 + 6.
    assert_eq!(weigh(Weight::Calls).total(), 112 + 14);
}

#[test]
fn identical_frame_strings_are_summed() {
    // Two rows that differ only in their offsets inside the same functions.
    let a = stack(vec![native(LIBLAB, 0x10, Some("f"))], 4096, None);
    let b = stack(vec![native(LIBLAB, 0x20, Some("f"))], 8192, None);
    let c = stack(vec![native(LIBC, 0x30, None)], 4096, None);
    let folded = Folded::from_stacks(&[a, b, c], Weight::Live);
    let lines: Vec<(&str, u64)> = folded.iter().collect();
    assert_eq!(lines, vec![("f", 12288), ("libc.so.6+0x30", 4096)]);
}

#[test]
fn names_cannot_break_the_format() {
    let row = stack(
        vec![native(LIBLAB, 0x10, Some("<[u8; 8] as Debug>::fmt\nx"))],
        4096,
        None,
    );
    let empty = stack(Vec::new(), 4096, None);
    let folded = Folded::from_stacks(&[row, empty], Weight::Live);
    assert_eq!(
        folded.to_text(),
        "<[u8, 8] as Debug>::fmt x 4096\n[unknown] 4096\n"
    );
}

#[test]
fn the_json_report_folds_the_same() {
    for weight in [
        Weight::Live,
        Weight::Resident,
        Weight::Mapped,
        Weight::Calls,
    ] {
        let report = lab_report();
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(
            Folded::from_json(&json, weight).unwrap(),
            Folded::from_stacks(&report.stacks, weight),
            "{weight:?}"
        );
    }
    assert!(matches!(
        Folded::from_json(&serde_json::json!({}), Weight::Live),
        Err(FoldedError::NoStacks)
    ));
    assert!(matches!(
        Folded::from_json(
            &serde_json::json!({"stacks": [{"frames": 3}]}),
            Weight::Live
        ),
        Err(FoldedError::BadStacks(_))
    ));
}

#[test]
fn mapping_calls_count_attaches_not_detaches() {
    let mut row = stack(vec![native(LIBC, 0x10, Some("shmdt"))], 0, None);
    row.mmap_calls = 2;
    row.mremap_calls = 1;
    row.brk_calls = 4;
    row.shm_calls = 3;
    row.sizes = vec![shm_size(CallKind::Shmat)];
    assert_eq!(mapping_calls(&row), 2 + 1 + 4 + 3);
    row.sizes = vec![shm_size(CallKind::Shmdt)];
    assert_eq!(mapping_calls(&row), 2 + 1 + 4);
}

fn shm_size(call: CallKind) -> crate::report::SizeRow {
    crate::report::SizeRow {
        call,
        bytes: 65536,
        calls: 3,
    }
}

#[test]
fn differential_lines_have_both_weights() {
    let report = lab_report();
    let before = Folded::from_stacks(&report.stacks, Weight::Live);
    let after = Folded::from_stacks(&report.stacks[1..], Weight::Live);
    assert_eq!(
        differential_lines(&before, &after).unwrap(),
        "<module> (main.py:3);BlockPool.allocate (pool.py:88);jitted_fn;liblab.so+0x2000;mmap64 524288 524288\n\
         main;cache_register;lab_region_get;region_alloc;raw_mmap;syscall 4194304 0\n"
    );
}
