//! A line chart as inline SVG: bytes over seconds, a few series, axes with
//! round ticks, a legend. Small on purpose: the page must open offline, so
//! no chart library and no external assets.

use std::fmt::{self, Write as _};

use crate::report::{svg::escape, text::bytes};

/// One line of the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// (seconds, bytes), in time order.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 320.0;
/// Room for the y labels on the left, the x labels below.
const LEFT: f64 = 80.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
/// Points are marked with dots when there are few of them (one sample
/// would otherwise draw nothing).
const MAX_DOTS: usize = 60;

/// Distinct on white, and for the common kinds of colour blindness
/// (Okabe and Ito's palette).
const COLOURS: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
];

/// The chart: an `<svg class="chart">` and its legend below it.
pub fn line_chart(label: &str, series: &[Series]) -> String {
    let mut svg = String::new();
    write_chart(&mut svg, label, series).expect("writing to a String cannot fail");
    svg
}

fn write_chart(svg: &mut String, label: &str, series: &[Series]) -> fmt::Result {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    let mut x_min = f64::INFINITY;
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    if !x_min.is_finite() {
        x_min = 0.0;
    }
    let x_ticks = ticks(x_min, x_max.max(x_min + 1.0), 1.0);
    let y_ticks = byte_ticks(y_max.max(1.0));
    let x_lo = x_ticks.first().copied().unwrap_or(0.0);
    let x_hi = x_ticks.last().copied().unwrap_or(1.0);
    let y_hi = y_ticks.last().copied().unwrap_or(1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_hi * plot_h;

    writeln!(
        svg,
        "<svg class=\"chart\" role=\"img\" aria-label=\"{label}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">",
        label = escape(label)
    )?;
    for &y in &y_ticks {
        writeln!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y_px:.1}\" y2=\"{y_px:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            py(y) + 4.0,
            bytes(y as u64),
            y_px = py(y),
        )?;
    }
    for &x in &x_ticks {
        writeln!(
            svg,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} s</text>",
            px(x),
            HEIGHT - BOTTOM + 18.0,
            trim_number(x),
        )?;
    }
    writeln!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{bottom:.1}\" y2=\"{bottom:.1}\"/>",
        TOP + plot_h,
        WIDTH - RIGHT,
        bottom = TOP + plot_h,
    )?;
    if series.iter().all(|s| s.points.is_empty()) {
        writeln!(
            svg,
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">\
             No samples of running processes</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0,
        )?;
    }
    for (i, line) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let coordinates: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        writeln!(
            svg,
            "<g class=\"series\"><title>{}</title>\
             <polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            escape(&line.name),
            coordinates.join(" ")
        )?;
        if line.points.len() <= MAX_DOTS {
            for &(x, y) in &line.points {
                write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                    px(x),
                    py(y)
                )?;
            }
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n<ul class=\"legend\">");
    for (i, line) in series.iter().enumerate() {
        write!(
            svg,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            COLOURS[i % COLOURS.len()],
            escape(&line.name)
        )?;
    }
    svg.push_str("</ul>\n");
    Ok(())
}

/// Round ticks from at most `lo` to at least `hi`, about five of them, at
/// multiples of 1, 2 or 5 times a power of ten of `unit`.
fn ticks(lo: f64, hi: f64, unit: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON) / unit;
    let raw = span / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power)
        * unit;
    let first = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut tick = first;
    while tick < hi + step * 0.999 && ticks.len() < 50 {
        ticks.push(tick);
        tick += step;
    }
    ticks
}

/// Ticks for bytes from 0: round numbers of the binary unit the largest
/// value is written in (KiB, MiB, ...), so labels read `256.0 KiB`.
fn byte_ticks(max: f64) -> Vec<f64> {
    let mut unit = 1.0;
    while max / unit >= 1024.0 {
        unit *= 1024.0;
    }
    ticks(0.0, max, unit)
}

/// `1.5`, `2`, `0.25`: no trailing zeros.
fn trim_number(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 1.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            ticks(0.3, 1.2, 1.0),
            [0.2, 0.4, 0.6000000000000001, 0.8, 1.0, 1.2]
        );
        let mib = 1048576.0;
        assert_eq!(
            byte_ticks(4.5 * mib),
            [0.0, mib, 2.0 * mib, 3.0 * mib, 4.0 * mib, 5.0 * mib]
        );
        assert_eq!(trim_number(1.5), "1.5");
        assert_eq!(trim_number(2.0), "2");
    }

    #[test]
    fn draws_each_series_and_escapes_names() {
        let series = [
            Series {
                name: "pid 7 RSS".into(),
                points: vec![(0.0, 1e6), (1.0, 2e6), (2.0, 3e6)],
            },
            Series {
                name: "issuer <lib&>.so resident".into(),
                points: vec![(1.0, 5e5)],
            },
        ];
        let svg = line_chart("RSS & resident", &series);
        assert!(svg.starts_with("<svg class=\"chart\""));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("issuer &lt;lib&amp;&gt;.so resident"));
        assert!(!svg.contains("<lib&>"));
        assert!(svg.contains("aria-label=\"RSS &amp; resident\""));
        // The 3 MB top is inside the plot: the highest tick is above it.
        assert!(svg.contains(">3.0 MiB<"), "{svg}");
    }

    #[test]
    fn no_samples_still_draws_axes() {
        let svg = line_chart("empty", &[]);
        assert!(svg.contains("<svg class=\"chart\""));
        assert!(svg.contains("No samples of running processes"));
    }
}
