//! Who made a mapping: the *issuer* (the object that made the syscall) and
//! the *requester* (the first object that is not an interposer).
//!
//! Objects are matched by soname stem, so versioned names
//! (`libc.so.6`) and the hashed copies that Python wheels bundle
//! (`libucm-f6ca5dec.so.0.0.0`) match too.

/// Objects that only pass a request through: the C library, the dynamic
/// loader, threading, UCX's memory hooks and malloc implementations.
pub const DEFAULT_INTERPOSERS: &[&str] = &[
    "libc",
    "ld-linux-x86-64",
    "ld-linux",
    "ld",
    "libpthread",
    "libucm",
    "libjemalloc",
    "libtcmalloc",
    "libtcmalloc_minimal",
    "libmimalloc",
];

/// The C library and the dynamic loader: the issuer is never one of them
/// unless every frame is.
const SYSTEM: &[&str] = &["libc", "ld-linux-x86-64", "ld-linux", "ld", "libpthread"];

/// Where a frame's code lives, as attribution sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameObject<'a> {
    /// A mapped object (path or pseudo-name such as `[vdso]`).
    Known(&'a str),
    /// The address is in no mapping we know: the walk went astray, or the
    /// code is anonymous (JIT).
    Unknown,
}

/// The two answers for one stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attribution {
    /// `None` when a frame we cannot place comes before any object outside
    /// libc and ld.so.
    pub issuer: Option<String>,
    /// `None` when the known frames end before a non-interposer appears.
    pub requester: Option<String>,
}

/// Attribution rules with the user's extra interposers.
#[derive(Clone, Debug)]
pub struct AttributionRules {
    interposers: Vec<String>,
}

impl Default for AttributionRules {
    fn default() -> Self {
        AttributionRules::new(&[])
    }
}

impl AttributionRules {
    pub fn new(extra_interposers: &[String]) -> Self {
        let mut interposers: Vec<String> =
            DEFAULT_INTERPOSERS.iter().map(|s| s.to_string()).collect();
        interposers.extend(extra_interposers.iter().map(|s| stem(s).to_owned()));
        AttributionRules { interposers }
    }

    pub fn is_interposer(&self, object: &str) -> bool {
        let stem = stem(object);
        self.interposers.iter().any(|i| i == stem)
    }

