//! Prometheus metrics of a node (`switchboard_` prefix, names fixed by DESIGN.md §3).
//!
//! The binary installs the exporter; this module names the series, describes them, and runs the
//! sampler that keeps the gauges current. Labels name workspaces, teams, statuses and
//! strategies, never agents, so that cardinality stays bounded by configuration.
//!
//! Counters derived from applied entries (`assignments_total`) are counted by every replica, so
//! each node reports the whole cluster's decisions: aggregate with `max`, not `sum`.

use crate::watch::WatchHub;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::{AgentStatus, AssignReason, Effect};
use switchboard_raft::{RaftNode, StateChange};

/// Events that took effect (committed and not refused), by `source` (`grpc`, `nats`); counted
/// in one place for both sources (`event_took_effect`).
pub const EVENTS_INGESTED_TOTAL: &str = "switchboard_events_ingested_total";
/// Events refused, by `reason`.
pub const EVENTS_REJECTED_TOTAL: &str = "switchboard_events_rejected_total";
/// Events whose event id had already taken effect, by `source`: acked (NATS) or answered
/// `ALREADY_EXISTS` (gRPC) without effect. Redeliveries after a leader change count here too; a
/// steady rate means a gateway re-sends event ids under new `Nats-Msg-Id`s or retries past
/// JetStream's duplicate window.
pub const EVENTS_DUPLICATE_TOTAL: &str = "switchboard_events_duplicate_total";
/// Events not yet delivered to the leader by the NATS consumer `switchboard-assigner`.
pub const NATS_CONSUMER_PENDING: &str = "switchboard_nats_consumer_pending";
/// Times the effect publisher found effects that are neither in the stream nor in the outbox
/// (a gap on the effects stream).
pub const EFFECTS_UNPUBLISHED_TOTAL: &str = "switchboard_effects_unpublished_total";
/// Effects in this replica's outbox: applied, not yet confirmed stored in NATS.
pub const OUTBOX_EFFECTS: &str = "switchboard_outbox_effects";
/// Effects this replica dropped from its outbox unpublished, over its bound of 1,000,000.
pub const OUTBOX_DROPPED_TOTAL: &str = "switchboard_outbox_dropped_total";
/// Seconds from the gateway's `occurred_at_ms` to the effects being known, by `source`.
pub const EVENT_TO_EFFECT_SECONDS: &str = "switchboard_event_to_effect_seconds";
/// Assignments applied, by `workspace`, `team` and `strategy` (or the non-strategy reason).
pub const ASSIGNMENTS_TOTAL: &str = "switchboard_assignments_total";
/// Conversations waiting in a team's queue, by `workspace` and `team`.
pub const QUEUE_DEPTH: &str = "switchboard_queue_depth";
/// Agents by `workspace` and `status`.
pub const AGENTS: &str = "switchboard_agents";
/// Whether this node is the Raft leader (1) or not (0).
pub const RAFT_IS_LEADER: &str = "switchboard_raft_is_leader";
/// This node's current Raft term.
pub const RAFT_TERM: &str = "switchboard_raft_term";
/// Index of the last entry in this node's log.
pub const RAFT_LAST_LOG_INDEX: &str = "switchboard_raft_last_log_index";
/// Index of the last entry applied to this node's state.
pub const RAFT_LAST_APPLIED_INDEX: &str = "switchboard_raft_last_applied_index";

/// Inputs whose apply panicked on this replica (a bug; each was refused as an internal error
/// on every replica and the cluster kept serving). Any increase pages.
pub const APPLY_PANICS_TOTAL: &str = "switchboard_apply_panics_total";

/// Watch streams open on this node.
pub const WATCH_STREAMS: &str = "switchboard_watch_streams";
/// Watch streams refused at the start (`stream_limit`) or cut off (`fell_behind`), by `reason`.
pub const WATCH_STREAMS_REFUSED_TOTAL: &str = "switchboard_watch_streams_refused_total";

