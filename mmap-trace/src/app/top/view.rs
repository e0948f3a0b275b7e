//! Drawing a [`Screen`]: a top line, who is growing, the processes, then
//! bytes by requester and (given room) by issuer, and the keys.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Table, Wrap},
};

use super::model::{Growth, GrowthLine, ObjectLine, ProcessLine, Screen, Verdict};
use crate::{app::status::clock, report::text::bytes};

/// Process rows shown at most (the largest RSS first).
const MAX_PROCESSES: usize = 5;
/// Growth rows shown at most.
const MAX_GROWTH: usize = 6;
/// Below this many rows for the two object tables, only requesters get one.
const BOTH_TABLES: u16 = 14;

const COLUMN_SPACING: u16 = 2;

fn growing() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

fn address_space() -> Style {
    Style::new().fg(Color::Yellow)
}

fn heading() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

pub fn draw(frame: &mut Frame, screen: &Screen) {
    let growth_height = match &screen.growth {
        Growth::NotYet(_) => 4,
        Growth::Judged { rows, rss } => {
            let rows = rows.len().clamp(1, MAX_GROWTH) as u16;
            3 + rows + u16::from(rss.is_some())
        }
    };
    let process_height = 3 + screen.processes.len().clamp(1, MAX_PROCESSES) as u16;
    let [top, growth, processes, objects, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(growth_height),
        Constraint::Length(process_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(top_line(screen), top);
    draw_growth(frame, growth, &screen.growth);
    draw_processes(frame, processes, screen);
    if objects.height >= BOTH_TABLES {
        let [requesters, issuers] =
            Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(objects);
        draw_objects(frame, requesters, REQUESTERS, &screen.requesters);
        draw_objects(frame, issuers, ISSUERS, &screen.issuers);
    } else {
        draw_objects(frame, objects, REQUESTERS, &screen.requesters);
    }
    frame.render_widget(
        Line::from(vec![
            Span::styled(" q", heading()),
            Span::raw(" quit (tracing stops, everything is detached)"),
        ]),
        keys,
    );
}

const REQUESTERS: &str =
    "By requester (the first object that is not libc, ld.so, an allocator or a memory hook)";
const ISSUERS: &str = "By issuer (the object that made the syscall)";

fn top_line(screen: &Screen) -> Line<'static> {
    let rate = screen
        .events_per_s
        .map_or_else(String::new, |r| format!(" ({r:.0}/s)"));
    let lost = Span::styled(
        format!("{} lost", screen.lost),
        if screen.lost > 0 {
            growing()
        } else {
            Style::new()
        },
    );
    Line::from(vec![
        Span::styled("mmap-trace top", heading()),
        Span::raw(format!(
            "  elapsed {}  {} events{rate}  ",
            clock(screen.elapsed),
            screen.events
        )),
        lost,
        Span::raw(format!(
            "  {} samples, every {}",
            screen.samples,
            interval(screen.interval)
        )),
    ])
}

/// `1s`, `250ms`, `1.5s`.
fn interval(d: std::time::Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        ms if d.as_secs() == 0 => format!("{ms}ms"),
        _ => format!("{:.1}s", d.as_secs_f64()),
    }
}

fn draw_growth(frame: &mut Frame, area: Rect, growth: &Growth) {
    let block =
        Block::bordered().title(" Who is growing (resident memory, slope of its steady part) ");
    match growth {
        Growth::NotYet(note) => frame.render_widget(
            Paragraph::new(format!("{note}."))
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        ),
        Growth::Judged { rows, rss } if rows.is_empty() => {
            let mut text = vec![Line::from("No object's resident memory grows steadily.")];
            if let Some(rss) = rss {
                text.push(Line::from(format!(
                    "The traced processes' RSS: {} since {:.1} s.",
                    per_min(rss.bytes_per_min),
                    rss.since_s
                )));
            }
            frame.render_widget(Paragraph::new(text).block(block), area);
        }
        Growth::Judged { rows, rss } => {
            let inner = block.inner(area);
            frame.render_widget(block, area);
            let [table, explained] = Layout::vertical([
                Constraint::Fill(1),
                Constraint::Length(u16::from(rss.is_some())),
            ])
            .areas(inner);
            let widths = [10, 9, 15, 8, 7, 10, 10];
            let object_width = rest(table.width, &widths);
            let rows = rows
                .iter()
                .take(MAX_GROWTH)
                .map(|row| growth_row(row, object_width));
            let header = Row::new([
                Cell::from("VERDICT"),
                Cell::from("ROLE"),
                right("RATE"),
                Cell::from("OF"),
                right("SINCE"),
                right("RESIDENT"),
                right("LIVE"),
                Cell::from("OBJECT"),
            ])
            .style(heading());
            frame.render_widget(
                Table::new(rows, constraints(&widths))
                    .header(header)
                    .column_spacing(COLUMN_SPACING),
                table,
            );
            if let Some(rss) = rss {
                frame.render_widget(Line::from(rss_text(rss)), explained);
            }
        }
    }
}

