//! Errors of the tracing machinery, each one line a user can act on.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A load failed on a kernel older than the programs need.
    #[error(
        "needs Linux {}.{} or newer ({features}); this is Linux {release}",
        needed.0,
        needed.1
    )]
    KernelTooOld {
        needed: (u32, u32),
        features: &'static str,
        release: String,
    },
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("attaching {program} to the {tracepoint} tracepoint failed: {detail}")]
    Attach {
        program: String,
        tracepoint: String,
        detail: String,
    },
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, String),
    #[error("opening the kernel's mapping records (perf_event_open) failed: {0}{hint}", hint = perf_hint(.0))]
    Perf(std::io::Error),
}

/// What a refused perf event most often means for a user holding
/// CAP_PERFMON without CAP_SYS_ADMIN: Debian's kernels default to
/// `perf_event_paranoid` 3, which reserves perf events to CAP_SYS_ADMIN.
fn perf_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        " (without CAP_SYS_ADMIN, perf events need sysctl kernel.perf_event_paranoid=2 or lower)"
    } else {
        ""
    }
}

impl TraceError {
    pub fn load(error: impl Display) -> Self {
        TraceError::Load(first_line(error))
    }

    pub fn attach(program: &str, tracepoint: &str, error: impl Display) -> Self {
        TraceError::Attach {
            program: program.to_owned(),
            tracepoint: tracepoint.to_owned(),
            detail: first_line(error),
        }
    }
}

/// The first line of an error (verifier logs run to hundreds of lines; -v
/// shows them through the log).
fn first_line(error: impl Display) -> String {
    let text = error.to_string();
    log::debug!("{text}");
    text.lines().next().unwrap_or_default().to_owned()
}
