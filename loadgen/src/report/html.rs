//! Self-contained HTML pieces: escaping and line charts as inline SVG (no scripts, nothing
//! fetched from the network), for the reports people open in a browser.

use std::fmt::Write as _;

use crate::fmt::fmt_n;

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A step of 1, 2 or 5 × 10^k that cuts `max` into about `ticks` parts, and the axis end
/// (the first multiple of the step at or above `max`; at least one step).
pub fn nice_axis(max: f64, ticks: u32) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / ticks.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, ((max / step).ceil().max(1.0)) * step)
}

/// A tick value as text: thousands separated, decimals only when the step has them.
fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        fmt_n(v.round() as u64)
    } else {
        let d = (-step.log10().floor()) as usize;
        format!("{v:.d$}")
    }
}

/// A named, coloured series of (x seconds, y) points.
pub type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// A line chart as inline SVG: series of (x seconds, y) points, a shaded hold span.
pub fn svg_chart(series: &[Series<'_>], unit: &str, shade: Option<(f64, f64)>) -> String {
    let (w, hgt) = (900.0, 280.0);
    let (l, r, t, b) = (70.0, 20.0, 20.0, 40.0);
    // Axes end on round numbers: ticks every 1, 2 or 5 × 10^k.
    let (xstep, xmax) = nice_axis(
        series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.0))
            .fold(1.0f64, f64::max),
        5,
    );
    let (ystep, ymax) = nice_axis(
        series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.1))
            .fold(0.0f64, f64::max),
        4,
    );
    let x = |v: f64| l + (w - l - r) * v / xmax;
    let y = |v: f64| hgt - b - (hgt - t - b) * v / ymax;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{hgt}\" fill=\"white\"/>\n"
    );
    if let Some((a, z)) = shade {
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{t}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#eef6ee\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#595\">hold</text>",
            x(a),
            (x(z) - x(a)).max(1.0),
            hgt - t - b,
            x(a) + 4.0,
            t + 12.0
        );
    }
    let yticks = (ymax / ystep).round() as usize;
    for k in 0..=yticks {
        let v = ystep * k as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - r,
            y(v),
            y(v),
            l - 6.0,
            y(v) + 4.0,
            tick_label(v, ystep)
        );
    }
    let xticks = (xmax / xstep).round() as usize;
    for k in 0..=xticks {
        let v = xstep * k as f64;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} s</text>",
            x(v),
            hgt - b + 16.0,
            tick_label(v, xstep)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{:.1}\" stroke=\"#333\"/><line x1=\"{l}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\
         <text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        hgt - b,
        w - r,
        hgt - b,
        hgt - b,
        hgt / 2.0,
        hgt / 2.0,
        html_escape(unit)
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        if !pts.is_empty() {
            let path: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            l + 10.0 + 200.0 * i as f64,
            hgt - 12.0,
            l + 26.0 + 200.0 * i as f64,
            hgt - 8.0,
            html_escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_axis(9.0, 5), (2.0, 10.0));
        assert_eq!(nice_axis(1234.0, 4), (500.0, 1500.0));
        assert_eq!(nice_axis(0.37, 4), (0.1, 0.4));
        assert_eq!(nice_axis(0.0, 4), (0.5, 1.0));
        assert_eq!(nice_axis(100.0, 4), (50.0, 100.0));
        assert_eq!(tick_label(1500.0, 500.0), "1,500");
        assert_eq!(tick_label(0.30000000000000004, 0.1), "0.3");
        let svg = svg_chart(&[("a", "#000", &[(0.0, 0.0), (9.0, 1234.0)])], "ms", None);
        assert!(svg.contains(">1,500<") && svg.contains(">10 s<"), "{svg}");
    }
}
