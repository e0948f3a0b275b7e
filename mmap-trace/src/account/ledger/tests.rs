//! One test per edge case of the kernel's semantics.

use super::*;
use crate::model::PAGE_SIZE;

const P: u64 = PAGE_SIZE;
const A: Origin = Origin::Traced(StackId(1));
const B: Origin = Origin::Traced(StackId(2));

/// Read-write private memory mapped by `origin`.
fn rw(origin: Origin) -> Attrs {
    Attrs {
        origin,
        prot: prot::READ | prot::WRITE,
        kind: MemoryKind::PrivateAnon,
    }
}

fn ranges(space: &AddressSpace) -> Vec<(u64, u64, Origin)> {
    space
        .regions()
        .map(|r| (r.start, r.end, r.origin))
        .collect()
}

#[test]
fn map_rounds_to_pages() {
    let mut space = AddressSpace::default();
    let change = space.map(0x10000, 100, rw(A));
    assert_eq!(change.mapped, P);
    assert_eq!(space.live_bytes(), P);
}

#[test]
fn fill_only_covers_gaps() {
    let mut space = AddressSpace::default();
    space.map(0x10000 + P, P, rw(A));
    let added = space.fill(0x10000, 0x10000 + 3 * P, rw(Origin::PreExisting));
    assert_eq!(added, 2 * P);
    assert_eq!(
        ranges(&space),
        vec![
            (0x10000, 0x10000 + P, Origin::PreExisting),
            (0x10000 + P, 0x10000 + 2 * P, A),
            (0x10000 + 2 * P, 0x10000 + 3 * P, Origin::PreExisting)
        ]
    );
}

#[test]
fn partial_munmap_in_the_middle_splits() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 10 * P, rw(A));
    let change = space.unmap(0x10000 + 3 * P, 2 * P);
    assert_eq!(change.released, vec![(A, 2 * P)]);
    assert_eq!(change.unknown_released, 0);
    assert_eq!(space.live_bytes(), 8 * P);
    assert_eq!(
        ranges(&space),
        vec![
            (0x10000, 0x10000 + 3 * P, A),
            (0x10000 + 5 * P, 0x10000 + 10 * P, A)
        ]
    );
}

#[test]
fn munmap_across_regions_and_holes() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 2 * P, rw(A));
    space.map(0x10000 + 3 * P, 2 * P, rw(B));
    let change = space.unmap(0x10000 + P, 3 * P);
    assert_eq!(change.released, vec![(A, P), (B, P)]);
    assert_eq!(change.unknown_released, P);
    assert_eq!(space.live_bytes(), 2 * P);
}

#[test]
fn map_fixed_replaces_overlap() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 4 * P, rw(A));
    let change = space.map(0x10000 + P, 2 * P, rw(B));
    assert_eq!(change.released, vec![(A, 2 * P)]);
    assert_eq!(change.mapped, 2 * P);
    assert_eq!(space.live_bytes(), 4 * P);
    assert_eq!(
        ranges(&space),
        vec![
            (0x10000, 0x10000 + P, A),
            (0x10000 + P, 0x10000 + 3 * P, B),
            (0x10000 + 3 * P, 0x10000 + 4 * P, A)
        ]
    );
}

#[test]
fn mremap_grow_in_place() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 2 * P, rw(A));
    let change = space.remap(0x10000, 2 * P, 5 * P, 0, 0x10000, B);
    assert_eq!(change.mapped, 3 * P);
    assert!(change.released.is_empty());
    assert_eq!(
        ranges(&space),
        vec![
            (0x10000, 0x10000 + 2 * P, A),
            (0x10000 + 2 * P, 0x10000 + 5 * P, B)
        ]
    );
}

#[test]
fn mremap_shrink_releases_tail() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 4 * P, rw(A));
    let change = space.remap(0x10000, 4 * P, P, 0, 0x10000, B);
    assert_eq!(change.released, vec![(A, 3 * P)]);
    assert_eq!(change.mapped, 0);
    assert_eq!(space.live_bytes(), P);
}

#[test]
fn mremap_move_keeps_attribution_and_grows() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 2 * P, rw(A));
    let change = space.remap(0x10000, 2 * P, 3 * P, 1, 0x80000, B);
    assert_eq!(change.mapped, P);
    assert!(change.released.is_empty());
    assert_eq!(
        ranges(&space),
        vec![
            (0x80000, 0x80000 + 2 * P, A),
            (0x80000 + 2 * P, 0x80000 + 3 * P, B)
        ]
    );
}

#[test]
fn mremap_move_with_shrink() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 4 * P, rw(A));
    let change = space.remap(0x10000, 4 * P, P, 1, 0x80000, B);
    assert_eq!(change.released, vec![(A, 3 * P)]);
    assert_eq!(ranges(&space), vec![(0x80000, 0x80000 + P, A)]);
}