/// Always 1, labelled with the running `version` and the `commit` it was built from.
pub const BUILD_INFO: &str = "switchboard_build_info";
/// 1 while this node's gRPC health is SERVING (it can take writes), else 0.
pub const SERVING: &str = "switchboard_serving";
/// Calls of the public API, by `method` (`Service/Method`, e.g. `Assignments/Claim`; `unknown`
/// for calls to no method, so that made-up paths add no series) and gRPC status `code`.
pub const GRPC_REQUESTS_TOTAL: &str = "switchboard_grpc_requests_total";
/// Seconds from a call's arrival to its status (a Watch stream's whole life), by `method`.
pub const GRPC_REQUEST_SECONDS: &str = "switchboard_grpc_request_seconds";
/// Seconds a conversation waited in a team's queue until it was assigned, by `workspace` and
/// `team`, by this node's clock from the entry that queued it to the one that assigned it.
pub const QUEUE_WAIT_SECONDS: &str = "switchboard_queue_wait_seconds";
/// Age of the oldest conversation waiting in a team's queue (0 when none waits), by
/// `workspace` and `team`.
pub const QUEUE_OLDEST_WAIT_SECONDS: &str = "switchboard_queue_oldest_wait_seconds";

/// Every series name, for checks of the dashboards and alert rules in `deploy/`.
pub const ALL: [&str; 32] = [
    BUILD_INFO,
    SERVING,
    GRPC_REQUESTS_TOTAL,
    GRPC_REQUEST_SECONDS,
    QUEUE_WAIT_SECONDS,
    QUEUE_OLDEST_WAIT_SECONDS,
    switchboard_raft::metrics::ALL[0],
    switchboard_raft::metrics::ALL[1],
    switchboard_raft::metrics::ALL[2],
    switchboard_raft::metrics::ALL[3],
    switchboard_raft::metrics::ALL[4],
    switchboard_raft::metrics::ALL[5],
    switchboard_raft::metrics::ALL[6],
    switchboard_raft::metrics::ALL[7],
    EVENTS_INGESTED_TOTAL,
    EVENTS_REJECTED_TOTAL,
    EVENTS_DUPLICATE_TOTAL,
    NATS_CONSUMER_PENDING,
    EFFECTS_UNPUBLISHED_TOTAL,
    OUTBOX_EFFECTS,
    OUTBOX_DROPPED_TOTAL,
    EVENT_TO_EFFECT_SECONDS,
    ASSIGNMENTS_TOTAL,
    QUEUE_DEPTH,
    AGENTS,
    RAFT_IS_LEADER,
    RAFT_TERM,
    RAFT_LAST_LOG_INDEX,
    RAFT_LAST_APPLIED_INDEX,
    APPLY_PANICS_TOTAL,
    WATCH_STREAMS,
    WATCH_STREAMS_REFUSED_TOTAL,
];

