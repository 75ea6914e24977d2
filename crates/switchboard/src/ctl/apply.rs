//! `switchboard ctl apply -f workspace.yaml`: compare the file with the cluster, print what
//! changes, and apply it in an order the state machine accepts.

use super::spec::{self, WorkspaceFile, agent_entry, normalize_settings, normalize_team, rule_entry, team_entry};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use switchboard_client::{Client, pb};
use tonic::Code;

/// One change `apply` will make.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    CreateWorkspace,
    UpsertAgent { agent: pb::Agent, details: Vec<String>, new: bool },
    UpsertTeam { team: pb::Team, details: Vec<String>, new: bool },
    SetRules { rules: Vec<pb::RoutingRule>, details: Vec<String> },
    Settings { settings: pb::WorkspaceSettings, details: Vec<String> },
    RemoveTeam { team: String },
    RemoveAgent { agent: String },
}

impl Change {
    fn describe(&self) -> Vec<String> {
        let with = |head: String, details: &[String]| {
            std::iter::once(head).chain(details.iter().map(|d| format!("      {d}"))).collect::<Vec<_>>()
        };
        match self {
            Change::CreateWorkspace => vec!["  + workspace (new)".to_owned()],
            Change::UpsertAgent { agent, new: true, .. } => {
                vec![format!("  + agent {} ({})", agent.id, agent.display_name)]
            }
            Change::UpsertAgent { agent, details, .. } => with(format!("  ~ agent {}", agent.id), details),
            Change::UpsertTeam { team, new: true, .. } => vec![format!(
                "  + team {} ({}, {} members: {})",
                team.id,
                spec::strategy_name(team.strategy),
                team.members.len(),
                team.members.join(", ")
            )],
            Change::UpsertTeam { team, details, .. } => with(format!("  ~ team {}", team.id), details),
            Change::SetRules { details, .. } => with("  ~ routing rules".to_owned(), details),
            Change::Settings { details, .. } if details.is_empty() => vec!["  ~ settings (defaults)".to_owned()],
            Change::Settings { details, .. } => with("  ~ settings".to_owned(), details),
            Change::RemoveTeam { team } => vec![format!("  - team {team}")],
            Change::RemoveAgent { agent } => vec![format!("  - agent {agent}")],
        }
    }
}

/// Field-by-field differences between two serialisable values, as `path: old -> new` lines.
fn differences<T: Serialize>(before: Option<&T>, after: &T) -> Vec<String> {
    let to_value = |v: &T| serde_norway::to_value(v).unwrap_or(serde_norway::Value::Null);
    let after = to_value(after);
    let before = before.map(to_value);
    let mut lines = Vec::new();
    walk("", before.as_ref(), Some(&after), &mut lines);
    lines
}

fn show(value: Option<&serde_norway::Value>) -> String {
    match value {
        None | Some(serde_norway::Value::Null) => "(none)".to_owned(),
        Some(v) => serde_norway::to_string(v).map_or_else(|_| format!("{v:?}"), |s| s.trim().replace('\n', " ")),
    }
}

fn walk(
    path: &str,
    before: Option<&serde_norway::Value>,
    after: Option<&serde_norway::Value>,
    lines: &mut Vec<String>,
) {
    use serde_norway::Value;
    if before == after {
        return;
    }
    match (before, after) {
        (Some(Value::Mapping(b)), Some(Value::Mapping(a))) => {
            let mut keys: Vec<&Value> = b.keys().chain(a.keys()).collect();
            keys.dedup();
            let mut seen = Vec::new();
            for key in keys {
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                let name = key.as_str().map_or_else(|| format!("{key:?}"), str::to_owned);
                let child = if path.is_empty() { name } else { format!("{path}.{name}") };
                walk(&child, b.get(key), a.get(key), lines);
            }
        }
        (None, Some(Value::Mapping(a))) => {
            for (key, value) in a {
                let name = key.as_str().map_or_else(|| format!("{key:?}"), str::to_owned);
                let child = if path.is_empty() { name } else { format!("{path}.{name}") };
                walk(&child, None, Some(value), lines);
            }
        }
        _ => lines.push(format!("{path}: {} -> {}", show(before), show(after))),
    }
}

