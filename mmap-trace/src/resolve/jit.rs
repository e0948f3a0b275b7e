//! Names of JIT code, from the perf maps processes write
//! (`/tmp/perf-PID.map`: one `START SIZE name` line per function, in hex;
//! V8, the JVM, LuaJIT and CPython's `-X perf` write them).

use std::collections::HashMap;

/// One named range of JIT code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitSymbol {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

impl JitSymbol {
    /// A CPython `-X perf` trampoline (its names start `py::`).
    pub fn is_python_trampoline(&self) -> bool {
        self.name.starts_with("py::")
    }
}

/// Perf maps by process, as last read.
#[derive(Clone, Debug, Default)]
pub struct JitMaps {
    maps: HashMap<u32, Vec<JitSymbol>>,
}

impl JitMaps {
    /// Replaces what is known of `pid`'s map with the text of its file.
    pub fn load(&mut self, pid: u32, text: &str) {
        let mut symbols = parse(text);
        symbols.sort_by_key(|s| s.start);
        self.maps.insert(pid, symbols);
    }

    pub fn knows(&self, pid: u32) -> bool {
        self.maps.contains_key(&pid)
    }

    /// The JIT function at `address` of `pid`.
    pub fn lookup(&self, pid: u32, address: u64) -> Option<&JitSymbol> {
        let symbols = self.maps.get(&pid)?;
        let at = symbols.partition_point(|s| s.start <= address);
        let symbol = symbols.get(at.checked_sub(1)?)?;
        (address < symbol.end).then_some(symbol)
    }
}

/// The lines of a perf map that parse; others are skipped.
pub fn parse(text: &str) -> Vec<JitSymbol> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let start = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
            let size = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
            let name = fields.next()?.trim().to_owned();
            Some(JitSymbol {
                start,
                end: start.checked_add(size)?,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_maps_name_ranges() {
        let mut maps = JitMaps::default();
        maps.load(
            7,
            "7ffff7ec2d9f b py::do_mmap:/w/target.py\n\
             7f0000001000 40 jit_fn\n\
             garbage line\n",
        );
        assert_eq!(maps.lookup(7, 0x7f0000001010).unwrap().name, "jit_fn");
        assert!(maps.lookup(7, 0x7f0000001040).is_none(), "past its end");
        let trampoline = maps.lookup(7, 0x7ffff7ec2da0).unwrap();
        assert!(trampoline.is_python_trampoline());
        assert_eq!(trampoline.name, "py::do_mmap:/w/target.py");
        assert!(maps.lookup(8, 0x7f0000001010).is_none());
        assert!(maps.knows(7) && !maps.knows(8));
    }
}