/// How often Raft gauges are refreshed.
const RAFT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often queue and agent gauges are refreshed (each refresh walks every team and agent).
const STATE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Registers descriptions of every series, for the exporter's `# HELP` lines, and every counter
/// whose labels are known now at 0, so that `increase()` sees its first increment.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    switchboard_raft::metrics::describe();
    crate::process::describe();
    describe_gauge!(BUILD_INFO, "Always 1: the running version and the commit it was built from.");
    describe_gauge!(SERVING, "1 while this node's gRPC health is SERVING (it can take writes).");
    describe_counter!(GRPC_REQUESTS_TOTAL, "Public API calls by method (Service/Method) and gRPC status code.");
    describe_histogram!(
        GRPC_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "From a call's arrival to its status (a Watch stream's whole life), by method."
    );
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "How long conversations waited in a team's queue until assigned, by workspace and team."
    );
    describe_gauge!(
        QUEUE_OLDEST_WAIT_SECONDS,
        "Age of the oldest conversation waiting in a team's queue, since this node saw it queued (not before it started)."
    );
    for source in ["grpc", "nats"] {
        metrics::counter!(EVENTS_INGESTED_TOTAL, "source" => source).increment(0);
        metrics::counter!(EVENTS_DUPLICATE_TOTAL, "source" => source).increment(0);
    }
    for reason in switchboard_core::ApplyError::REASONS.into_iter().chain(["malformed"]) {
        metrics::counter!(EVENTS_REJECTED_TOTAL, "reason" => reason).increment(0);
    }
    for reason in ["stream_limit", "fell_behind"] {
        metrics::counter!(WATCH_STREAMS_REFUSED_TOTAL, "reason" => reason).increment(0);
    }
    for counter in [EFFECTS_UNPUBLISHED_TOTAL, OUTBOX_DROPPED_TOTAL, APPLY_PANICS_TOTAL] {
        metrics::counter!(counter).increment(0);
    }
    describe_counter!(
        EVENTS_INGESTED_TOTAL,
        "Events that took effect (committed, not refused), by source (grpc, nats)."
    );
    describe_counter!(EVENTS_REJECTED_TOTAL, "Events refused, by reason.");
    describe_counter!(
        EVENTS_DUPLICATE_TOTAL,
        "Events whose event id had already taken effect (dropped without effect), by source (grpc, nats)."
    );
    describe_counter!(ASSIGNMENTS_TOTAL, "Assignments applied by this replica, by workspace, team and strategy.");
    describe_histogram!(
        EVENT_TO_EFFECT_SECONDS,
        metrics::Unit::Seconds,
        "From the gateway's timestamp of an event to its effects, by source (grpc, nats)."
    );
    describe_gauge!(NATS_CONSUMER_PENDING, "Events in SWITCHBOARD not yet delivered to the leader's consumer.");
    describe_counter!(
        EFFECTS_UNPUBLISHED_TOTAL,
        "Gaps on the effects stream: effects neither in the stream nor in the outbox when the publisher resumed."
    );
    describe_gauge!(OUTBOX_EFFECTS, "Effects applied and not yet confirmed stored in NATS (grows while NATS is down).");
    describe_counter!(
        OUTBOX_DROPPED_TOTAL,
        "Effects dropped from the outbox unpublished because it held 1,000,000 (NATS down for very long)."
    );
    describe_gauge!(QUEUE_DEPTH, "Conversations waiting in a team's queue.");
    describe_gauge!(AGENTS, "Agents by workspace and status.");
    describe_counter!(
        APPLY_PANICS_TOTAL,
        "Inputs whose apply panicked (a bug): refused as internal errors on every replica; the cluster kept serving."
    );
    describe_gauge!(RAFT_IS_LEADER, "1 if this node is the Raft leader.");
    describe_gauge!(RAFT_TERM, "Current Raft term.");
    describe_gauge!(RAFT_LAST_LOG_INDEX, "Index of the last entry in this node's log.");
    describe_gauge!(RAFT_LAST_APPLIED_INDEX, "Index of the last entry applied to this node's state.");
    describe_gauge!(WATCH_STREAMS, "Watch streams open on this node.");
    describe_counter!(
        WATCH_STREAMS_REFUSED_TOTAL,
        "Watch streams refused (stream_limit: watch_streams_max reached) or cut off (fell_behind: the client read \
         too slowly), by reason."
    );
}

fn status_label(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Online => "online",
        AgentStatus::Busy => "busy",
        AgentStatus::Away => "away",
        AgentStatus::Offline => "offline",
    }
}

fn reason_label(reason: AssignReason) -> &'static str {
    match reason {
        AssignReason::Strategy(strategy) => strategy.label(),
        AssignReason::Dedicated => "dedicated",
        AssignReason::Returning => "returning",
        AssignReason::RuleAgent => "rule_agent",
        AssignReason::Reopened => "reopened",
        AssignReason::Claimed => "claimed",
        AssignReason::Manual => "manual",
        AssignReason::Transfer => "transfer",
    }
}

/// Counts an event refused for `reason` (a short stable label such as `unknown_agent`).
pub fn event_rejected(reason: &str) {
    metrics::counter!(EVENTS_REJECTED_TOTAL, "reason" => reason.to_owned()).increment(1);
}

