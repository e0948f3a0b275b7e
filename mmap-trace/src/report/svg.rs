//! Flame graphs of folded stacks, drawn by `inferno` (flamegraph.pl's Rust
//! port): one report's, or the difference between two.

use inferno::flamegraph::{
    self, Options,
    color::{BasicPalette, Palette},
};

use super::folded::{Folded, Weight, differential_lines};

/// inferno failed to draw (it reports input it cannot parse this way);
/// the I/O error is the source.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the flame graph")]
pub struct SvgError(#[from] std::io::Error);

/// The flame graph of `folded`, titled with what its widths are; with
/// inferno's script (zoom, search, details on hover).
pub fn flame_graph(folded: &Folded, weight: Weight) -> Result<String, SvgError> {
    draw(folded, weight, true, Options::default().min_width)
}

/// The same as an element to inline in an HTML page: no XML prolog, and
/// neither inferno's script nor its style sheet. The script assumes it owns
/// the document (the first `<svg>`, window-wide key and click handlers) and
/// the style sheet would style every `<text>` of the page; the page styles
/// the graph itself (class `flame`), and its `<title>`s still tell each
/// frame's weight on hover. Frames narrower than `min_width_pct` percent of
/// the graph's width are left out, which bounds the size of a graph of many
/// stacks.
pub fn inline_flame_graph(
    folded: &Folded,
    weight: Weight,
    min_width_pct: f64,
) -> Result<String, SvgError> {
    let svg = draw(folded, weight, false, min_width_pct)?;
    let svg = &svg[svg.find("<svg").unwrap_or(0)..];
    let svg = without_element(svg, "script");
    let svg = without_element(&svg, "style");
    Ok(svg
        .replacen(" onload=\"init(evt)\"", "", 1)
        .replacen("<svg ", "<svg class=\"flame\" ", 1))
}

fn draw(
    folded: &Folded,
    weight: Weight,
    script: bool,
    min_width_pct: f64,
) -> Result<String, SvgError> {
    let title = format!("{} by stack", weight.title());
    if folded.is_empty() {
        return Ok(nothing_to_draw(&title, weight));
    }
    let mut opt = options(title, weight, script);
    // inferno's min_width is a percentage of the total width.
    opt.min_width = min_width_pct;
    let text = folded.to_text();
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opt, text.lines(), &mut svg)?;
    Ok(String::from_utf8_lossy(&svg).into_owned())
}

/// `svg` without its `<name ...>...</name>` elements. Frame names are
/// escaped inside the SVG, so a raw `<` only ever starts markup.
fn without_element(svg: &str, name: &str) -> String {
    let (open, close) = (format!("<{name}"), format!("</{name}>"));
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(start) = rest.find(&open) {
        out.push_str(&rest[..start]);
        match rest[start..].find(&close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The differential flame graph from `before` to `after`: red where a
/// stack's weight grew, blue where it shrank. Widths are those of the
/// larger of the two profiles, so that what is gone (a fixed leak) shows as
/// well as what is new: inferno draws the second profile it is given, and
/// a stack the drawn profile lacks has no width.
pub fn differential(before: &Folded, after: &Folded, weight: Weight) -> Result<String, SvgError> {
    let shrank = after.total() < before.total();
    let drawn = if shrank { "before" } else { "after" };
    let title = format!(
        "{}: change from before to after (widths: {drawn}; red grew, blue shrank)",
        weight.title()
    );
    if before.is_empty() && after.is_empty() {
        return Ok(nothing_to_draw(&title, weight));
    }
    let (first, second) = if shrank {
        (after, before)
    } else {
        (before, after)
    };
    let lines = differential_lines(first, second)?;
    let mut opt = options(title, weight, true);
    // Given (after, before), inferno's delta is before - after: negated, red
    // still means grew.
    opt.negate_differentials = shrank;
    let mut svg = Vec::new();
    flamegraph::from_reader(&mut opt, lines.as_bytes(), &mut svg)?;
    Ok(String::from_utf8_lossy(&svg).into_owned())
}

fn options(title: String, weight: Weight, script: bool) -> Options<'static> {
    let mut opt = Options::default();
    opt.title = title;
    opt.count_name = weight.unit().into();
    opt.colors = Palette::Basic(BasicPalette::Mem);
    // Colours from the function's name, not at random: the same function
    // looks the same in every graph, and the output is reproducible.
    opt.hash = true;
    opt.no_javascript = !script;
    opt
}

/// A small SVG that says so, where inferno would fail on empty input.
fn nothing_to_draw(title: &str, weight: Weight) -> String {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"60\" viewBox=\"0 0 1200 60\" \
         xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"600\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">{}</text>\
         <text x=\"600\" y=\"48\" text-anchor=\"middle\" font-size=\"12\">\
         Nothing to draw: no stack has any {}.</text></svg>\n",
        escape(title),
        weight.unit()
    )
}

/// Text made safe inside XML and HTML, in elements and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Not allowed in XML 1.0 at all: shown as the replacement
            // character rather than making the document unreadable.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample_report::lab_report;

    #[test]
    fn draws_every_stack_with_its_weight() {
        let report = lab_report();
        let folded = Folded::from_stacks(&report.stacks, Weight::Live);
        let svg = flame_graph(&folded, Weight::Live).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("Live bytes (still mapped at the end) by stack"));
        assert!(svg.contains("lab_region_get (4,194,304 bytes"), "{svg}");
        assert!(svg.contains("BlockPool.allocate (pool.py:88)"));
        assert!(svg.contains("<script"));
        let inline = inline_flame_graph(&folded, Weight::Live, 0.01).unwrap();
        assert!(inline.starts_with("<svg class=\"flame\" "), "{inline}");
        for gone in ["<script", "<style", "onload", "<?xml", "<!DOCTYPE"] {
            assert!(!inline.contains(gone), "{gone}: {inline}");
        }
        assert!(inline.contains("lab_region_get (4,194,304 bytes"));
        assert!(inline.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nothing_to_draw_is_still_an_svg() {
        let svg = inline_flame_graph(&Folded::default(), Weight::Resident, 0.01).unwrap();
        assert!(svg.contains("<svg") && svg.contains("Nothing to draw"));
        let diff = differential(&Folded::default(), &Folded::default(), Weight::Live).unwrap();
        assert!(diff.contains("Nothing to draw"));
    }

    #[test]
    fn a_difference_shows_what_is_gone() {
        let report = lab_report();
        let before = Folded::from_stacks(&report.stacks, Weight::Live);
        let after = Folded::from_stacks(&report.stacks[1..], Weight::Live);
        let svg = differential(&before, &after, Weight::Live).unwrap();
        assert!(svg.contains("widths: before"), "{svg}");
        // Gone entirely: -100% of the total.
        assert!(svg.contains("lab_region_get (4,194,304 bytes"), "{svg}");
        let svg = differential(&after, &before, Weight::Live).unwrap();
        assert!(svg.contains("widths: after"));
        assert!(svg.contains("lab_region_get (4,194,304 bytes"));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\u{fffd}"
        );
    }
}
