//! The report as a pprof profile (gzipped `profile.proto`), which
//! `go tool pprof`, Pyroscope and Parca read: one sample per stack row,
//! its values the stack's live, mapped and resident bytes.

pub mod proto;

use std::{collections::HashMap, io::Write as _};

use flate2::{Compression, write::GzEncoder};
use prost::Message as _;

use self::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use super::{FrameKind, FrameRow, Report, StackRow, folded::mapping_calls};
use crate::account::UNKNOWN;

/// The sample types, in the order of every sample's values: (type, unit).
pub const SAMPLE_TYPES: [(&str, &str); 5] = [
    // Live bytes and regions: what is still mapped.
    ("inuse_space", "bytes"),
    ("inuse_objects", "count"),
    // Mapped bytes and the calls that mapped them, over the whole run.
    ("alloc_space", "bytes"),
    ("alloc_objects", "count"),
    // Resident bytes at the last sample; 0 where unknown (exited).
    ("resident_space", "bytes"),
];

/// What tools show first.
pub const DEFAULT_SAMPLE_TYPE: &str = "inuse_space";

/// The gzipped profile.
pub fn render_pprof(report: &Report) -> Vec<u8> {
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into memory cannot fail.
    gzip.write_all(&profile(report).encode_to_vec())
        .and_then(|()| gzip.finish())
        .expect("gzip into a Vec cannot fail")
}

/// The profile of `report`.
pub fn profile(report: &Report) -> Profile {
    let mut builder = Builder::default();
    let sample_type = SAMPLE_TYPES
        .iter()
        .map(|(kind, unit)| builder.value_type(kind, unit))
        .collect();
    let period_type = Some(builder.value_type("space", "bytes"));
    let sample = report
        .stacks
        .iter()
        .map(|row| builder.sample(row))
        .collect();
    let mut comment = vec![builder.strings.index(&format!(
        "mmap-trace {}: stopped by {}",
        report.version, report.stopped_by
    ))];
    if let Some(command) = &report.command {
        comment.push(
            builder
                .strings
                .index(&format!("command: {}", command.join(" "))),
        );
    }
    let default_sample_type = builder.strings.index(DEFAULT_SAMPLE_TYPE);
    Profile {
        sample_type,
        sample,
        mapping: builder.mappings,
        location: builder.locations,
        function: builder.functions,
        string_table: builder.strings.table,
        duration_nanos: (report.duration_s * 1e9) as i64,
        period_type,
        period: 1,
        comment,
        default_sample_type,
        ..Profile::default()
    }
}

