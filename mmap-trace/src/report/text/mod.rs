//! The human-readable report.

use std::fmt::{self, Write};

use mmap_trace_common::MAX_PYTHON_FRAMES;

use super::{FrameKind, FrameRow, GrowthRow, ObjectRow, Report, RssGrowth, StackRow};

/// Renders `report`, with at most `top_stacks` stacks.
pub fn render_text(report: &Report, top_stacks: usize) -> String {
    let mut out = String::new();
    write_report(&mut out, report, top_stacks).expect("writing to a String cannot fail");
    out
}

fn write_report(out: &mut impl Write, report: &Report, top_stacks: usize) -> fmt::Result {
    header(out, report)?;
    growing(out, report)?;
    targets(out, report)?;
    totals(out, report)?;
    table(
        out,
        "By issuer (the object that made the syscall)",
        &report.by_issuer,
    )?;
    table(
        out,
        "By requester (the first object that is not libc, ld.so, an allocator or a memory hook)",
        &report.by_requester,
    )?;
    python_callers(out, report)?;
    stacks(out, report, top_stacks)
}

fn header(out: &mut impl Write, report: &Report) -> fmt::Result {
    let processes = report.targets.len();
    writeln!(
        out,
        "mmap-trace report: {processes} process{}, {:.3} s of events, {}; stopped by {}",
        if processes == 1 { "" } else { "es" },
        report.duration_s,
        report.unwinder.description(),
        report.stopped_by,
    )?;
    if !report.complete {
        let e = &report.events;
        writeln!(
            out,
            "INCOMPLETE: {} records lost, {} malformed, {} out of order: the byte counts below are lower bounds{}",
            e.lost,
            e.malformed,
            e.out_of_order,
            if e.lost > 0 {
                " (try a larger --buffer-size)"
            } else {
                ""
            }
        )?;
    }
    if let Some(command) = &report.command {
        write!(out, "command: {}", command.join(" "))?;
        if let Some(status) = &report.command_status {
            write!(out, " ({status})")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// "Who is growing", first: the verdict, about resident memory.
fn growing(out: &mut impl Write, report: &Report) -> fmt::Result {
    if !report.growth_judged {
        let note = report
            .growth_note
            .as_deref()
            .unwrap_or("growth cannot be judged");
        writeln!(out, "\nWho is growing: {note}.")?;
        return writeln!(
            out,
            "What the run left mapped, and where, is in the tables below."
        );
    }
    let flagged: Vec<&GrowthRow> = report.growth.iter().filter(|g| g.flagged).collect();
    let mapped_only: Vec<&GrowthRow> = report
        .growth
        .iter()
        .filter(|g| g.address_space_growing)
        .collect();
    if flagged.is_empty() {
        writeln!(
            out,
            "\nWho is growing: no object's resident memory grows steadily"
        )?;
    } else {
        writeln!(
            out,
            "\nWho is growing (resident memory, slope of its steady part)"
        )?;
        for row in &flagged {
            writeln!(
                out,
                "  {:<9} {}  {} resident (fit r² {:.2}, since {:.1} s), live {}, resident {}",
                row.role.name(),
                row.object,
                per_min(row.resident_bytes_per_min.unwrap_or(0.0)),
                row.resident_fit_r2.unwrap_or(0.0),
                row.since_s.unwrap_or(0.0),
                bytes(row.live_bytes.max(0) as u64),
                row.resident_bytes
                    .map_or_else(|| "unknown (exited)".to_owned(), bytes),
            )?;
            for hint in &row.hints {
                writeln!(out, "            try: {hint}")?;
            }
        }
    }
    if let Some(rss) = &report.rss_growth {
        rss_line(out, rss, !flagged.is_empty())?;
    }
    if !mapped_only.is_empty() {
        writeln!(
            out,
            "Address space growing, not resident memory (mapped but untouched: no leak verdict)"
        )?;
        for row in mapped_only {
            writeln!(
                out,
                "  {:<9} {}  {} mapped, resident {}",
                row.role.name(),
                row.object,
                per_min(row.bytes_per_min.unwrap_or(0.0)),
                resident_text(row.resident_bytes),
            )?;
        }
    }
    Ok(())
}

/// The processes' RSS growth, and how much of it the flagged objects
/// explain.
fn rss_line(out: &mut impl Write, rss: &RssGrowth, flagged: bool) -> fmt::Result {
    if !flagged {
        return writeln!(
            out,
            "  (the traced processes' RSS: {} since {:.1} s)",
            per_min(rss.bytes_per_min),
            rss.since_s
        );
    }
    match rss.explained_fraction {
        Some(fraction) => writeln!(
            out,
            "  These explain {:.0}% of the RSS growth ({} of {});",
            fraction * 100.0,
            per_min(rss.explained_bytes_per_min),
            per_min(rss.bytes_per_min),
        )?,
        None => writeln!(
            out,
            "  The traced processes' RSS does not grow ({}): resident memory moved \
             between objects;",
            per_min(rss.bytes_per_min)
        )?,
    }
    writeln!(
        out,
        "  besides them: {} file pages (page cache), {} anonymous memory outside traced mappings",
        per_min(rss.file_bytes_per_min),
        per_min(rss.untraced_anon_bytes_per_min),
    )
}

/// `+1.2 MiB/min`, `-300.0 KiB/min`.
fn per_min(bytes_per_min: f64) -> String {
    let sign = if bytes_per_min < 0.0 { "-" } else { "+" };
    format!("{sign}{}/min", bytes(bytes_per_min.abs() as u64))
}

/// Resident bytes, or "exited" when unknown.
fn resident_text(resident: Option<u64>) -> String {
    resident.map_or_else(|| "exited".to_owned(), bytes)
}

fn targets(out: &mut impl Write, report: &Report) -> fmt::Result {
    if report.targets.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\n{:>8}  {:<16} {:<8} {:>10}  EXE",
        "PID", "COMM", "STATE", "LIVE"
    )?;
    for target in &report.targets {
        writeln!(
            out,
            "{:>8}  {:<16} {:<8} {:>10}  {}",
            target.pid,
            target.comm,
            if target.exited { "exited" } else { "running" },
            bytes(target.live_bytes),
            target.exe.as_deref().unwrap_or("?"),
        )?;
    }
    Ok(())
}

/// Resident memory at the last sample, and how much of it traced mappings
/// hold.
fn resident(out: &mut impl Write, report: &Report) -> fmt::Result {
    let Some(last) = report.timeline.last() else {
        return Ok(());
    };
    for rss in &last.rss {
        writeln!(
            out,
            "rss:    pid {} at {:.1} s: {} ({} anonymous: {} in traced mappings, {} not)",
            rss.pid,
            last.time_s,
            bytes(rss.vm_rss),
            bytes(rss.rss_anon),
            bytes(rss.traced_resident),
            bytes(rss.unexplained_anon)
        )?;
    }
    Ok(())
}

fn totals(out: &mut impl Write, report: &Report) -> fmt::Result {
    let e = &report.events;
    let t = &report.totals;
    writeln!(
        out,
        "\nevents: {} mmap, {} munmap, {} mremap, {} brk, {} shmat, {} shmdt, {} mprotect, {} madvise ({} failed); lost {} records, {} stacks unavailable, {} mapping records lost",
        e.mmap,
        e.munmap,
        e.mremap,
        e.brk,
        e.shmat,
        e.shmdt,
        e.mprotect,
        e.madvise,
        e.failed,
        e.lost,
        e.stack_errors,
        e.lost_mapping_records
    )?;
    if e.malformed > 0 {
        writeln!(
            out,
            "        {} malformed records dropped (they did not decode, or could not be; the first are named on stderr)",
            e.malformed
        )?;
    }
    if e.out_of_order > 0 {
        writeln!(
            out,
            "        {} records arrived too late to be put in order: live figures may be off where those calls raced",
            e.out_of_order
        )?;
    }
    writeln!(
        out,
        "bytes:  mapped {}, unmapped {}, live {} in {} regions (an exited process's mappings count as live at exit)",
        bytes(t.mapped_bytes),
        bytes(t.unmapped_bytes),
        bytes(t.live_bytes),
        t.live_regions
    )?;
    writeln!(
        out,
        "        of which reserved (PROT_NONE) {}, accessible {}; resident {}",
        bytes(t.reserved_bytes),
        bytes(t.accessible_bytes),
        t.resident_bytes
            .map_or_else(|| "unknown (the processes exited)".to_owned(), bytes),
    )?;
    let k = &t.by_kind;
    let kinds: Vec<String> = [
        ("private anonymous", &k.private_anon),
        ("shared", &k.shared),
        ("file", &k.file),
        ("heap", &k.heap),
    ]
    .into_iter()
    .filter(|(_, row)| row.live_bytes > 0)
    .map(|(name, row)| match row.resident_bytes {
        Some(resident) => format!(
            "{name} {} live, {} resident",
            bytes(row.live_bytes),
            bytes(resident)
        ),
        None => format!("{name} {} live", bytes(row.live_bytes)),
    })
    .collect();
    if !kinds.is_empty() {
        writeln!(out, "        by kind: {}", kinds.join("; "))?;
    }
    let u = &report.unwinding;
    if u.in_kernel + u.from_copies > 0 {
        writeln!(
            out,
            "stacks: {} unwound in the kernel, {} from stack copies ({} unwind rules learned)",
            u.in_kernel, u.from_copies, u.rules_taught
        )?;
    }
    resident(out, report)?;
    if t.preexisting_bytes > 0 || t.unknown_unmapped_bytes > 0 {
        writeln!(
            out,
            "        mapped before tracing began {} (of which unmapped since {}); unmapped but never seen mapped {}",
            bytes(t.preexisting_bytes),
            bytes(t.preexisting_unmapped_bytes),
            bytes(t.unknown_unmapped_bytes)
        )?;
    }
    Ok(())
}

fn table(out: &mut impl Write, title: &str, rows: &[ObjectRow]) -> fmt::Result {
    writeln!(out, "\n{title}")?;
    writeln!(
        out,
        "{:>10} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10}  OBJECT",
        "LIVE", "RESIDENT", "RESERVED", "REGIONS", "CALLS", "MAPPED", "UNMAPPED"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10}  {}",
            bytes(row.live_bytes),
            resident_text(row.resident_bytes),
            bytes(row.reserved_bytes),
            row.live_regions,
            row.calls,
            bytes(row.mapped_bytes),
            bytes(row.unmapped_bytes),
            row.object
        )?;
    }
    Ok(())
}

