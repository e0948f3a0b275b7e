//! What each successful call does to its process's address space.

use super::Process;
use crate::{
    account::ledger::{Advised, Attrs, Change, Origin, Protected},
    model::{Call, MemoryKind, StackId, page_round_up, prot},
};

/// `SHM_RDONLY`: shmat attaches read-only.
const SHM_RDONLY: u32 = 0o10000;

/// What one call did.
#[derive(Debug, Default)]
pub(super) struct Effect {
    pub change: Change,
    /// The length to count in the stack's sizes.
    pub size: Option<u64>,
    pub protected: Option<Protected>,
    pub advised: Option<Advised>,
}

impl Effect {
    fn mapped(change: Change, size: u64) -> Self {
        Effect {
            change,
            size: Some(size),
            ..Default::default()
        }
    }
}

/// Applies a successful `call` that returned `ret`, made through `stack`;
/// `shmem`: an mmap'd file lives in memory.
pub(super) fn apply(
    process: &mut Process,
    call: &Call,
    ret: u64,
    stack: StackId,
    shmem: bool,
) -> Effect {
    let origin = Origin::Traced(stack);
    let space = &mut process.space;
    match *call {
        Call::Mmap {
            len,
            prot,
            flags,
            fd,
            ..
        } => {
            let attrs = Attrs {
                origin,
                prot,
                kind: MemoryKind::of_mmap(flags, fd, shmem),
            };
            Effect::mapped(space.map(ret, len, attrs), len)
        }
        Call::Munmap { addr, len } => Effect::mapped(space.unmap(addr, len), len),
        Call::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            ..
        } => Effect::mapped(
            space.remap(old_addr, old_len, new_len, flags, ret, origin),
            new_len,
        ),
        Call::Brk { requested } => {
            let previous = process.brk.replace(ret);
            let (Some(previous), true) = (previous, requested != 0) else {
                // brk(0) asks; a first break we cannot compare with.
                return Effect::default();
            };
            let (old_end, new_end) = (page_round_up(previous), page_round_up(ret));
            if new_end > old_end {
                let attrs = Attrs {
                    origin,
                    prot: prot::READ | prot::WRITE,
                    kind: MemoryKind::Heap,
                };
                Effect::mapped(
                    space.map(old_end, new_end - old_end, attrs),
                    new_end - old_end,
                )
            } else {
                Effect::mapped(space.unmap(new_end, old_end - new_end), old_end - new_end)
            }
        }
        Call::Shmat { size, flags, .. } => {
            let attrs = Attrs {
                origin,
                prot: if flags & SHM_RDONLY != 0 {
                    prot::READ
                } else {
                    prot::READ | prot::WRITE
                },
                kind: MemoryKind::Shared,
            };
            Effect::mapped(space.map(ret, size, attrs), size)
        }
        Call::Shmdt { addr } => {
            let length = space.region_at(addr).map_or(0, |r| r.len());
            Effect::mapped(space.unmap(addr, length), length)
        }
        Call::Mprotect { addr, len, prot } => Effect {
            protected: Some(space.protect(addr, len, prot, stack)),
            size: Some(len),
            ..Default::default()
        },
        Call::Madvise { addr, len, .. } => Effect {
            advised: Some(space.advise(addr, len)),
            size: Some(len),
            ..Default::default()
        },
    }
}
