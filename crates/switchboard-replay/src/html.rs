//! A self-contained HTML page of one or more replay reports side by side: a summary table,
//! queue depth over time per team, the distribution of waits and each agent's load. Charts
//! are inline SVG drawn here; the page loads nothing and runs no script, so it opens offline.

use crate::report::{Report, WAIT_BUCKETS_MS};
use std::fmt::Write;

/// Most agents drawn in one report's load chart (the busiest first); the table in the text
/// and JSON reports lists all.
pub const AGENT_BARS_MAX: usize = 60;

const COLOURS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 52.0;
const TOP: f64 = 12.0;

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration in milliseconds as people read it: `850 ms`, `12.5 s`, `4.2 min`, `1.5 h`.
pub fn duration(ms: i64) -> String {
    let ms_f = ms as f64;
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms_f / 1e3)
    } else if ms < 7_200_000 {
        format!("{:.1} min", ms_f / 60e3)
    } else {
        format!("{:.1} h", ms_f / 3_600e3)
    }
}

fn colour(index: usize) -> &'static str {
    COLOURS.get(index % COLOURS.len()).copied().unwrap_or("#333")
}

/// The page for `reports` (one column each).
pub fn page(title: &str, reports: &[Report]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:16px;color:#222}}\
         .cols{{display:flex;gap:24px;flex-wrap:wrap}}.col{{flex:1;min-width:580px}}\
         table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}}\
         th:first-child,td:first-child{{text-align:left}}h2{{margin:8px 0}}h3{{margin:16px 0 4px;font-size:15px}}\
         svg{{background:#fafafa;border:1px solid #ddd}}</style></head><body>\n<h1>{}</h1>\n<div class=\"cols\">\n",
        escape(title),
        escape(title)
    );
    for report in reports {
        column(&mut html, report);
    }
    html.push_str("</div>\n</body></html>\n");
    html
}

fn column(html: &mut String, report: &Report) {
    let _ = writeln!(
        html,
        "<div class=\"col\" data-config=\"{}\"><h2>{}</h2><p>workspace {} · {} events · {} simulated</p>",
        escape(&report.label),
        escape(&report.label),
        escape(&report.workspace),
        report.events,
        duration(report.to_ms.saturating_sub(report.from_ms)),
    );
    html.push_str(
        "<table><tr><th>team</th><th>conversations</th><th>assigned</th><th>abandoned</th>\
         <th>wait p50</th><th>p90</th><th>p99</th><th>max</th><th>load cv</th></tr>\n",
    );
    for team in &report.teams {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.1} %</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            escape(&team.team),
            team.conversations,
            team.assignment_rate * 100.0,
            team.abandoned,
            duration(team.wait.p50_ms),
            duration(team.wait.p90_ms),
            duration(team.wait.p99_ms),
            duration(team.wait.max_ms),
            team.load_cv,
        );
    }
    html.push_str("</table>\n<h3>Queue depth over time</h3>\n");
    depth_chart(html, report);
    html.push_str("<h3>Waits (time to an agent, per assignment)</h3>\n");
    wait_chart(html, report);
    html.push_str("<h3>Load per agent (conversations received)</h3>\n");
    load_chart(html, report);
    html.push_str("</div>\n");
}

/// The top of a count axis: a multiple of 4 at least `max`, so that its five ticks are whole.
fn nice_max(max: f64) -> f64 {
    ((max / 4.0).ceil() * 4.0).max(4.0)
}

/// Draws the axes, whole-number ticks up to `max` and the labels under the x axis (turned
/// when `turned`, so that long names do not overlap).
fn axes(svg: &mut String, max: f64, x_labels: &[(f64, String)], turned: bool) {
    let plot_h = HEIGHT - BOTTOM - TOP;
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#555\"/><line x1=\"{LEFT}\" y1=\"{0}\" x2=\"{WIDTH}\" y2=\"{0}\" stroke=\"#555\"/>",
        HEIGHT - BOTTOM
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let y = HEIGHT - BOTTOM - plot_h * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{value:.0}</text>",
            LEFT - 4.0,
            y + 3.0,
        );
    }
    let y = HEIGHT - BOTTOM + 14.0;
    for (i, (x, label)) in x_labels.iter().enumerate() {
        let (anchor, transform) = if turned {
            ("end", format!(" transform=\"rotate(-35 {x:.1} {y:.1})\""))
        } else if i + 1 == x_labels.len() && x_labels.len() > 1 {
            ("end", String::new())
        } else {
            ("middle", String::new())
        };
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"10\" text-anchor=\"{anchor}\"{transform}>{}</text>",
            escape(label)
        );
    }
}