/// Counts an event the state machine refused, from `source`: a repeat of an event id that
/// already took effect is a duplicate, anything else a rejection.
pub(crate) fn event_refused(source: &'static str, rejection: &switchboard_raft::Rejection) {
    if rejection.kind == switchboard_core::ErrorKind::AlreadyApplied {
        metrics::counter!(EVENTS_DUPLICATE_TOTAL, "source" => source).increment(1);
    } else {
        event_rejected(&rejection.reason);
    }
}

/// Counts a Watch stream refused or cut off for `reason` (`stream_limit`, `fell_behind`).
pub(crate) fn watch_stream_refused(reason: &'static str) {
    metrics::counter!(WATCH_STREAMS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// Records the time from the gateway's `occurred_at_ms` (0 = not given) to now.
pub fn event_took_effect(source: &'static str, occurred_at_ms: i64) {
    metrics::counter!(EVENTS_INGESTED_TOTAL, "source" => source).increment(1);
    if occurred_at_ms <= 0 {
        return;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    // A gateway clock ahead of ours would give a negative latency: not recorded.
    if now_ms >= occurred_at_ms {
        metrics::histogram!(EVENT_TO_EFFECT_SECONDS, "source" => source)
            .record((now_ms - occurred_at_ms) as f64 / 1000.0);
    }
}

/// The version label of `switchboard_build_info`.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit label of `switchboard_build_info` (`build.rs`: `SWITCHBOARD_COMMIT`, else git).
const COMMIT: &str = env!("SWITCHBOARD_COMMIT");

/// Conversations waiting in queues as this node saw them queued, for the queue-wait series:
/// every operation is O(log n). Conversations queued before this node started (or before a
/// snapshot install or a lag of the change feed, which reset it) are not tracked: their wait
/// is not measured. Bounded: past [`WAITING_TRACKED_MAX`] no more are tracked, and a team whose
/// queue is empty, or that no longer exists, forgets its own.
#[derive(Default)]
struct Waiting {
    /// (workspace, conversation) → (team, when it was queued).
    team_of: BTreeMap<(String, String), (String, Instant)>,
    /// (workspace, team) → its tracked conversations by the time they were queued.
    by_team: BTreeMap<(String, String), BTreeSet<(Instant, String)>>,
}

/// At most this many waiting conversations are tracked for the queue-wait series.
const WAITING_TRACKED_MAX: usize = 200_000;

impl Waiting {
    fn see(&mut self, effect: &Effect) {
        match effect {
            Effect::Queued { workspace, conversation, team, .. } => {
                let key = (workspace.to_string(), conversation.to_string());
                let tracked = self.team_of.get(&key).map(|(tracked, _)| tracked.clone());
                let since = match tracked {
                    Some(tracked) if tracked.as_str() == team.as_str() => return,
                    // Queued again in another team: still waiting, since the first time.
                    Some(_) => self.remove(&key).map_or_else(Instant::now, |(_, since)| since),
                    None if self.team_of.len() >= WAITING_TRACKED_MAX => return,
                    None => Instant::now(),
                };
                self.by_team.entry((key.0.clone(), team.to_string())).or_default().insert((since, key.1.clone()));
                self.team_of.insert(key, (team.to_string(), since));
            }
            Effect::Assigned { workspace, conversation, team, .. } if !self.team_of.is_empty() => {
                if let Some((_, since)) = self.remove(&(workspace.to_string(), conversation.to_string())) {
                    metrics::histogram!(QUEUE_WAIT_SECONDS, "workspace" => workspace.to_string(), "team" => team.to_string())
                        .record(since.elapsed().as_secs_f64());
                }
            }
            Effect::Closed { workspace, conversation, .. } if !self.team_of.is_empty() => {
                self.remove(&(workspace.to_string(), conversation.to_string()));
            }
            _ => {}
        }
    }

    fn remove(&mut self, key: &(String, String)) -> Option<(String, Instant)> {
        let (team, since) = self.team_of.remove(key)?;
        let team_key = (key.0.clone(), team.clone());
        if let Some(waiting) = self.by_team.get_mut(&team_key) {
            waiting.remove(&(since, key.1.clone()));
            if waiting.is_empty() {
                self.by_team.remove(&team_key);
            }
        }
        Some((team, since))
    }

    /// How long the oldest tracked conversation of a team has waited.
    fn oldest(&self, workspace: &str, team: &str) -> Option<Duration> {
        let waiting = self.by_team.get(&(workspace.to_owned(), team.to_owned()))?;
        waiting.first().map(|(since, _)| since.elapsed())
    }

    /// Keeps only the teams in `waiting` (those with conversations in their queue): the others'
    /// conversations were assigned, closed or removed unseen.
    fn retain_teams(&mut self, waiting: &BTreeSet<(String, String)>) {
        let gone: Vec<(String, String)> = self.by_team.keys().filter(|key| !waiting.contains(*key)).cloned().collect();
        for (workspace, team) in gone {
            for (_, conversation) in self.by_team.remove(&(workspace.clone(), team)).unwrap_or_default() {
                self.team_of.remove(&(workspace.clone(), conversation));
            }
        }
    }
}

/// Keeps the gauges current and counts applied assignments until `shutdown` resolves. Every
/// gauge is set again at least every few seconds, because the exporter drops a gauge not set
/// for a minute (that is how a removed workspace's series go away).
pub async fn run_sampler(node: Arc<RaftNode>, hub: Arc<WatchHub>, shutdown: impl std::future::Future<Output = ()>) {
    let mut changes = node.subscribe();
    let mut raft_tick = tokio::time::interval(RAFT_SAMPLE_INTERVAL);
    let mut state_tick = tokio::time::interval(STATE_SAMPLE_INTERVAL);
    let mut waiting = Waiting::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            change = changes.recv() => match change {
                Ok(StateChange::Entry(entry)) => {
                    for effect in entry.outcomes.iter().flat_map(|outcome| &outcome.effects) {
                        waiting.see(effect);
                        if let Effect::Assigned { workspace, team, reason, .. } = effect {
                            metrics::counter!(
                                ASSIGNMENTS_TOTAL,
                                "workspace" => workspace.to_string(),
                                "team" => team.to_string(),
                                "strategy" => reason_label(*reason),
                            )
                            .increment(1);
                        }
                    }
                }
                Ok(StateChange::SnapshotInstalled { .. }) => waiting = Waiting::default(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    // What was missed may have assigned tracked conversations: start over.
                    waiting = Waiting::default();
                    tracing::debug!(missed, "metrics sampler lagged; some assignments were not counted");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = raft_tick.tick() => {
                let metrics = node.raft().metrics().borrow().clone();
                metrics::gauge!(RAFT_IS_LEADER).set(if metrics.current_leader == Some(node.id()) { 1.0 } else { 0.0 });
                metrics::gauge!(RAFT_TERM).set(metrics.current_term as f64);
                metrics::gauge!(RAFT_LAST_LOG_INDEX).set(metrics.last_log_index.unwrap_or(0) as f64);
                metrics::gauge!(RAFT_LAST_APPLIED_INDEX).set(metrics.last_applied.map_or(0, |id| id.index) as f64);
                metrics::counter!(APPLY_PANICS_TOTAL).absolute(node.apply_panics());
                let outbox = node.outbox_stats();
                metrics::gauge!(OUTBOX_EFFECTS).set(outbox.effects as f64);
                metrics::counter!(OUTBOX_DROPPED_TOTAL).absolute(outbox.dropped);
                metrics::gauge!(WATCH_STREAMS).set(hub.open_streams() as f64);
                metrics::gauge!(BUILD_INFO, "version" => VERSION, "commit" => COMMIT).set(1.0);
                crate::process::sample();
            }
            _ = state_tick.tick() => sample_state(&node, &mut waiting),
        }
    }
}

fn sample_state(node: &RaftNode, waiting: &mut Waiting) {
    let samples = node.read_local(|state| {
        let mut queues = Vec::new();
        let mut agents = Vec::new();
        for workspace in state.workspace_ids() {
            for team in state.team_ids(workspace) {
                let depth = state.queue_depth(workspace, &team).unwrap_or(0);
                queues.push((workspace.to_string(), team.to_string(), depth));
            }
            agents.push((workspace.to_string(), state.agents_by_status(workspace)));
        }
        (queues, agents)
    });
    let (queues, agents) = samples.value;
    let nonempty: BTreeSet<(String, String)> =
        queues.iter().filter(|(_, _, depth)| *depth > 0).map(|(w, t, _)| (w.clone(), t.clone())).collect();
    waiting.retain_teams(&nonempty);
    for (workspace, team, depth) in queues {
        let age = waiting.oldest(&workspace, &team).map_or(0.0, |age| age.as_secs_f64());
        metrics::gauge!(QUEUE_OLDEST_WAIT_SECONDS, "workspace" => workspace.clone(), "team" => team.clone()).set(age);
        metrics::gauge!(QUEUE_DEPTH, "workspace" => workspace, "team" => team).set(depth as f64);
    }
    for (workspace, counts) in agents {
        for status in AgentStatus::ALL {
            metrics::gauge!(AGENTS, "workspace" => workspace.clone(), "status" => status_label(status))
                .set(counts[status as usize] as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ALL, Waiting};
    use std::collections::BTreeSet;
    use switchboard_core::{AssignReason, Effect, Strategy};

    fn queued(conversation: &str, team: &str) -> Effect {
        Effect::Queued {
            workspace: "acme".into(),
            conversation: conversation.into(),
            team: team.into(),
            position: 1,
            eta_ms: None,
            waiting_for: None,
            message: None,
        }
    }

    fn assigned(conversation: &str, team: &str) -> Effect {
        Effect::Assigned {
            workspace: "acme".into(),
            conversation: conversation.into(),
            contact: "c".into(),
            channel: switchboard_core::Channel::WhatsApp,
            team: team.into(),
            agent: "mary".into(),
            agent_name: "Mary".into(),
            expected_response_ms: 0,
            reason: AssignReason::Strategy(Strategy::RoundRobin),
        }
    }

    #[test]
    fn queue_waits_follow_conversations_between_teams_and_forget_what_left_unseen() {
        let mut waiting = Waiting::default();
        waiting.see(&queued("c1", "sales"));
        std::thread::sleep(std::time::Duration::from_millis(5));
        waiting.see(&queued("c2", "sales"));
        let sales_oldest = waiting.oldest("acme", "sales").expect("sales waits");
        // Moved to another team: still waiting since the first time, and no longer in sales.
        waiting.see(&queued("c1", "support"));
        assert!(waiting.oldest("acme", "support").expect("support waits") >= sales_oldest);
        assert!(waiting.oldest("acme", "sales").expect("c2 waits") < sales_oldest);
        waiting.see(&assigned("c1", "support"));
        assert_eq!(waiting.oldest("acme", "support"), None, "assigned: no longer waiting");
        assert_eq!(waiting.team_of.len(), 1);
        // Sales' queue was found empty: c2 left unseen.
        waiting.retain_teams(&BTreeSet::new());
        assert_eq!(waiting.oldest("acme", "sales"), None);
        assert!(waiting.team_of.is_empty() && waiting.by_team.is_empty());
    }

    /// The `switchboard_*` names a text refers to, without histogram suffixes.
    fn names_in(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("switchboard_") {
            let tail = &rest[start..];
            let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.push(base.to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn dashboards_and_alerts_use_only_series_the_node_exports() {
        for (file, text) in [
            ("deploy/grafana/switchboard.json", include_str!("../../../deploy/grafana/switchboard.json")),
            ("deploy/prometheus/alerts.yml", include_str!("../../../deploy/prometheus/alerts.yml")),
        ] {
            let names = names_in(text);
            assert!(names.len() >= 8, "{file} refers to too few series: {names:?}");
            for name in names {
                assert!(ALL.contains(&name.as_str()), "{file} refers to {name}, which no node exports");
            }
        }
    }

    #[test]
    fn the_dashboard_covers_every_series() {
        let names = names_in(include_str!("../../../deploy/grafana/switchboard.json"));
        for series in ALL {
            assert!(names.iter().any(|n| n == series), "the dashboard has no panel for {series}");
        }
    }
}
