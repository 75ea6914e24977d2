//! One workspace (contact center): its agents, teams, rules, contacts and conversations, and
//! every routing decision.
//!
//! The methods here are the state machine's behaviour. Each takes a [`Ctx`] holding the
//! entry's time, the timer wheel and the effect list, changes the workspace and pushes typed
//! effects. Nothing here reads a clock, draws OS randomness or iterates a hash map.
//!
//! Cost model: a decision touches the agent's memberships (a handful of teams and pools),
//! one pool index and one queue: O(log n) in agents and queued conversations. Only admin
//! changes (team membership, strategy, new rules) and the once-a-day reset walk a team.

use crate::command::{OpenConversation, TransferTarget};
use crate::dedupe::Dedupe;
use crate::digest::{DigestMap, Hashed};
use crate::effect::{AssignReason, Effect, UnassignReason};
use crate::entities::{Agent, Contact, Conversation, ConversationState, Placement, Team, Told};
use crate::error::{ApplyError, Conflict};
use crate::hours::Calendar;
use crate::ids::{AgentId, ContactId, ConversationId, Language, TeamId, WorkspaceId};
use crate::limits::{
    AGENTS_PER_WORKSPACE_MAX, CONTACTS_PER_WORKSPACE_MAX, CONVERSATIONS_PER_WORKSPACE_MAX, KEYWORD_SCAN_BYTES_MAX,
    POSITION_ETA_CHANGE_MS_MIN, POSITION_UPDATES_PER_TEAM_MAX, TEAMS_PER_WORKSPACE_MAX,
};
use crate::map::sorted_keys;
use crate::model::{
    AgentSpec, AgentStatus, Channel, ContactSpec, CustomerKind, RoutingRule, RuleTarget, Strategy, TeamSpec,
    WorkspaceSettings,
};
use crate::pool::{MemberFacts, Pool, Requirement};
use crate::rng::SplitMix64;
use crate::timers::{Ctx, Timer};
use crate::validate::validate_rules;
use crate::view::{AgentView, ContactView, ConversationView, QueuePosition, QueuedView};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

mod admin;
mod explain;
mod lifecycle;
mod queues;
mod routing;
mod stored;
mod timers;
mod views;

pub(crate) use stored::{StoredWorkspace, WorkspaceFields};

/// Weight of a new sample in the moving averages, as 1/`AVERAGE_WEIGHT`.
const AVERAGE_WEIGHT: u64 = 8;
/// A day, in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// A compiled routing rule: conditions as sets ready to test, target resolved to a pool.
/// Testing a rule against a conversation costs O(conversation tags × log rule size) plus one
/// lookup per keyword in the message's word set, never rule size × message size.
#[derive(Clone, Debug)]
struct CompiledRule {
    rule: RoutingRule,
    channels: BTreeSet<Channel>,
    languages: BTreeSet<Language>,
    topics: BTreeSet<String>,
    tiers: BTreeSet<String>,
    tags: BTreeSet<String>,
    /// Lower-cased keywords.
    keywords: BTreeSet<String>,
    target: CompiledTarget,
}

#[derive(Clone, Debug)]
enum CompiledTarget {
    Pool { team: TeamId, pool: u32 },
    Agent(AgentId),
}

/// Where routing sends a new conversation.
struct Route {
    team: TeamId,
    pool: u32,
    rule_agent: Option<AgentId>,
}

/// The position of a conversation in the conversation map. Valid within one apply: only the
/// retention timer removes conversations (`swap_remove`), and no `Ix` is held across it. It
/// spares the hot path from hashing the same id again at every step of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ix(usize);

/// One workspace's whole state. Snapshots store it as `stored.rs` says.
#[derive(Clone, Debug)]
pub(crate) struct Workspace {
    pub(crate) id: WorkspaceId,
    pub(crate) settings: WorkspaceSettings,
    rng: SplitMix64,
    /// Next arrival sequence number.
    next_seq: u64,
    agents: DigestMap<AgentId, Agent>,
    teams: DigestMap<TeamId, Team>,
    rules: Vec<RoutingRule>,
    contacts: DigestMap<ContactId, Contact>,
    conversations: DigestMap<ConversationId, Conversation>,
    pub(crate) dedupe: Dedupe,
    compiled_rules: Vec<CompiledRule>,
    /// Teams whose queue moved during the entry being applied and that need a position-update
    /// timer; always empty between entries.
    moved_queues: Vec<TeamId>,
}