fn growth_row(row: &GrowthLine, object_width: u16) -> Row<'static> {
    let (verdict, of, style) = match row.verdict {
        Verdict::Growing => ("growing", "resident", growing()),
        Verdict::AddressSpace => ("addr space", "mapped", address_space()),
    };
    Row::new([
        Cell::from(verdict),
        Cell::from(row.role.name()),
        right(per_min(row.bytes_per_min)),
        Cell::from(of),
        right(
            row.since_s
                .map_or_else(String::new, |s| format!("{s:.1} s")),
        ),
        right(resident(row.resident)),
        right(bytes(row.live.max(0) as u64)),
        Cell::from(fit_left(&row.object, object_width)),
    ])
    .style(style)
}

fn rss_text(rss: &crate::report::RssGrowth) -> String {
    match rss.explained_fraction {
        Some(fraction) => format!(
            "These explain {:.0}% of the RSS growth ({} of {}).",
            fraction * 100.0,
            per_min(rss.explained_bytes_per_min),
            per_min(rss.bytes_per_min)
        ),
        None => format!(
            "The traced processes' RSS does not grow ({}).",
            per_min(rss.bytes_per_min)
        ),
    }
}

fn draw_processes(frame: &mut Frame, area: Rect, screen: &Screen) {
    let mut title = format!(" Processes: {} running", screen.processes.len());
    if screen.processes.len() > MAX_PROCESSES {
        title += &format!(", the {MAX_PROCESSES} largest shown");
    }
    if screen.exited > 0 {
        title += &format!(", {} exited", screen.exited);
    }
    title.push(' ');
    let header = Row::new([
        right("PID"),
        right("RSS"),
        right("LIVE"),
        Cell::from("COMM"),
    ])
    .style(heading());
    let rows = screen
        .processes
        .iter()
        .take(MAX_PROCESSES)
        .map(|p: &ProcessLine| {
            Row::new([
                right(p.pid.to_string()),
                right(p.rss.map_or_else(|| "?".to_owned(), bytes)),
                right(bytes(p.live.max(0) as u64)),
                Cell::from(p.comm.clone()),
            ])
        });
    frame.render_widget(
        Table::new(rows, constraints(&[8, 10, 10]))
            .header(header)
            .column_spacing(COLUMN_SPACING)
            .block(Block::bordered().title(title)),
        area,
    );
}

fn draw_objects(frame: &mut Frame, area: Rect, title: &str, objects: &[ObjectLine]) {
    let widths = [10, 10, 15];
    let block = Block::bordered().title(format!(" {title} "));
    let object_width = rest(block.inner(area).width, &widths);
    let header = Row::new([
        right("RESIDENT"),
        right("LIVE"),
        right("GROWTH"),
        Cell::from("OBJECT"),
    ])
    .style(heading());
    let rows = objects.iter().map(|o| {
        Row::new([
            right(resident(o.resident)),
            right(bytes(o.live.max(0) as u64)),
            right(o.resident_per_min.map_or_else(String::new, per_min)),
            Cell::from(fit_left(&o.object, object_width)),
        ])
        .style(if o.flagged { growing() } else { Style::new() })
    });
    frame.render_widget(
        Table::new(rows, constraints(&widths))
            .header(header)
            .column_spacing(COLUMN_SPACING)
            .block(block),
        area,
    );
}

/// Fixed widths, then the rest for the last column.
fn constraints(widths: &[u16]) -> Vec<Constraint> {
    widths
        .iter()
        .map(|&w| Constraint::Length(w))
        .chain([Constraint::Fill(1)])
        .collect()
}

/// A right-aligned cell, for numbers.
fn right(text: impl Into<String>) -> Cell<'static> {
    Cell::from(Line::from(text.into()).right_aligned())
}

/// What the last column gets of `width`, after `widths` and the spacing.
fn rest(width: u16, widths: &[u16]) -> u16 {
    let fixed: u16 = widths.iter().map(|w| w + COLUMN_SPACING).sum();
    width.saturating_sub(fixed)
}

/// Resident bytes, or "exited" when only exited processes hold them.
fn resident(bytes_or_none: Option<u64>) -> String {
    bytes_or_none.map_or_else(|| "exited".to_owned(), bytes)
}

/// `+1.2 MiB/min`, `-300.0 KiB/min`.
fn per_min(bytes_per_min: f64) -> String {
    let sign = if bytes_per_min < 0.0 { "-" } else { "+" };
    format!("{sign}{}/min", bytes(bytes_per_min.abs() as u64))
}

/// `text` in `width` columns: a path too long keeps its end (the file
/// name), behind an ellipsis.
fn fit_left(text: &str, width: u16) -> String {
    let width = usize::from(width);
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests;
