use proptest::prelude::*;

use super::*;
use crate::model::{ProcessEvent, StackSource};

fn mmap_event(time_ns: u64, ret: i64, stack: &[u64]) -> SyscallEvent {
    let mut e = SyscallEvent::for_test(42, time_ns, Call::anonymous_mmap(65536), ret, stack);
    e.tid = 43;
    e.enter_ns = time_ns - 900;
    e.user_sp = 0x7ffd_0000_1000;
    e.asid = 77;
    e
}

fn round_trip(events: &[SyscallEvent]) -> (Vec<SyscallEvent>, usize) {
    let mut encoder = Encoder::default();
    let mut bytes = Vec::new();
    for event in events {
        encoder.syscall(event, &mut bytes).unwrap();
    }
    let mut decoder = Decoder::default();
    let mut cursor = Cursor::new(&bytes);
    let mut decoded = Vec::new();
    while !cursor.is_empty() {
        if let Some(Line::Event(line)) = decoder.decode(&mut cursor).unwrap() {
            match Event::from(line) {
                Event::Syscall(call) => decoded.push(call),
                other => panic!("{other:?}"),
            }
        }
    }
    (decoded, bytes.len())
}

#[test]
fn events_round_trip_and_repeats_are_small() {
    let stack = [0x7f00_0000_1234, 0x5555_0000_0100, 0x5555_0000_0200];
    let mut events = Vec::new();
    for i in 0..1000u64 {
        let mut map = mmap_event(1_000_000 + i * 2000, 0x7f10_0000_0000, &stack);
        map.user_ip = stack[0];
        events.push(map);
        let mut unmap = mmap_event(1_000_000 + i * 2000 + 1000, 0, &stack);
        unmap.call = Call::Munmap {
            addr: 0x7f10_0000_0000,
            len: 65536,
        };
        unmap.user_ip = stack[0];
        events.push(unmap);
    }
    let (decoded, bytes) = round_trip(&events);
    assert_eq!(decoded, events);
    // Before compression: 17 to 21 bytes an event once the stack is known.
    assert!(
        bytes < 20 * events.len(),
        "{} bytes an event",
        bytes / events.len()
    );
}

#[test]
fn other_lines_go_as_json() {
    let exit = Event::Exit(ProcessEvent {
        pid: 7,
        tid: 7,
        time_ns: 5,
        parent_pid: 0,
        comm: "x".into(),
    });
    let mut bytes = Vec::new();
    Encoder::default()
        .encode(&Line::Event(owned_event(exit.clone())), &mut bytes)
        .unwrap();
    let line = Decoder::default().decode(&mut Cursor::new(&bytes)).unwrap();
    let Some(Line::Event(event)) = line else {
        panic!("{line:?}")
    };
    assert_eq!(Event::from(event), exit);
}

#[test]
fn bad_records_are_errors() {
    let error = |bytes: &[u8]| Decoder::default().decode(&mut Cursor::new(bytes)).err();
    assert_eq!(error(&[9]), Some(BadRecord::Tag(9)));
    assert_eq!(error(&[tag::SYSCALL, 1]), Some(BadRecord::Short));
    let overlong = [
        tag::SYSCALL,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0x7f,
    ];
    assert_eq!(error(&overlong), Some(BadRecord::Overflow));
    // A stack never defined.
    let mut encoder = Encoder::default();
    let mut bytes = Vec::new();
    encoder
        .syscall(&mmap_event(10_000, 0x10000, &[1]), &mut bytes)
        .unwrap();
    let after_stack = bytes.iter().position(|&b| b == tag::SYSCALL).unwrap();
    assert_eq!(
        error(&bytes[after_stack..]),
        Some(BadRecord::UnknownStack(0))
    );
}

fn arb_call() -> impl Strategy<Value = Call> {
    let addr = any::<u64>();
    let len = any::<u64>();
    prop_oneof![
        (
            addr,
            len,
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            any::<u64>()
        )
            .prop_map(|(addr, len, prot, flags, fd, offset)| Call::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                offset
            }),
        (addr, len).prop_map(|(addr, len)| Call::Munmap { addr, len }),
        (addr, len, any::<u64>(), any::<u32>(), any::<u64>()).prop_map(
            |(old_addr, old_len, new_len, flags, new_addr)| Call::Mremap {
                old_addr,
                old_len,
                new_len,
                flags,
                new_addr
            }
        ),
        addr.prop_map(|requested| Call::Brk { requested }),
        (any::<i32>(), addr, any::<u32>(), len).prop_map(|(shmid, addr, flags, size)| {
            Call::Shmat {
                shmid,
                addr,
                flags,
                size,
            }
        }),
        addr.prop_map(|addr| Call::Shmdt { addr }),
        (addr, len, any::<u32>()).prop_map(|(addr, len, prot)| Call::Mprotect { addr, len, prot }),
        (addr, len, any::<u32>()).prop_map(|(addr, len, advice)| Call::Madvise {
            addr,
            len,
            advice
        }),
    ]
}

fn arb_event() -> impl Strategy<Value = SyscallEvent> {
    (
        (1u32..4_000_000, 1u32..4_000_000, any::<u64>(), any::<u64>()),
        (
            arb_call(),
            any::<i64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            prop::collection::vec(any::<u64>(), 0..6),
            0usize..3,
            any::<i64>(),
            any::<bool>(),
            any::<Option<u64>>(),
        ),
    )
        .prop_map(
            |(
                (pid, tid, time_ns, enter_ns),
                (call, ret, user_ip, user_sp, sp_word, asid),
                (stack, source, stack_error, shmem, resident_returned),
            )| {
                let mut e = SyscallEvent::for_test(pid, time_ns, call, ret, &stack);
                e.tid = tid;
                e.enter_ns = enter_ns;
                e.user_ip = user_ip;
                e.user_sp = user_sp;
                e.sp_word = sp_word;
                e.asid = asid;
                e.source = [
                    StackSource::FramePointers,
                    StackSource::Dwarf,
                    StackSource::Window,
                ][source];
                e.stack_error = stack_error;
                e.shmem = shmem;
                e.resident_returned = resident_returned;
                e
            },
        )
}

proptest! {
    /// Whatever the numbers (wrapping deltas, extremes), events come back
    /// as they went.
    #[test]
    fn any_events_round_trip(events in prop::collection::vec(arb_event(), 1..40)) {
        let (decoded, _) = round_trip(&events);
        prop_assert_eq!(decoded, events);
    }

    /// Mutated records decode or fail; they never panic.
    #[test]
    fn mutated_records_never_panic(
        events in prop::collection::vec(arb_event(), 1..8),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut encoder = Encoder::default();
        let mut bytes = Vec::new();
        for event in &events {
            encoder.syscall(event, &mut bytes).unwrap();
        }
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let mut decoder = Decoder::default();
        let mut cursor = Cursor::new(&bytes);
        while !cursor.is_empty() {
            if decoder.decode(&mut cursor).is_err() {
                break;
            }
        }
    }
}
