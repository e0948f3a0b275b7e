//! Reading mmap-trace's JSON report (schema mmap-trace/report/v1).

use serde_json::Value;

/// A JSON report.
pub struct Report(pub Value);

impl Report {
    /// The value at a dotted path (`"events.mmap"`, `"targets.0.pid"`).
    pub fn get(&self, path: &str) -> &Value {
        path.split('.')
            .fold(&self.0, |value, key| match key.parse::<usize>() {
                Ok(index) => &value[index],
                Err(_) => &value[key],
            })
    }

    pub fn u64(&self, path: &str) -> u64 {
        self.get(path)
            .as_u64()
            .unwrap_or_else(|| panic!("{path} is not a number in the report"))
    }

    pub fn stacks(&self) -> &[Value] {
        self.0["stacks"].as_array().expect("stacks[]")
    }

    /// Stacks with a frame in function `symbol`.
    pub fn stacks_through(&self, symbol: &str) -> Vec<&Value> {
        self.stacks()
            .iter()
            .filter(|stack| frames(stack).iter().any(|f| f["symbol"] == symbol))
            .collect()
    }

    /// The by_issuer / by_requester row of the object whose file name is `name`.
    pub fn object_row(&self, table: &str, name: &str) -> Option<&Value> {
        self.0[table]
            .as_array()
            .expect("object table")
            .iter()
            .find(|row| basename(row["object"].as_str().unwrap_or_default()) == name)
    }

    pub fn target(&self, pid: u32) -> Option<&Value> {
        self.0["targets"]
            .as_array()
            .expect("targets[]")
            .iter()
            .find(|t| t["pid"] == pid)
    }

    /// Position of `name` in the by_issuer table (0 = most live bytes).
    pub fn by_issuer_rank(&self, name: &str) -> usize {
        self.0["by_issuer"]
            .as_array()
            .expect("by_issuer[]")
            .iter()
            .position(|row| basename(row["object"].as_str().unwrap_or_default()) == name)
            .unwrap_or_else(|| panic!("{name} is not in by_issuer"))
    }
}

pub fn frames(stack: &Value) -> &[Value] {
    stack["frames"].as_array().expect("frames[]")
}

/// Function names of a stack, innermost first (`?` for unknown).
pub fn symbols(stack: &Value) -> Vec<&str> {
    frames(stack)
        .iter()
        .map(|f| f["symbol"].as_str().unwrap_or("?"))
        .collect()
}

/// Every stack of a report in one line each (calls, who unwound it, why it
/// stopped, its first frames): what a failed assertion about stacks shows,
/// so that a failure in CI explains itself.
pub fn describe_stacks(report: &Report) -> String {
    report
        .stacks()
        .iter()
        .map(|s| {
            let names = symbols(s);
            format!(
                "\n  calls={} unwinder={} stop={} frames={:?}",
                s["calls"],
                s["unwinder"],
                s["stop_reason"],
                &names[..names.len().min(8)]
            )
        })
        .collect()
}

/// The pids of stacks, sorted, each once.
pub fn pids(stacks: &[&Value]) -> Vec<u64> {
    let mut pids: Vec<u64> = stacks
        .iter()
        .flat_map(|s| s["pids"].as_array().into_iter().flatten())
        .filter_map(Value::as_u64)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Sum of a numeric field over stacks.
pub fn sum(stacks: &[&Value], field: &str) -> u64 {
    stacks.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum()
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Calls of `call` with length `bytes` over stacks (from their `sizes`).
pub fn calls_of_size(stacks: &[&Value], call: &str, bytes: u64) -> u64 {
    stacks
        .iter()
        .flat_map(|s| s["sizes"].as_array().into_iter().flatten())
        .filter(|size| size["call"] == call && size["bytes"] == bytes)
        .map(|size| size["calls"].as_u64().unwrap_or(0))
        .sum()
}
