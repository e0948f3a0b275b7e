//! Calls put back in the order they changed their address space.
//!
//! The kernel writes a record when a call *returns*, but the call changed
//! the address space earlier, under the address-space lock, somewhere
//! between its entry and its return. A thread can be preempted between its
//! `munmap` and its return while another thread maps the range it freed:
//! in return order, the `munmap` then seems to remove the other thread's
//! new mapping. Two facts put them right:
//!
//! - A call that changes *existing* mappings (munmap, mremap, mprotect,
//!   madvise, shmdt, a `MAP_FIXED` mmap) names its range before it enters,
//!   so whatever created that range had returned before it entered. Its
//!   key is its entry time.
//! - A call that *creates* a mapping where the kernel chooses (mmap, shmat,
//!   brk) takes effect before it returns, and whatever later changes that
//!   range enters after it returned (it needs the address). Its key is its
//!   return time.
//!
//! So if A's effect came before B's on the same range, key(A) < key(B):
//! either B changes A's mapping (key(A) ≤ A's return < B's entry = key(B)),
//! or B creates a mapping in what A removed (key(A) = A's entry < A's
//! effect < B's effect < B's return = key(B)). Records are held in a heap
//! by key and released once no record with a smaller key can still arrive:
//! when the newest return seen (or the clock) is a window past the key. A
//! record that arrives later than that (a call that ran longer than the
//! window between entry and return) is applied at once and counted, and
//! the window doubles (up to [`MAX_WINDOW_NS`]).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};

use crate::model::{Call, Event, map_flags};

/// How long a record is held, at first, for records with a smaller key to
/// arrive: longer than a traced call takes between its entry and its
/// return, preemption included, on a machine that is not overloaded.
pub const WINDOW_NS: u64 = 100_000_000;

/// Each record that still comes late doubles the window, up to this: a
/// machine so loaded that its threads wait that long is held for longer,
/// at the cost of the memory the held records take.
pub const MAX_WINDOW_NS: u64 = 1_600_000_000;

/// The key of an event (see the module comment).
pub fn order_key(event: &Event) -> u64 {
    match event {
        Event::Syscall(call) if call.enter_ns != 0 && changes_existing(&call.call) => call.enter_ns,
        other => other.time_ns(),
    }
}

/// Does the call work on mappings that exist before it (rather than only
/// on a range the kernel chooses)?
fn changes_existing(call: &Call) -> bool {
    match *call {
        Call::Munmap { .. }
        | Call::Mremap { .. }
        | Call::Mprotect { .. }
        | Call::Madvise { .. }
        | Call::Shmdt { .. } => true,
        Call::Mmap { flags, .. } => flags & (map_flags::FIXED | map_flags::FIXED_NOREPLACE) != 0,
        Call::Brk { .. } | Call::Shmat { .. } => false,
    }
}

struct Held {
    key: u64,
    /// Arrival order, for equal keys.
    seq: u64,
    event: Event,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.seq).cmp(&(other.key, other.seq))
    }
}

/// Events held until they can be released in order.
///
/// Nearly every record arrives in key order (only calls that overlapped
/// another thread's do not), so those wait in a queue, appended and taken
/// in O(1) without moving the others; the few that arrive with a smaller
/// key than the queue's last wait in a heap. The next event is the smaller
/// of the two fronts.
pub struct Reorder {
    in_order: VecDeque<Held>,
    overtaken: BinaryHeap<Reverse<Held>>,
    seq: u64,
    /// The newest return time seen.
    newest_ns: u64,
    /// The key of the last event released.
    released_ns: u64,
    /// Events that arrived after events with larger keys had been
    /// released: applied out of order.
    pub late: u64,
    /// How long records are held now (see [`MAX_WINDOW_NS`]).
    window_ns: u64,
}

impl Default for Reorder {
    fn default() -> Self {
        Reorder {
            in_order: VecDeque::new(),
            overtaken: BinaryHeap::new(),
            seq: 0,
            newest_ns: 0,
            released_ns: 0,
            late: 0,
            window_ns: WINDOW_NS,
        }
    }
}

impl Reorder {
    pub fn push(&mut self, event: Event) {
        let key = order_key(&event);
        self.newest_ns = self.newest_ns.max(event.time_ns());
        if key < self.released_ns {
            self.late += 1;
            self.window_ns = (self.window_ns * 2).min(MAX_WINDOW_NS);
        }
        self.seq += 1;
        let held = Held {
            key,
            seq: self.seq,
            event,
        };
        if self.in_order.back().is_none_or(|last| last.key <= key) {
            self.in_order.push_back(held);
        } else {
            self.overtaken.push(Reverse(held));
        }
    }

