//! The human-readable report.

use std::fmt::{self, Write};

use super::{FrameRow, ObjectRow, Report, StackRow};

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
    if let Some(command) = &report.command {
        write!(out, "command: {}", command.join(" "))?;
        if let Some(status) = &report.command_status {
            write!(out, " ({status})")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// "Who is growing", first: the verdict.
fn growing(out: &mut impl Write, report: &Report) -> fmt::Result {
    let flagged: Vec<_> = report.growth.iter().filter(|g| g.flagged).collect();
    if flagged.is_empty() {
        write!(out, "\nWho is growing: nothing grows steadily")?;
        if let Some(fastest) = report.growth.first().filter(|g| g.bytes_per_min > 0.0) {
            write!(
                out,
                " (fastest: {} {}, {}/min, fit r² {:.2})",
                fastest.role,
                basename(&fastest.object),
                bytes(fastest.bytes_per_min as u64),
                fastest.fit_r2
            )?;
        }
        return writeln!(out);
    }
    writeln!(
        out,
        "\nWho is growing (live bytes, least-squares over the traced window)"
    )?;
    for row in flagged {
        writeln!(
            out,
            "  {:<9} {}  +{}/min (fit r² {:.2}), live {}, resident {}",
            row.role.name(),
            row.object,
            bytes(row.bytes_per_min as u64),
            row.fit_r2,
            bytes(row.live_bytes.max(0) as u64),
            bytes(row.resident_bytes)
        )?;
        for hint in &row.hints {
            writeln!(out, "            try: {hint}")?;
        }
    }
    Ok(())
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
        "\nevents: {} mmap, {} munmap, {} mremap, {} brk, {} shmat, {} shmdt ({} failed); lost {} records, {} stacks unavailable, {} mapping records lost",
        e.mmap,
        e.munmap,
        e.mremap,
        e.brk,
        e.shmat,
        e.shmdt,
        e.failed,
        e.lost,
        e.stack_errors,
        e.lost_mapping_records
    )?;
    writeln!(
        out,
        "bytes:  mapped {}, unmapped {}, live {} in {} regions (an exited process's mappings count as live at exit)",
        bytes(t.mapped_bytes),
        bytes(t.unmapped_bytes),
        bytes(t.live_bytes),
        t.live_regions
    )?;
    let kinds = &t.live_by_kind;
    if kinds.brk > 0 || kinds.shm > 0 {
        writeln!(
            out,
            "        live by kind: mmap {}, brk heap {}, System V shm {}",
            bytes(kinds.mmap),
            bytes(kinds.brk),
            bytes(kinds.shm)
        )?;
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
    if e.lost > 0 {
        writeln!(
            out,
            "warning: {} records were lost; byte counts are incomplete (try a larger --buffer-size)",
            e.lost
        )?;
    }
    Ok(())
}

fn table(out: &mut impl Write, title: &str, rows: &[ObjectRow]) -> fmt::Result {
    writeln!(out, "\n{title}")?;
    writeln!(
        out,
        "{:>10} {:>8} {:>8} {:>10} {:>10}  OBJECT",
        "LIVE", "REGIONS", "CALLS", "MAPPED", "UNMAPPED"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:>10} {:>8} {:>8} {:>10} {:>10}  {}",
            bytes(row.live_bytes),
            row.live_regions,
            row.calls,
            bytes(row.mapped_bytes),
            bytes(row.unmapped_bytes),
            row.object
        )?;
    }
    Ok(())
}

