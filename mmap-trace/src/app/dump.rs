//! `mmap-trace dump TRACE`: a trace as JSON lines, for scripts.

use std::{
    io::{self, BufWriter, Write as _},
    path::PathBuf,
};

use clap::Args;

use super::output::Failure;
use crate::{
    account::Header,
    trace::{self, Flow, Line},
};

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The trace file (version 1 or 2).
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
}

pub fn run(args: DumpArgs) -> Result<i32, Failure> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut write_error = None;
    // A trace cut short prints what it has, then says so.
    let read = trace::for_each_line(&args.trace, |_, line| {
        // What is printed is version 1, whatever was read.
        let line = match line {
            Line::Header(header) => Line::Header(Header {
                version: 1,
                ..header
            }),
            other => other,
        };
        let written = serde_json::to_writer(&mut out, &line)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        Ok(match written {
            Ok(()) => Flow::Continue,
            Err(error) => {
                write_error = Some(error);
                Flow::Stop
            }
        })
    });
    let flushed = out.flush();
    if let Some(error) = write_error.or(flushed.err()) {
        // A closed pipe (`dump | head`) is the reader's choice.
        if error.kind() == io::ErrorKind::BrokenPipe {
            return Ok(0);
        }
        return Err(anyhow::anyhow!("cannot write to stdout: {error}").into());
    }
    read?;
    Ok(0)
}
