//! File offsets → function, source file and line (with inlined frames),
//! through blazesym, cached per object and offset.

use std::{collections::HashMap, path::Path};

use crate::model::ObjectId;
use blazesym::symbolize::{
    CodeInfo, Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};

/// What we know about one code address.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SymbolInfo {
    /// Demangled function name.
    pub name: String,
    /// Offset of the address from the function's start.
    pub offset: u64,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Functions inlined at this address, outermost first.
    pub inlined: Vec<InlinedInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InlinedInfo {
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Symbolizes file offsets of objects, remembering every answer.
pub struct Symbols {
    symbolizer: Symbolizer,
    cache: HashMap<(ObjectId, u64), Option<SymbolInfo>>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            symbolizer: Symbolizer::new(),
            cache: HashMap::new(),
        }
    }
}

impl Symbols {
    /// Symbolizes `offsets` (file offsets) of `object`, an ELF file that
    /// can be read at `path`; an offset that cannot be symbolized yields
    /// `None`, never an error.
    pub fn lookup(
        &mut self,
        object: ObjectId,
        path: &Path,
        offsets: &[u64],
    ) -> Vec<Option<SymbolInfo>> {
        let mut missing: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|&o| !self.cache.contains_key(&(object, o)))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let source = Source::Elf(Elf::new(path));
            let results = match self
                .symbolizer
                .symbolize(&source, Input::FileOffset(&missing))
            {
                Ok(results) => results.into_iter().map(to_info).collect(),
                Err(error) => {
                    log::debug!("cannot symbolize {}: {error}", path.display());
                    vec![None; missing.len()]
                }
            };
            for (offset, info) in missing.into_iter().zip(results) {
                self.cache.insert((object, offset), info);
            }
        }
        offsets
            .iter()
            .map(|&o| self.cache[&(object, o)].clone())
            .collect()
    }
}

fn to_info(symbolized: Symbolized<'_>) -> Option<SymbolInfo> {
    let sym = symbolized.into_sym()?;
    let (file, line) = location(sym.code_info.as_deref());
    Some(SymbolInfo {
        name: sym.name.into_owned(),
        offset: sym.offset as u64,
        file,
        line,
        inlined: sym
            .inlined
            .iter()
            .map(|inlined| {
                let (file, line) = location(inlined.code_info.as_ref());
                InlinedInfo {
                    name: inlined.name.to_string(),
                    file,
                    line,
                }
            })
            .collect(),
    })
}

fn location(info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(info) => (Some(info.to_path().display().to_string()), info.line),
        None => (None, None),
    }
}