fn depth_chart(html: &mut String, report: &Report) {
    let buckets = report.depth.iter().map(|d| d.max_depth.len()).max().unwrap_or(0).max(1);
    let max = nice_max(report.depth.iter().flat_map(|d| d.max_depth.iter().copied()).max().unwrap_or(0) as f64);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let x_of = |i: usize| LEFT + plot_w * i as f64 / (buckets.saturating_sub(1).max(1)) as f64;
    let span = report.bucket_ms.saturating_mul(i64::try_from(buckets).unwrap_or(i64::MAX));
    let labels: Vec<(f64, String)> = (0..=4)
        .map(|k| (LEFT + plot_w * f64::from(k) / 4.0, format!("+{}", duration(span / 4 * i64::from(k)))))
        .collect();
    let _ = write!(html, "<svg class=\"chart depth\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\">");
    axes(html, max, &labels, false);
    for (index, series) in report.depth.iter().enumerate() {
        let points: Vec<String> = series
            .max_depth
            .iter()
            .enumerate()
            .map(|(i, &d)| format!("{:.1},{:.1}", x_of(i), HEIGHT - BOTTOM - plot_h * d as f64 / max))
            .collect();
        let _ = write!(
            html,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            colour(index),
            points.join(" "),
            escape(&series.team)
        );
        let _ = write!(
            html,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{}\">{}</text>",
            LEFT + 8.0,
            TOP + 12.0 + 13.0 * index as f64,
            colour(index),
            escape(&series.team)
        );
    }
    html.push_str("</svg>\n");
}

fn bars(html: &mut String, class: &str, values: &[(String, u64)], fill: &str) {
    let max = nice_max(values.iter().map(|(_, v)| *v).max().unwrap_or(0) as f64);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let n = values.len().max(1) as f64;
    let slot = plot_w / n;
    let every = (values.len() / 12).max(1);
    let labels: Vec<(f64, String)> = values
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, (label, _))| (LEFT + slot * (i as f64 + 0.5) + 3.0, label.clone()))
        .collect();
    let _ = write!(html, "<svg class=\"chart {class}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\">");
    axes(html, max, &labels, true);
    for (i, (label, value)) in values.iter().enumerate() {
        let h = plot_h * *value as f64 / max;
        let _ = write!(
            html,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{fill}\"><title>{}: {value}</title></rect>",
            LEFT + slot * i as f64 + slot * 0.1,
            HEIGHT - BOTTOM - h,
            slot * 0.8,
            escape(label)
        );
    }
    html.push_str("</svg>\n");
}

fn wait_chart(html: &mut String, report: &Report) {
    let mut values: Vec<(String, u64)> = Vec::new();
    for (i, count) in report.wait_histogram.iter().enumerate() {
        let label = match WAIT_BUCKETS_MS.get(i) {
            Some(0) => "0".to_owned(),
            Some(&bound) => format!("≤{}", duration(bound)),
            None => ">1 h".to_owned(),
        };
        values.push((label, *count));
    }
    bars(html, "waits", &values, "#1f77b4");
}

fn load_chart(html: &mut String, report: &Report) {
    let mut agents: Vec<(String, u64)> =
        report.agents.iter().map(|a| (format!("{}/{}", a.team, a.agent), a.received)).collect();
    if agents.len() > AGENT_BARS_MAX {
        agents.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        agents.truncate(AGENT_BARS_MAX);
        let _ = writeln!(html, "<p>the {AGENT_BARS_MAX} busiest of {} agents</p>", report.agents.len());
    }
    bars(html, "load", &agents, "#2ca02c");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_durations_read_well() {
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_500), "12.5 s");
        assert_eq!(duration(252_000), "4.2 min");
        assert_eq!(duration(5_400_000 * 2), "3.0 h");
    }

    #[test]
    fn a_page_has_one_column_and_three_charts_per_report() {
        let report = Report { label: "a<b".into(), wait_histogram: vec![1, 2], ..Report::default() };
        let page = page("what if", &[report.clone(), report]);
        assert_eq!(page.matches("<div class=\"col\"").count(), 2);
        assert_eq!(page.matches("<svg class=\"chart").count(), 6);
        assert!(page.contains("a&lt;b") && !page.contains("a<b"));
        assert!(!page.contains("<script") && !page.contains("http"), "self-contained");
    }
}
