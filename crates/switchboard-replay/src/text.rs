//! Reports as plain text for a terminal: one report, or two side by side with differences.

use crate::html::duration;
use crate::report::{Report, TeamReport};
use std::fmt::Write;

fn header(out: &mut String, report: &Report) {
    let refused: u64 = report.refused.values().sum();
    let _ = writeln!(
        out,
        "replay {}: workspace {} · {} events ({} refused by the core) · {} simulated",
        report.label,
        report.workspace,
        report.events,
        refused,
        duration(report.to_ms.saturating_sub(report.from_ms)),
    );
    for (reason, count) in &report.refused {
        let _ = writeln!(out, "  refused {reason}: {count}");
    }
}

/// One report: a line per team (and `all`), then each agent's load.
pub fn single(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "team", "convs", "assigned", "queued", "abandoned", "wait p50", "p90", "p99", "max", "load cv", "max depth"
    );
    for team in &report.teams {
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>7.1}% {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8.2} {:>9}",
            team.team,
            team.conversations,
            team.assignment_rate * 100.0,
            team.queued,
            team.abandoned,
            duration(team.wait.p50_ms),
            duration(team.wait.p90_ms),
            duration(team.wait.p99_ms),
            duration(team.wait.max_ms),
            team.load_cv,
            team.max_queue_depth,
        );
    }
    let _ = writeln!(out, "{:<16} {:<20} {:>8} {:>14} {:>7}", "team", "agent", "received", "max concurrent", "share");
    for agent in &report.agents {
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:>8} {:>14} {:>6.1}%",
            agent.team,
            agent.agent,
            agent.received,
            agent.max_concurrent,
            agent.share * 100.0
        );
    }
    out
}

fn rows(team: &TeamReport) -> Vec<(&'static str, f64, String)> {
    vec![
        ("conversations", team.conversations as f64, team.conversations.to_string()),
        ("assignment rate %", team.assignment_rate * 100.0, format!("{:.1}", team.assignment_rate * 100.0)),
        ("queued", team.queued as f64, team.queued.to_string()),
        ("abandoned", team.abandoned as f64, team.abandoned.to_string()),
        ("wait p50", team.wait.p50_ms as f64, duration(team.wait.p50_ms)),
        ("wait p90", team.wait.p90_ms as f64, duration(team.wait.p90_ms)),
        ("wait p99", team.wait.p99_ms as f64, duration(team.wait.p99_ms)),
        ("wait max", team.wait.max_ms as f64, duration(team.wait.max_ms)),
        ("load cv", team.load_cv, format!("{:.2}", team.load_cv)),
        ("max queue depth", team.max_queue_depth as f64, team.max_queue_depth.to_string()),
    ]
}

fn difference(name: &str, a: f64, b: f64) -> String {
    let delta = b - a;
    if delta == 0.0 {
        return "=".to_owned();
    }
    let shown = if name.starts_with("wait") { duration(delta.abs() as i64) } else { format!("{:.2}", delta.abs()) };
    let sign = if delta > 0.0 { "+" } else { "-" };
    if a == 0.0 { format!("{sign}{shown}") } else { format!("{sign}{shown} ({:+.0}%)", delta / a * 100.0) }
}

/// Two reports side by side, per team (teams of either), with the difference B − A.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = String::new();
    header(&mut out, a);
    header(&mut out, b);
    let mut teams: Vec<&str> =
        a.teams.iter().chain(&b.teams).map(|t| t.team.as_str()).filter(|t| *t != "all").collect();
    teams.sort_unstable();
    teams.dedup();
    teams.push("all");
    let empty = TeamReport::default();
    for team in teams {
        let left = a.teams.iter().find(|t| t.team == team).unwrap_or(&empty);
        let right = b.teams.iter().find(|t| t.team == team).unwrap_or(&empty);
        let _ = writeln!(out, "\nteam {team}");
        let _ = writeln!(out, "  {:<18} {:>14} {:>14}   difference", "", a.label, b.label);
        for ((name, x, shown_a), (_, y, shown_b)) in rows(left).into_iter().zip(rows(right)) {
            let _ = writeln!(out, "  {name:<18} {shown_a:>14} {shown_b:>14}   {}", difference(name, x, y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_read_with_sign_and_percentage() {
        assert_eq!(difference("queued", 10.0, 10.0), "=");
        assert_eq!(difference("queued", 10.0, 15.0), "+5.00 (+50%)");
        assert_eq!(difference("wait p90", 60_000.0, 30_000.0), "-30.0 s (-50%)");
        assert_eq!(difference("abandoned", 0.0, 2.0), "+2.00");
    }
}
