//! Folded stacks (`inferno`'s and flamegraph.pl's input): one line per
//! distinct stack, root first, frames joined by `;`, then a space and the
//! stack's weight. The flame graphs (SVG, HTML) are drawn from these lines.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{FrameKind, FrameRow, InlinedRow, StackRow, text::basename};
use crate::{account::UNKNOWN, model::CallKind};

/// What a picture weighs each stack by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Weight {
    /// Bytes still mapped at the end (for an exited process: at its exit).
    #[default]
    Live,
    /// Resident bytes at the last sample (0 where unknown: exited processes).
    Resident,
    /// Bytes mapped over the whole run, unmapped since or not.
    Mapped,
    /// Traced calls the stack made (every kind, failed ones too).
    Calls,
}

impl Weight {
    /// What the widths mean, for titles.
    pub fn title(self) -> &'static str {
        match self {
            Weight::Live => "Live bytes (still mapped at the end)",
            Weight::Resident => "Resident bytes (at the last sample)",
            Weight::Mapped => "Mapped bytes (over the whole run)",
            Weight::Calls => "Traced calls",
        }
    }

    /// The unit of one sample, as flame graphs name it.
    pub fn unit(self) -> &'static str {
        match self {
            Weight::Calls => "calls",
            _ => "bytes",
        }
    }

    /// This stack's weight.
    pub fn of(self, figures: &Figures) -> u64 {
        match self {
            Weight::Live => figures.live_bytes,
            Weight::Resident => figures.resident_bytes,
            Weight::Mapped => figures.mapped_bytes,
            Weight::Calls => figures.calls,
        }
    }
}

/// A stack's figures that pictures weigh it by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Figures {
    pub live_bytes: u64,
    /// 0 when unknown (the processes exited).
    #[serde(default, deserialize_with = "null_as_zero")]
    pub resident_bytes: u64,
    pub mapped_bytes: u64,
    pub calls: u64,
}

impl Figures {
    pub fn of(row: &StackRow) -> Self {
        Figures {
            live_bytes: row.live_bytes,
            resident_bytes: row.resident_bytes.unwrap_or(0),
            mapped_bytes: row.mapped_bytes,
            calls: row.calls,
        }
    }
}

/// The calls that map memory: mmap, mremap, brk and shmat (pprof's
/// "objects allocated"). A stack's System V calls are all attaches or all
/// detaches, since its innermost frame is the syscall instruction of one
/// of them; its sizes say which.
pub fn mapping_calls(row: &StackRow) -> u64 {
    let detaches = row.sizes.iter().any(|s| s.call == CallKind::Shmdt)
        && !row.sizes.iter().any(|s| s.call == CallKind::Shmat);
    let attaches = if detaches { 0 } else { row.shm_calls };
    row.mmap_calls + row.mremap_calls + row.brk_calls + attaches
}

/// Folded stacks with their summed weights, sorted by stack (as
/// stackcollapse tools write them). Stacks of weight 0 are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    stacks: BTreeMap<String, u64>,
}

/// A JSON report whose stacks cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FoldedError {
    #[error("the report has no stacks[]")]
    NoStacks,
    // The serde error is the source: `{:#}` prints it after this.
    #[error("the report's stacks[] cannot be read")]
    BadStacks(#[from] serde_json::Error),
}

impl Folded {
    pub fn from_stacks(stacks: &[StackRow], weight: Weight) -> Self {
        let mut folded = Folded::default();
        for row in stacks {
            folded.add(&row.frames, weight.of(&Figures::of(row)));
        }
        folded
    }

    /// The same from a JSON report (`mmap-trace/report/v1`), which `diff`
    /// reads; reports from before frame kinds existed have native frames.
    pub fn from_json(report: &serde_json::Value, weight: Weight) -> Result<Self, FoldedError> {
        let stacks = report.get("stacks").ok_or(FoldedError::NoStacks)?;
        let stacks: Vec<JsonStack> = Vec::deserialize(stacks)?;
        let mut folded = Folded::default();
        for stack in stacks {
            let frames: Vec<FrameRow> = stack.frames.into_iter().map(FrameRow::from).collect();
            folded.add(&frames, weight.of(&stack.figures));
        }
        Ok(folded)
    }