/// Works out the changes that turn `current` (None: the workspace does not exist) into `file`.
pub(crate) fn plan(file: &WorkspaceFile, current: Option<&pb::WorkspaceConfig>, prune: bool) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    let empty = pb::WorkspaceConfig::default();
    let current_config = current.unwrap_or(&empty);
    if current.is_none() {
        changes.push(Change::CreateWorkspace);
    }
    let existing_agents: BTreeMap<&str, &pb::Agent> =
        current_config.agents.iter().map(|a| (a.id.as_str(), a)).collect();
    for agent in file.agents_pb()? {
        let before = existing_agents.get(agent.id.as_str()).copied();
        if before != Some(&agent) {
            let details = differences(before.map(agent_entry).as_ref(), &agent_entry(&agent));
            changes.push(Change::UpsertAgent { new: before.is_none(), details, agent });
        }
    }
    let existing_teams: BTreeMap<&str, &pb::Team> = current_config.teams.iter().map(|t| (t.id.as_str(), t)).collect();
    for team in file.teams_pb()? {
        let before = existing_teams.get(team.id.as_str()).map(|t| normalize_team((*t).clone()));
        if before.as_ref() != Some(&team) {
            let details = differences(before.as_ref().map(team_entry).as_ref(), &team_entry(&team));
            changes.push(Change::UpsertTeam { new: before.is_none(), details, team });
        }
    }
    let rules = file.rules_pb()?;
    if rules != current_config.rules {
        let before: Vec<_> = current_config.rules.iter().map(rule_entry).collect();
        let after: Vec<_> = rules.iter().map(rule_entry).collect();
        let mut details = Vec::new();
        let before_ids: Vec<&str> = before.iter().map(|r| r.id.as_str()).collect();
        let after_ids: Vec<&str> = after.iter().map(|r| r.id.as_str()).collect();
        if before_ids != after_ids {
            details.push(format!("order: [{}] -> [{}]", before_ids.join(", "), after_ids.join(", ")));
        }
        for rule in &after {
            let old = before.iter().find(|r| r.id == rule.id);
            for line in differences(old, rule) {
                details.push(format!("{}: {line}", rule.id));
            }
        }
        changes.push(Change::SetRules { rules, details });
    }
    let mut settings = file.settings_pb();
    let current_settings = current_config.settings.clone().map(normalize_settings);
    if settings.rng_seed == 0 {
        // The seed only matters when the workspace is created; keep whatever it was.
        settings.rng_seed = current_settings.as_ref().map_or(0, |s| s.rng_seed);
    }
    if current_settings.as_ref() != Some(&settings) || current.is_none() {
        let shown = |s: &pb::WorkspaceSettings| spec::Settings {
            default_team: s.default_team.clone(),
            vip_waits_for_dedicated_agent: s.vip_waits_for_dedicated_agent,
            dedupe_window_s: s.dedupe_window_s,
            dedupe_max_events: s.dedupe_max_events,
            closed_retention_s: s.closed_retention_s,
            rng_seed: 0,
        };
        let details = differences(current_settings.as_ref().map(shown).as_ref(), &shown(&settings));
        if !details.is_empty() || current.is_none() {
            changes.push(Change::Settings { settings, details });
        }
    }
    if prune {
        for team in &current_config.teams {
            if !file.teams.iter().any(|t| t.id == team.id) {
                changes.push(Change::RemoveTeam { team: team.id.clone() });
            }
        }
        for agent in &current_config.agents {
            if !file.agents.iter().any(|a| a.id == agent.id) {
                changes.push(Change::RemoveAgent { agent: agent.id.clone() });
            }
        }
    }
    Ok(changes)
}

/// Reads the current configuration, prints the plan, and applies it unless `dry_run`.
pub(crate) async fn apply(client: &Client, file: &WorkspaceFile, dry_run: bool, prune: bool) -> Result<Vec<Change>> {
    let workspace = file.workspace.clone();
    let current = match client
        .get_workspace(pb::GetWorkspaceRequest { workspace: workspace.clone(), ..Default::default() })
        .await
    {
        Ok(config) => Some(config),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => return Err(status).context("cannot read the current workspace configuration"),
    };
    let changes = plan(file, current.as_ref(), prune)?;
    if changes.is_empty() {
        println!("workspace {workspace}: no changes");
        return Ok(changes);
    }
    println!(
        "workspace {workspace}: {} change(s){}",
        changes.len(),
        if dry_run { " (dry run, nothing applied)" } else { "" }
    );
    for change in &changes {
        for line in change.describe() {
            println!("{line}");
        }
    }
    if dry_run {
        return Ok(changes);
    }
    for change in &changes {
        let ws = workspace.clone();
        let result = match change {
            Change::CreateWorkspace => {
                // Created without a default team: the teams it may name do not exist yet. The
                // settings change at the end sets it.
                let mut settings = file.settings_pb();
                settings.default_team.clear();
                client
                    .configure_workspace(pb::ConfigureWorkspaceRequest {
                        workspace: ws,
                        settings: Some(settings),
                        ..Default::default()
                    })
                    .await
            }
            Change::UpsertAgent { agent, .. } => {
                client
                    .upsert_agent(pb::UpsertAgentRequest {
                        workspace: ws,
                        agent: Some(agent.clone()),
                        ..Default::default()
                    })
                    .await
            }
            Change::UpsertTeam { team, .. } => {
                client
                    .upsert_team(pb::UpsertTeamRequest {
                        workspace: ws,
                        team: Some(team.clone()),
                        ..Default::default()
                    })
                    .await
            }
            Change::SetRules { rules, .. } => {
                client
                    .set_routing_rules(pb::SetRoutingRulesRequest {
                        workspace: ws,
                        rules: rules.clone(),
                        ..Default::default()
                    })
                    .await
            }
            Change::Settings { settings, .. } => {
                client
                    .configure_workspace(pb::ConfigureWorkspaceRequest {
                        workspace: ws,
                        settings: Some(settings.clone()),
                        ..Default::default()
                    })
                    .await
            }
            Change::RemoveTeam { team } => {
                client
                    .remove_team(pb::RemoveTeamRequest { workspace: ws, team: team.clone(), ..Default::default() })
                    .await
            }
            Change::RemoveAgent { agent } => {
                client
                    .remove_agent(pb::RemoveAgentRequest { workspace: ws, agent: agent.clone(), ..Default::default() })
                    .await
            }
        };
        let first = change.describe().into_iter().next().unwrap_or_default();
        result.with_context(|| format!("applying `{}` failed; the changes above it were applied", first.trim()))?;
    }
    println!("applied");
    Ok(changes)
}
