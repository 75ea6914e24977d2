//! The whole command space, fuzzed: random interleavings of every command the state machine
//! knows — admin changes (agents, teams, rules, settings, hours and time zones, contacts),
//! presence, opens, messages, replies, closes, reopens, claims, assigns, transfers, ticks and
//! clock jumps — with valid and invalid values, repeated event ids and unknown ids. After
//! every step:
//! - no input is refused as an internal error (that would be a bug the core met);
//! - the structural invariants and invariant 5 hold (`State::check_invariants`);
//! - every automatic assignment, whatever its reason (strategy, returning, dedicated, reopened,
//!   rule agent, a waiting line), goes to an agent eligible for it at that point: a status the
//!   team allows (invariant 2), within `max_open` (invariant 1) and a hard daily cap, not
//!   excluded, with the skills and language the conversation's rule requires, and a member of
//!   its team unless a rule or the contact names the agent. Claims, supervisor assignments and
//!   transfers are excepted (they have rules of their own);
//! - a refused command changed nothing: the digest before and after are equal, and it
//!   produced no effect;
//! - a replica rebuilt from a snapshot at a random point agrees byte for byte at the end.
//!
//! `make fuzz` runs the same generators for a long seeded run (see [`fuzz`]); the default run
//! is a bounded slice.

mod common;

use common::MONDAY_10_UTC;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::collections::BTreeMap;
use switchboard_core::{
    AgentId, AgentSpec, AgentStatus, AssignReason, BusinessHours, Channel, Command, ContactId, ContactSpec,
    ConversationId, CustomerKind, Effect, ErrorKind, Event, EventId, Input, Language, OpenConversation,
    OpeningInterval, RoutingRule, RuleConditions, RuleId, RuleTarget, Skill, State, StatusSet, Strategy as Assignment,
    TeamId, TeamSpec, TransferTarget, WorkspaceId, WorkspaceSettings,
};

const WS: &str = "fuzz";
const AGENTS: usize = 6;
const TEAMS: usize = 3;
const CONVERSATIONS: usize = 6;
const CONTACTS: usize = 4;
/// Commands per generated history in the default run.
const COMMANDS_PER_CASE: usize = 120;

/// Agent `a<i>`; generators draw one id past the configured ones now and then (unknown).
fn agent_id(i: usize) -> AgentId {
    AgentId::new(format!("a{i}"))
}

fn team_id(i: usize) -> TeamId {
    TeamId::new(format!("t{i}"))
}

fn any_agent() -> impl Strategy<Value = AgentId> {
    (0..AGENTS + 1).prop_map(agent_id)
}

fn any_team() -> impl Strategy<Value = TeamId> {
    (0..TEAMS + 1).prop_map(team_id)
}

fn any_conversation() -> impl Strategy<Value = ConversationId> {
    (0..CONVERSATIONS).prop_map(|i| ConversationId::new(format!("c{i}")))
}

fn any_contact() -> impl Strategy<Value = ContactId> {
    (0..CONTACTS).prop_map(|i| ContactId::new(format!("k{i}")))
}

fn any_channel() -> impl Strategy<Value = Channel> {
    prop::sample::select(&[Channel::WhatsApp, Channel::Email, Channel::WebChat, Channel::Sms][..])
}

fn any_language() -> impl Strategy<Value = Language> {
    prop::sample::select(&["en", "es", ""][..]).prop_map(Language::new)
}

fn any_status() -> impl Strategy<Value = AgentStatus> {
    prop::sample::select(&AgentStatus::ALL[..])
}

fn any_strategy() -> impl Strategy<Value = Assignment> {
    prop::sample::select(
        &[Assignment::RoundRobin, Assignment::LeastOpen, Assignment::Weighted, Assignment::Ordered, Assignment::Manual]
            [..],
    )
}

fn skills() -> impl Strategy<Value = BTreeMap<Skill, u8>> {
    // Levels 0 and 6 are invalid on purpose.
    prop::collection::btree_map(prop::sample::select(&["s1", "s2"][..]).prop_map(Skill::new), 0u8..7, 0..3)
}