/// A workspace as the state digest sees it: its small fields whole, and each large collection
/// as its length and the sum of its records' hashes (see `crate::digest`).
#[derive(Serialize)]
pub(crate) struct WorkspaceDigest<'a> {
    id: &'a WorkspaceId,
    settings: &'a WorkspaceSettings,
    rng: &'a SplitMix64,
    next_seq: u64,
    rules: &'a [RoutingRule],
    dedupe: (u64, u64),
    agents: (u64, u64),
    teams: (u64, u64),
    contacts: (u64, u64),
    conversations: (u64, u64),
}

/// `now_ms` plus `seconds`, saturating (durations are bounded by `limits`, timestamps too).
fn after_s(now_ms: i64, seconds: u32) -> i64 {
    now_ms.saturating_add(i64::from(seconds).saturating_mul(1000))
}

/// Milliseconds from `since_ms` to `now_ms`, zero if the clock says otherwise.
fn elapsed_ms(now_ms: i64, since_ms: i64) -> u64 {
    u64::try_from(now_ms.saturating_sub(since_ms)).unwrap_or(0)
}

/// An exponential moving average moving 1/`AVERAGE_WEIGHT` of the way towards `sample`
/// (integer division truncates towards `previous`).
fn moving_average(previous: u64, sample: u64) -> u64 {
    let step = |difference: u64| difference.checked_div(AVERAGE_WEIGHT).unwrap_or(0);
    if sample >= previous {
        previous.saturating_add(step(sample.saturating_sub(previous)))
    } else {
        previous.saturating_sub(step(previous.saturating_sub(sample)))
    }
}

/// Whether `agent` may receive an automatic assignment from `team` (channel limits aside).
fn base_eligible(agent: &Agent, team: &Team) -> bool {
    let options = &team.spec.options;
    !agent.spec.auto_assign_excluded
        && options.allowed_statuses.contains(agent.status)
        && agent.open_count() < agent.spec.max_open
        && (!options.daily_limit_hard_cap || agent.received_today < agent.spec.daily_limit)
}

