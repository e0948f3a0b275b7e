//! The report as one self-contained HTML page: the verdict, the tables, a
//! timeline chart, the flame graph and the stacks, with a search box. No
//! network at view time (a content security policy forbids it), no
//! external assets: it opens from disk, or as an attachment, anywhere.

mod chart;
mod sections;

use std::fmt::{self, Write as _};

use self::{
    chart::{Series, line_chart},
    sections::{object_table, python_table, stacks},
};
use super::{
    GrowthRow, Report, RssGrowth,
    folded::{Folded, Weight},
    svg::{SvgError, escape, inline_flame_graph},
    text::bytes,
};
use crate::account::Role;

/// How many growers the timeline draws next to the processes' RSS.
const TIMELINE_GROWERS: usize = 4;

/// The page; the flame graph's widths are `weight`.
pub fn render_html(report: &Report, weight: Weight) -> Result<String, SvgError> {
    let flame = flame_graph(report, weight)?;
    let mut page = String::new();
    write_page(&mut page, report, weight, &flame).expect("writing to a String cannot fail");
    Ok(page)
}

/// The inline flame graph, thinned until it fits its share of the page:
/// frames narrower than a pixel or so are left out first (they cannot be
/// seen anyway), then wider ones.
fn flame_graph(report: &Report, weight: Weight) -> Result<String, SvgError> {
    /// About half of the page's budget of ~5 MB.
    const BUDGET: usize = 2 << 20;
    let folded = Folded::from_stacks(&report.stacks, weight);
    // Percent of the width: 0.05% is 0.6 px of 1200.
    let mut min_width_pct = 0.05;
    loop {
        let svg = inline_flame_graph(&folded, weight, min_width_pct)?;
        if svg.len() <= BUDGET || min_width_pct >= 5.0 {
            return Ok(svg);
        }
        min_width_pct *= 2.0;
    }
}

fn write_page(out: &mut String, report: &Report, weight: Weight, flame: &str) -> fmt::Result {
    let title = match &report.command {
        Some(command) => format!("mmap-trace: {}", command.join(" ")),
        None => "mmap-trace report".to_owned(),
    };
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        escape(&title)
    )?;
    header(out, report)?;
    growing(out, report)?;
    writeln!(out, "<section id=\"tables\">")?;
    object_table(
        out,
        "By issuer",
        "the object that made the system call",
        &report.by_issuer,
    )?;
    object_table(
        out,
        "By requester",
        "the first object that is not libc, ld.so, an allocator or a memory hook",
        &report.by_requester,
    )?;
    python_table(out, &report.by_python_caller)?;
    writeln!(out, "</section>")?;
    timeline(out, report)?;
    writeln!(
        out,
        "<section id=\"flame-graph\"><h2>Flame graph</h2>\n<p class=\"hint\">Widths: {}. \
         Hover a frame for its share; for zoom and search, draw it with \
         <code>--format svg</code>.</p>\n<div class=\"flame-box\">{flame}</div></section>",
        escape(weight.title())
    )?;
    stacks(out, &report.stacks)?;
    writeln!(out, "<script>{SCRIPT}</script>\n</body>\n</html>")
}

fn header(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "<header><h1>mmap-trace report</h1>")?;
    if let Some(command) = &report.command {
        write!(
            out,
            "<p class=\"command\"><code>{}</code>",
            escape(&command.join(" "))
        )?;
        if let Some(status) = &report.command_status {
            write!(out, " {}", escape(&status.to_string()))?;
        }
        writeln!(out, "</p>")?;
    }
    let processes = report.targets.len();
    writeln!(
        out,
        "<p>Stopped by {}, after {:.3} s of events; {processes} process{}; {}.</p>",
        escape(&report.stopped_by.to_string()),
        report.duration_s,
        if processes == 1 { "" } else { "es" },
        escape(report.unwinder.description()),
    )?;
    let t = &report.totals;
    writeln!(
        out,
        "<p>Live {} in {} regions (mapped {}, unmapped {}); reserved {}, accessible {}; \
         resident {}.</p>",
        bytes(t.live_bytes),
        t.live_regions,
        bytes(t.mapped_bytes),
        bytes(t.unmapped_bytes),
        bytes(t.reserved_bytes),
        bytes(t.accessible_bytes),
        t.resident_bytes
            .map_or_else(|| "unknown (the processes exited)".to_owned(), bytes),
    )?;
    if report.events.lost > 0 {
        writeln!(
            out,
            "<p class=\"warning\">{} records were lost: byte counts are incomplete \
             (try a larger --buffer-size).</p>",
            report.events.lost
        )?;
    }
    writeln!(out, "</header>")
}

