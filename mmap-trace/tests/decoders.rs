//! The decoders of untrusted bytes never panic: trace files (any bytes, any
//! truncation or corruption of a real trace) and ring-buffer records. The
//! corpus in tests/corpus holds a real trace and damaged copies; proptest
//! keeps the cases it finds failing in proptest-regressions/.

use std::path::{Path, PathBuf};

use mmap_trace::{model::Event, sys::decode::decode, trace as tracefile};
use proptest::prelude::*;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

#[test]
fn the_corpus_replays_or_says_where_it_is_broken() {
    let recording = tracefile::replay(&corpus("quick.mtrace")).expect("a real trace replays");
    assert!(recording.collector.counts.calls[mmap_trace::model::CallKind::Mmap] > 0);

    let cut = corpus("cut-mid-record.mtrace");
    let lines = std::fs::read_to_string(&cut).unwrap().lines().count();
    assert_eq!(
        tracefile::replay(&cut).unwrap_err().to_string(),
        format!("{}:{lines}: the record is cut short", cut.display())
    );
    let no_end = corpus("no-end.mtrace");
    let lines = std::fs::read_to_string(&no_end).unwrap().lines().count();
    assert_eq!(
        tracefile::replay(&no_end).unwrap_err().to_string(),
        format!(
            "{}: ends after line {lines} without its final record: the recording was cut short",
            no_end.display()
        )
    );
    let corrupt = corpus("corrupt-record.mtrace");
    let message = tracefile::replay(&corrupt).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:3: not a trace record", corrupt.display())),
        "{message}"
    );
}

fn real_trace() -> Vec<u8> {
    std::fs::read(corpus("quick.mtrace")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_are_not_a_trace(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        // Random bytes are never a complete trace: there is no header.
        prop_assert!(tracefile::replay_from(bytes.as_slice(), "fuzz.mtrace").is_err());
    }

    #[test]
    fn every_truncation_of_a_real_trace_is_reported(fraction in 0.0f64..1.0) {
        let trace = real_trace();
        // Cutting only the final newline leaves a complete trace.
        let at = (fraction * (trace.len() - 1) as f64) as usize;
        let result = tracefile::replay_from(&trace[..at], "cut.mtrace");
        prop_assert!(result.is_err(), "a trace cut at byte {} replayed", at);
    }

    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut trace = real_trace();
        let len = trace.len();
        for (at, byte) in flips {
            trace[at % len] = byte;
        }
        if let Ok(recording) = tracefile::replay_from(trace.as_slice(), "flipped.mtrace") {
            prop_assert_eq!(recording.header.format, tracefile::FORMAT);
        }
    }

    #[test]
    fn ring_buffer_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        if let Ok(Event::Syscall(call)) = decode(bytes.as_slice()) {
            prop_assert!(call.stack.len() <= mmap_trace_common::MAX_STACK_FRAMES);
        }
    }
}