/// The innermost Python frames (Python processes only).
fn python_callers(out: &mut impl Write, report: &Report) -> fmt::Result {
    if report.by_python_caller.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nBy Python caller (the innermost Python frame)")?;
    writeln!(
        out,
        "{:>10} {:>10} {:>8} {:>8} {:>10}  FUNCTION (FILE)",
        "LIVE", "RESIDENT", "REGIONS", "CALLS", "MAPPED"
    )?;
    for row in &report.by_python_caller {
        writeln!(
            out,
            "{:>10} {:>10} {:>8} {:>8} {:>10}  {} ({})",
            bytes(row.live_bytes),
            resident_text(row.resident_bytes),
            row.live_regions,
            row.calls,
            bytes(row.mapped_bytes),
            row.function,
            row.file,
        )?;
    }
    Ok(())
}

fn stacks(out: &mut impl Write, report: &Report, top: usize) -> fmt::Result {
    let shown = report.stacks.len().min(top);
    writeln!(
        out,
        "\nTop {shown} of {} stacks, by resident bytes, then live bytes",
        report.stacks.len()
    )?;
    for (i, stack) in report.stacks.iter().take(top).enumerate() {
        writeln!(
            out,
            "\n#{} live {} in {} regions, resident {}; {}; mapped {}, unmapped {}",
            i + 1,
            bytes(stack.live_bytes),
            stack.live_regions,
            resident_text(stack.resident_bytes),
            calls(stack),
            bytes(stack.mapped_bytes),
            bytes(stack.unmapped_bytes)
        )?;
        writeln!(
            out,
            "   issuer {}, requester {}",
            basename(&stack.issuer),
            basename(&stack.requester)
        )?;
        for (n, frame) in stack.frames.iter().enumerate() {
            frame_line(out, n, frame)?;
        }
        if stack.truncated {
            writeln!(
                out,
                "   ... the stack walk stopped here: {}",
                stack.stop_reason.explanation()
            )?;
        }
        if stack.python_truncated {
            writeln!(
                out,
                "   ... deeper Python code than {MAX_PYTHON_FRAMES} frames: the outermost Python frames are not shown"
            )?;
        }
    }
    Ok(())
}

