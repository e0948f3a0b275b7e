//! Offsets of kernel struct fields, read from the kernel's own BTF
//! (`/sys/kernel/btf/vmlinux`): the eBPF programs need `task_struct`'s
//! saved FS base to tell which Python thread state is the caller's, and its
//! place moves with every kernel configuration.
//!
//! Only what that takes is parsed: the header, the type records (sized by
//! kind, to step over them), struct members and names.

use std::path::Path;

/// Where the running kernel's BTF is.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// Why a field's offset could not be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("not BTF (bad magic or header)")]
    NotBtf,
    #[error("BTF type {0} has unknown kind {1}")]
    UnknownKind(u32, u32),
    #[error("BTF is cut short")]
    Truncated,
    #[error("no struct {0} in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {0} has no member {1}")]
    NoMember(String, String),
}

/// The kernel's type information, parsed just enough to find fields.
pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Byte offset of each type record (index = type id; id 0 is void).
    types: Vec<usize>,
}

impl Btf {
    pub fn load(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path)
            .map_err(|e| BtfError::Read(path.display().to_string(), e.to_string()))?;
        Btf::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        let u16_at = |at: usize| {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err(BtfError::NotBtf);
        }
        let header = |i: usize| read_u32(&data, 4 + 4 * i).ok_or(BtfError::NotBtf);
        let header_len = header(0)? as usize;
        let (type_off, type_len) = (header(1)? as usize, header(2)? as usize);
        let (str_off, str_len) = (header(3)? as usize, header(4)? as usize);
        let types_at = header_len + type_off;
        let strings = header_len + str_off..header_len + str_off + str_len;
        if data.len() < strings.end || data.len() < types_at + type_len {
            return Err(BtfError::Truncated);
        }
        let mut types = vec![0];
        let mut at = types_at;
        while at < types_at + type_len {
            types.push(at);
            let info = read_u32(&data, at + 4).ok_or(BtfError::Truncated)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            // What follows each kind's 12-byte record (linux/btf.h).
            let extra = match kind {
                // ptr, fwd, typedef, volatile, const, restrict, func,
                // float, type tag
                2 | 7..=12 | 16 | 18 => 0,
                // int, var, decl tag
                1 | 14 | 17 => 4,
                // array
                3 => 12,
                // struct, union, datasec, enum64: 12 bytes per member
                4 | 5 | 15 | 19 => 12 * vlen,
                // enum, func proto: 8 per member
                6 | 13 => 8 * vlen,
                _ => return Err(BtfError::UnknownKind(types.len() as u32 - 1, kind)),
            };

            at += 12 + extra;
        }
        Ok(Btf {
            data,
            strings,
            types,
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = self.strings.start + offset as usize;
        let rest = self.data.get(start..self.strings.end).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn struct_id(&self, name: &str) -> Option<u32> {
        (1..self.types.len() as u32).find(|&id| {
            let at = self.types[id as usize];
            let kind = read_u32(&self.data, at + 4).map(|info| (info >> 24) & 0x1f);
            kind == Some(KIND_STRUCT)
                && read_u32(&self.data, at).is_some_and(|n| self.name(n) == name.as_bytes())
        })
    }

    /// A member of struct or union `id`: its type id and bit offset.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let at = *self.types.get(id as usize)?;
        let info = read_u32(&self.data, at + 4)?;
        let (kind, vlen, kflag) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31);
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return None;
        }
        (0..vlen as usize).find_map(|i| {
            let member = at + 12 + 12 * i;
            let offset = read_u32(&self.data, member + 8)?;
            let bits = if kflag == 1 {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            (self.name(read_u32(&self.data, member)?) == name.as_bytes())
                .then(|| Some((read_u32(&self.data, member + 4)?, bits)))?
        })
    }

    /// The byte offset of `path` (members, outermost first) in struct
    /// `outer`; each member but the last must itself be a struct.
    pub fn offset_of(&self, outer: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut id = self
            .struct_id(outer)
            .ok_or_else(|| BtfError::NoStruct(outer.to_owned()))?;
        let mut bits = 0;
        let mut within = outer.to_owned();
        for name in path {
            let (member_type, offset) = self
                .member(id, name)
                .ok_or_else(|| BtfError::NoMember(within.clone(), (*name).to_owned()))?;
            bits += offset;
            id = member_type;
            within = (*name).to_owned();
        }
        Ok(bits / 8)
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Where the running kernel keeps a task's saved FS base
/// (`task_struct.thread.fsbase`), or why it cannot be told.
pub fn task_fsbase_offset() -> Result<u32, BtfError> {
    Btf::load(Path::new(VMLINUX))?.offset_of("task_struct", &["thread", "fsbase"])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: strings, then type records.
    fn blob(strings: &[&str], types: &[u32]) -> Vec<u8> {
        let mut text = vec![0u8];
        for s in strings {
            text.extend_from_slice(s.as_bytes());
            text.push(0);
        }
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for word in [
            24,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            text.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&type_bytes);
        out.extend_from_slice(&text);
        out
    }

    #[test]
    fn finds_a_nested_member_offset() {
        // Names at: 1 "long", 6 "inner", 12 "outer", 18 "a", 20 "fsbase",
        // 27 "thread".
        let strings = ["long", "inner", "outer", "a", "fsbase", "thread"];
        let int = |name| [name, 1 << 24, 8, 64];
        let mut types = Vec::new();
        types.extend(int(1)); // 1: long
        // 2: struct inner { long a; long fsbase; } (fsbase at bit 64)
        types.extend([6, KIND_STRUCT << 24 | 2, 16, 18, 1, 0, 20, 1, 64]);
        // 3: struct outer { long a; struct inner thread; } (at byte 40)
        types.extend([12, KIND_STRUCT << 24 | 2, 56, 18, 1, 0, 27, 2, 320]);
        let btf = Btf::parse(blob(&strings, &types)).unwrap();
        assert_eq!(btf.offset_of("outer", &["thread", "fsbase"]), Ok(48));
        assert_eq!(
            btf.offset_of("outer", &["thread", "gsbase"]),
            Err(BtfError::NoMember("thread".into(), "gsbase".into()))
        );
        assert_eq!(
            btf.offset_of("task_struct", &["thread"]),
            Err(BtfError::NoStruct("task_struct".into()))
        );
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(matches!(Btf::parse(vec![0; 40]), Err(BtfError::NotBtf)));
        let mut cut = blob(&["x"], &[1, 1 << 24, 8, 64]);
        cut.truncate(cut.len() - 3);
        assert!(matches!(Btf::parse(cut), Err(BtfError::Truncated)));
    }

    #[test]
    fn the_running_kernel_says_where_fsbase_is() {
        // /sys/kernel/btf/vmlinux is world-readable; every kernel this tool
        // loads on has it (BTF is required).
        let offset =
            task_fsbase_offset().expect("the kernel's BTF names task_struct.thread.fsbase");
        assert_eq!(offset % 8, 0, "a saved register is 8-aligned");
        assert!(
            (1024..16384).contains(&offset),
            "{offset} is not inside a task_struct"
        );
    }
}
