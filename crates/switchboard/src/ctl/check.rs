//! The strongest check `ctl apply` can make without writing anything: a rehearsal. The writes
//! it is about to send are converted as the server converts them and applied, in the same
//! order, to a local [`switchboard_core::State`] (the real state machine) that first replays
//! the workspace's live configuration. The first refusal is reported with the file item it
//! comes from, and nothing is written.
//!
//! What the rehearsal cannot see is state the configuration export does not carry: a team that
//! still has open conversations cannot be removed, which only the cluster knows. `apply`
//! therefore sends removals last, so such a refusal leaves every team of the file in place.
//!
//! The requests are converted by the server's own code (`switchboard_server::requests`), so
//! the rehearsal sees exactly the commands the cluster would apply.

use super::apply::Change;
use super::spec::WorkspaceFile;
use switchboard_client::pb;
use switchboard_core::{
    AgentSpec, ApplyError, Command, Event, Input, RoutingRule, State, TeamSpec, WorkspaceId, WorkspaceSettings,
};
use switchboard_server::convert::{self, ConvertError, model};

/// Rehearses `changes` (planned from `file` against `live`, the workspace's configuration on
/// the cluster, `None` if it does not exist) at time `at_ms`; the error names the file item the
/// state machine or the server would refuse.
pub(crate) fn rehearse(
    file: &WorkspaceFile,
    live: Option<&pb::WorkspaceConfig>,
    changes: &[Change],
    at_ms: i64,
) -> anyhow::Result<()> {
    let workspace: WorkspaceId =
        required_id(file.workspace.clone(), "workspace").map_err(|reason| anyhow::anyhow!("{reason}\n{REHEARSED}"))?;
    // Workspace ids name NATS subjects (`switchboard.events.<workspace>`); the server refuses
    // to create one that is not a single subject token.
    if live.is_none() && !switchboard_core::is_subject_token(&file.workspace) {
        anyhow::bail!(
            "workspace: {:?} must not contain '.', '*', '>' or whitespace (it is a NATS subject token)\n{REHEARSED}",
            file.workspace
        );
    }
    let mut state = State::new();
    let mut run = |command: Command| -> Result<(), ApplyError> {
        let event = Event { workspace: workspace.clone(), event_id: None, command };
        state.apply(at_ms, &Input::Event(event)).result
    };
    if let Some(live) = live {
        replay_live(&mut run, live).map_err(|reason| {
            anyhow::anyhow!(
                "the live configuration of workspace {workspace} cannot be replayed locally ({reason}); is this \
                 switchboard as new as the cluster?"
            )
        })?;
    }
    for change in changes {
        let refusal = match command_of(change) {
            Ok(command) => run(command).map_err(|error| error.to_string()),
            Err(reason) => Err(reason),
        };
        if let Err(reason) = refusal {
            anyhow::bail!("{}: {reason}\n{REHEARSED}", change.item(file, &reason));
        }
    }
    // With --prune, removing an agent takes it out of its teams: a team of the file that names
    // an agent the file does not define would silently lose that member.
    for (i, team) in file.teams.iter().enumerate() {
        let Some(spec) = state.team_spec(&workspace, &switchboard_core::TeamId::new(&team.id)) else { continue };
        if let Some(missing) = team.members.iter().find(|member| !spec.members.iter().any(|m| m.as_str() == *member)) {
            anyhow::bail!(
                "teams[{i}] ({}): member {missing} is not an agent of the file, and --prune removes it\n{REHEARSED}",
                team.id
            );
        }
    }
    Ok(())
}

/// How a refusal was found, for the end of its message.
const REHEARSED: &str = "(found by rehearsing the changes locally against the live configuration; nothing was applied)";

/// Rebuilds the live configuration in the order `apply` would create it.
fn replay_live(
    run: &mut impl FnMut(Command) -> Result<(), ApplyError>,
    live: &pb::WorkspaceConfig,
) -> Result<(), String> {
    let settings = settings_from_pb(live.settings.clone().unwrap_or_default())?;
    let error = |e: ApplyError| e.to_string();
    run(Command::ConfigureWorkspace(WorkspaceSettings { default_team: None, ..settings.clone() })).map_err(error)?;
    for agent in &live.agents {
        run(Command::UpsertAgent(agent_from_pb(agent.clone())?)).map_err(error)?;
    }
    for team in &live.teams {
        run(Command::UpsertTeam(team_from_pb(team.clone())?)).map_err(error)?;
    }
    run(Command::ConfigureWorkspace(settings)).map_err(error)?;
    run(Command::SetRoutingRules(rules_from_pb(&live.rules)?)).map_err(error)?;
    Ok(())
}