fn agent_spec() -> impl Strategy<Value = AgentSpec> {
    (
        (0..AGENTS + 1),
        prop::sample::select(&["Amy", "", "  ", "Bo"][..]),
        skills(),
        prop::collection::vec(any_language(), 0..3),
        (
            0u32..4,
            0u32..4,
            prop::option::of((any_channel(), 0u32..3)),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.03),
        ),
    )
        .prop_map(|(id, name, skills, languages, (max_open, daily_limit, per_channel, excluded, huge))| {
            let mut spec = AgentSpec::new(agent_id(id), name);
            spec.skills = skills;
            spec.languages = languages;
            spec.max_open = if huge { 20_000 } else { max_open };
            spec.daily_limit = daily_limit;
            spec.max_open_per_channel = per_channel.into_iter().collect();
            spec.auto_assign_excluded = excluded;
            spec
        })
}

fn business_hours() -> impl Strategy<Value = Option<BusinessHours>> {
    prop::option::weighted(
        0.3,
        (
            prop::collection::vec((0u8..8, 0u16..1440, 1u16..1442), 0..4),
            prop::collection::vec(prop::sample::select(&["2026-11-24", "2026-11-25", "24/11/2026"][..]), 0..2),
        )
            .prop_map(|(weekly, holidays)| BusinessHours {
                weekly: weekly
                    .into_iter()
                    .map(|(weekday, open, length)| OpeningInterval {
                        weekday,
                        open_minute: open,
                        close_minute: open.saturating_add(length),
                    })
                    .collect(),
                holidays: holidays.into_iter().map(str::to_owned).collect(),
            }),
    )
}

fn team_spec() -> impl Strategy<Value = TeamSpec> {
    (
        (0..TEAMS + 1),
        any_strategy(),
        prop::collection::vec(any_agent(), 0..5),
        prop::collection::vec(any_status(), 1..3),
        any::<[bool; 5]>(),
        (prop::sample::select(&[0u32, 0, 5, 30][..]), prop::sample::select(&[0u32, 0, 10, 600][..])),
        prop::sample::select(&["UTC", "America/Sao_Paulo", "Asia/Tokyo", "Mars/Olympus"][..]),
        business_hours(),
    )
        .prop_map(|(id, strategy, members, statuses, flags, (delay, no_reply), timezone, hours)| {
            let mut spec = TeamSpec::new(team_id(id), strategy, &[]);
            spec.members = members;
            spec.options.allowed_statuses = StatusSet::of(&statuses);
            spec.options.daily_limit_hard_cap = flags[0];
            spec.options.keep_returning_customers = flags[1];
            spec.options.reassign_reopened_if_unavailable = flags[2];
            spec.options.requeue_on_offline = flags[3];
            spec.options.assign_delay_s = delay;
            spec.options.no_reply_timeout_s = no_reply;
            spec.timezone = timezone.to_owned();
            spec.business_hours = hours;
            if flags[4] {
                spec.templates.welcome = Some("Welcome!".into());
                spec.templates.overcapacity = Some("Please wait".into());
            }
            spec
        })
}

fn rule() -> impl Strategy<Value = RoutingRule> {
    (
        prop::sample::select(&["r1", "r2", "r3"][..]),
        prop::collection::vec(any_channel(), 0..2),
        prop::collection::vec(any_language(), 0..2),
        prop::collection::vec(prop::sample::select(&["billing", "sales"][..]).prop_map(str::to_owned), 0..2),
        prop::collection::vec(prop::sample::select(&["vip", "gold"][..]).prop_map(str::to_owned), 0..2),
        prop::collection::vec(prop::sample::select(&["refund", "urgent"][..]).prop_map(str::to_owned), 0..2),
        prop::sample::select(&[CustomerKind::Any, CustomerKind::New, CustomerKind::Returning][..]),
        prop_oneof![
            (any_team(), skills(), prop::option::of(any_language())).prop_map(|(team, required_skills, language)| {
                RuleTarget::Team { team, required_skills, required_language: language }
            }),
            any_agent().prop_map(|agent| RuleTarget::Agent { agent }),
        ],
    )
        .prop_map(|(id, channels, languages, topics, tiers, keywords, customer, target)| RoutingRule {
            id: RuleId::new(id),
            conditions: RuleConditions {
                channels,
                languages,
                topics: topics.clone(),
                tiers,
                tags: topics,
                customer,
                keywords,
            },
            target,
        })
}

