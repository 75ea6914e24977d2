//! # switchboard-replay
//!
//! What-if replay. The assigner is a pure function of its input, so a day of recorded gateway
//! events can be run again, offline, through the same core with another configuration — a
//! different strategy, two more agents on a team, other limits — on simulated time, as fast as
//! the core runs. [`replay`] returns a [`Report`]: per team and overall, conversations,
//! assignment rate, queue waits (p50/p90/p99/max), customers who closed while waiting, load
//! per agent and its spread, and queue depth over time; [`html::page`] draws one or more
//! reports side by side as a self-contained page.
//!
//! Time: the replay's clock is each event's recorded time ([`Recorded::at_ms`]); between
//! events it ticks once a simulated second, as the Raft leader does, so that timers (no-reply
//! reassignment, auto-close, opening hours) fire when they would have. Presence: every agent
//! the configuration names is online from the start; an events file may carry
//! `SetAgentStatus` commands to model shifts. With the configuration the cluster had and its
//! agents online throughout, a replay makes the cluster's assignments in the cluster's order.

pub mod events;
pub mod html;
pub mod report;
pub mod text;

pub use events::Recorded;
pub use report::{AgentReport, Assignment, DepthSeries, Report, TeamReport, Waits};

use serde::Serialize;
use std::collections::BTreeMap;
use switchboard_core::{
    AgentId, AgentStatus, Command, ConversationId, Effect, Event, Explanation, Input, State, TeamId, WorkspaceId,
};

/// Most queue-depth buckets per team in a report (the bucket width grows with the span).
pub const DEPTH_BUCKETS_MAX: i64 = 300;
/// The simulated clock's tick, as the leader proposes it.
pub const TICK_MS: i64 = 1_000;

/// A configuration to replay with: the commands that build the workspace, in order.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shown in reports (for example the file name).
    pub label: String,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Settings, agents, teams, rules: what `switchboard ctl apply` would write, in its order.
    pub setup: Vec<Command>,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The configuration was refused by the core.
    #[error("configuration {label}: command {index} ({command}) refused: {error}")]
    Config {
        /// The configuration's label.
        label: String,
        /// Zero-based position of the command in the setup.
        index: usize,
        /// The command's name.
        command: String,
        /// The core's reason.
        error: String,
    },
}

/// `a / b` rounded up, for positive `a` and `b`.
fn ceil_div(a: i64, b: i64) -> i64 {
    let b = b.max(1);
    a.saturating_add(b - 1) / b
}

/// One moment of a conversation's life in a replay: what caused it and what happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Simulated time (UTC milliseconds).
    pub at_ms: i64,
    /// Where its cause is recorded: the stream sequence of the event in a replay, the log index
    /// of the entry in a cluster's history (0 for a timer between events).
    pub sequence: u64,
    /// The command that caused it (`OpenConversation`, `CloseConversation`, ...) or `timer`.
    pub cause: String,
    /// For the conversation's opening: the path that decided and every candidate's verdict,
    /// derived from the replay's state just before the event.
    pub explanation: Option<Explanation>,
    /// The effects about the conversation, in order.
    pub effects: Vec<Effect>,
}

/// Follows one conversation through a replay.
struct Trail<'a> {
    conversation: Option<&'a ConversationId>,
    decisions: Vec<Decision>,
}

impl Trail<'_> {
    fn record(&mut self, at_ms: i64, sequence: u64, cause: &str, explanation: Option<Explanation>, effects: &[Effect]) {
        let Some(conversation) = self.conversation else { return };
        let effects: Vec<Effect> =
            effects.iter().filter(|effect| effect.conversation() == Some(conversation)).cloned().collect();
        if !effects.is_empty() || explanation.is_some() {
            self.decisions.push(Decision { at_ms, sequence, cause: cause.to_owned(), explanation, effects });
        }
    }
}

/// Replays `events` (those of `config.workspace`; others are skipped) through a fresh core
/// built by `config`, and reports what happened.
pub fn replay(config: &Config, events: &[Recorded]) -> Result<Report, ReplayError> {
    replay_explaining(config, events, None).map(|(report, _)| report)
}