    /// Attributes a stack given innermost first. `complete` says the walk
    /// reached the outermost frame: then a stack made only of interposers
    /// (the loader mapping the program's libraries) was requested by its
    /// outermost object; a truncated one names no requester.
    pub fn attribute(&self, frames: &[FrameObject<'_>], complete: bool) -> Attribution {
        let requester = match self.requester(frames) {
            Some(requester) => Some(requester),
            None if complete && frames.iter().all(|f| *f != FrameObject::Unknown) => {
                frames.last().and_then(|f| match f {
                    FrameObject::Known(object) => Some(object.to_string()),
                    FrameObject::Unknown => None,
                })
            }
            None => None,
        };
        Attribution {
            issuer: self.issuer(frames),
            requester,
        }
    }

    fn issuer(&self, frames: &[FrameObject<'_>]) -> Option<String> {
        let mut innermost_system = None;
        for frame in frames {
            match frame {
                FrameObject::Known(object) if is_system(object) => {
                    innermost_system.get_or_insert(*object);
                }
                FrameObject::Known(object) => return Some(object.to_string()),
                // A frame we cannot place before any non-system one: the
                // issuer is not known.
                FrameObject::Unknown => return None,
            }
        }
        // Every frame is libc or ld.so (ld.so loading a library).
        innermost_system.map(str::to_owned)
    }

    /// The first non-interposer, unless an unknown frame comes first.
    fn requester(&self, frames: &[FrameObject<'_>]) -> Option<String> {
        frames.iter().find_map(|frame| match frame {
            FrameObject::Known(object) if self.is_interposer(object) => None,
            FrameObject::Known(object) => Some(Some(object.to_string())),
            FrameObject::Unknown => Some(None),
        })?
    }
}

fn is_system(object: &str) -> bool {
    SYSTEM.contains(&stem(object))
}

/// The soname stem of a path: `/usr/lib/libucm-f6ca5dec.so.0.0.0` → `libucm`.
pub fn stem(object: &str) -> &str {
    let base = object.rsplit('/').next().unwrap_or(object);
    let base = match base.find(".so") {
        Some(at) => &base[..at],
        None => base,
    };
    // Wheels bundle copies renamed with an 8-hex-digit hash: libfoo-1a2b3c4d.
    match base.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FrameObject::{Known, Unknown};

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    const LD: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
    const UCM: &str = "/usr/lib/x86_64-linux-gnu/libucm.so.0.0.0";
    const UCS: &str = "/usr/lib/x86_64-linux-gnu/libucs.so.0.0.0";

    #[test]
    fn stems() {
        assert_eq!(stem(LIBC), "libc");
        assert_eq!(
            stem("/site-packages/ucx.libs/libucm-f6ca5dec.so.0.0.0"),
            "libucm"
        );
        assert_eq!(stem("/usr/bin/python3.11"), "python3.11");
        assert_eq!(stem("libfoo-bar.so"), "libfoo-bar");
        assert_eq!(stem(LD), "ld-linux-x86-64");
    }

    #[test]
    fn plain_mmap_from_the_app() {
        let rules = AttributionRules::default();
        let a = rules.attribute(&[Known(LIBC), Known("/app"), Known(LIBC)], false);
        assert_eq!(a.issuer.as_deref(), Some("/app"));
        assert_eq!(a.requester.as_deref(), Some("/app"));
    }

    #[test]
    fn raw_syscall_from_ucm_on_behalf_of_ucs() {
        let rules = AttributionRules::default();
        let a = rules.attribute(
            &[
                Known(LIBC),
                Known(UCM),
                Known(UCM),
                Known(UCS),
                Known("/app"),
            ],
            false,
        );
        assert_eq!(a.issuer.as_deref(), Some(UCM));
        assert_eq!(a.requester.as_deref(), Some(UCS));
    }

    #[test]
    fn wheel_copies_are_interposers_too() {
        let rules = AttributionRules::default();
        let ucm = "/venv/lib/python3.11/site-packages/ucx.libs/libucm-f6ca5dec.so.0.0.0";
        let a = rules.attribute(
            &[Known(LIBC), Known(ucm), Known("/usr/bin/python3.11")],
            false,
        );
        assert_eq!(a.issuer.as_deref(), Some(ucm));
        assert_eq!(a.requester.as_deref(), Some("/usr/bin/python3.11"));
    }

    #[test]
    fn loader_only_stacks_are_issued_by_the_loader() {
        let rules = AttributionRules::default();
        let a = rules.attribute(&[Known(LD), Known(LD)], false);
        assert_eq!(a.issuer.as_deref(), Some(LD));
        assert_eq!(
            a.requester, None,
            "a truncated stack inside interposers names no requester"
        );
        let a = rules.attribute(&[Known(LD), Known(LD)], true);
        assert_eq!(
            a.requester.as_deref(),
            Some(LD),
            "complete: the loader asked"
        );
    }

    #[test]
    fn truncated_stacks_have_no_requester() {
        let rules = AttributionRules::default();
        let a = rules.attribute(&[Known(LIBC), Known(UCM), Unknown, Known("/app")], false);
        assert_eq!(a.issuer.as_deref(), Some(UCM));
        assert_eq!(a.requester, None);
        let a = rules.attribute(&[Known(LIBC), Unknown, Known("/app")], false);
        assert_eq!(a.issuer, None, "the caller of libc is not known");
    }

    #[test]
    fn user_interposers_extend_the_list() {
        let rules = AttributionRules::new(&["libmyalloc.so".into()]);
        let a = rules.attribute(
            &[Known(LIBC), Known("/opt/libmyalloc.so"), Known("/app")],
            false,
        );
        assert_eq!(a.issuer.as_deref(), Some("/opt/libmyalloc.so"));
        assert_eq!(a.requester.as_deref(), Some("/app"));
    }
}