/// "Who is growing": the verdict, as the text report words it.
fn growing(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "<section id=\"verdict\"><h2>Who is growing</h2>")?;
    if !report.growth_judged {
        let note = report
            .growth_note
            .as_deref()
            .unwrap_or("growth cannot be judged");
        writeln!(
            out,
            "<p class=\"note\">{}.</p>\n<p>What the run left mapped, and where, is in the \
             tables below.</p>",
            escape(note)
        )?;
        return writeln!(out, "</section>");
    }
    let flagged: Vec<&GrowthRow> = report.growth.iter().filter(|g| g.flagged).collect();
    if flagged.is_empty() {
        writeln!(
            out,
            "<p class=\"verdict\">No object's resident memory grows steadily.</p>"
        )?;
    } else {
        writeln!(
            out,
            "<p class=\"verdict\">Resident memory grows steadily in:</p><ul class=\"flagged\">"
        )?;
        for row in &flagged {
            writeln!(
                out,
                "<li><b>{} {}</b>: {} resident (fit r² {:.2}, since {:.1} s); live {}, \
                 resident {}",
                row.role.name(),
                escape(&row.object),
                per_min(row.resident_bytes_per_min.unwrap_or(0.0)),
                row.resident_fit_r2.unwrap_or(0.0),
                row.since_s.unwrap_or(0.0),
                bytes(row.live_bytes.max(0) as u64),
                row.resident_bytes
                    .map_or_else(|| "unknown (exited)".to_owned(), bytes),
            )?;
            for hint in &row.hints {
                write!(out, "<br><span class=\"hint\">try: {}</span>", escape(hint))?;
            }
            writeln!(out, "</li>")?;
        }
        writeln!(out, "</ul>")?;
    }
    if let Some(rss) = &report.rss_growth {
        rss_line(out, rss, !flagged.is_empty())?;
    }
    let mapped_only: Vec<&GrowthRow> = report
        .growth
        .iter()
        .filter(|g| g.address_space_growing)
        .collect();
    if !mapped_only.is_empty() {
        writeln!(
            out,
            "<p>Address space growing, not resident memory (mapped but untouched: no leak \
             verdict):</p><ul>"
        )?;
        for row in mapped_only {
            writeln!(
                out,
                "<li>{} {}: {} mapped</li>",
                row.role.name(),
                escape(&row.object),
                per_min(row.bytes_per_min.unwrap_or(0.0)),
            )?;
        }
        writeln!(out, "</ul>")?;
    }
    writeln!(out, "</section>")
}

/// How much of the processes' RSS growth the flagged objects explain.
fn rss_line(out: &mut String, rss: &RssGrowth, flagged: bool) -> fmt::Result {
    write!(out, "<p class=\"rss\">")?;
    if !flagged {
        write!(
            out,
            "The traced processes' RSS: {} since {:.1} s.",
            per_min(rss.bytes_per_min),
            rss.since_s
        )?;
        return writeln!(out, "</p>");
    }
    match rss.explained_fraction {
        Some(fraction) => write!(
            out,
            "These explain {:.0}% of the RSS growth ({} of {}); ",
            fraction * 100.0,
            per_min(rss.explained_bytes_per_min),
            per_min(rss.bytes_per_min),
        )?,
        None => write!(
            out,
            "The traced processes' RSS does not grow ({}): resident memory moved between \
             objects; ",
            per_min(rss.bytes_per_min)
        )?,
    }
    writeln!(
        out,
        "besides them: {} file pages (page cache), {} anonymous memory outside traced \
         mappings.</p>",
        per_min(rss.file_bytes_per_min),
        per_min(rss.untraced_anon_bytes_per_min),
    )
}