fn stacks(out: &mut impl Write, report: &Report, top: usize) -> fmt::Result {
    let shown = report.stacks.len().min(top);
    writeln!(
        out,
        "\nTop {shown} of {} stacks, by live bytes",
        report.stacks.len()
    )?;
    for (i, stack) in report.stacks.iter().take(top).enumerate() {
        writeln!(
            out,
            "\n#{} live {} in {} regions; {}; mapped {}, unmapped {}",
            i + 1,
            bytes(stack.live_bytes),
            stack.live_regions,
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
    let symbol = match (&frame.symbol, frame.symbol_offset) {
        (Some(name), Some(offset)) => format!("{name}+{offset:#x}"),
        (Some(name), None) => name.clone(),
        (None, _) => "[unknown]".to_owned(),
    };
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
mod tests {
    use super::*;
    use crate::{
        account::Role,
        model::{ExitStatus, StackSource, StopReason, StoppedBy, UnwindMode},
        report::{Events, GrowthRow, SCHEMA, Target, Totals},
    };

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }

    #[test]
    fn renders_every_section() {
        let report = Report {
            schema: SCHEMA,
            version: "0",
            command: Some(vec!["./lab".into(), "8".into()]),
            command_status: Some(ExitStatus::Code(0)),
            stopped_by: StoppedBy::CommandExit,
            duration_s: 0.25,
            unwinder: UnwindMode::Fp,
            unwinding: Default::default(),
            tracer: Default::default(),
            growth: vec![GrowthRow {
                object: "/x/liblab.so".into(),
                role: Role::Issuer,
                bytes_per_min: 3.0 * 1048576.0,
                fit_r2: 0.98,
                live_bytes: 0,
                resident_bytes: 0,
                flagged: true,
                hints: vec!["set X=1".into()],
                patterns: vec![],
            }],
            timeline: vec![],
            targets: vec![Target {
                pid: 42,
                parent_pid: None,
                comm: "lab".into(),
                exe: Some("/x/lab".into()),
                exited: true,
                live_bytes: 8192,
            }],
            events: Events {
                mmap: 3,
                lost: 2,
                ..Default::default()
            },
            totals: Totals {
                live_bytes: 8192,
                ..Default::default()
            },
            by_issuer: vec![ObjectRow {
                object: "/x/liblab.so".into(),
                calls: 3,
                live_bytes: 8192,
                live_regions: 2,
                ..Default::default()
            }],
            by_requester: vec![],
            stacks: vec![StackRow {
                issuer: "/x/liblab.so".into(),
                requester: "/x/lab".into(),
                calls: 3,
                mmap_calls: 3,
                munmap_calls: 0,
                mremap_calls: 0,
                brk_calls: 0,
                shm_calls: 0,
                failed_calls: 0,
                mapped_bytes: 0,
                unmapped_bytes: 0,
                live_bytes: 8192,
                live_regions: 0,
                resident_bytes: 0,
                pids: vec![42],
                sizes: vec![],
                unwinder: StackSource::FramePointers,
                truncated: true,
                stop_reason: StopReason::FramePointerInvalid,
                frames: vec![FrameRow {
                    addr: 0x7f00,
                    object: "/x/liblab.so".into(),
                    offset: 0x1234,
                    symbol: Some("lab_grab".into()),
                    symbol_offset: Some(0x22),
                    file: Some("/src/liblab.c".into()),
                    line: Some(17),
                    recovered: true,
                    ..Default::default()
                }],
            }],
        };
        let text = render_text(&report, 10);
        assert!(
            text.contains("command: ./lab 8 (exited with status 0)"),
            "{text}"
        );
        assert!(text.contains("lost 2 records"), "{text}");
        assert!(text.contains("warning: 2 records were lost"), "{text}");
        assert!(text.contains("8.0 KiB        2        3"), "{text}");
        assert!(text.contains("issuer liblab.so, requester lab"), "{text}");
        assert!(
            text.contains("issuer    /x/liblab.so  +3.0 MiB/min"),
            "{text}"
        );
        assert!(
            text.contains("lab_grab+0x22 (liblab.c:17)  liblab.so+0x1234  [from stack pointer]"),
            "{text}"
        );
        assert!(
            text.contains("... the stack walk stopped here: the frame-pointer chain broke"),
            "{text}"
        );
    }
}
