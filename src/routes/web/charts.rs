//! Bar charts drawn on the server as inline SVG: no JavaScript, nothing fetched, and the markup is
//! built only from numbers and labels this module formats itself.

use std::fmt::Write as _;

/// One bar group: successful and failed sign-ins in a time bucket.
pub struct Bucket {
    pub label: String,
    pub ok: i64,
    pub failed: i64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 36.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 28.0;

/// A grouped bar chart of `buckets`; every `label_every`-th bucket is labelled on the x axis.
pub fn sign_in_chart(title: &str, buckets: &[Bucket], label_every: usize) -> String {
    let max = buckets.iter().map(|b| b.ok.max(b.failed)).max().unwrap_or(0).max(1);
    let scale_max = nice_ceiling(max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / buckets.len().max(1) as f64;
    let bar = (slot * 0.38).max(1.0);
    let y = |value: i64| TOP + plot_h - (value as f64 / scale_max as f64) * plot_h;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let _ = write!(svg, "<title>{}</title>", escape(title));
    for step in 0..=4 {
        let value = scale_max * step / 4;
        let gy = y(value);
        let _ =
            write!(svg, r#"<line class="grid-line" x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}"/>"#, WIDTH - RIGHT);
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{value}</text>"#, LEFT - 6.0, gy + 4.0);
    }
    for (i, bucket) in buckets.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - 2.0 * bar) / 2.0;
        let tooltip = format!("{}: {} sign-ins, {} failed", bucket.label, bucket.ok, bucket.failed);
        let _ = write!(svg, "<g><title>{}</title>", escape(&tooltip));
        for (offset, value, class) in [(0.0, bucket.ok, "bar-ok"), (bar, bucket.failed, "bar-failed")] {
            let top = y(value);
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}"/>"#,
                x + offset,
                (TOP + plot_h - top).max(0.0)
            );
        }
        svg.push_str("</g>");
        // Count labels back from the newest bucket, so "now" is always labelled.
        let from_end = buckets.len() - 1 - i;
        if label_every > 0 && from_end.is_multiple_of(label_every) {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bar,
                HEIGHT - 8.0,
                escape(&bucket.label)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}"/>"#,
        TOP + plot_h,
        WIDTH - RIGHT
    );
    let _ = write!(
        svg,
        r#"<rect class="legend-ok" x="{LEFT}" y="4" width="10" height="10"/><text x="{:.1}" y="13">sign-ins</text><rect class="legend-failed" x="{:.1}" y="4" width="10" height="10"/><text x="{:.1}" y="13">failed</text>"#,
        LEFT + 14.0,
        LEFT + 80.0,
        LEFT + 94.0
    );
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 5 × 10ⁿ (or a multiple of 4 for small values) at or above `value`, so the
/// four grid lines land on whole numbers.
fn nice_ceiling(value: i64) -> i64 {
    if value <= 4 {
        return 4;
    }
    let mut magnitude = 1;
    while magnitude * 10 < value {
        magnitude *= 10;
    }
    [1, 2, 4, 5, 8, 10].iter().map(|m| m * magnitude).find(|&c| c >= value && c % 4 == 0).unwrap_or(magnitude * 20)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_two_bars_per_bucket_and_escapes_text() {
        let buckets = vec![
            Bucket { label: "<00>".to_owned(), ok: 3, failed: 1 },
            Bucket { label: "01".to_owned(), ok: 0, failed: 0 },
        ];
        let svg = sign_in_chart("Sign-ins & failures", &buckets, 1);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="bar-ok""#).count(), 2);
        assert_eq!(svg.matches(r#"class="bar-failed""#).count(), 2);
        assert!(svg.contains("&lt;00&gt;") && svg.contains("Sign-ins &amp; failures"));
        assert!(!svg.contains("<00>"));
    }

    #[test]
    fn the_scale_lands_on_whole_numbers() {
        for value in [1, 4, 5, 13, 99, 1234] {
            let top = nice_ceiling(value);
            assert!(top >= value && top % 4 == 0, "{value} → {top}");
        }
    }
}
