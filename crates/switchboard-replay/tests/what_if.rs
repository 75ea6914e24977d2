//! Replays checked by hand: one agent against two on the same six events, every figure
//! worked out on paper; and a replay is a pure function of its input.

use switchboard_core::{
    AgentId, AgentSpec, Channel, Command, Event, OpenConversation, Strategy, TeamId, TeamSpec, WorkspaceId,
    WorkspaceSettings,
};
use switchboard_replay::{Config, Recorded, Report, TeamReport, replay};

const T0: i64 = 1_795_428_000_000;

fn config(label: &str, agents: &[&str]) -> Config {
    let mut setup = vec![Command::ConfigureWorkspace(WorkspaceSettings::default())];
    for agent in agents {
        setup.push(Command::UpsertAgent(AgentSpec { max_open: 1, ..AgentSpec::new(*agent, *agent) }));
    }
    setup.push(Command::UpsertTeam(TeamSpec::new("support", Strategy::RoundRobin, agents)));
    setup.push(Command::ConfigureWorkspace(WorkspaceSettings {
        default_team: Some(TeamId::new("support")),
        ..WorkspaceSettings::default()
    }));
    Config { label: label.into(), workspace: WorkspaceId::new("w"), setup }
}

fn at(seconds: i64, command: Command) -> Recorded {
    let event = Event { workspace: WorkspaceId::new("w"), event_id: None, command };
    Recorded { at_ms: T0 + seconds * 1_000, sequence: 0, event }
}

fn open(seconds: i64, conversation: &str) -> Recorded {
    at(
        seconds,
        Command::OpenConversation(OpenConversation::new(conversation, format!("+{conversation}"), Channel::WhatsApp)),
    )
}

fn close(seconds: i64, conversation: &str) -> Recorded {
    at(seconds, Command::CloseConversation { conversation: conversation.into() })
}

/// c1 at 0 s, c2 at 10 s, c3 at 20 s; c1 closes at 30 s, c3 at 40 s, c2 at 50 s.
fn day() -> Vec<Recorded> {
    vec![open(0, "c1"), open(10, "c2"), open(20, "c3"), close(30, "c1"), close(40, "c3"), close(50, "c2")]
}

fn team<'a>(report: &'a Report, name: &str) -> &'a TeamReport {
    report.teams.iter().find(|t| t.team == name).expect("team")
}

#[test]
fn one_agent_against_two_on_the_same_traffic() {
    let one = replay(&config("one.yaml", &["a1"]), &day()).expect("replay");
    // a1 takes c1; c2 and c3 queue; c1's close at 30 s gives a1 c2 (waited 20 s); c3 closes
    // at 40 s still waiting: abandoned.
    let support = team(&one, "support");
    assert_eq!((support.conversations, support.assigned, support.queued, support.abandoned), (3, 2, 2, 1));
    assert_eq!(
        (support.wait.count, support.wait.p50_ms, support.wait.p90_ms, support.wait.max_ms),
        (2, 0, 20_000, 20_000)
    );
    assert_eq!(support.max_queue_depth, 2);
    assert_eq!((support.load_max, support.load_min, support.load_cv), (2, 2, 0.0));
    let order: Vec<(&str, &str)> =
        one.assignments.iter().map(|a| (a.conversation.as_str(), a.agent.as_str())).collect();
    assert_eq!(order, [("c1", "a1"), ("c2", "a1")]);
    assert_eq!(one.assignments[1].at_ms, T0 + 30_000);
    assert_eq!(one.agents.len(), 1);
    assert_eq!((one.agents[0].received, one.agents[0].max_concurrent), (2, 1));
    assert_eq!(one.wait_histogram[0], 1, "c1 waited 0");
    assert_eq!(one.wait_histogram[3], 1, "c2 waited 20 s: in the ≤30 s bucket");

    let two = replay(&config("two.yaml", &["a1", "a2"]), &day()).expect("replay");
    // c1 and c2 go straight to an agent each; c3 queues until c1's close at 30 s (10 s).
    let support = team(&two, "support");
    assert_eq!((support.conversations, support.assigned, support.queued, support.abandoned), (3, 3, 1, 0));
    assert_eq!((support.wait.count, support.wait.p50_ms, support.wait.max_ms), (3, 0, 10_000));
    assert_eq!(support.max_queue_depth, 1);
    let first = &two.assignments[0].agent;
    let second = &two.assignments[1].agent;
    assert_ne!(first, second, "round robin spreads the first two");
    assert_eq!(&two.assignments[2].agent, first, "c3 goes to the agent c1's close freed");
    // Loads 2 and 1: coefficient of variation 0.5 / 1.5.
    assert_eq!((support.load_max, support.load_min), (2, 1));
    assert!((support.load_cv - 1.0 / 3.0).abs() < 1e-9, "{}", support.load_cv);

    let comparison = switchboard_replay::text::compare(&one, &two);
    assert!(comparison.contains("abandoned"), "{comparison}");
    assert!(comparison.contains("-1.00 (-100%)"), "one fewer abandoned: {comparison}");
}

#[test]
fn timers_fire_on_simulated_time_between_events() {
    // An agent who never replies loses the conversation after the team's no-reply timeout;
    // the replay ticks through the gap between the two events, as the leader would.
    let mut config = config("noreply.yaml", &["a1", "a2"]);
    let Some(Command::UpsertTeam(team)) = config.setup.get_mut(3) else { panic!("the team is the fourth command") };
    team.options.no_reply_timeout_s = 60;
    let events = vec![open(0, "c1"), open(300, "c2")];
    let report = replay(&config, &events).expect("replay");
    // Each agent in turn holds c1 for 60 s without replying: the timer fires on every simulated
    // minute of the gap, then c2 arrives at 300 s.
    let c1: Vec<(i64, &str)> = report
        .assignments
        .iter()
        .filter(|a| a.conversation == "c1")
        .map(|a| ((a.at_ms - T0) / 1_000, a.agent.as_str()))
        .collect();
    assert_eq!(c1, [(0, "a1"), (60, "a2"), (120, "a1"), (180, "a2"), (240, "a1"), (300, "a2")]);
    let last = report.assignments.last().expect("c2 assigned");
    assert_eq!((last.conversation.as_str(), last.at_ms), ("c2", T0 + 300_000));
}

#[test]
fn the_same_input_gives_the_same_report_and_other_workspaces_are_skipped() {
    let mut events = day();
    let mut foreign = open(5, "x1");
    foreign.event.workspace = WorkspaceId::new("other");
    events.insert(1, foreign);
    let config = config("two.yaml", &["a1", "a2"]);
    let first = replay(&config, &events).expect("replay");
    assert_eq!(first, replay(&config, &events).expect("replay"));
    assert_eq!(first.events, 6);
    assert!(!first.assignments.iter().any(|a| a.conversation == "x1"));
}

#[test]
fn events_the_core_refuses_are_counted_by_reason_and_a_bad_configuration_is_named() {
    let mut events = day();
    events.push(close(60, "never-opened"));
    let report = replay(&config("one.yaml", &["a1"]), &events).expect("replay");
    assert_eq!(report.refused.values().sum::<u64>(), 1, "{:?}", report.refused);

    let mut bad = config("bad.yaml", &["a1"]);
    bad.setup.push(Command::UpsertTeam(TeamSpec::new("sales", Strategy::RoundRobin, &["ghost"])));
    let error = replay(&bad, &day()).expect_err("refused").to_string();
    assert!(error.starts_with("configuration bad.yaml: command 4 (UpsertTeam) refused"), "{error}");
    let _ = AgentId::new("ghost");
}
