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

/// A named, coloured series of (x seconds, y) points.
pub type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// A line chart as inline SVG: series of (x seconds, y) points, a shaded hold span.
pub fn svg_chart(series: &[Series<'_>], unit: &str, shade: Option<(f64, f64)>) -> String {
    let (w, hgt) = (900.0, 280.0);
    let (l, r, t, b) = (70.0, 20.0, 20.0, 40.0);
    let xmax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.05;
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
    for k in 0..=4 {
        let v = ymax / 1.05 * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - r,
            y(v),
            y(v),
            l - 6.0,
            y(v) + 4.0,
            if v >= 1000.0 { fmt_n(v.round() as u64) } else { format!("{v:.1}") }
        );
    }
    for k in 0..=5 {
        let v = xmax * k as f64 / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.0} s</text>",
            x(v),
            hgt - b + 16.0
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
