//! Heartbeat supervision of agent presence.
//!
//! With a timeout configured, every agent whose status is above the expiry status (for example
//! ONLINE, BUSY or AWAY when expiring to OFFLINE) must show signs of life — a heartbeat, or a
//! status change — at least once per timeout. The leader keeps one deadline per such agent, in
//! memory, and proposes `SetAgentStatus` for the agents whose deadline passed, so that the
//! change goes through the log like any other and every replica agrees. A crashed agent app
//! therefore stops receiving conversations within about one timeout.
//!
//! Deadlines live only on the leader. A node that becomes leader gives every supervised agent a
//! full timeout from that moment (it cannot know when the old leader last heard from them), so a
//! failover delays an expiry by at most one timeout and never expires a live agent early.
//! Followers forward heartbeats to the leader. Each expiry and heartbeat is O(log agents).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use switchboard_core::{AgentId, AgentStatus, Command, Effect, Event, Input, WorkspaceId};
use switchboard_raft::{RaftNode, StateChange};
use tokio::time::Instant;

/// Most expiries proposed in one write.
const EXPIRIES_PER_PROPOSAL_MAX: usize = 1024;
/// How often the supervisor checks leadership and deadlines.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long an expiry that could not be committed waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How presence is supervised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// How long an agent may go without a heartbeat; zero turns supervision off.
    pub heartbeat_timeout: Duration,
    /// The status an agent is given when its heartbeats stop: `Away` or `Offline`.
    pub expire_to: AgentStatus,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { heartbeat_timeout: Duration::from_secs(30), expire_to: AgentStatus::Offline }
    }
}

impl PresenceConfig {
    /// Whether an agent with `status` is supervised.
    fn supervises(&self, status: AgentStatus) -> bool {
        match self.expire_to {
            AgentStatus::Offline => status != AgentStatus::Offline,
            AgentStatus::Away => matches!(status, AgentStatus::Online | AgentStatus::Busy),
            AgentStatus::Online | AgentStatus::Busy => false,
        }
    }
}

type AgentKey = (WorkspaceId, AgentId);

#[derive(Debug, Default)]
struct Deadlines {
    by_agent: BTreeMap<AgentKey, Instant>,
    by_time: BTreeSet<(Instant, AgentKey)>,
}

impl Deadlines {
    fn set(&mut self, key: AgentKey, deadline: Instant) {
        if let Some(old) = self.by_agent.insert(key.clone(), deadline) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((deadline, key));
    }

    fn remove(&mut self, key: &AgentKey) {
        if let Some(old) = self.by_agent.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    fn pop_due(&mut self, now: Instant, max: usize) -> Vec<AgentKey> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.by_time.first() {
                Some((deadline, _)) if *deadline <= now => {
                    if let Some((_, key)) = self.by_time.pop_first() {
                        self.by_agent.remove(&key);
                        due.push(key);
                    }
                }
                _ => break,
            }
        }
        due
    }

    fn clear(&mut self) {
        self.by_agent.clear();
        self.by_time.clear();
    }
}

/// The leader-side heartbeat tracker.
#[derive(Debug)]
pub struct PresenceSupervisor {
    config: PresenceConfig,
    node: Arc<RaftNode>,
    deadlines: Mutex<Deadlines>,
}

impl PresenceSupervisor {
    /// A supervisor for `node`; call [`PresenceSupervisor::run`] to start it.
    pub fn new(config: PresenceConfig, node: Arc<RaftNode>) -> Arc<Self> {
        Arc::new(Self { config, node, deadlines: Mutex::new(Deadlines::default()) })
    }

    /// The configuration.
    pub fn config(&self) -> PresenceConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a heartbeat of an agent whose current status is `status`. Call on the leader.
    pub(crate) fn heartbeat(&self, workspace: WorkspaceId, agent: AgentId, status: AgentStatus) {
        if self.config.heartbeat_timeout.is_zero() || !self.config.supervises(status) {
            return;
        }
        self.lock().set((workspace, agent), Instant::now() + self.config.heartbeat_timeout);
    }

    /// Follows the replica's changes and, while this node leads, expires silent agents. Returns
    /// when `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        if self.config.heartbeat_timeout.is_zero() {
            shutdown.await;
            return;
        }
        let mut changes = self.node.subscribe();
        let mut leading = false;
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                change = changes.recv() => match change {
                    Ok(StateChange::Entry(entry)) if leading => {
                        let now = Instant::now();
                        let mut deadlines = self.lock();
                        for effect in entry.outcomes.iter().flat_map(|outcome| &outcome.effects) {
                            if let Effect::AgentStatusChanged { workspace, agent, status } = effect {
                                let key = (workspace.clone(), agent.clone());
                                if self.config.supervises(*status) {
                                    deadlines.set(key, now + self.config.heartbeat_timeout);
                                } else {
                                    deadlines.remove(&key);
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) if leading => self.seed(),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = check.tick() => {
                    let now_leading = self.node.confirmed_leader_term().is_some();
                    if now_leading && !leading {
                        self.seed();
                    } else if !now_leading && leading {
                        self.lock().clear();
                    }
                    leading = now_leading;
                    if leading {
                        self.expire_due().await;
                    }
                }
            }
        }
    }

    /// Gives every supervised agent a full timeout from now (on becoming leader).
    fn seed(&self) {
        let supervised = self.node.read_local(|state| {
            let mut supervised = Vec::new();
            for workspace in state.workspace_ids() {
                for agent in state.agent_ids(workspace) {
                    if let Some(view) = state.agent(workspace, &agent)
                        && self.config.supervises(view.status)
                    {
                        supervised.push((workspace.clone(), agent));
                    }
                }
            }
            supervised
        });
        let deadline = Instant::now() + self.config.heartbeat_timeout;
        let mut deadlines = self.lock();
        deadlines.clear();
        for key in supervised.value {
            deadlines.set(key, deadline);
        }
        tracing::info!(agents = deadlines.by_agent.len(), "leading: supervising agent heartbeats");
    }

    async fn expire_due(&self) {
        let due = self.lock().pop_due(Instant::now(), EXPIRIES_PER_PROPOSAL_MAX);
        if due.is_empty() {
            return;
        }
        let inputs = due
            .iter()
            .map(|(workspace, agent)| {
                Input::Event(Event {
                    workspace: workspace.clone(),
                    event_id: Some(crate::api::generated_event_id(self.node.id())),
                    command: Command::SetAgentStatus { agent: agent.clone(), status: self.config.expire_to },
                })
            })
            .collect();
        match self.node.propose(inputs).await {
            Ok(committed) => {
                for ((workspace, agent), outcome) in due.iter().zip(&committed.outcomes) {
                    match &outcome.rejection {
                        None => {
                            tracing::info!(%workspace, %agent, status = ?self.config.expire_to, "no heartbeat: agent status changed")
                        }
                        Some(rejection) => tracing::debug!(%workspace, %agent, %rejection, "heartbeat expiry refused"),
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, agents = due.len(), "could not commit heartbeat expiries; retrying");
                let retry_at = Instant::now() + RETRY_DELAY;
                let mut deadlines = self.lock();
                for key in due {
                    // A heartbeat that arrived meanwhile wins.
                    if !deadlines.by_agent.contains_key(&key) {
                        deadlines.set(key, retry_at);
                    }
                }
            }
        }
    }
}
