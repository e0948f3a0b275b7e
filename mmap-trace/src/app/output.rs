//! Where reports go, how commands fail, and the report in each format.

use std::{
    fs::File,
    io::{self, Write as _},
    path::Path,
};

use anyhow::Context as _;

use super::cli::Format;
use crate::report::{self, Report};

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

/// The report in `format`.
pub fn render(report: &Report, format: Format, top: usize) -> String {
    match format {
        Format::Text => report::render_text(report, top),
        Format::Json => report.to_json() + "\n",
    }
}

/// Where the report goes; a file is created before tracing starts, so a bad
/// path fails at once rather than after a long trace.
pub enum Output {
    Stdout,
    File(File, String),
}

impl Output {
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match path {
            None => Output::Stdout,
            Some(path) => Output::File(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                path.display().to_string(),
            ),
        })
    }

    pub fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let result = match self {
            Output::Stdout => io::stdout().lock().write_all(text.as_bytes()),
            Output::File(file, _) => file
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_all()),
        };
        match (result, self) {
            (Ok(()), _) => Ok(()),
            // A closed pipe (`| head`) is the reader's choice, not an error.
            (Err(e), Output::Stdout) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            (Err(e), Output::Stdout) => Err(e).context("cannot write the report to stdout"),
            (Err(e), Output::File(_, path)) => {
                Err(e).with_context(|| format!("cannot write the report to {path}"))
            }
        }
    }
}
