//! Snapshot formats: a snapshot of the previous format still restores (a node upgraded with
//! one on its disk starts), and a workspace large enough to be decoded on two threads restores
//! to exactly the state it was taken of.

use switchboard_core::{
    AgentId, AgentSpec, AgentStatus, Channel, Command, ContactId, ContactSpec, ConversationId, Event, Input, Language,
    OpenConversation, SNAPSHOT_VERSION, State, Strategy, TeamId, TeamSpec, WorkspaceId, WorkspaceSettings,
};

const MONDAY_10_UTC: i64 = 1_795_428_000_000;

/// The state [`history`] builds, as a format-3 snapshot: written by the build of commit 0e6810b
/// (the last to write format 3) from this same history.
const FORMAT_3: &[u8] = include_bytes!("data/state-format-3.snap");

/// `state_digest()` of that state as the 0e6810b build reported it. The digest covers every
/// field of the state, so a restore that lost or changed anything differs from it. (A new
/// `DIGEST_VERSION` changes every digest: then pin the new digest of the applied history.)
const FORMAT_3_DIGEST: &str = "e8bf80c315c1873f4465938fabd4098f";

fn event(command: Command) -> Input {
    Input::Event(Event { workspace: WorkspaceId::new("acme"), event_id: None, command })
}

/// A workspace with three teams of different strategies, a VIP with a dedicated agent, agents
/// online, away and at capacity, and conversations assigned, queued, closed and reopened.
fn history() -> Vec<(i64, Input)> {
    let mut inputs =
        vec![Command::ConfigureWorkspace(WorkspaceSettings { rng_seed: 7, ..WorkspaceSettings::default() })];
    for i in 0..8 {
        let mut spec = AgentSpec::new(AgentId::new(format!("a{i}")), format!("Agent {i}"));
        spec.max_open = 2;
        spec.daily_limit = 50;
        spec.languages = vec![Language::new(if i % 3 == 0 { "es" } else { "en" })];
        inputs.push(Command::UpsertAgent(spec));
    }
    inputs.push(Command::UpsertTeam(TeamSpec::new("t0", Strategy::RoundRobin, &["a0", "a1", "a2", "a3", "a4", "a5"])));
    inputs.push(Command::UpsertTeam(TeamSpec::new("t1", Strategy::LeastOpen, &["a3", "a4", "a5", "a6", "a7"])));
    inputs.push(Command::UpsertTeam(TeamSpec::new("t2", Strategy::Manual, &["a1", "a2"])));
    inputs.push(Command::ConfigureWorkspace(WorkspaceSettings {
        default_team: Some(TeamId::new("t0")),
        rng_seed: 7,
        ..WorkspaceSettings::default()
    }));
    inputs.push(Command::UpsertContact(ContactSpec {
        id: ContactId::new("vip"),
        tier: Some("vip".to_owned()),
        dedicated_agent: Some(AgentId::new("a1")),
    }));
    for i in 0..8 {
        let status = if i == 6 { AgentStatus::Away } else { AgentStatus::Online };
        inputs.push(Command::SetAgentStatus { agent: AgentId::new(format!("a{i}")), status });
    }
    for i in 0..40usize {
        let contact = if i % 11 == 0 { "vip".to_owned() } else { format!("k{}", i % 15) };
        let mut open = OpenConversation::new(format!("c{i}"), contact, Channel::ALL[i % Channel::ALL.len()]);
        open.priority = (i % 3) as u8;
        if i % 4 == 0 {
            open.language = Some(Language::new("es"));
        }
        if i % 5 == 0 {
            open.topic = Some(format!("topic {i}"));
        }
        inputs.push(Command::OpenConversation(open));
    }
    for i in 0..10 {
        inputs.push(Command::CloseConversation { conversation: ConversationId::new(format!("c{i}")) });
    }
    inputs.push(Command::CustomerMessage { conversation: ConversationId::new("c2") });
    let mut entries: Vec<(i64, Input)> =
        inputs.into_iter().enumerate().map(|(i, command)| (MONDAY_10_UTC + i as i64 * 1_000, event(command))).collect();
    entries.push((MONDAY_10_UTC + 200_000, Input::Tick));
    entries
}