fn open_conversation() -> impl Strategy<Value = OpenConversation> {
    (
        any_conversation(),
        any_contact(),
        any_channel(),
        prop::option::of(any_language()),
        prop::option::of(prop::sample::select(&["billing", "sales", ""][..]).prop_map(str::to_owned)),
        prop::sample::select(&["", "I want a REFUND now", "urgent: help", "olá"][..]),
        0u8..3,
        prop::bool::weighted(0.03),
    )
        .prop_map(|(conversation, contact, channel, language, topic, message, priority, oversize)| {
            let mut open = OpenConversation::new(conversation, contact, channel);
            open.language = language;
            open.topic = topic.clone();
            open.tags = topic.into_iter().collect();
            open.first_message = message.to_owned();
            open.priority = priority;
            if oversize {
                open.tags = vec!["t".into(); switchboard_core::limits::TAGS_PER_CONVERSATION_MAX + 1];
            }
            open
        })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => (prop::option::of(any_team()), any::<bool>(), prop::sample::select(&[0u32, 60, 86_400, 86_400][..]))
            .prop_map(|(default_team, vip_waits, retention)| Command::ConfigureWorkspace(WorkspaceSettings {
                default_team,
                vip_waits_for_dedicated_agent: vip_waits,
                closed_retention_s: retention,
                ..WorkspaceSettings::default()
            })),
        3 => agent_spec().prop_map(Command::UpsertAgent),
        1 => any_agent().prop_map(|agent| Command::RemoveAgent { agent }),
        3 => team_spec().prop_map(Command::UpsertTeam),
        3 => any_team().prop_map(|team| Command::RemoveTeam { team }),
        2 => prop::collection::vec(rule(), 0..3).prop_map(Command::SetRoutingRules),
        1 => (any_contact(), prop::option::of(prop::sample::select(&["vip", "gold"][..])), prop::option::of(any_agent()))
            .prop_map(|(id, tier, dedicated_agent)| Command::UpsertContact(ContactSpec {
                id,
                tier: tier.map(str::to_owned),
                dedicated_agent,
            })),
        5 => (any_agent(), any_status()).prop_map(|(agent, status)| Command::SetAgentStatus { agent, status }),
        8 => open_conversation().prop_map(Command::OpenConversation),
        3 => any_conversation().prop_map(|conversation| Command::CustomerMessage { conversation }),
        2 => (any_conversation(), any_agent()).prop_map(|(conversation, agent)| Command::AgentReplied { conversation, agent }),
        5 => any_conversation().prop_map(|conversation| Command::CloseConversation { conversation }),
        5 => (any_conversation(), any_agent()).prop_map(|(conversation, agent)| Command::Claim { conversation, agent }),
        3 => (any_conversation(), any_agent()).prop_map(|(conversation, agent)| Command::Assign { conversation, agent }),
        2 => (any_conversation(), prop_oneof![any_agent().prop_map(TransferTarget::Agent), any_team().prop_map(TransferTarget::Team)])
            .prop_map(|(conversation, target)| Command::Transfer { conversation, target }),
    ]
}

/// One step of a history: time moves (possibly a jump, possibly backwards), then a command
/// (with an event id from a small pool, so repeats happen) or nothing.
#[derive(Clone, Debug)]
struct Step {
    advance_ms: i64,
    event_id: Option<u8>,
    command: Option<Command>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            6 => Just(0i64),
            6 => 1i64..20_000,
            2 => 20_000i64..3_600_000,
            1 => Just(2 * 86_400_000i64),
            1 => Just(-60_000i64),
        ],
        prop::option::weighted(0.5, 0u8..40),
        prop::option::weighted(0.95, command()),
    )
        .prop_map(|(advance_ms, event_id, command)| Step { advance_ms, event_id, command })
}

fn history(commands: usize) -> impl Strategy<Value = (u64, Vec<Step>, f64)> {
    (any::<u64>(), prop::collection::vec(step(), 1..commands), 0.0f64..1.0)
}

