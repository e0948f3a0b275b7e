//! The lines of a trace file, whichever its version: JSON lines for
//! version 1, blocks of binary records for version 2, told apart by their
//! first bytes. `report` replays them; `dump` prints them.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::Path,
};

use super::{
    TraceFileError,
    v1::Line,
    v2::{BlockError, BlockReader, Cursor, Decoder, MAGIC},
};

/// Where in a file a line was: its line (version 1) or record (version 2)
/// number, from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    Line(usize),
    Record(usize),
}

impl Position {
    pub fn number(self) -> usize {
        match self {
            Position::Line(n) | Position::Record(n) => n,
        }
    }

    /// An error at this position of `path`.
    pub fn error(self, path: &str, problem: String) -> TraceFileError {
        match self {
            Position::Line(line) => TraceFileError::At {
                path: path.to_owned(),
                line,
                problem,
            },
            Position::Record(record) => TraceFileError::AtRecord {
                path: path.to_owned(),
                record,
                problem,
            },
        }
    }
}

/// What the sink says after a line.
pub enum Flow {
    Continue,
    Stop,
}

/// Feeds every line of the trace at `path` to `sink`, until it says stop
/// or the file ends. Returns the position of the last line read (`None`
/// for an empty file).
pub fn for_each_line(
    path: &Path,
    mut sink: impl FnMut(Position, Line<'_>) -> Result<Flow, TraceFileError>,
) -> Result<Option<Position>, TraceFileError> {
    let name = path.display().to_string();
    let read_error = |cause: io::Error| TraceFileError::Read {
        path: name.clone(),
        cause,
    };
    let mut input = BufReader::new(File::open(path).map_err(read_error)?);
    let binary = input.fill_buf().map_err(read_error)?.starts_with(MAGIC);
    if binary {
        input.consume(MAGIC.len());
        return binary_lines(input, &name, sink);
    }
    let mut last = None;
    for (index, text) in input.lines().enumerate() {
        let position = Position::Line(index + 1);
        let text = text.map_err(|e| position.error(&name, format!("unreadable: {e}")))?;
        let line = parse(&text).map_err(|problem| position.error(&name, problem))?;
        last = Some(position);
        if let Flow::Stop = sink(position, line)? {
            break;
        }
    }
    Ok(last)
}

/// One line of JSON as a trace record.
pub(super) fn parse(text: &str) -> Result<Line<'_>, String> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            "the record is cut short".to_owned()
        } else {
            format!("not a trace record ({e})")
        }
    })
}

fn binary_lines(
    input: impl Read,
    name: &str,
    mut sink: impl FnMut(Position, Line<'_>) -> Result<Flow, TraceFileError>,
) -> Result<Option<Position>, TraceFileError> {
    let mut blocks = BlockReader::new(input);
    let mut decoder = Decoder::default();
    let mut record = 0;
    loop {
        let block = match blocks.next_block() {
            Ok(Some((raw, _))) => raw,
            Ok(None) => break,
            Err(BlockError::CutShort) => {
                return Err(TraceFileError::TruncatedRecords {
                    path: name.to_owned(),
                    records: record,
                });
            }
            Err(error) => {
                return Err(Position::Record(record + 1).error(name, error.to_string()));
            }
        };
        let mut cursor = Cursor::new(&block);
        while !cursor.is_empty() {
            record += 1;
            let position = Position::Record(record);
            let line = decoder
                .decode(&mut cursor)
                .map_err(|e| position.error(name, e.to_string()))?;
            if let Some(line) = line
                && let Flow::Stop = sink(position, line)?
            {
                return Ok(Some(position));
            }
        }
    }
    Ok((record > 0).then_some(Position::Record(record)))
}
