//! Structure-aware fuzzing: inputs that pass the outer checks (a valid
//! header, records of known kinds with sane sizes) and carry mutated
//! contents, so the bodies are reached: the trace reader's books and the
//! ledger behind them, and the ring-buffer decoder's fields. Whatever the
//! contents, no panic; a result is either a consistent recording or an
//! error. A fixed budget (the case counts below) runs with every
//! `cargo xtask test`; the seeds are the corpus in tests/corpus, real
//! traces of the fixtures.

use std::path::{Path, PathBuf};

use mmap_trace::{
    account::{Book, check::check},
    model::{Call, Event},
    resolve::Attribution,
    sys::decode::decode,
    trace as tracefile,
};
use mmap_trace_common::{
    MAX_PYTHON_FRAMES, MAX_STACK_FRAMES, PyFrame, RecordHeader, SyscallRecord, kind, nr,
};
use proptest::prelude::*;
use serde_json::Value;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

/// A real version 1 trace as JSON values, one per line.
fn seed_lines() -> Vec<Value> {
    std::fs::read_to_string(corpus("quick.mtrace"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every numeric leaf of `value`, as a path of keys and indices.
fn number_paths(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Number(_) => out.push(path.clone()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                number_paths(item, path, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                path.push(key.clone());
                number_paths(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn leaf_mut<'v>(value: &'v mut Value, path: &[String]) -> &'v mut Value {
    path.iter().fold(value, |v, key| match v {
        Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
        Value::Object(map) => map.get_mut(key).unwrap(),
        _ => unreachable!("a path through containers"),
    })
}

/// Numbers a fuzzer should try: edges, and anything.
fn interesting_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(0u64)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(-1i64)),
        Just(Value::from(4095u64)),
        Just(Value::from(1u64 << 47)),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..1 << 20).prop_map(Value::from),
    ]
}

/// Mostly what the kernel would take (page-aligned addresses in a small
/// range, so calls overlap; lengths of a few pages), sometimes anything.
fn address_or_length() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..64).prop_map(|page| 0x7f00_0000_0000 + page * 4096),
        4 => (0u64..16).prop_map(|pages| pages * 4096),
        1 => any::<u64>(),
    ]
}

fn result() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => (0i64..64).prop_map(|page| 0x7f00_0000_0000 + page * 4096),
        2 => Just(0i64),
        1 => Just(-12i64),
        1 => any::<i64>(),
    ]
}

