//! Reports as plain text for a terminal: one report, or two side by side with differences.

use crate::Decision;
use crate::html::duration;
use crate::report::{Report, TeamReport};
use std::fmt::Write;
use switchboard_core::{Candidate, Effect, Explanation, Routed, Strategy};

fn candidate_line(out: &mut String, role: &str, candidate: &Candidate, winner: Option<&str>, strategy: Strategy) {
    let chosen = winner == Some(candidate.agent.as_str());
    let why = if chosen {
        "chosen".to_owned()
    } else if candidate.verdict.is_eligible() {
        match (strategy, winner) {
            (_, None) => "eligible".to_owned(),
            (Strategy::RoundRobin, Some(_)) => "eligible, later in the rotation".to_owned(),
            (Strategy::LeastOpen, Some(_)) => format!("eligible, holds {} (not fewer)", candidate.open),
            (Strategy::Weighted, Some(_)) => format!("eligible, not drawn (weight {})", candidate.weight),
            (Strategy::Ordered, Some(_)) => "eligible, later in the member order".to_owned(),
            (Strategy::Manual, Some(_)) => "eligible (the team assigns nobody automatically)".to_owned(),
        }
    } else {
        format!("not eligible: {}", candidate.verdict)
    };
    let _ = writeln!(out, "      {role}{:<16} {why}", candidate.agent.as_str());
}

/// Writes `why` (the path that decided, each candidate's verdict) as indented lines; `winner`
/// is the agent the decision assigned, if any.
pub fn explanation(out: &mut String, why: &Explanation, winner: Option<&str>) {
    match &why.routed {
        Routed::Rule { rule, matched_on } if matched_on.is_empty() => {
            let _ = writeln!(out, "    routed to team {} by rule {rule} (matches everything)", why.team);
        }
        Routed::Rule { rule, matched_on } => {
            let _ =
                writeln!(out, "    routed to team {} by rule {rule} (matched on {})", why.team, matched_on.join(", "));
        }
        Routed::DefaultTeam => {
            let _ = writeln!(out, "    routed to team {} (no rule matched: the default team)", why.team);
        }
        Routed::Reopened { reassign_if_unavailable } => {
            let otherwise = if *reassign_if_unavailable {
                "else the team's strategy"
            } else {
                "else it waits for them if they still serve the team"
            };
            let _ = writeln!(out, "    reopened in team {}: its previous agent first, {otherwise}", why.team);
        }
    }
    if why.outside_hours {
        let _ = writeln!(out, "    the team was closed: the conversation waits for opening time");
    } else if why.assign_delay_s > 0 {
        let _ = writeln!(out, "    the team waits {} s before assigning (claimable meanwhile)", why.assign_delay_s);
    }
    let returning = if matches!(why.routed, Routed::Reopened { .. }) { "previous agent " } else { "returning to " };
    for (role, candidate) in
        [("dedicated agent ", &why.dedicated), (returning, &why.returning), ("rule's agent ", &why.rule_agent)]
    {
        if let Some(candidate) = candidate {
            candidate_line(out, role, candidate, winner, why.strategy);
        }
    }
    let _ = writeln!(out, "    strategy {:?} among {} member(s):", why.strategy, why.candidates.len());
    for candidate in &why.candidates {
        candidate_line(out, "", candidate, winner, why.strategy);
    }
}

fn effect_line(effect: &Effect) -> String {
    match effect {
        Effect::Assigned { agent, reason, team, .. } => format!("assigned to {agent} in {team} ({reason:?})"),
        Effect::Unassigned { agent, reason, .. } => format!("left {agent} ({reason:?})"),
        Effect::Queued { team, position, waiting_for, .. } => match waiting_for {
            Some(agent) => format!("queued for {agent} in {team}, position {position}"),
            None => format!("queued in {team}, position {position}"),
        },
        Effect::QueuePosition { position, .. } => format!("now position {position}"),
        Effect::OutsideHours { team, .. } => format!("{team} closed: waits for opening time"),
        Effect::Welcome { team, .. } => format!("welcomed by {team}"),
        Effect::Reopened { team, .. } => format!("reopened in {team}"),
        Effect::Closed { agent, .. } => match agent {
            Some(agent) => format!("closed ({agent} freed)"),
            None => "closed".to_owned(),
        },
        Effect::AgentStatusChanged { agent, status, .. } => format!("{agent} is now {status:?}"),
    }
}

/// Every decision about one conversation, with the explanations of its opening and reopenings.
/// `origin` names what [`Decision::sequence`] counts: `"stream #"` in a replay, `"log index "`
/// in a cluster's history.
pub fn decisions(conversation: &str, from_ms: i64, decisions: &[Decision], origin: &str) -> String {
    let mut out = String::new();
    if decisions.is_empty() {
        let _ = writeln!(out, "conversation {conversation}: not in these events");
        return out;
    }
    let _ = writeln!(out, "conversation {conversation}");
    for decision in decisions {
        let at = duration(decision.at_ms.saturating_sub(from_ms));
        let source = if decision.sequence > 0 { format!(" ({origin}{})", decision.sequence) } else { String::new() };
        let _ = writeln!(out, "  +{at} at {} ms: {}{source}", decision.at_ms, decision.cause);
        if let Some(why) = &decision.explanation {
            let winner = decision.effects.iter().find_map(|e| match e {
                Effect::Assigned { agent, .. } => Some(agent.as_str()),
                _ => None,
            });
            explanation(&mut out, why, winner);
        }
        for effect in &decision.effects {
            let _ = writeln!(out, "    -> {}", effect_line(effect));
        }
    }
    out
}

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