#[test]
fn mremap_dontunmap_keeps_old_range() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 2 * P, rw(A));
    space.remap(0x10000, 2 * P, 2 * P, 1 | MREMAP_DONTUNMAP, 0x80000, B);
    assert_eq!(
        ranges(&space),
        vec![(0x10000, 0x10000 + 2 * P, A), (0x80000, 0x80000 + 2 * P, A)]
    );
}

#[test]
fn mremap_of_unseen_range_attributes_to_caller() {
    let mut space = AddressSpace::default();
    let change = space.remap(0x10000, 2 * P, 2 * P, 1, 0x80000, B);
    assert_eq!(change.mapped, 2 * P);
    assert_eq!(ranges(&space), vec![(0x80000, 0x80000 + 2 * P, B)]);
}

#[test]
fn mremap_fixed_over_live_range_releases_it() {
    let mut space = AddressSpace::default();
    space.map(0x10000, P, rw(A));
    space.map(0x80000, 2 * P, rw(B));
    let change = space.remap(0x10000, P, P, 3, 0x80000, A);
    assert_eq!(change.released, vec![(B, P)]);
    assert_eq!(
        ranges(&space),
        vec![(0x80000, 0x80000 + P, A), (0x80000 + P, 0x80000 + 2 * P, B)]
    );
}

#[test]
fn mprotect_commits_reserved_bytes_to_its_own_stack() {
    let mut space = AddressSpace::default();
    let reserve = Attrs {
        prot: prot::NONE,
        ..rw(A)
    };
    space.map(0x10000, 16 * P, reserve);
    let done = space.protect(0x10000 + 4 * P, 2 * P, prot::READ | prot::WRITE, StackId(9));
    assert_eq!(done.committed, 2 * P);
    let committed: Vec<_> = space
        .regions()
        .map(|r| (r.start, r.is_reserved(), r.origin, r.holder()))
        .collect();
    assert_eq!(
        committed,
        vec![
            (0x10000, true, A, A),
            (0x10000 + 4 * P, false, A, Origin::Traced(StackId(9))),
            (0x10000 + 6 * P, true, A, A),
        ],
        "mapped by A, committed by the mprotect's stack"
    );
    // Making accessible bytes read-only commits nothing; making them
    // reserved again decommits them.
    assert_eq!(
        space
            .protect(0x10000 + 4 * P, P, prot::READ, StackId(10))
            .committed,
        0
    );
    let done = space.protect(0x10000, 16 * P, prot::NONE, StackId(11));
    assert_eq!(done.decommitted, vec![(Origin::Traced(StackId(9)), 2 * P)]);
    assert!(space.regions().all(|r| r.is_reserved() && r.holder() == A));
    assert_eq!(space.live_bytes(), 16 * P, "still mapped");
}

#[test]
fn madvise_returns_resident_bytes_and_keeps_the_mapping() {
    let mut space = AddressSpace::default();
    space.map(0x10000, 8 * P, rw(A));
    for region in space.regions_mut() {
        region.resident = 8 * P;
    }
    let advised = space.advise(0x10000 + 2 * P, 4 * P);
    assert_eq!(
        advised,
        Advised {
            bytes: 4 * P,
            resident_returned: 4 * P
        }
    );
    assert_eq!(space.live_bytes(), 8 * P);
    let resident: Vec<u64> = space.regions().map(|r| r.resident).collect();
    assert_eq!(resident, vec![2 * P, 0, 2 * P], "shared out by length");
}

#[test]
fn moved_bytes_keep_their_attributes() {
    let mut space = AddressSpace::default();
    let shared = Attrs {
        kind: MemoryKind::Shared,
        ..rw(A)
    };
    space.map(0x10000, 2 * P, shared);
    space.protect(0x10000, 2 * P, prot::READ, StackId(5));
    space.remap(0x10000, 2 * P, 3 * P, 1, 0x80000, B);
    let moved: Vec<_> = space
        .regions()
        .map(|r| (r.start, r.origin, r.kind, r.prot))
        .collect();
    assert_eq!(
        moved,
        vec![
            (0x80000, A, MemoryKind::Shared, prot::READ),
            (0x80000 + 2 * P, B, MemoryKind::Shared, prot::READ)
        ]
    );
}

#[test]
fn ranges_at_the_top_of_the_address_space_do_not_wrap() {
    let mut space = AddressSpace::default();
    let change = space.map(u64::MAX - P, 4 * P, rw(A));
    assert_eq!(change.mapped, P, "clamped to the top");
    let change = space.unmap(u64::MAX - 2 * P, u64::MAX);
    assert_eq!(change.released, vec![(A, P)]);
    space.remap(0x10000, P, 2 * P, 1, u64::MAX - P, B);
    assert!(space.regions().all(|r| r.start < r.end));
}