fn applied(entries: &[(i64, Input)]) -> State {
    let mut state = State::new();
    for (at_ms, input) in entries {
        state.apply(*at_ms, input);
    }
    state
}

#[test]
fn a_format_3_snapshot_restores_to_the_state_it_was_taken_of() {
    assert_eq!(FORMAT_3.get(4..6), Some(&3u16.to_le_bytes()[..]), "the fixture is a format-3 snapshot");
    let mut restored = State::restore(FORMAT_3).expect("a format-3 snapshot restores");
    restored.check_invariants().expect("invariants hold");
    assert_eq!(restored.state_digest(), FORMAT_3_DIGEST);

    let entries = history();
    let mut original = applied(&entries);
    assert_eq!(restored.state_digest(), original.state_digest());
    let rewritten = restored.snapshot();
    assert_eq!(rewritten.get(4..6), Some(&SNAPSHOT_VERSION.to_le_bytes()[..]));
    assert_eq!(rewritten, original.snapshot(), "rewritten in the current format, the two states encode alike");

    // And it goes on deciding like the original.
    for (i, at_ms) in (0..20).map(|i| (i, MONDAY_10_UTC + 300_000 + i * 1_000)) {
        let command = if i % 2 == 0 {
            Command::OpenConversation(OpenConversation::new(format!("n{i}"), format!("k{i}"), Channel::WhatsApp))
        } else {
            Command::CloseConversation { conversation: ConversationId::new(format!("c{}", 10 + i)) }
        };
        let input = event(command);
        assert_eq!(restored.apply(at_ms, &input), original.apply(at_ms, &input), "entry {i}");
    }
    assert_eq!(restored.state_digest(), original.state_digest());
}

#[test]
fn a_workspace_large_enough_for_two_threads_restores_to_the_same_state() {
    let mut state = State::new();
    let mut at_ms = MONDAY_10_UTC;
    let mut apply = |state: &mut State, command: Command| {
        at_ms += 1;
        let outcome = state.apply(at_ms, &event(command));
        assert_eq!(outcome.result, Ok(()));
    };
    apply(&mut state, Command::ConfigureWorkspace(WorkspaceSettings::default()));
    let members: Vec<String> = (0..100).map(|i| format!("agent-{i:03}")).collect();
    for member in &members {
        apply(&mut state, Command::UpsertAgent(AgentSpec::new(member.as_str(), member.as_str())));
    }
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    apply(&mut state, Command::UpsertTeam(TeamSpec::new("support", Strategy::LeastOpen, &members)));
    apply(
        &mut state,
        Command::ConfigureWorkspace(WorkspaceSettings {
            default_team: Some(TeamId::new("support")),
            ..WorkspaceSettings::default()
        }),
    );
    for member in &members {
        apply(&mut state, Command::SetAgentStatus { agent: AgentId::new(*member), status: AgentStatus::Online });
    }
    // Enough conversations and contacts that their encodings pass a megabyte (about 3 MB of
    // them; the snapshot's other fields are small); most queue.
    for i in 0..30_000usize {
        let open = OpenConversation::new(
            format!("conversation-{i:06}"),
            format!("contact-{i:06}"),
            Channel::ALL[i % Channel::ALL.len()],
        );
        apply(&mut state, Command::OpenConversation(open));
    }
    for i in (0..30_000usize).step_by(7) {
        apply(
            &mut state,
            Command::CloseConversation { conversation: ConversationId::new(format!("conversation-{i:06}")) },
        );
    }

    let bytes = state.snapshot();
    assert!(bytes.len() > 2 << 20, "{} bytes: too small to be decoded on two threads", bytes.len());
    let restored = State::restore(&bytes).expect("restores");
    restored.check_invariants().expect("invariants hold");
    assert_eq!(restored.state_digest(), state.state_digest());
    assert_eq!(restored.snapshot(), bytes);
}
