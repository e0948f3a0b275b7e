//! Objects (executables, libraries, pseudo-objects such as `[vdso]`) are
//! interned once per session and referred to by id.

/// Index of an interned object (see `resolve::objects::Objects`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u32);

impl ObjectId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
