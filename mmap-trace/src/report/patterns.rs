//! Known patterns: rules that turn a growth verdict into a hint. The
//! built-in ones live in `data/patterns.json` (versioned with the code);
//! `--patterns FILE` adds more in the same format.

use std::path::Path;

use serde::Deserialize;

use crate::resolve::attribute::stem;

const BUILTIN: &str = include_str!("../../data/patterns.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    version: u32,
    patterns: Vec<Pattern>,
}

/// One rule: every condition given must hold for a stack of the growing
/// object.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    pub name: String,
    #[serde(default)]
    pub about: String,
    /// Soname stem of the issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Soname stem of the requester.
    #[serde(default)]
    pub requester: Option<String>,
    /// Some frame's function starts with one of these.
    #[serde(default)]
    pub frame_symbols: Vec<String>,
    pub hints: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: {cause}")]
    Parse {
        path: String,
        cause: serde_json::Error,
    },
    #[error("{path}: version {version} is not supported (this mmap-trace reads version 1)")]
    Version { path: String, version: u32 },
}

fn parse(text: &str, path: &str) -> Result<Vec<Pattern>, PatternError> {
    let file: PatternFile = serde_json::from_str(text).map_err(|cause| PatternError::Parse {
        path: path.to_owned(),
        cause,
    })?;
    if file.version != 1 {
        return Err(PatternError::Version {
            path: path.to_owned(),
            version: file.version,
        });
    }
    Ok(file.patterns)
}

/// The built-in patterns, then those of `extra` files.
pub fn load(extra: &[impl AsRef<Path>]) -> Result<Vec<Pattern>, PatternError> {
    let mut patterns = parse(BUILTIN, "data/patterns.json")?;
    for path in extra {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| PatternError::Read {
            path: name.clone(),
            cause,
        })?;
        patterns.extend(parse(&text, &name)?);
    }
    Ok(patterns)
}

impl Pattern {
    /// Does a stack with this issuer, requester and frame symbols match?
    pub fn matches<'s>(
        &self,
        issuer: &str,
        requester: &str,
        mut symbols: impl Iterator<Item = &'s str>,
    ) -> bool {
        let object_is = |wanted: &Option<String>, object: &str| {
            wanted.as_deref().is_none_or(|w| stem(object) == w)
        };
        object_is(&self.issuer, issuer)
            && object_is(&self.requester, requester)
            && (self.frame_symbols.is_empty()
                || symbols.any(|symbol| {
                    self.frame_symbols
                        .iter()
                        .any(|p| symbol.starts_with(p.as_str()))
                }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack requested by libucs, issued by `issuer`, through `symbols`.
    fn matches(pattern: &Pattern, issuer: &str, symbols: &[&str]) -> bool {
        pattern.matches(issuer, "/usr/lib/libucs.so.0", symbols.iter().copied())
    }

    #[test]
    fn the_builtin_ucx_rule_wants_libucm_and_the_registration_cache() {
        let patterns = load(&[] as &[&str]).unwrap();
        let ucx = patterns
            .iter()
            .find(|p| p.name == "ucx-registration-cache")
            .unwrap();
        let ucm = "/venv/ucx.libs/libucm-f6ca5dec.so.0.0.0";
        assert!(matches(
            ucx,
            ucm,
            &["syscall", "ucm_mmap", "ucs_rcache_create_region"]
        ));
        assert!(!matches(ucx, ucm, &["syscall", "ucm_mmap", "main"]));
        assert!(!matches(ucx, "/usr/lib/libfoo.so", &["ucs_rcache_get"]));
        assert!(
            ucx.hints
                .iter()
                .any(|h| h.contains("UCX_RCACHE_MAX_UNRELEASED"))
        );
        assert!(
            ucx.hints
                .iter()
                .any(|h| h.contains("UCX_MEM_MMAP_HOOK_MODE=none"))
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(matches!(
            parse("{", "x.json"),
            Err(PatternError::Parse { .. })
        ));
        assert!(matches!(
            parse(r#"{"version": 2, "patterns": []}"#, "x.json"),
            Err(PatternError::Version { version: 2, .. })
        ));
        assert!(matches!(
            load(&["/nonexistent/patterns.json"]),
            Err(PatternError::Read { .. })
        ));
    }
}
