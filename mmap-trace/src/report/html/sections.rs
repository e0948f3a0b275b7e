//! The page's tables and its list of stacks.

use std::fmt::{self, Write as _};

use crate::report::{
    FrameKind, FrameRow, ObjectRow, PythonCallerRow, StackRow,
    svg::escape,
    text::{basename, bytes},
};

/// The stacks the page lists at most, and the bytes it spends on them:
/// past either, the JSON report has the rest.
const MAX_STACKS: usize = 1000;
const STACKS_BUDGET: usize = 2 << 20;
/// Python callers listed at most.
const MAX_PYTHON_CALLERS: usize = 200;

fn resident(resident: Option<u64>) -> String {
    resident.map_or_else(|| "exited".to_owned(), bytes)
}

/// One object's share per row, as issuer or as requester.
pub(super) fn object_table(
    out: &mut String,
    title: &str,
    about: &str,
    rows: &[ObjectRow],
) -> fmt::Result {
    writeln!(
        out,
        "<h2>{}</h2>\n<p class=\"hint\">{}</p>",
        escape(title),
        escape(about)
    )?;
    if rows.is_empty() {
        return writeln!(out, "<p>None.</p>");
    }
    writeln!(
        out,
        "<table><thead><tr><th>Live</th><th>Resident</th><th>Reserved</th><th>Regions</th>\
         <th>Calls</th><th>Mapped</th><th>Unmapped</th><th>Object</th></tr></thead><tbody>"
    )?;
    for row in rows {
        writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"obj\">{}</td></tr>",
            bytes(row.live_bytes),
            resident(row.resident_bytes),
            bytes(row.reserved_bytes),
            row.live_regions,
            row.calls,
            bytes(row.mapped_bytes),
            bytes(row.unmapped_bytes),
            escape(&row.object),
        )?;
    }
    writeln!(out, "</tbody></table>")
}

/// Bytes by the innermost Python frame of their stacks.
pub(super) fn python_table(out: &mut String, rows: &[PythonCallerRow]) -> fmt::Result {
    writeln!(
        out,
        "<h2>By Python caller</h2>\n<p class=\"hint\">the innermost Python function of the \
         stacks (Python processes only)</p>"
    )?;
    if rows.is_empty() {
        return writeln!(out, "<p>No Python frames in these stacks.</p>");
    }
    writeln!(
        out,
        "<table><thead><tr><th>Live</th><th>Resident</th><th>Regions</th><th>Calls</th>\
         <th>Mapped</th><th>Function</th><th>File</th></tr></thead><tbody>"
    )?;
    for row in rows.iter().take(MAX_PYTHON_CALLERS) {
        writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td>\
             <td class=\"obj\">{}</td></tr>",
            bytes(row.live_bytes),
            resident(row.resident_bytes),
            row.live_regions,
            row.calls,
            bytes(row.mapped_bytes),
            escape(&row.function),
            escape(&row.file),
        )?;
    }
    writeln!(out, "</tbody></table>")?;
    if rows.len() > MAX_PYTHON_CALLERS {
        writeln!(
            out,
            "<p class=\"hint\">The first {MAX_PYTHON_CALLERS} of {}; the JSON report has all.</p>",
            rows.len()
        )?;
    }
    Ok(())
}

/// The stacks, most resident first, with a box that filters them.
pub(super) fn stacks(out: &mut String, rows: &[StackRow]) -> fmt::Result {
    let mut list = String::new();
    let mut listed = 0;
    for (i, row) in rows.iter().enumerate() {
        if i == MAX_STACKS || list.len() > STACKS_BUDGET {
            break;
        }
        stack(&mut list, row)?;
        listed += 1;
    }
    writeln!(
        out,
        "<section id=\"stacks\"><h2>Stacks</h2>\n<p><input id=\"filter\" type=\"search\" \
         placeholder=\"Filter: function, object or file\" autocomplete=\"off\" \
         aria-label=\"Filter the stacks\"> <span id=\"shown\">{listed} stacks</span></p>"
    )?;
    if listed < rows.len() {
        writeln!(
            out,
            "<p class=\"hint\">The top {listed} of {} stacks; the JSON report \
             (<code>--format json</code>) has all.</p>",
            rows.len()
        )?;
    }
    writeln!(out, "<ol class=\"stacks\">\n{list}</ol></section>")
}

fn stack(out: &mut String, row: &StackRow) -> fmt::Result {
    writeln!(
        out,
        "<li class=\"stack\"><p><b>live {}</b> in {} regions, resident {}; {}; mapped {}, \
         unmapped {}</p>\n<p class=\"hint\">issuer <code>{}</code>, requester <code>{}</code></p>\
         \n<ol class=\"frames\" start=\"0\">",
        bytes(row.live_bytes),
        row.live_regions,
        resident(row.resident_bytes),
        calls(row),
        bytes(row.mapped_bytes),
        bytes(row.unmapped_bytes),
        escape(basename(&row.issuer)),
        escape(basename(&row.requester)),
    )?;
    for frame in &row.frames {
        frame_item(out, frame)?;
    }
    write!(out, "</ol>")?;
    if row.truncated {
        write!(
            out,
            "<p class=\"hint\">… the stack walk stopped here: {}</p>",
            escape(row.stop_reason.explanation())
        )?;
    }
    writeln!(out, "</li>")
}

/// One frame: the functions inlined into it first (innermost first, as
/// the frames are), then its own function and where it is.
fn frame_item(out: &mut String, frame: &FrameRow) -> fmt::Result {
    write!(out, "<li>")?;
    for inlined in frame.inlined.iter().rev() {
        write!(
            out,
            "<span class=\"inl\">{}{} [inlined]</span><br>",
            escape(&inlined.symbol),
            location(inlined.file.as_deref(), inlined.line)
        )?;
    }
    let symbol = match (&frame.symbol, frame.symbol_offset, frame.kind) {
        (Some(name), Some(offset), FrameKind::Native) => format!("{name}+{offset:#x}"),
        (Some(name), _, _) => name.clone(),
        (None, _, _) => "[unknown]".to_owned(),
    };
    let place = match frame.kind {
        FrameKind::Python => "[python]".to_owned(),
        FrameKind::Jit => "[jit]".to_owned(),
        FrameKind::Native => format!("{}+{:#x}", basename(&frame.object), frame.offset),
    };
    writeln!(
        out,
        "{}{} <span class=\"obj\">{}</span></li>",
        escape(&symbol),
        location(frame.file.as_deref(), frame.line),
        escape(&place),
    )
}

/// ` (file.c:12)`, escaped, or nothing.
fn location(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!(
            " <span class=\"loc\">({}:{line})</span>",
            escape(basename(file))
        ),
        (Some(file), None) => format!(" <span class=\"loc\">({})</span>", escape(basename(file))),
        _ => String::new(),
    }
}

/// `4 mmap, 3 munmap (1 failed)`.
fn calls(row: &StackRow) -> String {
    let parts: Vec<String> = [
        (row.mmap_calls, "mmap"),
        (row.munmap_calls, "munmap"),
        (row.mremap_calls, "mremap"),
        (row.brk_calls, "brk"),
        (row.shm_calls, "shmat/shmdt"),
        (row.mprotect_calls, "mprotect"),
        (row.madvise_calls, "madvise"),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, name)| format!("{count} {name}"))
    .collect();
    let mut text = parts.join(", ");
    if row.failed_calls > 0 {
        text.push_str(&format!(" ({} failed)", row.failed_calls));
    }
    text
}