/// Each traced process's RSS over time, against the resident bytes of the
/// first few issuers of "who is growing".
fn timeline(out: &mut String, report: &Report) -> fmt::Result {
    let mut pids: Vec<u32> = report
        .timeline
        .iter()
        .flat_map(|s| s.rss.iter().map(|r| r.pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let mut series: Vec<Series> = pids
        .into_iter()
        .map(|pid| Series {
            name: format!("pid {pid} RSS (VmRSS)"),
            points: report
                .timeline
                .iter()
                .filter_map(|s| {
                    let rss = s.rss.iter().find(|r| r.pid == pid)?;
                    Some((s.time_s, rss.vm_rss as f64))
                })
                .collect(),
        })
        .collect();
    let growers = report
        .growth
        .iter()
        .filter(|g| g.role == Role::Issuer)
        .take(TIMELINE_GROWERS);
    for grower in growers {
        let points: Vec<(f64, f64)> = report
            .timeline
            .iter()
            .filter_map(|s| {
                let resident = s.resident_by_issuer.get(&grower.object)?;
                Some((s.time_s, *resident as f64))
            })
            .collect();
        if !points.is_empty() {
            series.push(Series {
                name: format!(
                    "{} resident (issuer {})",
                    super::text::basename(&grower.object),
                    grower.object
                ),
                points,
            });
        }
    }
    writeln!(
        out,
        "<section id=\"timeline\"><h2>Timeline</h2>\n<p class=\"hint\">Each traced \
         process's RSS, and the resident bytes of the top issuers, sampled every \
         --interval while the processes ran.</p>\n{}</section>",
        line_chart("RSS and resident bytes over time", &series)
    )
}

/// `+1.2 MiB/min`, `-300.0 KiB/min`.
fn per_min(bytes_per_min: f64) -> String {
    let sign = if bytes_per_min < 0.0 { "-" } else { "+" };
    format!("{sign}{}/min", bytes(bytes_per_min.abs() as u64))
}

const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px;
       padding: 0 1em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 .3em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
code, .frames, td.num { font-family: ui-monospace, monospace; font-size: 12.5px; }
.command code { background: #f3f3f3; padding: .15em .4em; border-radius: 3px; }
.warning { color: #b00020; font-weight: bold; }
.note, .verdict { font-size: 1.1em; font-weight: 600; }
.hint { color: #555; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { padding: .2em .6em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f6f6f6; }
td.num { text-align: right; white-space: nowrap; }
td.obj { word-break: break-all; }
svg.chart { width: 100%; height: auto; max-width: 960px; }
svg.chart .grid { stroke: #eee; }
svg.chart .axis { stroke: #888; }
svg.chart .tick { font-size: 11px; fill: #444; }
svg.chart .empty { font-size: 14px; fill: #888; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .3em 1.4em; }
.swatch { display: inline-block; width: 1.4em; height: .6em; margin-right: .4em; }
.flame-box { overflow-x: auto; }
svg.flame { width: 100%; height: auto; }
svg.flame text { font-family: monospace; font-size: 12px; }
svg.flame #title { text-anchor: middle; font-size: 17px; }
svg.flame #details, svg.flame #unzoom, svg.flame #search, svg.flame #matched, svg.flame .hide
  { display: none; }
svg.flame #frames > *:hover { stroke: black; stroke-width: .5; }
#filter { font: inherit; width: 28em; padding: .3em .5em; }
ol.stacks { padding-left: 2.5em; }
li.stack { margin: .8em 0; }
li.stack p { margin: .1em 0; }
ol.frames { margin: .2em 0; padding-left: 3em; }
.frames .obj, .frames .loc { color: #666; }
.frames .inl { color: #777; font-style: italic; }
";

/// The stack filter: a stack stays when its text contains what was typed.
const SCRIPT: &str = "
(function () {
  var input = document.getElementById('filter');
  var shown = document.getElementById('shown');
  var stacks = Array.prototype.slice.call(document.querySelectorAll('li.stack'));
  var texts = stacks.map(function (s) { return s.textContent.toLowerCase(); });
  function filter() {
    var wanted = input.value.trim().toLowerCase();
    var n = 0;
    for (var i = 0; i < stacks.length; i++) {
      var hit = texts[i].indexOf(wanted) >= 0;
      stacks[i].hidden = !hit;
      if (hit) { n++; }
    }
    shown.textContent = n + ' of ' + stacks.length + ' stacks shown';
  }
  input.addEventListener('input', filter);
  filter();
})();
";

#[cfg(test)]
mod tests;