/// The string table: each string once, "" first.
struct Strings {
    table: Vec<String>,
    indices: HashMap<String, i64>,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            table: vec![String::new()],
            indices: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Strings {
    fn index(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.indices.get(text) {
            return index;
        }
        let index = self.table.len() as i64;
        self.table.push(text.to_owned());
        self.indices.insert(text.to_owned(), index);
        index
    }
}

/// Where a location is: an address in a mapping (or in no known object),
/// or a Python line, which has no address.
#[derive(Clone, PartialEq, Eq, Hash)]
enum LocationKey {
    Code { mapping_id: u64, address: u64 },
    Python { function: u64, line: i64 },
}

#[derive(Default)]
struct Builder {
    strings: Strings,
    mappings: Vec<Mapping>,
    /// (object, build id, load bias) → mapping id.
    mapping_ids: HashMap<(String, Option<String>, u64), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<LocationKey, u64>,
    functions: Vec<Function>,
    /// (name, file) string indices → function id.
    function_ids: HashMap<(i64, i64), u64>,
}

impl Builder {
    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.strings.index(kind),
            unit: self.strings.index(unit),
        }
    }

    fn sample(&mut self, row: &StackRow) -> Sample {
        let values = [
            row.live_bytes,
            row.live_regions,
            row.mapped_bytes,
            mapping_calls(row),
            row.resident_bytes.unwrap_or(0),
        ];
        let label = [("issuer", &row.issuer), ("requester", &row.requester)]
            .into_iter()
            .map(|(key, value)| Label {
                key: self.strings.index(key),
                str: self.strings.index(value),
                ..Label::default()
            })
            .collect();
        Sample {
            // Our frames are innermost first, as pprof wants them.
            location_id: row.frames.iter().map(|f| self.location(f)).collect(),
            value: values
                .iter()
                .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
            label,
        }
    }

    fn location(&mut self, frame: &FrameRow) -> u64 {
        let (key, mapping_id, address) = match frame.kind {
            FrameKind::Python => {
                let function = self.function(frame.symbol.as_deref(), frame.file.as_deref());
                let line = i64::from(frame.line.unwrap_or(0));
                (LocationKey::Python { function, line }, 0, 0)
            }
            // JIT code lives in anonymous memory: no file to map.
            FrameKind::Jit => (
                LocationKey::Code {
                    mapping_id: 0,
                    address: frame.addr,
                },
                0,
                frame.addr,
            ),
            FrameKind::Native => {
                let mapping_id = self.mapping(frame);
                let key = LocationKey::Code {
                    mapping_id,
                    address: frame.addr,
                };
                (key, mapping_id, frame.addr)
            }
        };
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        let line = self.lines(frame);
        self.locations.push(Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }

    /// A location's lines: the inlined functions innermost first, then the
    /// function they were inlined into (pprof's order). None for code that
    /// could not be symbolized: consumers that have the object (by its
    /// build id) can still name it from the address.
    fn lines(&mut self, frame: &FrameRow) -> Vec<Line> {
        let Some(symbol) = frame.symbol.as_deref() else {
            return Vec::new();
        };
        let mut lines: Vec<Line> = frame
            .inlined
            .iter()
            .rev()
            .map(|inlined| Line {
                function_id: self.function(Some(&inlined.symbol), inlined.file.as_deref()),
                line: i64::from(inlined.line.unwrap_or(0)),
                column: 0,
            })
            .collect();
        lines.push(Line {
            function_id: self.function(Some(symbol), frame.file.as_deref()),
            line: i64::from(frame.line.unwrap_or(0)),
            column: 0,
        });
        lines
    }

    fn function(&mut self, name: Option<&str>, file: Option<&str>) -> u64 {
        let name = self.strings.index(name.unwrap_or(UNKNOWN));
        let filename = self.strings.index(file.unwrap_or(""));
        if let Some(&id) = self.function_ids.get(&(name, filename)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(Function {
            id,
            name,
            system_name: name,
            filename,
            // Where the function starts is not known.
            start_line: 0,
        });
        self.function_ids.insert((name, filename), id);
        id
    }

    /// The mapping of a native frame's object, 0 when it has none. One
    /// per load of the object (processes load it at different addresses):
    /// it starts where the object's file offset 0 would be, so that
    /// `address - memory_start + file_offset` is the frame's file offset,
    /// which is what symbolizers look up.
    fn mapping(&mut self, frame: &FrameRow) -> u64 {
        if frame.object == UNKNOWN || frame.object.is_empty() {
            return 0;
        }
        let base = frame.addr.saturating_sub(frame.offset);
        let key = (frame.object.clone(), frame.build_id.clone(), base);
        let id = match self.mapping_ids.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.mappings.len() as u64 + 1;
                let filename = self.strings.index(&frame.object);
                let build_id = self.strings.index(frame.build_id.as_deref().unwrap_or(""));
                self.mappings.push(Mapping {
                    id,
                    memory_start: base,
                    memory_limit: base,
                    file_offset: 0,
                    filename,
                    build_id,
                    has_functions: true,
                    has_filenames: true,
                    has_line_numbers: true,
                    has_inline_frames: true,
                });
                self.mapping_ids.insert(key, id);
                id
            }
        };
        let mapping = &mut self.mappings[id as usize - 1];
        mapping.memory_limit = mapping.memory_limit.max(frame.addr.saturating_add(1));
        // A mapping claims symbols only if every frame in it has them, so
        // that consumers symbolize the rest themselves.
        mapping.has_functions &= frame.symbol.is_some();
        mapping.has_inline_frames = mapping.has_functions;
        mapping.has_filenames &= frame.file.is_some();
        mapping.has_line_numbers &= frame.line.is_some();
        id
    }
}

#[cfg(test)]
mod tests;