/// One change to a trace: a number, or a line dropped, doubled or moved.
#[derive(Debug, Clone)]
enum Mutation {
    Number(prop::sample::Index, prop::sample::Index, Value),
    Drop(prop::sample::Index),
    Double(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<prop::sample::Index>(), any::<prop::sample::Index>(), interesting_number())
            .prop_map(|(l, n, v)| Mutation::Number(l, n, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Drop),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Double),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

/// Applies `mutations` to the lines after the header.
fn mutate(mut lines: Vec<Value>, mutations: &[Mutation]) -> String {
    for m in mutations {
        let body = lines.len() - 1;
        match m {
            Mutation::Number(line, number, value) => {
                let line = &mut lines[1 + line.index(body)];
                let mut paths = Vec::new();
                number_paths(line, &mut Vec::new(), &mut paths);
                if !paths.is_empty() {
                    *leaf_mut(line, &paths[number.index(paths.len())]) = value.clone();
                }
            }
            Mutation::Drop(line) if body > 1 => {
                lines.remove(1 + line.index(body));
            }
            Mutation::Double(line) => {
                let at = 1 + line.index(body);
                lines.insert(at, lines[at].clone());
            }
            Mutation::Swap(a, b) => lines.swap(1 + a.index(body), 1 + b.index(body)),
            Mutation::Drop(_) => {}
        }
    }
    lines.iter().map(|l| l.to_string() + "\n").collect()
}

/// A syscall record's bytes with these fields, followed by its data.
fn record_bytes(record: &SyscallRecord, data: &[u8]) -> Vec<u8> {
    // SAFETY: SyscallRecord is #[repr(C)] plain old data without padding
    // holes that matter here (the decoder reads fields at their offsets);
    // the slice lives as long as `record`.
    let head = unsafe {
        std::slice::from_raw_parts(
            (record as *const SyscallRecord).cast::<u8>(),
            size_of::<SyscallRecord>(),
        )
    };
    [head, data].concat()
}

prop_compose! {
    fn syscall_record()(
        number in prop_oneof![
            Just(nr::MMAP), Just(nr::MUNMAP), Just(nr::MREMAP), Just(nr::BRK),
            Just(nr::SHMAT), Just(nr::SHMDT), Just(nr::MPROTECT), Just(nr::MADVISE),
            any::<u64>(),
        ],
        pid in prop_oneof![1u32..5, any::<u32>()],
        args in prop::array::uniform6(address_or_length()),
        ret in prop_oneof![any::<i64>(), Just(0x7f00_0000_0000i64), Just(-22i64)],
        frames in 0u32..=(MAX_STACK_FRAMES as u32 + 2),
        python in 0u32..=(MAX_PYTHON_FRAMES as u32 + 2),
        window in prop_oneof![Just(0u32), 0u32..512],
        unwind in 0u32..4,
        stop in 0u32..8,
        time_ns in any::<u64>(),
        enter_ns in any::<u64>(),
    ) -> (SyscallRecord, usize) {
        let record = SyscallRecord {
            header: RecordHeader { kind: kind::SYSCALL, pid, tid: pid, _reserved: 0, time_ns },
            nr: number as u32,
            python_frames: python,
            stack_error: 0,
            args,
            ret,
            user_ip: 0x40_1000,
            user_sp: 0x7ffd_0000_0000,
            sp_word: 0,
            asid: 1,
            unwind,
            stack_frames: frames,
            window_bytes: window,
            stop,
            resume_ip: 0,
            resume_sp: 0,
            resume_bp: 0,
            mapped_size: args[2],
            enter_ns,
        };
        let data = frames as usize * 8 + python as usize * size_of::<PyFrame>() + window as usize;
        (record, data)
    }
}

/// Applies an event to a fresh book, as a replay would.
fn through_the_books(book: &mut Book, event: Event) {
    if check(&event).is_ok() {
        let applied = book.apply(
            event,
            &mut (),
            |_, _, _| Ok::<_, ()>(Attribution::default()),
        );
        assert!(applied.is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// A real trace with mutated numbers and lines: replayed into a
    /// consistent recording, or refused with an error; never a panic.
    #[test]
    fn mutated_traces_replay_or_are_refused(mutations in prop::collection::vec(mutation(), 1..6)) {
        let text = mutate(seed_lines(), &mutations);
        if let Ok(recording) = tracefile::replay_from(text.as_bytes(), "mutated.mtrace") {
            for entry in recording.collector.stacks.iter() {
                prop_assert!(entry.stats.unmapped_bytes <= entry.stats.mapped_bytes);
            }
        }
    }

    /// Records of known kinds and sane sizes with any contents decode or
    /// are refused; what decodes goes through the check and the ledger.
    #[test]
    fn ring_buffer_records_reach_the_ledger(
        records in prop::collection::vec((syscall_record(), any::<u8>()), 1..24),
    ) {
        let mut book = Book::new(0);
        for ((record, data_len), fill) in records {
            let bytes = record_bytes(&record, &vec![fill; data_len]);
            if let Ok(event) = decode(&bytes) {
                through_the_books(&mut book, event);
            }
        }
    }

    /// Calls with any arguments and results, as a trace could hold them:
    /// the impossible ones are refused, the rest kept exactly.
    #[test]
    fn any_calls_through_the_ledger(
        calls in prop::collection::vec(
            (0u8..8, address_or_length(), address_or_length(), result()),
            1..64,
        ),
    ) {
        let mut book = Book::new(0);
        for (i, (which, a, b, ret)) in calls.into_iter().enumerate() {
            let call = match which {
                0 => Call::anonymous_mmap(b),
                1 => Call::Munmap { addr: a, len: b },
                2 => Call::Mremap { old_addr: a, old_len: b, new_len: b / 2, flags: 1, new_addr: 0 },
                3 => Call::Brk { requested: a },
                4 => Call::Shmat { shmid: 1, addr: a, flags: 0, size: b },
                5 => Call::Shmdt { addr: a },
                6 => Call::Mprotect { addr: a, len: b, prot: (ret & 7) as u32 },
                _ => Call::Madvise { addr: a, len: b, advice: 4 },
            };
            let event = mmap_trace::model::SyscallEvent::for_test(7, 1 + i as u64, call, ret, &[0x40_1000]);
            through_the_books(&mut book, Event::Syscall(event));
        }
        // What the books hold adds up.
        let holdings = book.collector.holdings();
        for entry in book.collector.stacks.iter() {
            let stats = entry.stats;
            prop_assert!(stats.unmapped_bytes <= stats.mapped_bytes);
            if let Some(holding) = holdings.get(&entry.id) {
                prop_assert!(holding.reserved <= holding.live);
                prop_assert!(holding.live <= stats.mapped_bytes - stats.unmapped_bytes);
            }
        }
    }
}

/// The version 2 seeds replay; copies damaged anywhere are refused or
/// replay, never panic (the blocks carry checksums: most damage is caught
/// there, the rest by the record decoder and the checks).
#[test]
fn version_2_seeds_replay_and_damaged_copies_never_panic() {
    for seed in ["basic.mtrace", "edge.mtrace"] {
        let path = corpus(seed);
        let recording = tracefile::replay(&path).expect("a real version 2 trace replays");
        assert_eq!(recording.header.version, 2);
        let bytes = std::fs::read(&path).unwrap();
        let damaged =
            std::env::temp_dir().join(format!("mmap-trace-damaged-{}-{seed}", std::process::id()));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
        runner
            .run(
                &(
                    any::<prop::sample::Index>(),
                    1u8..=255,
                    any::<prop::sample::Index>(),
                ),
                |(at, flip, cut)| {
                    let mut copy = bytes.clone();
                    let at = at.index(copy.len());
                    copy[at] ^= flip;
                    copy.truncate(cut.index(copy.len()) + 1);
                    std::fs::write(&damaged, &copy).unwrap();
                    // Damage is found or harmless; either way no panic,
                    // and an error is one line.
                    if let Err(error) = tracefile::replay(&damaged) {
                        let line = error.to_string();
                        prop_assert!(!line.is_empty() && !line.contains('\n'), "{line}");
                    }
                    Ok(())
                },
            )
            .unwrap();
        std::fs::remove_file(&damaged).unwrap();
    }
}
