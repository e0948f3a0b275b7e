//! `mmap-trace diff A B`: what changed between two traces or JSON reports,
//! per issuer and requester.

use std::{
    collections::BTreeMap,
    fmt::{self, Write},
    path::Path,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    cli::{DiffArgs, Format},
    output::{Failure, Output, render_diff_picture},
};
use crate::{report, report::text::bytes, trace};

/// A report as JSON, from a trace or a JSON report file.
fn load_report(path: &Path, judging: &report::Judging) -> anyhow::Result<Value> {
    if trace::is_trace_path(path) {
        let recording = trace::replay(path)?;
        let patterns = report::patterns::load(&[] as &[&str])?;
        let report = report::build(&recording, &patterns, judging);
        return Ok(serde_json::to_value(&report)?);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is neither a trace (.mtrace) nor a JSON report",
            path.display()
        )
    })?;
    if value["schema"] != report::SCHEMA {
        anyhow::bail!(
            "{} is not an mmap-trace JSON report (schema {})",
            path.display(),
            value["schema"]
        );
    }
    Ok(value)
}

/// One object's figures in one report; `None` where the report did not
/// know (a window too short to judge, processes that had exited, or a
/// report from before resident bytes were sampled).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Figures {
    live_bytes: i64,
    bytes_per_min: Option<f64>,
    resident_bytes: Option<u64>,
    resident_bytes_per_min: Option<f64>,
    flagged: bool,
}

/// (role, object) → figures, from a report's growth rows.
fn figures(report: &Value) -> BTreeMap<(String, String), Figures> {
    report["growth"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let role = row["role"].as_str()?.to_owned();
            let object = row["object"].as_str()?.to_owned();
            let figures = Figures {
                live_bytes: row["live_bytes"].as_i64().unwrap_or(0),
                bytes_per_min: row["bytes_per_min"].as_f64(),
                resident_bytes: row["resident_bytes"].as_u64(),
                resident_bytes_per_min: row["resident_bytes_per_min"].as_f64(),
                flagged: row["flagged"].as_bool().unwrap_or(false),
            };
            Some(((role, object), figures))
        })
        .collect()
}

/// `b - a`, when both are known.
fn delta<T: std::ops::Sub<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    Some(b? - a?)
}

pub fn run(args: DiffArgs) -> Result<i32, Failure> {
    let judging = report::Judging {
        min_window_s: args.min_window.as_secs_f64(),
        ..Default::default()
    };
    let before_report = load_report(&args.before, &judging)?;
    let after_report = load_report(&args.after, &judging)?;
    if let Some(picture) =
        render_diff_picture(&before_report, &after_report, args.format, args.weight)?
    {
        Output::open(None, args.format)?.write(&picture)?;
        return Ok(0);
    }
    let before = figures(&before_report);
    let after = figures(&after_report);
    let mut keys: Vec<&(String, String)> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<Value> = keys
        .into_iter()
        .map(|key| {
            let a = before.get(key).copied().unwrap_or_default();
            let b = after.get(key).copied().unwrap_or_default();
            json!({
                "role": key.0,
                "object": key.1,
                "live_bytes_before": a.live_bytes,
                "live_bytes_after": b.live_bytes,
                "live_bytes_delta": b.live_bytes - a.live_bytes,
                "bytes_per_min_before": a.bytes_per_min,
                "bytes_per_min_after": b.bytes_per_min,
                "bytes_per_min_delta": delta(a.bytes_per_min, b.bytes_per_min),
                "resident_bytes_before": a.resident_bytes,
                "resident_bytes_after": b.resident_bytes,
                "resident_bytes_delta": delta(
                    a.resident_bytes.map(|r| r as i64),
                    b.resident_bytes.map(|r| r as i64)
                ),
                "resident_bytes_per_min_before": a.resident_bytes_per_min,
                "resident_bytes_per_min_after": b.resident_bytes_per_min,
                "resident_bytes_per_min_delta": delta(
                    a.resident_bytes_per_min,
                    b.resident_bytes_per_min
                ),
                "flagged_before": a.flagged,
                "flagged_after": b.flagged,
            })
        })
        .collect();
    rows.sort_by_key(|row| -row["live_bytes_delta"].as_i64().unwrap_or(0).abs());
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&json!({
                "schema": "mmap-trace/diff/v1",
                "before": args.before,
                "after": args.after,
                "rows": rows,
            }))
            .expect("serializes")
                + "\n"
        }
        // The pictures were drawn above.
        _ => {
            let mut text = String::new();
            render_diff(&mut text, &args, &rows).expect("writing to a String cannot fail");
            text
        }
    };
    Output::open(None, args.format)?.write(text.as_bytes())?;
    Ok(0)
}

fn render_diff(out: &mut impl Write, args: &DiffArgs, rows: &[Value]) -> fmt::Result {
    writeln!(
        out,
        "mmap-trace diff: {} → {}",
        args.before.display(),
        args.after.display()
    )?;
    writeln!(
        out,
        "{:<9} {:>11} {:>11} {:>12} {:>15} {:>15} {:>15} {:>15}  OBJECT",
        "ROLE",
        "LIVE BEFORE",
        "LIVE AFTER",
        "Δ LIVE",
        "RESIDENT BEFORE",
        "RESIDENT AFTER",
        "RES. GROWTH BEF",
        "RES. GROWTH AFT",
    )?;
    for row in rows {
        let live = |key: &str| row[key].as_i64().unwrap_or(0);
        let signed = |n: i64| {
            let sign = if n < 0 { "-" } else { "+" };
            format!("{sign}{}", bytes(n.unsigned_abs()))
        };
        let resident = |key: &str| row[key].as_u64().map_or_else(|| "-".to_owned(), bytes);
        let per_min = |key: &str| {
            row[key]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |r| format!("{}/min", signed(r as i64)))
        };
        writeln!(
            out,
            "{:<9} {:>11} {:>11} {:>12} {:>15} {:>15} {:>15} {:>15}  {}",
            row["role"].as_str().unwrap_or("?"),
            bytes(live("live_bytes_before").max(0) as u64),
            bytes(live("live_bytes_after").max(0) as u64),
            signed(live("live_bytes_delta")),
            resident("resident_bytes_before"),
            resident("resident_bytes_after"),
            per_min("resident_bytes_per_min_before"),
            per_min("resident_bytes_per_min_after"),
            row["object"].as_str().unwrap_or("?"),
        )?;
    }
    Ok(())
}
