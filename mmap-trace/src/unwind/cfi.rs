//! Call-frame information of ELF objects, as unwind [`Rule`]s.

use std::{collections::HashMap, fs::File, path::Path};

use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EhFrame, EhFrameHdr, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use super::{CfaBase, Rule};
use crate::model::ObjectId;

/// Why no rule could be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRule {
    #[error("the object has no call-frame information")]
    NoCfi,
    #[error("no call-frame information covers this address")]
    NotCovered,
    #[error("the call-frame information uses a rule we do not evaluate")]
    Unsupported,
    #[error("the address is not in the object's loaded segments")]
    OutsideSegments,
}

#[derive(Clone, Copy, Debug)]
struct Section {
    file_offset: usize,
    size: usize,
    address: u64,
}

impl Section {
    fn bytes<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.file_offset..self.file_offset + self.size]
    }
}

/// One object's CFI (its file stays mapped).
pub struct ObjectCfi {
    data: memmap2::Mmap,
    eh_frame: Option<Section>,
    eh_frame_hdr: Option<Section>,
    debug_frame: Option<Section>,
    text_address: u64,
    /// The entry point (`_start`): code there has no caller, and some
    /// (ld.so's) has no CFI to say so.
    entry: u64,
    /// PT_LOAD segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
}

impl ObjectCfi {
    /// Maps and indexes `path`; `None` if it is not a readable ELF file.
    pub fn open(path: &Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        // SAFETY: a read-only private mapping; a file truncated under us
        // could fault, as for any debugger or profiler reading objects.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let elf = object::File::parse(&*data).ok()?;
        let section = |name: &str| {
            let section = elf.section_by_name(name)?;
            let (file_offset, size) = section.file_range()?;
            Some(Section {
                file_offset: file_offset as usize,
                size: size as usize,
                address: section.address(),
            })
        };
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr = section(".eh_frame_hdr");
        let debug_frame = section(".debug_frame");
        let text_address = elf.section_by_name(".text").map_or(0, |s| s.address());
        let segments = elf
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, size, s.address())
            })
            .collect();
        Some(ObjectCfi {
            entry: elf.entry(),
            eh_frame,
            eh_frame_hdr,
            debug_frame,
            text_address,
            segments,
            data,
        })
    }

    /// The virtual address (as the object states it) of a file offset.
    pub fn address_of(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(offset, size, _)| (*offset..offset + size).contains(&file_offset))
            .map(|(offset, _, address)| file_offset - offset + address)
    }

    /// The rule at `address` (a stated virtual address).
    pub fn rule_at(
        &self,
        address: u64,
        context: &mut UnwindContext<usize>,
    ) -> Result<Rule, NoRule> {
        match self.rule_from_cfi(address, context) {
            // `_start` calls its first function within a few instructions.
            Err(NoRule::NotCovered | NoRule::NoCfi)
                if self.entry != 0 && (self.entry..self.entry + 32).contains(&address) =>
            {
                Ok(Rule::End)
            }
            other => other,
        }
    }

    fn rule_from_cfi(
        &self,
        address: u64,
        context: &mut UnwindContext<usize>,
    ) -> Result<Rule, NoRule> {
        let bases = BaseAddresses::default().set_text(self.text_address);
        if let Some(eh) = self.eh_frame {
            let bases = bases.clone().set_eh_frame(eh.address);
            let section = EhFrame::new(eh.bytes(&self.data), LittleEndian);
            let from_table = self.eh_frame_hdr.and_then(|hdr| {
                let bases = bases.clone().set_eh_frame_hdr(hdr.address);
                let parsed = EhFrameHdr::new(hdr.bytes(&self.data), LittleEndian)
                    .parse(&bases, 8)
                    .ok()?;
                let table = parsed.table()?;
                Some(
                    table
                        .unwind_info_for_address(&section, &bases, context, address, |s, b, o| {
                            s.cie_from_offset(b, o)
                        })
                        .map(to_rule),
                )
            });
            match from_table {
                Some(Ok(rule)) => return rule,
                Some(Err(_)) => {}
                None => {
                    if let Ok(row) = section.unwind_info_for_address(
                        &bases,
                        context,
                        address,
                        EhFrame::cie_from_offset,
                    ) {
                        return to_rule(row);
                    }
                }
            }
        }
        if let Some(debug) = self.debug_frame {
            let section = DebugFrame::new(debug.bytes(&self.data), LittleEndian);
            return match section.unwind_info_for_address(
                &bases,
                context,
                address,
                DebugFrame::cie_from_offset,
            ) {
                Ok(row) => to_rule(row),
                Err(_) => Err(NoRule::NotCovered),
            };
        }
        if self.eh_frame.is_none() {
            Err(NoRule::NoCfi)
        } else {
            Err(NoRule::NotCovered)
        }
    }
}

