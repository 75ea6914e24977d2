//! `switchboard ctl apply -f workspace.yaml`: compare the file with the cluster, rehearse the
//! changes locally (`check.rs`), print them, and apply them in an order that never leaves the
//! workspace without something the file keeps: everything is created or updated first (agents,
//! then the teams that list them, then the settings that name the default team, then the rules
//! that target teams and agents), and removals (`--prune`) come last. A refusal midway (only
//! the cluster knows, for example, that a team to remove still has open conversations) thus
//! leaves every agent, team and rule of the file in place.

use super::spec::{self, WorkspaceFile, agent_entry, normalize_settings, normalize_team, rule_entry, team_entry};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use switchboard_client::{Client, pb};
use tonic::Code;

/// One change `apply` will make.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    /// Created without a default team: the teams it may name do not exist yet. The settings
    /// change after the teams sets it.
    CreateWorkspace {
        settings: pb::WorkspaceSettings,
    },
    UpsertAgent {
        agent: pb::Agent,
        details: Vec<String>,
        new: bool,
    },
    UpsertTeam {
        team: pb::Team,
        details: Vec<String>,
        new: bool,
    },
    SetRules {
        rules: Vec<pb::RoutingRule>,
        details: Vec<String>,
    },
    Settings {
        settings: pb::WorkspaceSettings,
        details: Vec<String>,
    },
    RemoveTeam {
        team: String,
    },
    RemoveAgent {
        agent: String,
    },
}

impl Change {
    fn describe(&self) -> Vec<String> {
        let with = |head: String, details: &[String]| {
            std::iter::once(head).chain(details.iter().map(|d| format!("      {d}"))).collect::<Vec<_>>()
        };
        match self {
            Change::CreateWorkspace { .. } => vec!["  + workspace (new)".to_owned()],
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

impl Change {
    /// The item of `file` this change comes from, for messages (`teams[1] (sales)`). A
    /// refusal of the routing rules names the rule it is about when `reason` names a team,
    /// agent or rule that one rule mentions.
    pub(crate) fn item(&self, file: &WorkspaceFile, reason: &str) -> String {
        match self {
            Change::CreateWorkspace { .. } => format!("settings (creating workspace {})", file.workspace),
            Change::Settings { .. } => "settings".to_owned(),
            Change::UpsertAgent { agent, .. } => match file.agents.iter().position(|a| a.id == agent.id) {
                Some(i) => format!("agents[{i}] ({})", agent.id),
                None => format!("agent {}", agent.id),
            },
            Change::UpsertTeam { team, .. } => match file.teams.iter().position(|t| t.id == team.id) {
                Some(i) => format!("teams[{i}] ({})", team.id),
                None => format!("team {}", team.id),
            },
            Change::SetRules { .. } => {
                let mentioned = |rule: &spec::RuleEntry| {
                    [rule.id.as_str(), rule.team.as_str(), rule.agent.as_str()]
                        .iter()
                        .any(|name| !name.is_empty() && reason.split([' ', ':']).any(|word| word == *name))
                };
                match file.rules.iter().position(mentioned) {
                    Some(i) => format!("rules[{i}] ({})", file.rules[i].id),
                    None => "rules".to_owned(),
                }
            }
            Change::RemoveTeam { team } => format!("--prune: removing team {team} (not in the file)"),
            Change::RemoveAgent { agent } => format!("--prune: removing agent {agent} (not in the file)"),
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
        let mut settings = file.settings_pb();
        settings.default_team.clear();
        changes.push(Change::CreateWorkspace { settings });
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
    // Nothing is written unless the state machine accepts every change locally.
    super::check::rehearse(file, current.as_ref(), &changes, super::now_ms())?;
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
            Change::CreateWorkspace { settings } | Change::Settings { settings, .. } => {
                client
                    .configure_workspace(pb::ConfigureWorkspaceRequest {
                        workspace: ws,
                        settings: Some(settings.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(text: &str) -> (WorkspaceFile, pb::WorkspaceConfig) {
        let file = WorkspaceFile::parse(text, "w.yaml").expect("parses");
        let config = file.config_pb();
        (file, config)
    }

    fn kinds(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|change| match change {
                Change::CreateWorkspace { .. } => "create".to_owned(),
                Change::UpsertAgent { agent, .. } => format!("agent {}", agent.id),
                Change::UpsertTeam { team, .. } => format!("team {}", team.id),
                Change::Settings { .. } => "settings".to_owned(),
                Change::SetRules { .. } => "rules".to_owned(),
                Change::RemoveTeam { team } => format!("remove team {team}"),
                Change::RemoveAgent { agent } => format!("remove agent {agent}"),
            })
            .collect()
    }

    #[test]
    fn writes_create_what_others_refer_to_first_and_remove_last() {
        let (file, _) = config_of(
            "workspace: w\nsettings: {default_team: t}\nagents: [{id: a}]\n\
             teams: [{id: t, strategy: manual, members: [a]}]\nrules: [{id: r, agent: a}]\n",
        );
        let changes = plan(&file, None, true).expect("plan");
        assert_eq!(kinds(&changes), ["create", "agent a", "team t", "settings", "rules"]);
        // The workspace is created without its default team, which does not exist yet.
        assert!(matches!(&changes[0], Change::CreateWorkspace { settings } if settings.default_team.is_empty()));

        // Replacing team `old` (the default, a rule's target) with `new`, and agent `gone`
        // with `b`: the replacements exist before anything refers to them, removals come last.
        let (_, live) = config_of(
            "workspace: w\nsettings: {default_team: old}\nagents: [{id: gone}, {id: a}]\n\
             teams: [{id: old, strategy: manual, members: [gone, a]}]\nrules: [{id: r, team: old}]\n",
        );
        let (file, _) = config_of(
            "workspace: w\nsettings: {default_team: new}\nagents: [{id: a}, {id: b}]\n\
             teams: [{id: new, strategy: manual, members: [a, b]}]\nrules: [{id: r, team: new}]\n",
        );
        let changes = plan(&file, Some(&live), true).expect("plan");
        assert_eq!(
            kinds(&changes),
            ["agent b", "team new", "settings", "rules", "remove team old", "remove agent gone"]
        );
        super::super::check::rehearse(&file, Some(&live), &changes, 1_795_428_000_000).expect("accepted in this order");
    }
}