/// A working contact center to start from (the random steps then change it): six agents
/// online, a round-robin default team of all, a least-open team and a manual one.
fn setup(seed: u64) -> Vec<Command> {
    let mut commands =
        vec![Command::ConfigureWorkspace(WorkspaceSettings { rng_seed: seed, ..WorkspaceSettings::default() })];
    for i in 0..AGENTS {
        let mut spec = AgentSpec::new(agent_id(i), format!("Agent {i}"));
        spec.max_open = 2;
        spec.daily_limit = 10;
        if i % 2 == 0 {
            spec.skills.insert(Skill::new("s1"), 3);
        }
        spec.languages = vec![Language::new(if i % 3 == 0 { "es" } else { "en" })];
        commands.push(Command::UpsertAgent(spec));
    }
    let all: Vec<String> = (0..AGENTS).map(|i| format!("a{i}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    commands.push(Command::UpsertTeam(TeamSpec::new("t0", Assignment::RoundRobin, &all)));
    commands.push(Command::UpsertTeam(TeamSpec::new("t1", Assignment::LeastOpen, &["a3", "a4", "a5"])));
    commands.push(Command::UpsertTeam(TeamSpec::new("t2", Assignment::Manual, &["a1", "a2"])));
    commands.push(Command::ConfigureWorkspace(WorkspaceSettings {
        default_team: Some(team_id(0)),
        rng_seed: seed,
        ..WorkspaceSettings::default()
    }));
    for i in 0..AGENTS {
        commands.push(Command::SetAgentStatus { agent: agent_id(i), status: AgentStatus::Online });
    }
    commands
}

/// How many commands of each kind were applied and refused, to keep the generator honest.
#[derive(Default)]
struct Coverage {
    applied: BTreeMap<&'static str, usize>,
    refused: BTreeMap<&'static str, usize>,
    assignments: usize,
    /// Customer messages to a closed conversation whose team no longer exists.
    reopened_orphans: usize,
}

fn kind(command: &Command) -> &'static str {
    match command {
        Command::ConfigureWorkspace(_) => "configure_workspace",
        Command::UpsertAgent(_) => "upsert_agent",
        Command::RemoveAgent { .. } => "remove_agent",
        Command::UpsertTeam(_) => "upsert_team",
        Command::RemoveTeam { .. } => "remove_team",
        Command::SetRoutingRules(_) => "set_routing_rules",
        Command::UpsertContact(_) => "upsert_contact",
        Command::SetAgentStatus { .. } => "set_agent_status",
        Command::OpenConversation(_) => "open_conversation",
        Command::CustomerMessage { .. } => "customer_message",
        Command::AgentReplied { .. } => "agent_replied",
        Command::CloseConversation { .. } => "close_conversation",
        Command::Claim { .. } => "claim",
        Command::Assign { .. } => "assign",
        Command::Transfer { .. } => "transfer",
    }
}

/// Replays a history and checks every rule of the module doc. Returns the number of commands.
fn check_history(seed: u64, steps: &[Step], cut: f64, coverage: &mut Coverage) -> Result<usize, TestCaseError> {
    let workspace = WorkspaceId::new(WS);
    let mut state = State::new();
    let mut now = MONDAY_10_UTC;
    let mut statuses: BTreeMap<AgentId, AgentStatus> = BTreeMap::new();
    for command in setup(seed) {
        let input = Input::Event(Event { workspace: workspace.clone(), event_id: None, command });
        let outcome = state.apply(now, &input);
        prop_assert_eq!(outcome.result, Ok(()));
        track(&state, &workspace, &outcome.effects, &mut statuses)?;
    }
    let cut = ((steps.len() as f64) * cut) as usize;
    let mut replica: Option<State> = None;
    let mut log: Vec<(i64, Input)> = Vec::new();
    let mut commands = 0;
    for (index, step) in steps.iter().enumerate() {
        if index == cut {
            replica = Some(State::restore(&state.snapshot()).map_err(|e| TestCaseError::fail(e.to_string()))?);
        }
        now += step.advance_ms;
        // Time first (timers fire), so that the command itself starts from a settled state.
        let tick = state.apply(now, &Input::Tick);
        prop_assert_eq!(tick.result, Ok(()));
        track(&state, &workspace, &tick.effects, &mut statuses)?;
        log.push((now, Input::Tick));
        // A jump past `CLOCK_STEP_MS_MAX` (or backwards) is clamped: go on from the state's clock.
        now = state.now_ms();
        let Some(command) = &step.command else { continue };
        commands += 1;
        let input = Input::Event(Event {
            workspace: workspace.clone(),
            event_id: step.event_id.map(|id| EventId::new(format!("e{id}"))),
            command: command.clone(),
        });
        if let Command::CustomerMessage { conversation }
        | Command::OpenConversation(OpenConversation { conversation, .. }) = command
            && let Some(view) = state.conversation(&workspace, conversation)
            && view.state == switchboard_core::ConversationState::Closed
            && state.team_spec(&workspace, &view.team).is_none()
        {
            coverage.reopened_orphans += 1;
        }
        if commands % 3 == 0 {
            // As a large state does every few thousand records: records hashed now and changed
            // later must be hashed again, or the digest drifts (checked below).
            state.settle_digest();
        }
        let before = state.state_digest();
        let outcome = state.apply(now, &input);
        log.push((now, input.clone()));
        coverage.assignments += outcome.effects.iter().filter(|e| matches!(e, Effect::Assigned { .. })).count();
        let tally = if outcome.result.is_ok() { &mut coverage.applied } else { &mut coverage.refused };
        *tally.entry(kind(command)).or_insert(0) += 1;
        match &outcome.result {
            Ok(()) => {
                track(&state, &workspace, &outcome.effects, &mut statuses)?;
                // A removed agent's status goes with them: one added again starts offline.
                if let Command::RemoveAgent { agent } = command {
                    statuses.remove(agent);
                }
            }
            Err(error) => {
                prop_assert!(error.kind() != ErrorKind::Internal, "internal error on {:?}: {}", command, error);
                prop_assert_eq!(&outcome.effects, &Vec::new(), "refused {:?} ({}) produced effects", command, error);
                prop_assert_eq!(state.state_digest(), before, "refused {:?} ({}) changed the state", command, error);
            }
        }
        if let Err(problem) = state.check_invariants() {
            prop_assert!(false, "after {:?}: {}", command, problem);
        }
    }
    // The digest kept up to date through every command is the one of the same state rebuilt
    // from scratch (a restore hashes every record afresh).
    let restored = State::restore(&state.snapshot()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(state.state_digest(), restored.state_digest(), "the maintained digest drifted from the state");
    // The replica rebuilt from a snapshot applies the rest of the log and agrees byte for byte.
    if let Some(mut replica) = replica {
        let start = log.len() - steps[cut..].iter().map(|s| 1 + usize::from(s.command.is_some())).sum::<usize>();
        for (at, input) in &log[start..] {
            replica.apply(*at, input);
        }
        prop_assert_eq!(replica.snapshot(), state.snapshot(), "a replica restored at step {} disagrees", cut);
    }
    Ok(commands)
}

/// Follows statuses through effects in order and checks invariants 1 and 2 on assignments.
fn track(
    state: &State,
    workspace: &WorkspaceId,
    effects: &[Effect],
    statuses: &mut BTreeMap<AgentId, AgentStatus>,
) -> Result<(), TestCaseError> {
    for effect in effects {
        match effect {
            Effect::AgentStatusChanged { agent, status, .. } => {
                statuses.insert(agent.clone(), *status);
            }
            Effect::Assigned { agent, team, reason, conversation, .. } => {
                // Supervisors and agents themselves may go past the automatic rules.
                if matches!(reason, AssignReason::Claimed | AssignReason::Manual | AssignReason::Transfer) {
                    continue;
                }
                let spec = state.team_spec(workspace, team);
                prop_assert!(
                    spec.is_some(),
                    "{} assigned to {} in {}, which does not exist",
                    conversation,
                    agent,
                    team
                );
                let allowed = spec.map_or(StatusSet::ONLINE_ONLY, |spec| spec.options.allowed_statuses);
                let status = statuses.get(agent).copied().unwrap_or(AgentStatus::Offline);
                prop_assert!(
                    allowed.contains(status),
                    "{} ({:?}) got {} automatically ({:?}) from {}, which allows {:?}",
                    agent,
                    status,
                    conversation,
                    reason,
                    team,
                    allowed
                );
                // Only an agent named by the configuration (a rule, a contact's dedicated agent)
                // may serve a team they are not a member of.
                let named = matches!(reason, AssignReason::RuleAgent | AssignReason::Dedicated);
                prop_assert!(
                    named || spec.is_some_and(|spec| spec.members.contains(agent)),
                    "{} got {} ({:?}) from {} without being a member",
                    agent,
                    conversation,
                    reason,
                    team
                );
                let agent_spec = state.agent_spec(workspace, agent);
                prop_assert!(agent_spec.is_some(), "{} assigned to unknown agent {}", conversation, agent);
                let agent_spec = agent_spec.expect("checked");
                prop_assert!(
                    !agent_spec.auto_assign_excluded,
                    "{} is excluded from automatic assignment but got {} ({:?})",
                    agent,
                    conversation,
                    reason
                );
                if let Some(view) = state.conversation(workspace, conversation) {
                    let skilled = view
                        .required_skills
                        .iter()
                        .all(|(skill, level)| agent_spec.skills.get(skill).is_some_and(|have| have >= level));
                    let speaks = view.required_language.as_ref().is_none_or(|l| agent_spec.languages.contains(l));
                    prop_assert!(
                        skilled && speaks,
                        "{} got {} ({:?}) without the skills {:?} or language {:?} it requires",
                        agent,
                        conversation,
                        reason,
                        view.required_skills,
                        view.required_language
                    );
                }
                if let Some(view) = state.agent(workspace, agent) {
                    prop_assert!(
                        view.open <= view.max_open,
                        "{} has {} open, max {}, after an automatic assignment ({:?})",
                        agent,
                        view.open,
                        view.max_open,
                        reason
                    );
                    let capped = spec.is_some_and(|spec| spec.options.daily_limit_hard_cap);
                    prop_assert!(
                        !capped || view.received_today <= view.daily_limit,
                        "{} received {} today, over the hard cap {} ({:?})",
                        agent,
                        view.received_today,
                        view.daily_limit,
                        reason
                    );
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs `cases` generated histories from `seed`; on failure prints the seed and the minimal
/// failing history and panics.
fn run(cases: u32, seed: u64, commands: usize) -> (usize, Coverage) {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let total = std::cell::Cell::new(0usize);
    let coverage = std::cell::RefCell::new(Coverage::default());
    let result = runner.run(&history(commands), |(rng_seed, steps, cut)| {
        let mut tally = Coverage::default();
        let count = check_history(rng_seed, &steps, cut, &mut tally)?;
        total.set(total.get() + count);
        let mut all = coverage.borrow_mut();
        for (kind, n) in tally.applied {
            *all.applied.entry(kind).or_insert(0) += n;
        }
        for (kind, n) in tally.refused {
            *all.refused.entry(kind).or_insert(0) += n;
        }
        all.assignments += tally.assignments;
        all.reopened_orphans += tally.reopened_orphans;
        Ok(())
    });
    match result {
        Ok(()) => (total.get(), coverage.into_inner()),
        Err(TestError::Fail(reason, (rng_seed, steps, cut))) => {
            panic!(
                "command-space fuzz failed (seed {seed}): {reason}\nminimal failing history (rng_seed {rng_seed}, \
                 snapshot cut {cut}):\n{steps:#?}"
            )
        }
        Err(error) => panic!("command-space fuzz aborted (seed {seed}): {error}"),
    }
}

#[test]
fn the_whole_command_space_keeps_every_invariant_and_refusals_change_nothing() {
    let seed = std::env::var("SWITCHBOARD_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED);
    let (commands, coverage) = run(300, seed, COMMANDS_PER_CASE);
    assert!(commands > 10_000, "the generator produced only {commands} commands");
    // Every kind of command was both applied and refused, and routing happened.
    for command in [
        "configure_workspace",
        "upsert_agent",
        "remove_agent",
        "upsert_team",
        "remove_team",
        "set_routing_rules",
        "upsert_contact",
        "set_agent_status",
        "open_conversation",
        "customer_message",
        "agent_replied",
        "close_conversation",
        "claim",
        "assign",
        "transfer",
    ] {
        assert!(coverage.applied.get(command).is_some_and(|n| *n >= 10), "{command} applied: {:?}", coverage.applied);
        assert!(coverage.refused.get(command).is_some_and(|n| *n > 0), "{command} refused: {:?}", coverage.refused);
    }
    assert!(coverage.assignments > 1_000, "only {} assignments", coverage.assignments);
    assert!(coverage.reopened_orphans >= 5, "only {} reopenings after a team removal", coverage.reopened_orphans);
}

/// The long run behind `make fuzz`: `SWITCHBOARD_FUZZ_COMMANDS` commands (default 10 million)
/// from `SWITCHBOARD_FUZZ_SEED` (default: the clock), in histories of 200 commands. Prints the
/// seed first, so that any failure can be replayed.
#[test]
#[ignore = "long; run with `make fuzz`"]
fn fuzz() {
    let seed = std::env::var("SWITCHBOARD_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let target: usize =
        std::env::var("SWITCHBOARD_FUZZ_COMMANDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let per_case = 200;
    println!("command-space fuzz: seed {seed}, about {target} commands (replay with SWITCHBOARD_FUZZ_SEED={seed})");
    let started = std::time::Instant::now();
    // Each case has 1..200 steps, 95% of them commands: about 95 commands on average.
    let cases = u32::try_from((target / 95).max(1)).unwrap_or(u32::MAX);
    let (commands, coverage) = run(cases, seed, per_case);
    println!(
        "applied: {:?}\nrefused: {:?}\nassignments: {}, reopenings after a team removal: {}",
        coverage.applied, coverage.refused, coverage.assignments, coverage.reopened_orphans
    );
    println!(
        "command-space fuzz: seed {seed}: {commands} commands in {cases} histories, clean, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