/// The commands the server makes of the requests `apply` sends for `changes`, in order
/// (`switchboard replay` builds its configuration with them).
pub(crate) fn commands_of(changes: &[Change]) -> Result<Vec<Command>, String> {
    changes.iter().map(command_of).collect()
}

/// The command the server makes of the request `apply` sends for `change`.
fn command_of(change: &Change) -> Result<Command, String> {
    Ok(match change {
        Change::CreateWorkspace { settings } | Change::Settings { settings, .. } => {
            Command::ConfigureWorkspace(settings_from_pb(settings.clone())?)
        }
        Change::UpsertAgent { agent, .. } => Command::UpsertAgent(agent_from_pb(agent.clone())?),
        Change::UpsertTeam { team, .. } => Command::UpsertTeam(team_from_pb(team.clone())?),
        Change::SetRules { rules, .. } => Command::SetRoutingRules(rules_from_pb(rules)?),
        Change::RemoveTeam { team } => Command::RemoveTeam { team: required_id(team.clone(), "team")? },
        Change::RemoveAgent { agent } => Command::RemoveAgent { agent: required_id(agent.clone(), "agent")? },
    })
}

// ----- protobuf -> core: the server's own conversions ---------------------------------------

/// The server's error message for a conversion it would refuse.
fn message(error: ConvertError) -> String {
    error.to_string()
}

fn required_id<T: From<String>>(value: String, field: &str) -> Result<T, String> {
    convert::required_id(value, field).map_err(message)
}

fn agent_from_pb(agent: pb::Agent) -> Result<AgentSpec, String> {
    model::agent_from_pb(agent).map_err(message)
}

fn team_from_pb(team: pb::Team) -> Result<TeamSpec, String> {
    model::team_from_pb(team).map_err(message)
}

fn settings_from_pb(settings: pb::WorkspaceSettings) -> Result<WorkspaceSettings, String> {
    model::settings_from_pb(settings).map_err(message)
}