fn calls(stack: &StackRow) -> String {
    let mut parts = Vec::new();
    for (count, name) in [
        (stack.mmap_calls, "mmap"),
        (stack.munmap_calls, "munmap"),
        (stack.mremap_calls, "mremap"),
        (stack.brk_calls, "brk"),
        (stack.shm_calls, "shmat/shmdt"),
        (stack.mprotect_calls, "mprotect"),
        (stack.madvise_calls, "madvise"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {name}"));
        }
    }
    let mut text = parts.join(", ");
    if stack.failed_calls > 0 {
        text.push_str(&format!(" ({} failed)", stack.failed_calls));
    }
    text
}

fn frame_line(out: &mut impl Write, n: usize, frame: &FrameRow) -> fmt::Result {
    for inlined in frame.inlined.iter().rev() {
        writeln!(
            out,
            "   {:>3} {:>18}  {}{}  [inlined]",
            "",
            "",
            inlined.symbol,
            location(inlined.file.as_deref(), inlined.line)
        )?;
    }
    if frame.kind == FrameKind::Python {
        // `BlockPool.allocate (worker.py:88)  [python]`: no address to show
        // (the code object's means nothing to a reader).
        return writeln!(
            out,
            "   #{n:<2} {:>18}  {}{}  [python]",
            "",
            frame.symbol.as_deref().unwrap_or("[unknown code]"),
            location(frame.file.as_deref(), frame.line),
        );
    }
    let symbol = match (&frame.symbol, frame.symbol_offset) {
        (Some(name), Some(offset)) => format!("{name}+{offset:#x}"),
        (Some(name), None) => name.clone(),
        (None, _) => "[unknown]".to_owned(),
    };
    if frame.kind == FrameKind::Jit {
        return writeln!(out, "   #{n:<2} {:#18x}  {symbol}  [jit]", frame.addr);
    }
    writeln!(
        out,
        "   #{n:<2} {:#18x}  {symbol}{}  {}+{:#x}{}",
        frame.addr,
        location(frame.file.as_deref(), frame.line),
        basename(&frame.object),
        frame.offset,
        if frame.recovered {
            "  [from stack pointer]"
        } else {
            ""
        }
    )
}

fn location(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!(" ({}:{line})", basename(file)),
        (Some(file), None) => format!(" ({})", basename(file)),
        _ => String::new(),
    }
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Bytes in binary units: `512 B`, `12.0 KiB`, `3.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests;
