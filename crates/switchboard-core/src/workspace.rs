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
use crate::effect::{AssignReason, Effect, UnassignReason};
use crate::entities::{Agent, Contact, Conversation, ConversationState, Placement, Team, Told};
use crate::error::ApplyError;
use crate::hours::Calendar;
use crate::ids::{AgentId, ContactId, ConversationId, Language, TeamId, WorkspaceId};
use crate::limits::{
    AGENTS_PER_WORKSPACE_MAX, CONTACTS_PER_WORKSPACE_MAX, CONVERSATIONS_PER_WORKSPACE_MAX, KEYWORD_SCAN_BYTES_MAX,
    POSITION_ETA_CHANGE_MS_MIN, POSITION_UPDATES_PER_TEAM_MAX, TEAMS_PER_WORKSPACE_MAX,
};
use crate::map::{Map, sorted_keys};
use crate::model::{
    AgentSpec, AgentStatus, Channel, ContactSpec, CustomerKind, RoutingRule, RuleTarget, Strategy, TeamSpec,
    WorkspaceSettings,
};
use crate::pool::{MemberFacts, Pool, Requirement};
use crate::rng::SplitMix64;
use crate::timers::{Ctx, Timer};
use crate::validate::validate_rules;
use crate::view::{AgentView, ContactView, ConversationView, QueuePosition, QueuedView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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

/// One workspace's whole state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Workspace {
    pub(crate) id: WorkspaceId,
    pub(crate) settings: WorkspaceSettings,
    rng: SplitMix64,
    /// Next arrival sequence number.
    next_seq: u64,
    #[serde(with = "crate::map::exact")]
    agents: Map<AgentId, Agent>,
    #[serde(with = "crate::map::exact")]
    teams: Map<TeamId, Team>,
    rules: Vec<RoutingRule>,
    #[serde(with = "crate::map::exact")]
    contacts: Map<ContactId, Contact>,
    #[serde(with = "crate::map::exact")]
    conversations: Map<ConversationId, Conversation>,
    pub(crate) dedupe: Dedupe,
    #[serde(skip)]
    compiled_rules: Vec<CompiledRule>,
    /// Teams whose queue moved during the entry being applied and that need a position-update
    /// timer; always empty between entries.
    #[serde(skip)]
    moved_queues: Vec<TeamId>,
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
            agents: Map::default(),
            teams: Map::default(),
            rules: Vec::new(),
            contacts: Map::default(),
            conversations: Map::default(),
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
        self.dedupe.rebuild();
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

    // ----- admin -------------------------------------------------------------------------

    pub(crate) fn configure(&mut self, settings: WorkspaceSettings) -> Result<(), ApplyError> {
        if let Some(team) = &settings.default_team
            && !self.teams.contains_key(team)
        {
            return Err(ApplyError::UnknownTeam(team.clone()));
        }
        // The seed only matters at creation; keep the running generator.
        self.settings = settings;
        Ok(())
    }

    pub(crate) fn upsert_agent(&mut self, cx: &mut Ctx<'_>, spec: AgentSpec) -> Result<(), ApplyError> {
        let id = spec.id.clone();
        match self.agents.get_mut(&id) {
            Some(agent) => agent.spec = spec,
            None => {
                if self.agents.len() >= AGENTS_PER_WORKSPACE_MAX {
                    return Err(ApplyError::Precondition(format!(
                        "workspace {} has {AGENTS_PER_WORKSPACE_MAX} agents, the most it may (limit \
                         agents_per_workspace_max); remove one first",
                        self.id
                    )));
                }
                self.agents.insert(id.clone(), Agent::new(spec));
            }
        }
        self.refresh_agent(&id);
        self.drain_agent(cx, &id)
    }

    pub(crate) fn remove_agent(&mut self, cx: &mut Ctx<'_>, agent_id: &AgentId) -> Result<(), ApplyError> {
        let Some(agent) = self.agents.get(agent_id) else {
            return Err(ApplyError::UnknownAgent(agent_id.clone()));
        };
        if let Some(rule) =
            self.rules.iter().find(|rule| matches!(&rule.target, RuleTarget::Agent { agent } if agent == agent_id))
        {
            return Err(ApplyError::Precondition(format!(
                "agent {agent_id} is the target of routing rule {}; change the rules first",
                rule.id
            )));
        }
        // Leave every team, then route the agent's open and waiting conversations again.
        let teams: Vec<TeamId> = agent.memberships.iter().map(|(team, _)| team.clone()).collect();
        for team_id in &teams {
            let mut spec = self.team(team_id)?.spec.clone();
            spec.members.retain(|member| member != agent_id);
            self.upsert_team(cx, spec)?;
        }
        let agent = self.agent(agent_id)?;
        let open: Vec<ConversationId> = agent.open.iter().cloned().collect();
        let waiting: Vec<ConversationId> = agent.personal.page(0, usize::MAX).into_iter().map(|(_, id)| id).collect();
        for conversation in &open {
            self.unassign(cx, self.ix_known(conversation)?, UnassignReason::AgentRemoved)?;
        }
        for conversation in &waiting {
            self.unplace(self.ix_known(conversation)?)?;
        }
        self.agents.swap_remove(agent_id);
        for conversation in open.iter().chain(&waiting) {
            self.dispatch_to_team(cx, self.ix_known(conversation)?)?;
        }
        Ok(())
    }

    pub(crate) fn upsert_team(&mut self, cx: &mut Ctx<'_>, spec: TeamSpec) -> Result<(), ApplyError> {
        let mut seen = BTreeSet::new();
        for member in &spec.members {
            if !self.agents.contains_key(member) {
                return Err(ApplyError::UnknownAgent(member.clone()));
            }
            if !seen.insert(member) {
                return Err(ApplyError::invalid("team.members", format!("agent {member} is listed twice")));
            }
        }
        let calendar = Calendar::new(&spec.timezone, spec.business_hours.as_ref())?;
        let team_id = spec.id.clone();
        if !self.teams.contains_key(&team_id) && self.teams.len() >= TEAMS_PER_WORKSPACE_MAX {
            return Err(ApplyError::Precondition(format!(
                "workspace {} has {TEAMS_PER_WORKSPACE_MAX} teams, the most it may (limit teams_per_workspace_max)",
                self.id
            )));
        }

        // Leave the old member list, join the new one (memberships stay in team-id order).
        if let Some(old) = self.teams.get(&team_id) {
            for member in &old.spec.members {
                if let Some(agent) = self.agents.get_mut(member) {
                    agent.memberships.retain(|(team, _)| team != &team_id);
                }
            }
        }
        for (position, member) in spec.members.iter().enumerate() {
            if let Some(agent) = self.agents.get_mut(member) {
                let at = agent.memberships.partition_point(|(team, _)| team < &team_id);
                agent.memberships.insert(at, (team_id.clone(), position as u32));
            }
        }
        let default_handle_ms = u64::from(spec.options.default_handle_time_s).saturating_mul(1000);
        let team = self.teams.entry(team_id.clone()).or_insert_with(|| Team {
            spec: spec.clone(),
            pools: vec![Pool::new(Requirement::default())],
            average_handle_ms: default_handle_ms,
            timer_version: 0,
            opening_timer_pending: false,
            positions_pending: false,
            calendar: None,
            waiting: Default::default(),
            after_hours: BTreeMap::new(),
        });
        let members = spec.members.clone();
        team.spec = spec;
        // Wrapping: versions are only compared for equality with the one a timer carries.
        team.timer_version = team.timer_version.wrapping_add(1);
        team.opening_timer_pending = false;
        team.positions_pending = false;
        let version = team.timer_version;
        let next_midnight = calendar.next_midnight(cx.now_ms);
        team.calendar = Some(calendar);
        let pools = team.pools.len();
        cx.timers.schedule(next_midnight, self.id.clone(), Timer::Midnight { team: team_id.clone(), version });
        self.reindex_team(&team_id);

        // Capacity may have appeared (new members, new statuses allowed, new strategy): for the
        // members, and for any agent a conversation of this team waits for in particular (a
        // dedicated, rule or previous agent, member or not), whose eligibility follows this
        // team's options. Walking the team's queue is O(queue), fine for an admin change.
        self.release_after_hours(cx, &team_id)?;
        let mut to_drain: BTreeSet<AgentId> = members.iter().cloned().collect();
        if let Some(team) = self.teams.get(&team_id) {
            for (_, id) in team.waiting.page(0, usize::MAX) {
                if let Some(Placement::Personal { agent, .. }) = self.conversations.get(&id).map(|c| &c.placement) {
                    to_drain.insert(agent.clone());
                }
            }
        }
        for member in &members {
            self.drain_agent(cx, member)?;
        }
        for agent in to_drain.iter().filter(|agent| !members.contains(agent)) {
            self.drain_agent(cx, agent)?;
        }
        let pools: Vec<(TeamId, u32)> = (0..pools).map(|pool| (team_id.clone(), pool as u32)).collect();
        self.drain_pools(cx, &pools)
    }

    pub(crate) fn remove_team(&mut self, team_id: &TeamId) -> Result<(), ApplyError> {
        let team = self.teams.get(team_id).ok_or_else(|| ApplyError::UnknownTeam(team_id.clone()))?;
        if self.settings.default_team.as_ref() == Some(team_id) {
            return Err(ApplyError::Precondition(format!("team {team_id} is the workspace's default team")));
        }
        if let Some(rule) =
            self.rules.iter().find(|rule| matches!(&rule.target, RuleTarget::Team { team, .. } if team == team_id))
        {
            return Err(ApplyError::Precondition(format!("team {team_id} is the target of routing rule {}", rule.id)));
        }
        // The smallest id, so that every replica words the error the same way.
        if let Some(id) = self
            .conversations
            .iter()
            .filter(|(_, c)| c.team == *team_id && c.state != ConversationState::Closed)
            .map(|(id, _)| id)
            .min()
        {
            return Err(ApplyError::Precondition(format!(
                "team {team_id} still has open conversation {id}; transfer or close it first"
            )));
        }
        // Closed conversations may still name the team: a customer who writes again is routed
        // afresh (see `customer_message`).
        for member in &team.spec.members {
            if let Some(agent) = self.agents.get_mut(member) {
                agent.memberships.retain(|(team, _)| team != team_id);
            }
        }
        self.teams.swap_remove(team_id);
        Ok(())
    }

    pub(crate) fn set_rules(&mut self, rules: Vec<RoutingRule>) -> Result<(), ApplyError> {
        validate_rules(&rules)?;
        let mut ids = BTreeSet::new();
        for rule in &rules {
            if !ids.insert(&rule.id) {
                return Err(ApplyError::invalid("rule.id", format!("rule {} is defined twice", rule.id)));
            }
            match &rule.target {
                RuleTarget::Team { team, .. } => {
                    if !self.teams.contains_key(team) {
                        return Err(ApplyError::UnknownTeam(team.clone()));
                    }
                }
                RuleTarget::Agent { agent } => {
                    let Some(agent_entry) = self.agents.get(agent) else {
                        return Err(ApplyError::UnknownAgent(agent.clone()));
                    };
                    if self.settings.default_team.is_none() && agent_entry.memberships.is_empty() {
                        return Err(ApplyError::Precondition(format!(
                            "rule {} targets agent {agent}, who is in no team, and the workspace has no default team \
                             to account the conversation to",
                            rule.id
                        )));
                    }
                }
            }
        }
        let previous = std::mem::replace(&mut self.rules, rules);
        if let Err(error) = self.compile_rules() {
            self.rules = previous;
            self.compile_rules()?;
            return Err(error);
        }
        // New pools start empty; fill them with the members that qualify.
        let team_ids: Vec<TeamId> = self.teams.keys().cloned().collect();
        for team_id in &team_ids {
            self.reindex_team(team_id);
        }
        Ok(())
    }

    pub(crate) fn upsert_contact(&mut self, spec: ContactSpec) -> Result<(), ApplyError> {
        if let Some(agent) = &spec.dedicated_agent
            && !self.agents.contains_key(agent)
        {
            return Err(ApplyError::UnknownAgent(agent.clone()));
        }
        match self.contacts.get_mut(&spec.id) {
            Some(contact) => contact.spec = spec,
            None => {
                self.check_contact_room()?;
                self.contacts.insert(spec.id.clone(), Contact { spec, last_agent: None, conversations: 0 });
            }
        }
        Ok(())
    }

    fn check_contact_room(&self) -> Result<(), ApplyError> {
        if self.contacts.len() >= CONTACTS_PER_WORKSPACE_MAX {
            return Err(ApplyError::Precondition(format!(
                "workspace {} remembers {CONTACTS_PER_WORKSPACE_MAX} contacts, the most it may (limit \
                 contacts_per_workspace_max)",
                self.id
            )));
        }
        Ok(())
    }

    // ----- presence --------------------------------------------------------------------------

    pub(crate) fn set_agent_status(
        &mut self,
        cx: &mut Ctx<'_>,
        agent_id: &AgentId,
        status: AgentStatus,
    ) -> Result<(), ApplyError> {
        let agent = self.agents.get_mut(agent_id).ok_or_else(|| ApplyError::UnknownAgent(agent_id.clone()))?;
        if agent.status == status {
            return Ok(());
        }
        agent.status = status;
        cx.effects.push(Effect::AgentStatusChanged { workspace: self.id.clone(), agent: agent_id.clone(), status });
        self.refresh_agent(agent_id);
        if status == AgentStatus::Offline {
            let to_requeue: Vec<ConversationId> = self
                .agent(agent_id)?
                .open
                .iter()
                .filter(|id| {
                    self.conversations
                        .get(*id)
                        .and_then(|c| self.teams.get(&c.team))
                        .is_some_and(|team| team.spec.options.requeue_on_offline)
                })
                .cloned()
                .collect();
            for conversation in &to_requeue {
                self.unassign(cx, self.ix_known(conversation)?, UnassignReason::AgentOffline)?;
                self.dispatch_to_team(cx, self.ix_known(conversation)?)?;
            }
        }
        self.drain_agent(cx, agent_id)
    }

    // ----- conversations ----------------------------------------------------------------------

    fn rule_matches(
        rule: &CompiledRule,
        open: &OpenConversation,
        contact: Option<&Contact>,
        words: &mut Option<BTreeSet<String>>,
    ) -> bool {
        let returning = contact.is_some_and(|c| c.conversations > 0);
        (rule.channels.is_empty() || rule.channels.contains(&open.channel))
            && (rule.languages.is_empty() || open.language.as_ref().is_some_and(|l| rule.languages.contains(l)))
            && (rule.topics.is_empty() || open.topic.as_ref().is_some_and(|t| rule.topics.contains(t)))
            && (rule.tiers.is_empty()
                || contact.and_then(|c| c.spec.tier.as_ref()).is_some_and(|t| rule.tiers.contains(t)))
            && (rule.tags.is_empty() || open.tags.iter().any(|t| rule.tags.contains(t)))
            && match rule.rule.conditions.customer {
                CustomerKind::Any => true,
                CustomerKind::New => !returning,
                CustomerKind::Returning => returning,
            }
            && (rule.keywords.is_empty() || {
                // The message is split into words once per conversation, and only if some
                // rule that got this far has keywords.
                let words = words.get_or_insert_with(|| message_words(&open.first_message));
                rule.keywords.iter().any(|keyword| words.contains(keyword))
            })
    }

    fn route(&self, open: &OpenConversation) -> Result<Route, ApplyError> {
        let contact = self.contacts.get(&open.contact);
        let mut words = None;
        for rule in &self.compiled_rules {
            if !Self::rule_matches(rule, open, contact, &mut words) {
                continue;
            }
            return Ok(match &rule.target {
                CompiledTarget::Pool { team, pool } => Route { team: team.clone(), pool: *pool, rule_agent: None },
                CompiledTarget::Agent(agent) => {
                    let team = self
                        .settings
                        .default_team
                        .clone()
                        .or_else(|| self.agents.get(agent).and_then(|a| a.memberships.first().map(|(t, _)| t.clone())))
                        .ok_or_else(|| {
                            ApplyError::Precondition(format!("rule {} has no team to account to", rule.rule.id))
                        })?;
                    Route { team, pool: 0, rule_agent: Some(agent.clone()) }
                }
            });
        }
        match &self.settings.default_team {
            Some(team) => Ok(Route { team: team.clone(), pool: 0, rule_agent: None }),
            None => Err(ApplyError::Precondition(
                "no routing rule matched and the workspace has no default_team".to_string(),
            )),
        }
    }

    /// Opens a conversation. Takes the event by reference: the first message and tags are only
    /// read by rules, never stored, so they are not copied.
    pub(crate) fn open_conversation(&mut self, cx: &mut Ctx<'_>, open: &OpenConversation) -> Result<(), ApplyError> {
        if let Some(existing) = self.conversations.get(&open.conversation) {
            if existing.state != ConversationState::Closed {
                return Err(ApplyError::AlreadyOpen(open.conversation.clone()));
            }
            // A gateway that opens a closed conversation again means the customer is back.
            return self.customer_message(cx, &open.conversation);
        }
        let route = self.route(open)?;
        let welcome = self.team(&route.team)?.spec.templates.welcome.clone();
        if !self.contacts.contains_key(&open.contact) {
            self.check_contact_room()?;
        }
        if self.conversations.len() >= CONVERSATIONS_PER_WORKSPACE_MAX {
            return Err(ApplyError::Precondition(format!(
                "workspace {} holds {CONVERSATIONS_PER_WORKSPACE_MAX} conversations, the most it may (limit \
                 conversations_per_workspace_max); close conversations or shorten closed_retention_s",
                self.id
            )));
        }
        let contact = self.contacts.entry(open.contact.clone()).or_insert_with(|| Contact {
            spec: ContactSpec { id: open.contact.clone(), tier: None, dedicated_agent: None },
            last_agent: None,
            conversations: 0,
        });
        contact.conversations = contact.conversations.saturating_add(1);
        let seq = self.take_seq();
        let id = open.conversation.clone();
        let (index, _) = self.conversations.insert_full(
            id.clone(),
            Conversation {
                contact: open.contact.clone(),
                channel: open.channel,
                language: open.language.clone(),
                topic: open.topic.clone(),
                priority: open.priority,
                state: ConversationState::Queued,
                team: route.team.clone(),
                pool: route.pool,
                assignee: None,
                last_agent: None,
                placement: Placement::None,
                seq,
                opened_ms: cx.now_ms,
                assigned_ms: 0,
                closed_ms: 0,
                replied: false,
                generation: 0,
                told: None,
            },
        );
        if let Some(message) = welcome {
            cx.effects.push(Effect::Welcome {
                workspace: self.id.clone(),
                conversation: id,
                team: route.team,
                message,
            });
        }
        self.admit(cx, Ix(index), route.rule_agent)
    }

    /// The next arrival sequence number. 2^64 arrivals cannot happen; saturating keeps the
    /// order of everything before.
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        seq
    }

    /// Checks business hours and the activation delay, then routes.
    fn admit(&mut self, cx: &mut Ctx<'_>, ix: Ix, rule_agent: Option<AgentId>) -> Result<(), ApplyError> {
        let team_id = self.conversation(ix)?.team.clone();
        let team = self.team(&team_id)?;
        let calendar = team.calendar.as_ref();
        if calendar.is_some_and(|c| !c.is_open(cx.now_ms)) {
            let opens_at_ms = calendar.and_then(|c| c.next_open(cx.now_ms));
            let message = team.spec.templates.away.clone();
            self.set_placement(ix, Placement::AfterHours)?;
            cx.effects.push(Effect::OutsideHours {
                workspace: self.id.clone(),
                conversation: self.cid(ix)?,
                team: team_id.clone(),
                opens_at_ms,
                message,
            });
            self.schedule_opening(cx, &team_id);
            return Ok(());
        }
        let delay_s = team.spec.options.assign_delay_s;
        if delay_s > 0 {
            self.set_placement(ix, Placement::Delayed)?;
            let generation = self.conversation(ix)?.generation;
            cx.timers.schedule(
                after_s(cx.now_ms, delay_s),
                self.id.clone(),
                Timer::Activate { conversation: self.cid(ix)?, generation },
            );
            return Ok(());
        }
        self.dispatch(cx, ix, rule_agent)
    }

    fn schedule_opening(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId) {
        let Some(team) = self.teams.get_mut(team_id) else {
            return;
        };
        if team.opening_timer_pending {
            return;
        }
        if let Some(at) = team.calendar.as_ref().and_then(|c| c.next_open(cx.now_ms)) {
            team.opening_timer_pending = true;
            cx.timers.schedule(
                at,
                self.id.clone(),
                Timer::Opening { team: team_id.clone(), version: team.timer_version },
            );
        }
    }

    /// Routes a conversation that is ready for an agent: dedicated agent, returning
    /// customer's agent, rule's agent, then the team's strategy, else the queue.
    fn dispatch(&mut self, cx: &mut Ctx<'_>, ix: Ix, rule_agent: Option<AgentId>) -> Result<(), ApplyError> {
        let conversation = self.conversation(ix)?;
        let contact = self.contacts.get(&conversation.contact);
        if let Some(dedicated) = contact.and_then(|c| c.spec.dedicated_agent.clone())
            && self.agents.contains_key(&dedicated)
        {
            if self.can_take(&dedicated, ix, AssignReason::Dedicated) {
                return self.assign(cx, ix, &dedicated, AssignReason::Dedicated);
            }
            // Waiting makes sense only for an agent who could take it one day: one with the
            // skills and language the routing asked for.
            if self.settings.vip_waits_for_dedicated_agent && self.could_serve(&dedicated, ix, AssignReason::Dedicated)
            {
                return self.enqueue_personal(cx, ix, &dedicated, AssignReason::Dedicated);
            }
        }
        let conversation = self.conversation(ix)?;
        let keeps_returning = self.team(&conversation.team)?.spec.options.keep_returning_customers;
        if keeps_returning
            && let Some((previous, _)) = self.contacts.get(&conversation.contact).and_then(|c| c.last_agent.clone())
            && self.can_take(&previous, ix, AssignReason::Returning)
        {
            return self.assign(cx, ix, &previous, AssignReason::Returning);
        }
        if let Some(agent) = rule_agent {
            return if self.can_take(&agent, ix, AssignReason::RuleAgent) {
                self.assign(cx, ix, &agent, AssignReason::RuleAgent)
            } else {
                self.enqueue_personal(cx, ix, &agent, AssignReason::RuleAgent)
            };
        }
        self.dispatch_to_team(cx, ix)
    }

    /// The team strategy, else the pool's queue.
    fn dispatch_to_team(&mut self, cx: &mut Ctx<'_>, ix: Ix) -> Result<(), ApplyError> {
        let (team, pool) = {
            let c = self.conversation(ix)?;
            (c.team.clone(), c.pool)
        };
        match self.pick(&team, pool, ix, None)? {
            Some(agent) => {
                let strategy = self.team(&team)?.spec.strategy;
                self.assign(cx, ix, &agent, AssignReason::Strategy(strategy))
            }
            None => self.enqueue_pool(cx, ix),
        }
    }

    /// Whether `agent_id` may take conversation `ix` automatically now, for `reason`. Every
    /// path (dedicated, returning, reopened, a waiting line) applies what the strategy applies:
    /// a member of the conversation's team, with the skills and language its pool requires,
    /// eligible by the team's options (status, `max_open`, hard cap, not excluded), with room
    /// on the channel. An agent named explicitly — by a routing rule or as a contact's
    /// dedicated agent — need not be a member: the configuration chose that person.
    fn can_take(&self, agent_id: &AgentId, ix: Ix, reason: AssignReason) -> bool {
        let Ok(conversation) = self.conversation(ix) else {
            return false;
        };
        match (self.agents.get(agent_id), self.teams.get(&conversation.team)) {
            (Some(agent), Some(team)) => {
                self.serves(agent, conversation, reason)
                    && base_eligible(agent, team)
                    && agent.has_room_on(conversation.channel)
            }
            _ => false,
        }
    }

    /// Whether `agent` could take the conversation for `reason` once they have room and the
    /// right status: a member of its team (unless named explicitly) meeting its pool's
    /// requirement (skills, language).
    fn serves(&self, agent: &Agent, conversation: &Conversation, reason: AssignReason) -> bool {
        let named = matches!(reason, AssignReason::RuleAgent | AssignReason::Dedicated);
        let member = named || agent.memberships.binary_search_by(|(team, _)| team.cmp(&conversation.team)).is_ok();
        let qualified = self
            .teams
            .get(&conversation.team)
            .and_then(|team| team.pools.get(conversation.pool as usize))
            .is_none_or(|pool| pool.requirement.is_met_by(&agent.spec));
        member && qualified
    }

    fn could_serve(&self, agent_id: &AgentId, ix: Ix, reason: AssignReason) -> bool {
        match (self.agents.get(agent_id), self.conversation(ix)) {
            (Some(agent), Ok(conversation)) => self.serves(agent, conversation, reason),
            _ => false,
        }
    }

    /// Asks the pool's strategy for an agent for conversation `ix`, skipping `exclude`.
    fn pick(
        &mut self,
        team_id: &TeamId,
        pool: u32,
        ix: Ix,
        exclude: Option<&AgentId>,
    ) -> Result<Option<AgentId>, ApplyError> {
        let channel = self.conversation(ix)?.channel;
        let Self { agents, teams, rng, .. } = self;
        let Team { spec, pools, .. } = teams.get_mut(team_id).ok_or_else(|| ApplyError::missing("team", team_id))?;
        let pool =
            pools.get_mut(pool as usize).ok_or_else(|| ApplyError::missing("pool", format!("{team_id}/{pool}")))?;
        if !pool.has_eligible() {
            return Ok(None);
        }
        let cursor = pool.cursor.as_ref().and_then(|last| {
            agents.get(last)?.memberships.iter().find(|(team, _)| team == team_id).map(|(_, position)| *position)
        });
        let members = &spec.members;
        let picked = pool.pick(cursor, rng, |position| {
            members.get(position as usize).is_some_and(|member| {
                Some(member) != exclude && agents.get(member).is_some_and(|agent| agent.has_room_on(channel))
            })
        });
        let Some(agent) = picked.and_then(|position| members.get(position as usize)).cloned() else {
            return Ok(None);
        };
        if spec.strategy == Strategy::RoundRobin {
            pool.cursor = Some(agent.clone());
        }
        Ok(Some(agent))
    }

    fn expected_response_ms(&self, agent: &Agent, team: &TeamId) -> u64 {
        agent.average_response_ms.unwrap_or_else(|| {
            self.teams
                .get(team)
                .map_or(120_000, |t| u64::from(t.spec.options.default_response_time_s).saturating_mul(1000))
        })
    }

    fn assign(&mut self, cx: &mut Ctx<'_>, ix: Ix, agent_id: &AgentId, reason: AssignReason) -> Result<(), ApplyError> {
        // Both looked up before anything changes.
        self.agent(agent_id)?;
        let id = self.cid(ix)?;
        let conversation = self.conversation_mut(ix)?;
        conversation.state = ConversationState::Assigned;
        conversation.assignee = Some(agent_id.clone());
        conversation.last_agent = Some(agent_id.clone());
        conversation.placement = Placement::None;
        conversation.assigned_ms = cx.now_ms;
        conversation.replied = false;
        // Generations are only compared for equality with the one a timer carries.
        conversation.generation = conversation.generation.wrapping_add(1);
        let (channel, team, contact_id, generation) =
            (conversation.channel, conversation.team.clone(), conversation.contact.clone(), conversation.generation);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.add_open(id.clone(), channel);
            agent.received_today = agent.received_today.saturating_add(1);
            agent.last_assigned_ms = cx.now_ms;
        }
        self.refresh_agent(agent_id);
        if let Some(contact) = self.contacts.get_mut(&contact_id) {
            contact.last_agent = Some((agent_id.clone(), team.clone()));
        }
        let timeout_s = self.team(&team)?.spec.options.no_reply_timeout_s;
        if timeout_s > 0 {
            cx.timers.schedule(
                after_s(cx.now_ms, timeout_s),
                self.id.clone(),
                Timer::NoReply { conversation: id.clone(), generation },
            );
        }
        let agent = self.agent(agent_id)?;
        cx.effects.push(Effect::Assigned {
            workspace: self.id.clone(),
            conversation: id,
            contact: contact_id,
            channel,
            expected_response_ms: self.expected_response_ms(agent, &team),
            team,
            agent: agent_id.clone(),
            agent_name: agent.spec.display_name.as_str().into(),
            reason,
        });
        Ok(())
    }

    /// Takes an assigned conversation away from its agent; the caller routes it again and
    /// then drains the agent.
    fn unassign(&mut self, cx: &mut Ctx<'_>, ix: Ix, reason: UnassignReason) -> Result<Option<AgentId>, ApplyError> {
        let id = self.cid(ix)?;
        let conversation = self.conversation_mut(ix)?;
        let Some(agent_id) = conversation.assignee.take() else {
            return Ok(None);
        };
        conversation.state = ConversationState::Queued;
        conversation.generation = conversation.generation.wrapping_add(1);
        let channel = conversation.channel;
        let team = conversation.team.clone();
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.remove_open(&id, channel);
        }
        self.refresh_agent(&agent_id);
        cx.effects.push(Effect::Unassigned {
            workspace: self.id.clone(),
            conversation: id,
            team,
            agent: agent_id.clone(),
            reason,
        });
        Ok(Some(agent_id))
    }

    fn set_placement(&mut self, ix: Ix, placement: Placement) -> Result<(), ApplyError> {
        self.conversation_mut(ix)?.placement = placement;
        self.place(ix)?;
        // Somebody queued ahead of others (a higher priority) moves them back.
        let conversation = self.conversation(ix)?;
        let key = conversation.queue_key();
        let team_id = conversation.team.clone();
        if let Some(team) = self.teams.get(&team_id)
            && team.wants_position_updates()
            && team.waiting.rank(&key).saturating_add(1) < team.waiting.len()
        {
            self.queue_moved(&team_id);
        }
        Ok(())
    }

    /// Notes that the queue of `team_id` moved, so that its waiting customers are told their
    /// new positions once the team's update interval has passed (one timer per team at a time).
    fn queue_moved(&mut self, team_id: &TeamId) {
        let Some(team) = self.teams.get_mut(team_id) else {
            return;
        };
        if team.spec.options.position_update_interval_s == 0 || team.positions_pending {
            return;
        }
        team.positions_pending = true;
        self.moved_queues.push(team_id.clone());
    }

    /// Sets the position-update timers of the teams whose queue moved in this entry. Called
    /// once the entry's command or timer is done.
    pub(crate) fn schedule_position_updates(&mut self, cx: &mut Ctx<'_>) {
        for team_id in std::mem::take(&mut self.moved_queues) {
            let Some(team) = self.teams.get(&team_id) else {
                continue;
            };
            let at = after_s(cx.now_ms, team.spec.options.position_update_interval_s);
            let version = team.timer_version;
            cx.timers.schedule(at, self.id.clone(), Timer::Positions { team: team_id, version });
        }
    }

    /// Tells the waiting customers of `team_id` whose position changed, or whose ETA changed
    /// by [`POSITION_ETA_CHANGE_MS_MIN`] or more, where they now are: the first
    /// [`POSITION_UPDATES_PER_TEAM_MAX`] of the queue, each at most once per interval (one told
    /// too recently is told when the interval since has passed).
    fn update_positions(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId) -> Result<(), ApplyError> {
        let Some(team) = self.teams.get(team_id) else {
            return Ok(());
        };
        let interval_ms = i64::from(team.spec.options.position_update_interval_s).saturating_mul(1000);
        if interval_ms == 0 {
            return Ok(());
        }
        let mut later: Option<i64> = None;
        for (_, id) in team.waiting.page(0, POSITION_UPDATES_PER_TEAM_MAX) {
            let ix = self.ix_known(&id)?;
            let Some(told) = self.conversation(ix)?.told else {
                continue;
            };
            let Some(now) = self.position_of(ix)? else {
                continue;
            };
            let eta_moved = match (told.eta_ms, now.eta_ms) {
                (Some(before), Some(after)) => before.abs_diff(after) >= POSITION_ETA_CHANGE_MS_MIN,
                (before, after) => before.is_some() != after.is_some(),
            };
            if told.position == now.position && !eta_moved {
                continue;
            }
            let due = told.at_ms.saturating_add(interval_ms);
            if due > cx.now_ms {
                later = Some(later.map_or(due, |at| at.min(due)));
                continue;
            }
            let conversation = self.conversation_mut(ix)?;
            conversation.told = Some(Told { position: now.position, eta_ms: now.eta_ms, at_ms: cx.now_ms });
            cx.effects.push(Effect::QueuePosition {
                workspace: self.id.clone(),
                conversation: id,
                team: team_id.clone(),
                position: now.position,
                eta_ms: now.eta_ms,
                waiting_for: now.waiting_for,
            });
        }
        if let Some(at) = later
            && let Some(team) = self.teams.get_mut(team_id)
        {
            team.positions_pending = true;
            let version = team.timer_version;
            cx.timers.schedule(at, self.id.clone(), Timer::Positions { team: team_id.clone(), version });
        }
        Ok(())
    }

    /// Inserts a queued conversation into the structures its placement names.
    fn place(&mut self, ix: Ix) -> Result<(), ApplyError> {
        let Some((id, conversation)) = self.conversations.get_index(ix.0) else {
            return Err(ApplyError::missing("conversation at", ix.0));
        };
        let key = conversation.queue_key();
        let Some(team) = self.teams.get_mut(&conversation.team) else {
            return Err(ApplyError::missing("team", &conversation.team));
        };
        match &conversation.placement {
            Placement::None => return Ok(()),
            Placement::Pool => {
                let Some(pool) = team.pools.get_mut(conversation.pool as usize) else {
                    return Err(ApplyError::missing("pool", format!("{}/{}", conversation.team, conversation.pool)));
                };
                pool.enqueue(conversation.channel, key, id.clone());
            }
            Placement::Personal { agent, .. } => {
                let Some(agent) = self.agents.get_mut(agent) else {
                    return Err(ApplyError::missing("agent", agent));
                };
                agent.personal.insert(key, id.clone());
            }
            Placement::Delayed => {}
            Placement::AfterHours => {
                team.after_hours.insert(key, id.clone());
            }
        }
        team.waiting.insert(key, id.clone());
        Ok(())
    }

    /// Removes a queued conversation from every queue structure. What is already gone (a
    /// removed team's queue) is simply not there to remove.
    fn unplace(&mut self, ix: Ix) -> Result<(), ApplyError> {
        let Some((_, conversation)) = self.conversations.get_index_mut(ix.0) else {
            return Err(ApplyError::missing("conversation at", ix.0));
        };
        let placement = std::mem::replace(&mut conversation.placement, Placement::None);
        conversation.told = None;
        let key = conversation.queue_key();
        let Some(team) = self.teams.get_mut(&conversation.team) else {
            return Ok(());
        };
        match placement {
            Placement::None => return Ok(()),
            Placement::Pool => {
                if let Some(pool) = team.pools.get_mut(conversation.pool as usize) {
                    pool.dequeue(conversation.channel, &key);
                }
            }
            Placement::Personal { agent, .. } => {
                if let Some(agent) = self.agents.get_mut(&agent) {
                    agent.personal.remove(&key);
                }
            }
            Placement::Delayed => {}
            Placement::AfterHours => {
                team.after_hours.remove(&key);
            }
        }
        // Only teams that tell positions pay for the rank.
        let behind = team.wants_position_updates() && team.waiting.rank(&key).saturating_add(1) < team.waiting.len();
        team.waiting.remove(&key);
        if behind {
            let team_id = team.spec.id.clone();
            self.queue_moved(&team_id);
        }
        Ok(())
    }

    fn enqueue_pool(&mut self, cx: &mut Ctx<'_>, ix: Ix) -> Result<(), ApplyError> {
        self.set_placement(ix, Placement::Pool)?;
        self.push_queued(cx, ix, None)
    }

    fn enqueue_personal(
        &mut self,
        cx: &mut Ctx<'_>,
        ix: Ix,
        agent: &AgentId,
        reason: AssignReason,
    ) -> Result<(), ApplyError> {
        self.set_placement(ix, Placement::Personal { agent: agent.clone(), reason })?;
        self.push_queued(cx, ix, Some(agent.clone()))
    }

    /// The overcapacity effect of a conversation that was just queued.
    fn push_queued(&mut self, cx: &mut Ctx<'_>, ix: Ix, waiting_for: Option<AgentId>) -> Result<(), ApplyError> {
        let position = self.position_of(ix)?.unwrap_or(QueuePosition { position: 0, eta_ms: None, waiting_for: None });
        let conversation = self.conversation(ix)?;
        let message = self.team(&conversation.team)?.spec.templates.overcapacity.clone();
        let told = Told { position: position.position, eta_ms: position.eta_ms, at_ms: cx.now_ms };
        self.conversation_mut(ix)?.told = Some(told);
        let conversation = self.conversation(ix)?;
        cx.effects.push(Effect::Queued {
            workspace: self.id.clone(),
            conversation: self.cid(ix)?,
            team: conversation.team.clone(),
            position: position.position,
            eta_ms: position.eta_ms,
            waiting_for,
            message,
        });
        Ok(())
    }

    /// Assigns what an agent's new capacity allows: first the conversations waiting for this
    /// agent in particular, then the queues of every pool the agent serves.
    fn drain_agent(&mut self, cx: &mut Ctx<'_>, agent_id: &AgentId) -> Result<(), ApplyError> {
        // The agent's own line holds conversations of several teams, whose options differ
        // (allowed statuses, hard caps) and channels, whose limits differ: one the agent cannot
        // take must not block the ones behind it. Skipped entries are counted, so each step is
        // one O(log n) rank lookup; the walk ends at once when the agent has no room at all.
        let mut skipped = 0usize;
        loop {
            let Some(agent) = self.agents.get(agent_id) else {
                return Ok(());
            };
            if agent.open_count() >= agent.spec.max_open || agent.spec.auto_assign_excluded {
                break;
            }
            let Some((_, head)) = agent.personal.page(skipped, 1).into_iter().next() else {
                break;
            };
            let ix = self.ix_known(&head)?;
            let reason = match &self.conversation(ix)?.placement {
                Placement::Personal { reason, .. } => *reason,
                _ => AssignReason::Manual,
            };
            if !self.can_take(agent_id, ix, reason) {
                skipped = skipped.saturating_add(1);
                continue;
            }
            self.unplace(ix)?;
            self.assign(cx, ix, agent_id, reason)?;
        }
        // Then the queues of every pool of every team the agent serves, merged.
        let mut pools = Vec::new();
        for (team_id, _) in &self.agent(agent_id)?.memberships {
            let count = self.teams.get(team_id).map_or(0, |t| t.pools.len());
            pools.extend((0..count).map(|pool| (team_id.clone(), pool as u32)));
        }
        self.drain_pools(cx, &pools)
    }

    /// Assigns the waiting conversations of `pools` while anyone can take them, best first
    /// across all of them: highest priority, then earliest arrival (sequence numbers are
    /// workspace-wide, so arrivals in different teams compare). An agent in several teams
    /// therefore serves the one that has waited longest, and no team starves behind another.
    /// Each step looks at the channel heads of the given pools only: O(pools × channels), the
    /// pools being those of one agent's few teams or of one team.
    fn drain_pools(&mut self, cx: &mut Ctx<'_>, pools: &[(TeamId, u32)]) -> Result<(), ApplyError> {
        loop {
            let mut candidates = Vec::new();
            for (team_id, pool_index) in pools {
                let Some(pool) = self.teams.get(team_id).and_then(|t| t.pools.get(*pool_index as usize)) else {
                    continue;
                };
                if pool.queued() == 0 || !pool.has_eligible() {
                    continue;
                }
                candidates.extend(pool.heads().into_iter().map(|(key, id)| (key, team_id.clone(), *pool_index, id)));
            }
            candidates.sort_unstable_by_key(|candidate| candidate.0);
            let mut placed = false;
            for (_, team_id, pool_index, id) in candidates {
                let ix = self.ix_known(&id)?;
                if let Some(agent) = self.pick(&team_id, pool_index, ix, None)? {
                    self.unplace(ix)?;
                    let strategy = self.team(&team_id)?.spec.strategy;
                    self.assign(cx, ix, &agent, AssignReason::Strategy(strategy))?;
                    placed = true;
                    break;
                }
            }
            if !placed {
                return Ok(());
            }
        }
    }

    /// Routes conversations that waited for business hours, if the team is open now.
    fn release_after_hours(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId) -> Result<(), ApplyError> {
        let Some(team) = self.teams.get(team_id) else {
            return Ok(());
        };
        if team.after_hours.is_empty() {
            return Ok(());
        }
        if !team.calendar.as_ref().is_none_or(|c| c.is_open(cx.now_ms)) {
            self.schedule_opening(cx, team_id);
            return Ok(());
        }
        let waiting: Vec<ConversationId> = team.after_hours.values().cloned().collect();
        for id in &waiting {
            let ix = self.ix_known(id)?;
            self.unplace(ix)?;
            self.admit(cx, ix, None)?;
        }
        Ok(())
    }

    /// Where a closed conversation goes when its customer writes again: its team and pool if
    /// they still exist; else the routing rules (on what the conversation remembers: channel,
    /// language, topic, contact) and the default team, as for a new conversation.
    fn reopen_route(&self, id: &ConversationId, conversation: &Conversation) -> Result<(TeamId, u32), ApplyError> {
        if let Some(team) = self.teams.get(&conversation.team) {
            let pool = if (conversation.pool as usize) < team.pools.len() { conversation.pool } else { 0 };
            return Ok((conversation.team.clone(), pool));
        }
        let open = OpenConversation {
            conversation: id.clone(),
            contact: conversation.contact.clone(),
            channel: conversation.channel,
            language: conversation.language.clone(),
            topic: conversation.topic.clone(),
            tags: Vec::new(),
            first_message: String::new(),
            priority: conversation.priority,
        };
        let route = self.route(&open).map_err(|error| {
            ApplyError::Precondition(format!(
                "conversation {id} belonged to team {}, which was removed, and cannot be routed again: {error}",
                conversation.team
            ))
        })?;
        Ok((route.team, route.pool))
    }

    pub(crate) fn customer_message(&mut self, cx: &mut Ctx<'_>, id: &ConversationId) -> Result<(), ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        if conversation.state != ConversationState::Closed {
            return Ok(());
        }
        // Everything that can refuse comes first.
        let (team_id, pool) = self.reopen_route(id, conversation)?;
        let previous = conversation.last_agent.clone().filter(|agent| self.agents.contains_key(agent));
        let team = self.team(&team_id)?;
        let closed_now = team.calendar.as_ref().is_some_and(|c| !c.is_open(cx.now_ms));
        let reassign = team.spec.options.reassign_reopened_if_unavailable;

        // Reopen: a new arrival in the queue order.
        let seq = self.take_seq();
        let conversation = self.conversation_mut(ix)?;
        conversation.state = ConversationState::Queued;
        conversation.generation = conversation.generation.wrapping_add(1);
        conversation.seq = seq;
        conversation.opened_ms = cx.now_ms;
        conversation.team = team_id.clone();
        conversation.pool = pool;
        cx.effects.push(Effect::Reopened { workspace: self.id.clone(), conversation: id.clone(), team: team_id });
        if closed_now {
            return self.admit(cx, ix, None);
        }
        // Back to the previous agent if they may take it; else, unless the team reassigns,
        // wait for them, but only if they still serve this team (an agent who left it, or
        // lacks what its routing requires, never will).
        match previous {
            Some(agent) if self.can_take(&agent, ix, AssignReason::Reopened) => {
                self.assign(cx, ix, &agent, AssignReason::Reopened)
            }
            Some(agent) if !reassign && self.could_serve(&agent, ix, AssignReason::Reopened) => {
                self.enqueue_personal(cx, ix, &agent, AssignReason::Reopened)
            }
            _ => self.dispatch_to_team(cx, ix),
        }
    }

    pub(crate) fn agent_replied(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        agent_id: &AgentId,
    ) -> Result<(), ApplyError> {
        if !self.agents.contains_key(agent_id) {
            return Err(ApplyError::UnknownAgent(agent_id.clone()));
        }
        let now_ms = cx.now_ms;
        let conversation = self.conversations.get_mut(id).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))?;
        if conversation.state != ConversationState::Assigned
            || conversation.assignee.as_ref() != Some(agent_id)
            || conversation.replied
        {
            return Ok(());
        }
        conversation.replied = true;
        let response_ms = elapsed_ms(now_ms, conversation.assigned_ms);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.average_response_ms = Some(match agent.average_response_ms {
                None => response_ms,
                Some(previous) => moving_average(previous, response_ms),
            });
        }
        Ok(())
    }

    pub(crate) fn close(&mut self, cx: &mut Ctx<'_>, id: &ConversationId) -> Result<(), ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        let mut freed = None;
        match conversation.state {
            ConversationState::Closed => return Err(ApplyError::Closed(id.clone())),
            ConversationState::Queued => self.unplace(ix)?,
            ConversationState::Assigned => {
                let handle_ms = elapsed_ms(cx.now_ms, conversation.assigned_ms);
                let team_id = conversation.team.clone();
                if let Some(team) = self.teams.get_mut(&team_id) {
                    team.average_handle_ms = moving_average(team.average_handle_ms, handle_ms);
                }
                let conversation = self.conversation_mut(ix)?;
                let channel = conversation.channel;
                if let Some(agent_id) = conversation.assignee.take() {
                    if let Some(agent) = self.agents.get_mut(&agent_id) {
                        agent.remove_open(id, channel);
                    }
                    self.refresh_agent(&agent_id);
                    freed = Some(agent_id);
                }
            }
        }
        let conversation = self.conversation_mut(ix)?;
        conversation.state = ConversationState::Closed;
        conversation.closed_ms = cx.now_ms;
        conversation.generation = conversation.generation.wrapping_add(1);
        let generation = conversation.generation;
        let team = conversation.team.clone();
        cx.effects.push(Effect::Closed {
            workspace: self.id.clone(),
            conversation: id.clone(),
            team,
            agent: freed.clone(),
        });
        cx.timers.schedule(
            after_s(cx.now_ms, self.settings.closed_retention_s),
            self.id.clone(),
            Timer::Forget { conversation: id.clone(), generation },
        );
        match freed {
            Some(agent) => self.drain_agent(cx, &agent),
            None => Ok(()),
        }
    }

    fn queued_conversation(&self, id: &ConversationId) -> Result<Ix, ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        if conversation.state != ConversationState::Queued {
            return Err(ApplyError::NotClaimable { conversation: id.clone(), state: conversation.state.label() });
        }
        Ok(ix)
    }

    pub(crate) fn claim(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        agent_id: &AgentId,
    ) -> Result<(), ApplyError> {
        let agent = self.agents.get(agent_id).ok_or_else(|| ApplyError::UnknownAgent(agent_id.clone()))?;
        let ix = self.queued_conversation(id)?;
        // Self-pick is for the team's members, and for the agent a conversation waits for in
        // particular (a dedicated or named agent); supervisors use Assign.
        let conversation = self.conversation(ix)?;
        let waits_for_this_agent =
            matches!(&conversation.placement, Placement::Personal { agent, .. } if agent == agent_id);
        let member = agent.memberships.binary_search_by(|(team, _)| team.cmp(&conversation.team)).is_ok();
        if !member && !waits_for_this_agent {
            return Err(ApplyError::Precondition(format!(
                "agent {agent_id} is not a member of team {}, whose conversation {id} is; only its members can \
                 pick it (a supervisor can Assign it)",
                conversation.team
            )));
        }
        if agent.open_count() >= agent.spec.max_open {
            return Err(ApplyError::AgentAtCapacity { agent: agent_id.clone(), max_open: agent.spec.max_open });
        }
        self.unplace(ix)?;
        self.assign(cx, ix, agent_id, AssignReason::Claimed)
    }

    pub(crate) fn assign_manually(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        agent_id: &AgentId,
    ) -> Result<(), ApplyError> {
        if !self.agents.contains_key(agent_id) {
            return Err(ApplyError::UnknownAgent(agent_id.clone()));
        }
        let ix = self.queued_conversation(id)?;
        self.unplace(ix)?;
        self.assign(cx, ix, agent_id, AssignReason::Manual)
    }

    pub(crate) fn transfer(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        target: TransferTarget,
    ) -> Result<(), ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        match &target {
            TransferTarget::Agent(agent) => {
                if !self.agents.contains_key(agent) {
                    return Err(ApplyError::UnknownAgent(agent.clone()));
                }
                if conversation.assignee.as_ref() == Some(agent) {
                    return Err(ApplyError::Precondition(format!("conversation {id} is already assigned to {agent}")));
                }
            }
            TransferTarget::Team(team) => {
                if !self.teams.contains_key(team) {
                    return Err(ApplyError::UnknownTeam(team.clone()));
                }
            }
        }
        let freed = match conversation.state {
            ConversationState::Closed => return Err(ApplyError::Closed(id.clone())),
            ConversationState::Queued => {
                self.unplace(ix)?;
                None
            }
            ConversationState::Assigned => self.unassign(cx, ix, UnassignReason::Transfer)?,
        };
        match target {
            TransferTarget::Agent(agent) => self.assign(cx, ix, &agent, AssignReason::Transfer)?,
            TransferTarget::Team(team) => {
                let conversation = self.conversation_mut(ix)?;
                conversation.team = team;
                conversation.pool = 0;
                self.dispatch_to_team(cx, ix)?;
            }
        }
        match freed {
            Some(agent) => self.drain_agent(cx, &agent),
            None => Ok(()),
        }
    }

    // ----- timers ------------------------------------------------------------------------------

    pub(crate) fn fire(&mut self, cx: &mut Ctx<'_>, timer: Timer) -> Result<(), ApplyError> {
        match timer {
            Timer::Activate { conversation, generation } => {
                let Some(ix) = self.conversations.get_index_of(&conversation).map(Ix) else {
                    return Ok(());
                };
                let c = self.conversation(ix)?;
                if c.generation != generation || c.placement != Placement::Delayed {
                    return Ok(());
                }
                self.unplace(ix)?;
                self.dispatch(cx, ix, None)
            }
            Timer::NoReply { conversation, generation } => {
                let Some(ix) = self.conversations.get_index_of(&conversation).map(Ix) else {
                    return Ok(());
                };
                let c = self.conversation(ix)?;
                if c.generation != generation || c.state != ConversationState::Assigned || c.replied {
                    return Ok(());
                }
                let (team, pool, current) = (c.team.clone(), c.pool, c.assignee.clone());
                // Move it only if someone else can take it; otherwise its agent keeps it.
                let Some(next) = self.pick(&team, pool, ix, current.as_ref())? else {
                    return Ok(());
                };
                let previous = self.unassign(cx, ix, UnassignReason::NoReply)?;
                let strategy = self.team(&team)?.spec.strategy;
                self.assign(cx, ix, &next, AssignReason::Strategy(strategy))?;
                match previous {
                    Some(previous) => self.drain_agent(cx, &previous),
                    None => Ok(()),
                }
            }
            Timer::Forget { conversation, generation } => {
                if self
                    .conversations
                    .get(&conversation)
                    .is_some_and(|c| c.generation == generation && c.state == ConversationState::Closed)
                {
                    self.conversations.swap_remove(&conversation);
                }
                Ok(())
            }
            Timer::Positions { team, version } => {
                let Some(t) = self.teams.get_mut(&team) else {
                    return Ok(());
                };
                if t.timer_version != version {
                    return Ok(());
                }
                t.positions_pending = false;
                self.update_positions(cx, &team)
            }
            Timer::Opening { team, version } => {
                let Some(t) = self.teams.get_mut(&team) else {
                    return Ok(());
                };
                if t.timer_version != version {
                    return Ok(());
                }
                t.opening_timer_pending = false;
                self.release_after_hours(cx, &team)
            }
            Timer::Midnight { team, version } => {
                let Some(t) = self.teams.get(&team) else {
                    return Ok(());
                };
                if t.timer_version != version {
                    return Ok(());
                }
                let next = t.calendar.as_ref().map_or(cx.now_ms.saturating_add(DAY_MS), |c| c.next_midnight(cx.now_ms));
                cx.timers.schedule(next, self.id.clone(), Timer::Midnight { team: team.clone(), version });
                // An agent's day is the day of their primary (first) team.
                let members = t.spec.members.clone();
                for member in &members {
                    let Some(agent) = self.agents.get_mut(member) else {
                        continue;
                    };
                    if agent.received_today == 0 || agent.memberships.first().map(|(t, _)| t) != Some(&team) {
                        continue;
                    }
                    agent.received_today = 0;
                    self.refresh_agent(member);
                    self.drain_agent(cx, member)?;
                }
                Ok(())
            }
        }
    }

    // ----- queries -----------------------------------------------------------------------------

    pub(crate) fn queue_position(&self, id: &ConversationId) -> Option<QueuePosition> {
        self.position_of(self.ix(id).ok()?).ok().flatten()
    }

    fn position_of(&self, ix: Ix) -> Result<Option<QueuePosition>, ApplyError> {
        let conversation = self.conversation(ix)?;
        if conversation.state != ConversationState::Queued {
            return Ok(None);
        }
        let Some(team) = self.teams.get(&conversation.team) else {
            return Ok(None);
        };
        let key = conversation.queue_key();
        Ok(Some(match &conversation.placement {
            Placement::Personal { agent, .. } => {
                let Some(agent_entry) = self.agents.get(agent) else {
                    return Ok(None);
                };
                let position = (agent_entry.personal.rank(&key) as u64).saturating_add(1);
                let capacity = u64::from(agent_entry.spec.max_open.max(1));
                let serving = team.spec.options.allowed_statuses.contains(agent_entry.status);
                QueuePosition {
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    eta_ms: serving
                        .then(|| position.saturating_mul(team.average_handle_ms).checked_div(capacity))
                        .flatten(),
                    waiting_for: Some(agent.clone()),
                }
            }
            _ => {
                let position = (team.waiting.rank(&key) as u64).saturating_add(1);
                let serving = team.pools.get(conversation.pool as usize).map_or(0, |p| u64::from(p.serving));
                QueuePosition {
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    eta_ms: position.saturating_mul(team.average_handle_ms).checked_div(serving),
                    waiting_for: None,
                }
            }
        }))
    }

    pub(crate) fn conversation_view(&self, id: &ConversationId) -> Option<ConversationView> {
        let c = self.conversations.get(id)?;
        let requirement =
            self.teams.get(&c.team).and_then(|team| team.pools.get(c.pool as usize)).map(|p| &p.requirement);
        Some(ConversationView {
            id: id.clone(),
            contact: c.contact.clone(),
            channel: c.channel,
            language: c.language.clone(),
            topic: c.topic.clone(),
            priority: c.priority,
            state: c.state,
            team: c.team.clone(),
            assignee: c.assignee.clone(),
            last_agent: c.last_agent.clone(),
            opened_ms: c.opened_ms,
            queue: self.queue_position(id),
            required_skills: requirement.map(|r| r.skills.clone()).unwrap_or_default(),
            required_language: requirement.and_then(|r| r.language.clone()),
        })
    }

    pub(crate) fn agent_view(&self, id: &AgentId) -> Option<AgentView> {
        let agent = self.agents.get(id)?;
        Some(AgentView {
            id: id.clone(),
            display_name: agent.spec.display_name.clone(),
            status: agent.status,
            open: agent.open_count(),
            max_open: agent.spec.max_open,
            received_today: agent.received_today,
            daily_limit: agent.spec.daily_limit,
            teams: agent.memberships.iter().map(|(team, _)| team.clone()).collect(),
            open_conversations: agent.open.iter().cloned().collect(),
        })
    }

    pub(crate) fn agent_spec(&self, id: &AgentId) -> Option<&AgentSpec> {
        self.agents.get(id).map(|agent| &agent.spec)
    }

    pub(crate) fn team_spec(&self, id: &TeamId) -> Option<&TeamSpec> {
        self.teams.get(id).map(|team| &team.spec)
    }

    pub(crate) fn rules(&self) -> &[RoutingRule] {
        &self.rules
    }

    pub(crate) fn contact_view(&self, id: &ContactId) -> Option<ContactView> {
        let contact = self.contacts.get(id)?;
        Some(ContactView {
            spec: contact.spec.clone(),
            last_agent: contact.last_agent.as_ref().map(|(agent, _)| agent.clone()),
            conversations: contact.conversations,
        })
    }

    /// Agents per status, in `AgentStatus` order (Online, Busy, Away, Offline).
    pub(crate) fn agents_by_status(&self) -> [usize; 4] {
        let mut counts = [0usize; 4];
        for agent in self.agents.values() {
            if let Some(count) = counts.get_mut(agent.status as usize) {
                *count = count.saturating_add(1);
            }
        }
        counts
    }

    pub(crate) fn agent_ids(&self) -> Vec<AgentId> {
        sorted_keys(&self.agents)
    }

    pub(crate) fn team_ids(&self) -> Vec<TeamId> {
        sorted_keys(&self.teams)
    }

    pub(crate) fn team_queue(&self, team: &TeamId, offset: usize, limit: usize) -> Option<Vec<QueuedView>> {
        let team_entry = self.teams.get(team)?;
        Some(
            team_entry
                .waiting
                .page(offset, limit)
                .into_iter()
                .zip(offset..)
                .filter_map(|((_, id), index)| {
                    let c = self.conversations.get(&id)?;
                    Some(QueuedView {
                        position: u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX),
                        conversation: id,
                        priority: c.priority,
                        channel: c.channel,
                        waiting_for: match &c.placement {
                            Placement::Personal { agent, .. } => Some(agent.clone()),
                            _ => None,
                        },
                        opened_ms: c.opened_ms,
                    })
                })
                .collect(),
        )
    }

    pub(crate) fn queue_depth(&self, team: &TeamId) -> Option<usize> {
        self.teams.get(team).map(|t| t.waiting.len())
    }

    pub(crate) fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    /// Invariants that must hold after every apply; used by tests.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let mut assigned = 0usize;
        for (id, c) in &self.conversations {
            match c.state {
                ConversationState::Assigned => {
                    assigned = assigned.saturating_add(1);
                    let agent = c.assignee.as_ref().ok_or(format!("{id} assigned without assignee"))?;
                    if !self.agents.get(agent).is_some_and(|a| a.open.contains(id)) {
                        return Err(format!("{id} assigned to {agent} who does not list it"));
                    }
                }
                ConversationState::Queued => {
                    if c.assignee.is_some() || c.placement == Placement::None {
                        return Err(format!("{id} queued but assignee {:?} placement {:?}", c.assignee, c.placement));
                    }
                    if !self.teams.get(&c.team).is_some_and(|team| team.waiting.contains(&c.queue_key())) {
                        return Err(format!("{id} is queued in team {} but not in its waiting line", c.team));
                    }
                }
                ConversationState::Closed => {
                    if c.assignee.is_some() {
                        return Err(format!("{id} closed with an assignee"));
                    }
                }
            }
        }
        let listed = self.agents.values().map(|a| a.open.len()).fold(0usize, usize::saturating_add);
        if listed != assigned {
            return Err(format!("agents list {listed} open conversations but {assigned} are assigned"));
        }
        // Invariant 5: nobody waits in a pool queue while someone in that pool could take it.
        for (team_id, team) in &self.teams {
            for (index, pool) in team.pools.iter().enumerate() {
                if pool.queued() == 0 || !pool.has_eligible() {
                    continue;
                }
                for (_, id) in pool.heads() {
                    let c = self.conversations.get(&id).ok_or(format!("{id} is in a pool queue but missing"))?;
                    let taker = team.spec.members.iter().find(|m| {
                        self.agents.get(*m).is_some_and(|agent| {
                            // Weighted teams never draw an agent without reception right.
                            let has_reception_right =
                                team.spec.strategy != Strategy::Weighted || agent.spec.daily_limit > 0;
                            pool.requirement.is_met_by(&agent.spec)
                                && base_eligible(agent, team)
                                && has_reception_right
                                && agent.has_room_on(c.channel)
                        })
                    });
                    if let Some(taker) = taker {
                        return Err(format!("{id} waits in {team_id}/pool {index} while {taker} could take it"));
                    }
                }
            }
        }
        for (agent_id, agent) in &self.agents {
            for (_, waiting) in agent.personal.page(0, usize::MAX) {
                let ix = self.ix_known(&waiting).map_err(|e| e.to_string())?;
                let reason = match self.conversation(ix).map(|c| &c.placement) {
                    Ok(Placement::Personal { reason, .. }) => *reason,
                    _ => AssignReason::Manual,
                };
                if self.can_take(agent_id, ix, reason) {
                    return Err(format!("{waiting} waits for {agent_id} who could take it"));
                }
            }
        }
        Ok(())
    }
}
