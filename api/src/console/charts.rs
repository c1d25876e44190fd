//! Charts drawn on the server as SVG: no script, readable by screen readers
//! (a title and a description name what they show), printable.

use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};
use std::fmt::Write;

/// One bar per step from `from` to `to` (steps without a value are zero).
pub struct Bars<'a> {
    pub title: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step: TimeDelta,
    /// (start of the step, value, failures within it)
    pub points: &'a [(DateTime<Utc>, i64, i64)],
}

const WIDTH: f64 = 840.0;
const HEIGHT: f64 = 180.0;
const AXIS: f64 = 24.0;

impl Bars<'_> {
    pub fn svg(&self) -> String {
        let start = self.from.duration_trunc(self.step).unwrap_or(self.from);
        let steps = ((self.to - start).num_seconds() / self.step.num_seconds().max(1)).max(1) as usize + 1;
        let mut values = vec![(0i64, 0i64); steps];
        for (at, value, failed) in self.points {
            let index = (*at - start).num_seconds() / self.step.num_seconds().max(1);
            if let Some(slot) = usize::try_from(index).ok().and_then(|i| values.get_mut(i)) {
                slot.0 += value;
                slot.1 += failed;
            }
        }
        let highest = values.iter().map(|(v, _)| *v).max().unwrap_or(0).max(1);
        let total: i64 = values.iter().map(|(v, _)| v).sum();
        let bar = WIDTH / steps as f64;
        let plot = HEIGHT - AXIS;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" data-total="{total}" data-bars="{steps}"><title id="chart-title">{title}</title><desc id="chart-desc">{total} in all; the highest step has {highest}.</desc>"#,
            title = escape(self.title),
        );
        for (i, (value, failed)) in values.iter().enumerate() {
            if *value == 0 {
                continue;
            }
            let x = i as f64 * bar;
            let h = (*value as f64 / highest as f64 * plot).max(1.0);
            let fail_h = (*failed as f64 / highest as f64 * plot).min(h);
            let at = start + self.step * i as i32;
            let _ = write!(
                svg,
                r#"<g><title>{at}: {value}</title><rect class="bar" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}"/>"#,
                at = at.format("%Y-%m-%d %H:%M UTC"),
                y = plot - h,
                w = (bar - 0.5).max(0.5),
            );
            if fail_h > 0.0 {
                let _ = write!(
                    svg,
                    r#"<rect class="bar-failed" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{fail_h:.1}"/>"#,
                    y = plot - fail_h,
                    w = (bar - 0.5).max(0.5),
                );
            }
            svg.push_str("</g>");
        }
        // A tick per day.
        let day = TimeDelta::days(1);
        let mut tick = start.duration_trunc(day).unwrap_or(start) + day;
        while tick < self.to {
            let x = (tick - start).num_seconds() as f64 / (self.to - start).num_seconds().max(1) as f64 * WIDTH;
            let _ = write!(
                svg,
                r#"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="0" y2="{plot}"/><text class="tick-label" x="{x:.1}" y="{y}"><time datetime="{iso}">{label}</time></text>"#,
                y = HEIGHT - 6.0,
                iso = tick.to_rfc3339(),
                label = tick.format("%m-%d"),
            );
            tick += day;
        }
        svg.push_str("</svg>");
        svg
    }
}

/// A small line of recent activity (one value per step, oldest first).
pub fn sparkline(label: &str, values: &[i64]) -> String {
    let highest = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (width, height) = (120.0, 24.0);
    let step = width / (values.len().max(2) - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                height - 1.0 - *v as f64 / highest * (height - 2.0)
            )
        })
        .collect();
    format!(
        r#"<svg class="sparkline" viewBox="0 0 {width} {height}" role="img" aria-label="{label}"><polyline points="{}"/></svg>"#,
        points.join(" "),
        label = escape(label),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fall_in_their_steps_and_say_their_total() {
        let to = DateTime::parse_from_rfc3339("2026-12-03T12:30:00Z").unwrap().to_utc();
        let from = to - TimeDelta::days(7);
        let points = [(to - TimeDelta::hours(1), 40, 2), (to - TimeDelta::hours(30), 10, 0)];
        let svg = Bars {
            title: "a <chart>",
            from,
            to,
            step: TimeDelta::hours(1),
            points: &points,
        }
        .svg();
        assert!(svg.contains(r#"data-total="50""#), "{svg}");
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2);
        assert_eq!(svg.matches(r#"class="bar-failed""#).count(), 1);
        assert!(svg.contains("a &lt;chart&gt;"));
        assert_eq!(svg.matches(r#"class="tick""#).count(), 7, "a tick per day");
    }

    #[test]
    fn a_sparkline_has_a_point_per_value() {
        let svg = sparkline("x", &[0, 5, 10]);
        assert!(svg.contains("0.0,23.0 60.0,12.0 120.0,1.0"), "{svg}");
    }
}