    /// The smallest key held.
    fn first_key(&self) -> Option<u64> {
        let queued = self.in_order.front().map(|h| h.key);
        let heaped = self.overtaken.peek().map(|Reverse(h)| h.key);
        match (queued, heaped) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event no earlier one can still overtake, given that the
    /// clock reads `now_ns` (0: use only what the records say).
    pub fn pop_ready(&mut self, now_ns: u64) -> Option<Event> {
        let horizon = self.newest_ns.max(now_ns).saturating_sub(self.window_ns);
        if self.first_key().is_some_and(|key| key <= horizon) {
            return self.pop();
        }
        None
    }

    /// The next event, ready or not (the session is ending).
    pub fn pop(&mut self) -> Option<Event> {
        let from_heap = match (self.in_order.front(), self.overtaken.peek()) {
            (Some(queued), Some(Reverse(heaped))) => heaped < queued,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let held = if from_heap {
            self.overtaken.pop().map(|Reverse(h)| h)
        } else {
            self.in_order.pop_front()
        }?;
        self.released_ns = self.released_ns.max(held.key);
        Some(held.event)
    }

    pub fn len(&self) -> usize {
        self.in_order.len() + self.overtaken.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SyscallEvent;

    const MS: u64 = 1_000_000;

    fn call(call: Call, enter_ms: u64, exit_ms: u64) -> Event {
        let mut event = SyscallEvent::for_test(1, exit_ms * MS, call, 0, &[0x1000]);
        event.enter_ns = enter_ms * MS;
        Event::Syscall(event)
    }

    fn munmap(enter_ms: u64, exit_ms: u64) -> Event {
        call(
            Call::Munmap {
                addr: 0x10000,
                len: 4096,
            },
            enter_ms,
            exit_ms,
        )
    }

    fn mmap(flags: u32, enter_ms: u64, exit_ms: u64) -> Event {
        let mmap = Call::Mmap {
            addr: 0,
            len: 4096,
            prot: 3,
            flags,
            fd: -1,
            offset: 0,
        };
        call(mmap, enter_ms, exit_ms)
    }

    fn drain(reorder: &mut Reorder, now_ms: u64) -> Vec<u64> {
        std::iter::from_fn(|| reorder.pop_ready(now_ms * MS))
            .map(|e| e.time_ns() / MS)
            .collect()
    }

    #[test]
    fn an_unmap_that_returned_late_goes_before_the_map_that_reused_its_range() {
        let mut reorder = Reorder::default();
        // Thread A: munmap enters at 10 ms, is preempted, returns at 30.
        // Thread B: mmap of the freed range returns at 20 (arrives first).
        reorder.push(mmap(map_flags::PRIVATE, 15, 20));
        reorder.push(munmap(10, 30));
        assert!(drain(&mut reorder, 0).is_empty(), "held for the window");
        assert_eq!(drain(&mut reorder, 200), [30, 20], "the munmap first");
        assert_eq!(reorder.late, 0);
    }

    #[test]
    fn creations_go_by_return_and_changes_by_entry() {
        assert_eq!(order_key(&mmap(map_flags::PRIVATE, 5, 9)), 9 * MS);
        assert_eq!(order_key(&mmap(map_flags::FIXED, 5, 9)), 5 * MS);
        assert_eq!(order_key(&munmap(5, 9)), 5 * MS);
        // An entry the kernel did not see (traced from mid-call) counts as
        // the return.
        assert_eq!(order_key(&munmap(0, 9)), 9 * MS);
    }

    #[test]
    fn records_go_once_the_newest_return_is_a_window_past_them() {
        let mut reorder = Reorder::default();
        reorder.push(munmap(1, 2));
        reorder.push(munmap(4, 5));
        assert!(drain(&mut reorder, 0).is_empty());
        reorder.push(munmap(102, 103));
        assert_eq!(drain(&mut reorder, 0), [2], "103 - 100 covers key 1 only");
        assert_eq!(drain(&mut reorder, 104), [5], "the clock moved on");
        assert_eq!(reorder.len(), 1);
        assert_eq!(std::iter::from_fn(|| reorder.pop()).count(), 1);
    }

    #[test]
    fn a_record_later_than_the_window_is_applied_and_counted() {
        let mut reorder = Reorder::default();
        reorder.push(munmap(50, 51));
        assert_eq!(drain(&mut reorder, 200), [51]);
        reorder.push(munmap(10, 300));
        assert_eq!(reorder.late, 1);
        assert_eq!(drain(&mut reorder, 350), [300], "late: released at once");
        // The window doubled: 200 ms now.
        reorder.push(munmap(400, 401));
        assert!(drain(&mut reorder, 550).is_empty());
        assert_eq!(drain(&mut reorder, 600), [401]);
    }

    #[test]
    fn whatever_the_arrival_order_events_leave_by_key_then_arrival() {
        // Exit times in a scrambled order (a fixed permutation), mostly
        // rising, as records from several threads arrive.
        let mut reorder = Reorder::default();
        let mut expected = Vec::new();
        for i in 0..200u64 {
            let exit_ms = i + (i * 7919 % 13);
            reorder.push(mmap(0, 0, exit_ms));
            expected.push(exit_ms);
        }
        expected.sort();
        let released: Vec<u64> = std::iter::from_fn(|| reorder.pop())
            .map(|e| e.time_ns() / MS)
            .collect();
        assert_eq!(released, expected);
        assert!(reorder.is_empty());
    }
}