fn to_rule(row: &gimli::UnwindTableRow<usize>) -> Result<Rule, NoRule> {
    if let Some(RegisterRule::Undefined) = row.register(X86_64::RA) {
        return Ok(Rule::End);
    }
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return Err(NoRule::Unsupported),
    }
    let (base, offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RSP => {
            (CfaBase::Rsp, *offset)
        }
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RBP => {
            (CfaBase::Rbp, *offset)
        }
        _ => return Err(NoRule::Unsupported),
    };
    let rbp_at = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => None,
        Some(RegisterRule::Offset(at)) => Some(i32::try_from(at).map_err(|_| NoRule::Unsupported)?),
        Some(_) => return Err(NoRule::Unsupported),
    };
    Ok(Rule::Frame {
        base,
        offset: i32::try_from(offset).map_err(|_| NoRule::Unsupported)?,
        rbp_at,
    })
}

/// Objects' CFI, opened once each, and rules by (object, file offset).
#[derive(Default)]
pub struct CfiCache {
    objects: HashMap<ObjectId, Option<ObjectCfi>>,
    rules: HashMap<(ObjectId, u64), Result<Rule, NoRule>>,
    context: Box<UnwindContext<usize>>,
}

impl CfiCache {
    /// The rule for the code at `file_offset` of `object`, which can be
    /// read at `path`.
    pub fn rule(
        &mut self,
        object: ObjectId,
        path: &Path,
        file_offset: u64,
    ) -> Result<Rule, NoRule> {
        if let Some(rule) = self.rules.get(&(object, file_offset)) {
            return *rule;
        }
        let object_cfi = self
            .objects
            .entry(object)
            .or_insert_with(|| ObjectCfi::open(path));
        let rule = match object_cfi {
            None => Err(NoRule::NoCfi),
            Some(cfi) => match cfi.address_of(file_offset) {
                None => Err(NoRule::OutsideSegments),
                Some(address) => cfi.rule_at(address, &mut self.context),
            },
        };
        self.rules.insert((object, file_offset), rule);
        rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own test binary has CFI; `main`-like code starts with a
    /// CFA = rsp + 8 rule at its first instruction.
    #[test]
    fn rules_from_our_own_binary() {
        let exe = std::env::current_exe().unwrap();
        let object = ObjectCfi::open(&exe).expect("an ELF file");
        let address = rules_from_our_own_binary as *const () as u64;
        // Find our load bias from /proc/self/maps to turn the runtime address
        // into a file offset, then into the stated address.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let file_offset = maps
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                let (start, end) = fields.next()?.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
                (start <= address && address < end).then_some(address - start + offset)
            })
            .unwrap();
        let stated = object.address_of(file_offset).unwrap();
        let mut context = Box::new(UnwindContext::new());
        let rule = object.rule_at(stated, &mut context).unwrap();
        assert_eq!(
            rule,
            Rule::Frame {
                base: CfaBase::Rsp,
                offset: 8,
                rbp_at: None
            },
            "at a function's first instruction only the return address is pushed"
        );
    }

    #[test]
    fn missing_objects_have_no_rules() {
        let mut cache = CfiCache::default();
        assert_eq!(
            cache.rule(ObjectId(0), Path::new("/nonexistent/lib.so"), 0x1000),
            Err(NoRule::NoCfi)
        );
    }
}