/// The lower-cased words of the part of a first message that keyword rules search.
fn message_words(message: &str) -> BTreeSet<String> {
    let mut end = message.len().min(KEYWORD_SCAN_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    message
        .get(..end)
        .unwrap_or_default()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Workspace {
    pub(crate) fn new(id: WorkspaceId, settings: WorkspaceSettings) -> Self {
        Self {
            rng: SplitMix64::from_seed(settings.rng_seed),
            id,
            settings,
            next_seq: 0,
            agents: DigestMap::default(),
            teams: DigestMap::default(),
            rules: Vec::new(),
            contacts: DigestMap::default(),
            conversations: DigestMap::default(),
            dedupe: Dedupe::default(),
            compiled_rules: Vec::new(),
            moved_queues: Vec::new(),
        }
    }

    /// Remembers an applied event's id for deduplication.
    pub(crate) fn remember(&mut self, event_hash: Option<u128>, now_ms: i64) {
        if let Some(hash) = event_hash {
            let window_ms = i64::from(self.settings.dedupe_window_s).saturating_mul(1000);
            let max_events = self.settings.dedupe_max_events as usize;
            self.dedupe.insert(hash, now_ms, window_ms, max_events);
        }
    }

    // ----- digest ----------------------------------------------------------------------------

    /// Entity records changed since they were last hashed (see `crate::digest`).
    pub(crate) fn digest_backlog(&self) -> usize {
        self.agents
            .backlog()
            .saturating_add(self.teams.backlog())
            .saturating_add(self.contacts.backlog())
            .saturating_add(self.conversations.backlog())
    }

    /// Hashes up to `budget` changed records; returns how many it hashed.
    pub(crate) fn settle_digest(&mut self, budget: usize) -> usize {
        let mut settled = self.teams.settle(budget);
        settled = settled.saturating_add(self.agents.settle(budget.saturating_sub(settled)));
        settled = settled.saturating_add(self.contacts.settle(budget.saturating_sub(settled)));
        settled.saturating_add(self.conversations.settle(budget.saturating_sub(settled)))
    }

    /// Records the workspace holds (entities and remembered event ids).
    pub(crate) fn record_count(&self) -> usize {
        [self.agents.len(), self.teams.len(), self.contacts.len(), self.conversations.len(), self.dedupe.len()]
            .into_iter()
            .fold(0, usize::saturating_add)
    }

    /// What the state digest covers of this workspace.
    pub(crate) fn digest(&self) -> WorkspaceDigest<'_> {
        // Every field, so that a new one cannot be left out of the digest unnoticed; the
        // skipped ones are indexes rebuilt from the others.
        let Workspace {
            id,
            settings,
            rng,
            next_seq,
            agents,
            teams,
            rules,
            contacts,
            conversations,
            dedupe,
            compiled_rules: _,
            moved_queues: _,
        } = self;
        WorkspaceDigest {
            id,
            settings,
            rng,
            next_seq: *next_seq,
            rules,
            dedupe: dedupe.digest(),
            agents: agents.digest(),
            teams: teams.digest(),
            contacts: contacts.digest(),
            conversations: conversations.digest(),
        }
    }

    // ----- lookups ---------------------------------------------------------------------------
    //
    // Lookups of what a caller named return the caller's error (`UnknownConversation`, ...);
    // lookups of what the state itself refers to return `Missing`, an internal fault.

    /// The index of a conversation the caller named.
    fn ix(&self, id: &ConversationId) -> Result<Ix, ApplyError> {
        self.conversations.get_index_of(id).map(Ix).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))
    }

    /// The index of a conversation the state refers to (a queue, an agent's open list).
    fn ix_known(&self, id: &ConversationId) -> Result<Ix, ApplyError> {
        self.conversations.get_index_of(id).map(Ix).ok_or_else(|| ApplyError::missing("conversation", id))
    }

    fn conversation(&self, ix: Ix) -> Result<&Conversation, ApplyError> {
        self.conversations.get_index(ix.0).map(|(_, c)| c).ok_or_else(|| ApplyError::missing("conversation at", ix.0))
    }

    fn conversation_mut(&mut self, ix: Ix) -> Result<&mut Conversation, ApplyError> {
        self.conversations
            .get_index_mut(ix.0)
            .map(|(_, c)| c)
            .ok_or_else(|| ApplyError::missing("conversation at", ix.0))
    }

    fn cid(&self, ix: Ix) -> Result<ConversationId, ApplyError> {
        self.conversations
            .get_index(ix.0)
            .map(|(id, _)| id.clone())
            .ok_or_else(|| ApplyError::missing("conversation at", ix.0))
    }

    fn agent(&self, id: &AgentId) -> Result<&Agent, ApplyError> {
        self.agents.get(id).ok_or_else(|| ApplyError::missing("agent", id))
    }

    /// A caller's agent id: `UnknownAgent` unless the workspace has it.
    fn known_agent(&self, id: &AgentId) -> Result<(), ApplyError> {
        if self.agents.contains_key(id) { Ok(()) } else { Err(ApplyError::UnknownAgent(id.clone())) }
    }

    fn team(&self, id: &TeamId) -> Result<&Team, ApplyError> {
        self.teams.get(id).ok_or_else(|| ApplyError::missing("team", id))
    }

    // ----- derived indexes -------------------------------------------------------------

    /// Rebuilds every index from the source-of-truth fields (after a snapshot restore).
    pub(crate) fn rebuild(&mut self) -> Result<(), ApplyError> {
        for agent in self.agents.values_mut() {
            agent.memberships.clear();
            agent.open.clear();
            agent.open_by_channel = Default::default();
            agent.personal = Default::default();
        }
        // Memberships are kept in team-id order (as upsert_team keeps them).
        for team_id in sorted_keys(&self.teams) {
            let Some(team) = self.teams.get_mut(&team_id) else {
                return Err(ApplyError::missing("team", &team_id));
            };
            team.calendar = Some(Calendar::new(&team.spec.timezone, team.spec.business_hours.as_ref())?);
            team.waiting = Default::default();
            team.after_hours.clear();
            for (position, member) in team.spec.members.iter().enumerate() {
                if let Some(agent) = self.agents.get_mut(member) {
                    agent.memberships.push((team_id.clone(), position as u32));
                }
            }
        }
        let mut queued = Vec::new();
        for (index, (id, conversation)) in self.conversations.iter().enumerate() {
            match (conversation.state, &conversation.assignee) {
                (ConversationState::Assigned, Some(agent_id)) => {
                    if let Some(agent) = self.agents.get_mut(agent_id) {
                        agent.add_open(id.clone(), conversation.channel);
                    }
                }
                (ConversationState::Queued, _) => queued.push(Ix(index)),
                _ => {}
            }
        }
        let team_ids: Vec<TeamId> = self.teams.keys().cloned().collect();
        for team_id in &team_ids {
            self.reindex_team(team_id);
        }
        for ix in queued {
            self.place(ix)?;
        }
        self.compile_rules()?;
        Ok(())
    }

    fn reindex_team(&mut self, team_id: &TeamId) {
        let Some(team) = self.teams.get_mut(team_id) else {
            return;
        };
        let strategy = team.spec.strategy;
        let members = team.spec.members.clone();
        for pool in &mut team.pools {
            pool.reset_index(strategy, members.len());
        }
        for (position, member) in members.iter().enumerate() {
            self.refresh_member(team_id, position as u32, member);
        }
    }

    /// Recomputes one member's contribution to every pool of one team.
    fn refresh_member(&mut self, team_id: &TeamId, position: u32, agent_id: &AgentId) {
        let (Some(agent), Some(team)) = (self.agents.get(agent_id), self.teams.get_mut(team_id)) else {
            return;
        };
        let eligible = base_eligible(agent, team);
        let serving = team.spec.options.allowed_statuses.contains(agent.status);
        for pool in &mut team.pools {
            let facts = pool.requirement.is_met_by(&agent.spec).then_some(MemberFacts {
                id: agent_id,
                eligible,
                serving,
                open: agent.open_count(),
                last_assigned_ms: agent.last_assigned_ms,
                daily_limit: agent.spec.daily_limit,
            });
            pool.refresh(position, facts);
        }
    }

    /// Recomputes an agent's contribution to every pool it belongs to. Call after any change
    /// to the agent's status, counters or configuration.
    fn refresh_agent(&mut self, agent_id: &AgentId) {
        // By index: this runs on every assignment, so no copy of the list is made.
        let count = self.agents.get(agent_id).map_or(0, |agent| agent.memberships.len());
        for index in 0..count {
            let Some((team_id, position)) =
                self.agents.get(agent_id).and_then(|agent| agent.memberships.get(index)).cloned()
            else {
                break;
            };
            self.refresh_member(&team_id, position, agent_id);
        }
    }

    fn compile_rules(&mut self) -> Result<(), ApplyError> {
        let mut compiled = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let target = match &rule.target {
                RuleTarget::Agent { agent } => CompiledTarget::Agent(agent.clone()),
                RuleTarget::Team { team, required_skills, required_language } => {
                    let requirement = Requirement {
                        skills: required_skills.iter().map(|(skill, level)| (skill.clone(), *level)).collect(),
                        language: required_language.clone(),
                    };
                    let team_entry = self.teams.get_mut(team).ok_or_else(|| ApplyError::UnknownTeam(team.clone()))?;
                    let pool = match team_entry.pools.iter().position(|pool| pool.requirement == requirement) {
                        Some(pool) => pool,
                        None => {
                            let mut pool = Pool::new(requirement);
                            pool.reset_index(team_entry.spec.strategy, team_entry.spec.members.len());
                            team_entry.pools.push(pool);
                            team_entry.pools.len().saturating_sub(1)
                        }
                    };
                    CompiledTarget::Pool { team: team.clone(), pool: pool as u32 }
                }
            };
            let conditions = &rule.conditions;
            compiled.push(CompiledRule {
                rule: rule.clone(),
                channels: conditions.channels.iter().copied().collect(),
                languages: conditions.languages.iter().cloned().collect(),
                topics: conditions.topics.iter().cloned().collect(),
                tiers: conditions.tiers.iter().cloned().collect(),
                tags: conditions.tags.iter().cloned().collect(),
                keywords: conditions.keywords.iter().map(|k| k.to_lowercase()).collect(),
                target,
            });
        }
        self.compiled_rules = compiled;
        Ok(())
    }
}