/// [`replay`], also following `conversation` (if given): every decision about it, in order,
/// with the explanations of its opening and reopenings.
pub fn replay_explaining(
    config: &Config,
    events: &[Recorded],
    conversation: Option<&ConversationId>,
) -> Result<(Report, Vec<Decision>), ReplayError> {
    let mut trail = Trail { conversation, decisions: Vec::new() };
    let workspace = &config.workspace;
    let mine: Vec<&Recorded> = events.iter().filter(|r| &r.event.workspace == workspace).collect();
    let from_ms = mine.first().map_or(0, |r| r.at_ms);
    let to_ms = mine.iter().map(|r| r.at_ms).max().unwrap_or(from_ms);
    let span = to_ms.saturating_sub(from_ms).saturating_add(1);
    let per_bucket = ceil_div(span, DEPTH_BUCKETS_MAX).max(TICK_MS);
    let bucket_ms = ceil_div(per_bucket, TICK_MS).saturating_mul(TICK_MS);

    let mut state = State::new();
    let mut agents: Vec<AgentId> = Vec::new();
    let mut teams: BTreeMap<TeamId, Vec<AgentId>> = BTreeMap::new();
    for (index, command) in config.setup.iter().enumerate() {
        match command {
            Command::UpsertAgent(spec) if !agents.contains(&spec.id) => agents.push(spec.id.clone()),
            Command::UpsertTeam(spec) => {
                teams.insert(spec.id.clone(), spec.members.clone());
            }
            _ => {}
        }
        let event = Event { workspace: workspace.clone(), event_id: None, command: command.clone() };
        let outcome = state.apply(from_ms, &Input::Event(event));
        if let Err(error) = outcome.result {
            return Err(ReplayError::Config {
                label: config.label.clone(),
                index,
                command: command.name().to_owned(),
                error: error.to_string(),
            });
        }
    }
    for agent in &agents {
        let command = Command::SetAgentStatus { agent: agent.clone(), status: AgentStatus::Online };
        let event = Event { workspace: workspace.clone(), event_id: None, command };
        // An agent removed later in the setup is simply not there to be online.
        let _ = state.apply(from_ms, &Input::Event(event));
    }
    let team_list: Vec<(TeamId, Vec<AgentId>)> = teams.into_iter().collect();
    let mut collector = report::Collector::new(&team_list);
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let bucket_of = |at_ms: i64| usize::try_from(at_ms.saturating_sub(from_ms) / bucket_ms).unwrap_or(0);
    let sample = |state: &State, collector: &mut report::Collector, at_ms: i64| {
        for (team, _) in &team_list {
            let depth = state.queue_depth(workspace, team).unwrap_or(0);
            collector.depth(team, bucket_of(at_ms), u64::try_from(depth).unwrap_or(u64::MAX));
        }
    };
    sample(&state, &mut collector, from_ms);

    let mut clock = from_ms;
    let mut next_tick = from_ms.saturating_add(TICK_MS);
    for recorded in &mine {
        let at_ms = recorded.at_ms.max(clock);
        while next_tick <= at_ms {
            let outcome = state.apply(next_tick, &Input::Tick);
            for effect in &outcome.effects {
                collector.effect(next_tick, effect);
            }
            trail.record(next_tick, 0, "timer", None, &outcome.effects);
            sample(&state, &mut collector, next_tick);
            next_tick = next_tick.saturating_add(TICK_MS);
        }
        clock = at_ms;
        let input = Input::Event(recorded.event.clone());
        let (outcome, explanation) = match trail.conversation {
            Some(conversation) => state.apply_explained(at_ms, &input, conversation),
            None => (state.apply(at_ms, &input), None),
        };
        trail.record(at_ms, recorded.sequence, recorded.event.command.name(), explanation, &outcome.effects);
        let (timers, own) = outcome.effects.split_at(outcome.timer_effects.min(outcome.effects.len()));
        for effect in timers {
            collector.effect(at_ms, effect);
        }
        match &outcome.result {
            Ok(()) => {
                if let Command::OpenConversation(open) = &recorded.event.command {
                    collector.opened(&open.conversation, at_ms);
                }
            }
            Err(error) => *refused.entry(error.reason_label().to_owned()).or_default() += 1,
        }
        for effect in own {
            collector.effect(at_ms, effect);
        }
    }
    sample(&state, &mut collector, to_ms);

    let buckets = usize::try_from(ceil_div(span, bucket_ms)).unwrap_or(1).max(1);
    let report = Report {
        label: config.label.clone(),
        workspace: workspace.as_str().to_owned(),
        events: u64::try_from(mine.len()).unwrap_or(u64::MAX),
        refused,
        from_ms,
        to_ms,
        bucket_ms,
        ..Report::default()
    };
    Ok((collector.finish(report, buckets), trail.decisions))
}