    fn add(&mut self, frames: &[FrameRow], weight: u64) {
        if weight == 0 {
            return;
        }
        *self.stacks.entry(line(frames)).or_default() += weight;
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// The sum of all weights.
    pub fn total(&self) -> u64 {
        self.stacks.values().sum()
    }

    /// (stack, weight), sorted by stack.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.stacks
            .iter()
            .map(|(stack, &weight)| (stack.as_str(), weight))
    }

    /// The folded lines, each ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (stack, weight) in self.iter() {
            text.push_str(stack);
            text.push(' ');
            text.push_str(&weight.to_string());
            text.push('\n');
        }
        text
    }
}

/// inferno's differential input (difffolded's output): one line per stack
/// of either, `stack FIRST SECOND`, sorted by stack. inferno draws the
/// second column's widths, coloured by the change from the first.
pub fn differential_lines(first: &Folded, second: &Folded) -> std::io::Result<String> {
    let mut lines = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        first.to_text().as_bytes(),
        second.to_text().as_bytes(),
        &mut lines,
    )?;
    // inferno writes them in hash order: sorted, the output is reproducible.
    let text = String::from_utf8_lossy(&lines);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    Ok(lines.iter().map(|line| format!("{line}\n")).collect())
}

/// One stack's frames, root first, `;`-separated. Inlined functions are
/// frames of their own after the function they were inlined into, outermost
/// first (callee after caller), as inferno's perf collapser shows them.
pub fn line(frames: &[FrameRow]) -> String {
    let mut names: Vec<String> = Vec::new();
    for frame in frames.iter().rev() {
        names.push(frame_name(frame));
        names.extend(frame.inlined.iter().map(|i| clean(&i.symbol)));
    }
    if names.is_empty() {
        // A call whose stack could not be captured still holds its bytes.
        names.push(UNKNOWN.to_owned());
    }
    names.join(";")
}

/// A frame's name: its symbol; else `object+0xoffset`. Python frames are
/// `function (file:line)`, JIT frames their perf-map name.
pub fn frame_name(frame: &FrameRow) -> String {
    let symbol = frame.symbol.as_deref().filter(|s| !s.is_empty());
    let name = match (frame.kind, symbol) {
        (FrameKind::Python, Some(function)) => match (&frame.file, frame.line) {
            (Some(file), Some(line)) => format!("{function} ({}:{line})", basename(file)),
            (Some(file), None) => format!("{function} ({})", basename(file)),
            (None, _) => function.to_owned(),
        },
        (_, Some(symbol)) => symbol.to_owned(),
        (_, None) => format!("{}+{:#x}", basename(&frame.object), frame.offset),
    };
    clean(&name)
}

/// `;` separates frames and a line ends the stack: neither may appear in a
/// name (Rust symbols such as `<[u8; 8]>` have semicolons).
fn clean(name: &str) -> String {
    name.replace(';', ",").replace(['\n', '\r'], " ")
}

/// The parts of a JSON stack row that folded stacks need.
#[derive(Deserialize)]
struct JsonStack {
    #[serde(flatten)]
    figures: Figures,
    #[serde(default)]
    frames: Vec<JsonFrame>,
}

#[derive(Deserialize)]
struct JsonFrame {
    #[serde(default)]
    kind: JsonKind,
    #[serde(default)]
    object: String,
    #[serde(default)]
    offset: u64,
    symbol: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    #[serde(default)]
    inlined: Vec<JsonInlined>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JsonKind {
    #[default]
    Native,
    Python,
    Jit,
}

#[derive(Deserialize)]
struct JsonInlined {
    symbol: String,
    file: Option<String>,
    line: Option<u32>,
}

impl From<JsonFrame> for FrameRow {
    fn from(frame: JsonFrame) -> Self {
        FrameRow {
            kind: match frame.kind {
                JsonKind::Native => FrameKind::Native,
                JsonKind::Python => FrameKind::Python,
                JsonKind::Jit => FrameKind::Jit,
            },
            object: frame.object,
            offset: frame.offset,
            symbol: frame.symbol,
            file: frame.file,
            line: frame.line,
            inlined: frame
                .inlined
                .into_iter()
                .map(|i| InlinedRow {
                    symbol: i.symbol,
                    file: i.file,
                    line: i.line,
                })
                .collect(),
            ..FrameRow::default()
        }
    }
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.unwrap_or(0))
}

#[cfg(test)]
mod tests;