fn rules_from_pb(rules: &[pb::RoutingRule]) -> Result<Vec<RoutingRule>, String> {
    rules.iter().enumerate().map(|(i, rule)| model::rule_from_pb(rule.clone(), i).map_err(message)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::apply::plan;

    const BASE: &str = include_str!("../../tests/fixtures/acme.yaml");

    const NOW_MS: i64 = 1_795_428_000_000;

    fn file(text: &str) -> WorkspaceFile {
        let file = WorkspaceFile::parse(text, "acme.yaml").expect("parses");
        file.validate().expect("well formed");
        file
    }

    /// The configuration a cluster that applied `text` exports.
    fn live(text: &str) -> pb::WorkspaceConfig {
        file(text).config_pb()
    }

    fn rehearsal(text: &str, live: Option<&pb::WorkspaceConfig>, prune: bool) -> anyhow::Result<()> {
        let file = file(text);
        let changes = plan(&file, live, prune).expect("plan");
        rehearse(&file, live, &changes, NOW_MS)
    }

    #[track_caller]
    fn refused(text: &str, live: Option<&pb::WorkspaceConfig>, prune: bool, expected: &str) {
        let message = format!("{:#}", rehearsal(text, live, prune).expect_err("refused"));
        assert!(message.starts_with(expected), "expected {expected:?}, got {message:?}");
        assert!(message.ends_with("nothing was applied)"), "{message}");
    }

    #[test]
    fn correct_files_pass_new_and_against_their_live_configuration() {
        rehearsal(BASE, None, false).expect("new workspace");
        rehearsal(BASE, Some(&live(BASE)), true).expect("unchanged");
        let example = include_str!("../../../../deploy/workspace.example.yaml");
        rehearsal(example, None, false).expect("the shipped example");
        // Without --prune a team may list an agent the cluster has and the file does not.
        let with_extra = BASE.replace(
            "  - {id: ana, name: Ana, languages: [es]}\n",
            "  - {id: ana, name: Ana, languages: [es]}\n  - {id: li}\n",
        );
        let file_without_li = BASE.replace("members: [mary, john]", "members: [mary, john, li]");
        rehearsal(&file_without_li, Some(&live(&with_extra)), false).expect("li exists on the cluster");
    }

    #[test]
    fn every_refusal_of_the_state_machine_is_found_and_names_the_item() {
        let cases = [
            ("members: [mary, john]", "members: [mary, zoe]", "teams[0] (support): unknown agent zoe"),
            (
                "members: [mary, john]",
                "members: [mary, mary]",
                "teams[0] (support): invalid team.members: agent mary is listed twice",
            ),
            (
                "America/Sao_Paulo",
                "Mars/Olympus",
                "teams[1] (soporte): invalid timezone: unknown IANA timezone \"Mars/Olympus\"",
            ),
            ("2026-12-25", "2026-13-45", "teams[2] (sales): invalid business_hours.holidays: \"2026-13-45\""),
            (
                "max_open: 2,",
                "max_open: 10001,",
                "agents[0] (mary): invalid agent.max_open: 10001 conversations is outside 0..=10000 conversations",
            ),
            ("refunds: 3", "refunds: 9", "agents[0] (mary): invalid agent.skills: level 9 is not between 1 and 5"),
            ("refunds: 3", "refunds: 300", "agents[0] (mary): agent.skills[refunds]: 300 is out of range"),
            ("{id: john, name: John}", "{id: \"\", name: John}", "agents[1] (): agent.id: is required"),
            ("team: soporte}", "team: nowhere}", "rules[0] (spanish): unknown team nowhere"),
            ("default_team: support", "default_team: nowhere", "settings: unknown team nowhere"),
            ("workspace: acme", "workspace: acme.eu", "workspace: \"acme.eu\" must not contain '.'"),
        ];
        for (from, to, expected) in cases {
            assert!(BASE.contains(from), "{from}");
            refused(&BASE.replace(from, to), None, false, expected);
        }
    }

    #[test]
    fn an_agent_rule_needs_a_team_or_a_default_team() {
        let text = BASE.replace("default_team: support", "").replace("members: [mary, john]", "members: [john]");
        refused(&text, None, false, "rules[2] (vip): rule vip targets agent mary, who is in no team");
    }

    #[test]
    fn prune_refusals_are_found_before_anything_is_removed() {
        // The live workspace's default team is `old`; a file without it, keeping it as default.
        let old = BASE
            .replace("teams:\n", "teams:\n  - {id: old, strategy: manual, members: [john]}\n")
            .replace("default_team: support", "default_team: old");
        let keeps_default = BASE.replace("default_team: support", "default_team: old");
        refused(
            &keeps_default,
            Some(&live(&old)),
            true,
            "--prune: removing team old (not in the file): team old is the workspace's default team",
        );
        // A team of the file naming an agent that --prune removes.
        let with_li = BASE.replace("  - {id: john, name: John}\n", "  - {id: john, name: John}\n  - {id: li}\n");
        let without_li = BASE.replace("members: [mary, john]", "members: [mary, john, li]");
        refused(&without_li, Some(&live(&with_li)), true, "teams[0] (support): member li is not an agent of the file");
        // A rule of the live workspace targets an agent the file prunes, and the file keeps the rule.
        let rule_to_li =
            with_li.replace("agent: mary}", "agent: li}").replace("members: [mary, john]", "members: [mary, john, li]");
        let prunes_li_keeps_rule = BASE.replace("agent: mary}", "agent: li}");
        refused(&prunes_li_keeps_rule, Some(&live(&rule_to_li)), true, "--prune: removing agent li (not in the file)");
    }

    #[test]
    fn a_live_configuration_this_build_cannot_replay_is_reported_as_such() {
        let mut live = live(BASE);
        live.teams[0].members.push("ghost".into());
        let message = format!("{:#}", rehearsal(BASE, Some(&live), false).expect_err("refused"));
        assert!(message.contains("cannot be replayed locally (unknown agent ghost)"), "{message}");
    }
}
