//! Live bytes per object, as issuer and as requester, kept as events
//! arrive. Objects are named once ([`LiveByObject::name`]) and referred to
//! by id after, so a change costs no allocation.

use std::collections::HashMap;

/// Which attribution an object holds bytes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Issuer,
    Requester,
}

impl Role {
    pub const BOTH: [Role; 2] = [Role::Issuer, Role::Requester];

    pub fn name(self) -> &'static str {
        match self {
            Role::Issuer => "issuer",
            Role::Requester => "requester",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An object name interned by [`LiveByObject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameId(u32);

/// Live bytes per (role, object).
#[derive(Debug, Default)]
pub struct LiveByObject {
    names: Vec<String>,
    ids: HashMap<String, NameId>,
    live: HashMap<(Role, NameId), i64>,
}

impl LiveByObject {
    /// The id of `object`'s name.
    pub fn name(&mut self, object: &str) -> NameId {
        if let Some(&id) = self.ids.get(object) {
            return id;
        }
        let id = NameId(self.names.len() as u32);
        self.names.push(object.to_owned());
        self.ids.insert(object.to_owned(), id);
        id
    }

    pub fn name_str(&self, id: NameId) -> &str {
        &self.names[id.0 as usize]
    }

    /// `object`'s live bytes changed by `delta`.
    pub fn change(&mut self, role: Role, object: NameId, delta: i64) {
        *self.live.entry((role, object)).or_default() += delta;
    }

    /// Current live bytes per object of `role`.
    pub fn live(&self, role: Role) -> impl Iterator<Item = (&str, i64)> {
        self.live
            .iter()
            .filter(move |((r, _), _)| *r == role)
            .map(|((_, object), live)| (self.name_str(*object), *live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_interned_and_live_bytes_kept_per_role() {
        let mut live = LiveByObject::default();
        let liba = live.name("liba");
        assert_eq!(live.name("liba"), liba);
        let app = live.name("app");
        live.change(Role::Issuer, liba, 4096);
        live.change(Role::Requester, app, 4096);
        live.change(Role::Issuer, liba, -1024);
        let issuers: Vec<_> = live.live(Role::Issuer).collect();
        assert_eq!(issuers, [("liba", 3072)]);
        assert_eq!(live.name_str(app), "app");
    }
}
