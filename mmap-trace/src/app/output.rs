//! Where reports go, how commands fail, and the report in each format.

use std::{
    io::{self, IsTerminal as _, Write as _},
    path::Path,
};

use anyhow::Context as _;
use serde_json::Value;

use super::{cli::Format, files::OutputFile};
use crate::report::{
    self, Report,
    folded::{self, Folded, Weight},
    html, pprof, svg,
};

/// Exit code when mmap-trace itself fails.
pub const EXIT_FAILURE: i32 = 1;

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub source: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(source: E) -> Self {
        Failure {
            code: EXIT_FAILURE,
            source: source.into(),
        }
    }
}

/// The report in `format`; `top` stacks in text, pictures weighed by
/// `weight`.
pub fn render(
    report: &Report,
    format: Format,
    top: usize,
    weight: Weight,
) -> anyhow::Result<Vec<u8>> {
    let folded = || Folded::from_stacks(&report.stacks, weight);
    Ok(match format {
        Format::Text => report::render_text(report, top).into_bytes(),
        Format::Json => (report.to_json() + "\n").into_bytes(),
        Format::Folded => folded().to_text().into_bytes(),
        Format::Svg => svg::flame_graph(&folded(), weight)?.into_bytes(),
        Format::Pprof => pprof::render_pprof(report),
        Format::Html => html::render_html(report, weight)?.into_bytes(),
    })
}

/// `diff`'s pictures of what changed from `before` to `after` (JSON
/// reports): differential folded lines (`stack before after`) or a
/// differential flame graph. `None` for the formats `diff` writes itself.
pub fn render_diff_picture(
    before: &Value,
    after: &Value,
    format: Format,
    weight: Weight,
) -> anyhow::Result<Option<Vec<u8>>> {
    let fold = |report: &Value, which: &str| {
        Folded::from_json(report, weight).with_context(|| format!("the {which} report"))
    };
    Ok(match format {
        Format::Text | Format::Json => None,
        Format::Folded => Some(
            folded::differential_lines(&fold(before, "before")?, &fold(after, "after")?)
                .context("cannot compare the stacks")?
                .into_bytes(),
        ),
        Format::Svg => Some(
            svg::differential(&fold(before, "before")?, &fold(after, "after")?, weight)?
                .into_bytes(),
        ),
        Format::Pprof | Format::Html => anyhow::bail!(
            "diff writes text, json, folded or svg, not {} (go tool pprof compares \
             profiles itself: -diff_base)",
            format.name()
        ),
    })
}

/// Where the report goes; a file is created before tracing starts, so a bad
/// path fails at once rather than after a long trace.
pub enum Output {
    Stdout,
    File(OutputFile),
}

impl Output {
    /// Where a report in `format` goes. A binary format refuses a terminal
    /// (here, before any tracing, rather than after a long trace).
    pub fn open(path: Option<&Path>, format: Format) -> anyhow::Result<Self> {
        if path.is_none() && format.is_binary() && io::stdout().is_terminal() {
            anyhow::bail!("{} is binary: write it to a file with -o", format.name());
        }
        Ok(match path {
            None => Output::Stdout,
            Some(path) => Output::File(OutputFile::create(path)?),
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let result = match self {
            Output::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(bytes).and_then(|()| stdout.flush())
            }
            Output::File(file) => file.write_all_and_commit(bytes),
        };
        match (result, self) {
            (Ok(()), _) => Ok(()),
            // A closed pipe (`| head`) is the reader's choice, not an error.
            (Err(e), Output::Stdout) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            (Err(e), Output::Stdout) => Err(e).context("cannot write the report to stdout"),
            (Err(e), Output::File(file)) => {
                let path = file.path().display().to_string();
                Err(e).with_context(|| format!("cannot write the report to {path}"))
            }
        }
    }
}
