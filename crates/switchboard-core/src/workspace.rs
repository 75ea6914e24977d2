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
use crate::entities::{Agent, Contact, Conversation, ConversationState, Placement, Team};
use crate::error::ApplyError;
use crate::hours::Calendar;
use crate::ids::{AgentId, ContactId, ConversationId, ID_MAX_BYTES, TeamId, WorkspaceId};
use crate::map::{Map, sorted_keys};
use crate::model::{
    AgentSpec, AgentStatus, ContactSpec, CustomerKind, RoutingRule, RuleTarget, Strategy, TeamSpec, WorkspaceSettings,
};
use crate::pool::{MemberFacts, Pool, Requirement};
use crate::rng::SplitMix64;
use crate::timers::{Ctx, Timer};
use crate::view::{AgentView, ContactView, ConversationView, QueuePosition, QueuedView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Longest display name, team name or template, in bytes.
const TEXT_MAX_BYTES: usize = 4096;
/// Longest first message searched by keyword rules, in bytes (longer messages are cut).
const KEYWORD_SCAN_MAX_BYTES: usize = 4096;
/// Most members a team may have.
const TEAM_MEMBERS_MAX: usize = 100_000;
/// Most routing rules per workspace.
const RULES_MAX: usize = 1_000;
/// Highest `max_open` an agent may have.
const MAX_OPEN_LIMIT: u32 = 10_000;
/// Weight of a new sample in the moving averages, as 1/`AVERAGE_WEIGHT`.
const AVERAGE_WEIGHT: i64 = 8;

/// A compiled routing rule: conditions ready to test, target resolved to a pool.
#[derive(Clone, Debug)]
struct CompiledRule {
    rule: RoutingRule,
    /// Lower-cased keywords.
    keywords: Vec<String>,
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
}

fn check_id(field: &'static str, id: &str) -> Result<(), ApplyError> {
    if id.is_empty() {
        return Err(ApplyError::invalid(field, "must not be empty"));
    }
    if id.len() > ID_MAX_BYTES {
        return Err(ApplyError::invalid(field, format!("is {} bytes; the limit is {ID_MAX_BYTES}", id.len())));
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str) -> Result<(), ApplyError> {
    if text.len() > TEXT_MAX_BYTES {
        return Err(ApplyError::invalid(field, format!("is {} bytes; the limit is {TEXT_MAX_BYTES}", text.len())));
    }
    Ok(())
}

fn check_skill_level(field: &'static str, level: u8) -> Result<(), ApplyError> {
    if !(1..=5).contains(&level) {
        return Err(ApplyError::invalid(field, format!("level {level} is not between 1 and 5")));
    }
    Ok(())
}

fn moving_average(previous: u64, sample: u64) -> u64 {
    let previous = previous as i64;
    (previous + (sample as i64 - previous) / AVERAGE_WEIGHT).max(0) as u64
}

/// Whether `agent` may receive an automatic assignment from `team` (channel limits aside).
fn base_eligible(agent: &Agent, team: &Team) -> bool {
    let options = &team.spec.options;
    !agent.spec.auto_assign_excluded
        && options.allowed_statuses.contains(agent.status)
        && agent.open_count() < agent.spec.max_open
        && (!options.daily_limit_hard_cap || agent.received_today < agent.spec.daily_limit)
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
        }
    }

    fn ix(&self, id: &ConversationId) -> Result<Ix, ApplyError> {
        self.conversations.get_index_of(id).map(Ix).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))
    }

    /// The index of a conversation known to exist.
    fn ixu(&self, id: &ConversationId) -> Ix {
        Ix(self.conversations.get_index_of(id).expect("conversation exists"))
    }

    fn cid(&self, ix: Ix) -> ConversationId {
        self.conversations.get_index(ix.0).map(|(id, _)| id.clone()).expect("a valid conversation index")
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
            let team = self.teams.get_mut(&team_id).expect("key from the map");
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
        for (id, conversation) in &self.conversations {
            match (conversation.state, &conversation.assignee) {
                (ConversationState::Assigned, Some(agent_id)) => {
                    if let Some(agent) = self.agents.get_mut(agent_id) {
                        agent.open.insert(id.clone());
                        agent.open_by_channel[conversation.channel.index()] += 1;
                    }
                }
                (ConversationState::Queued, _) => queued.push(id.clone()),
                _ => {}
            }
        }
        let team_ids: Vec<TeamId> = self.teams.keys().cloned().collect();
        for team_id in &team_ids {
            self.reindex_team(team_id);
        }
        for id in &queued {
            self.place(self.ixu(id));
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
        let members = team.spec.members.len();
        for pool in &mut team.pools {
            pool.reset_index(strategy, members);
        }
        for position in 0..members {
            let member = self.teams[team_id].spec.members[position].clone();
            self.refresh_member(team_id, position as u32, &member);
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
        let count = self.agents.get(agent_id).map_or(0, |agent| agent.memberships.len());
        for index in 0..count {
            let (team_id, position) = self.agents[agent_id].memberships[index].clone();
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
                            team_entry.pools.len() - 1
                        }
                    };
                    CompiledTarget::Pool { team: team.clone(), pool: pool as u32 }
                }
            };
            let keywords = rule.conditions.keywords.iter().map(|k| k.to_lowercase()).collect();
            compiled.push(CompiledRule { rule: rule.clone(), keywords, target });
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
        if settings.dedupe_max_events == 0 {
            return Err(ApplyError::invalid("dedupe_max_events", "must be at least 1"));
        }
        // The seed only matters at creation; keep the running generator.
        self.settings = settings;
        Ok(())
    }

    pub(crate) fn upsert_agent(&mut self, cx: &mut Ctx<'_>, spec: AgentSpec) -> Result<(), ApplyError> {
        check_id("agent.id", spec.id.as_str())?;
        if spec.display_name.trim().is_empty() {
            return Err(ApplyError::invalid("agent.display_name", "must not be empty"));
        }
        check_text("agent.display_name", &spec.display_name)?;
        for (skill, level) in &spec.skills {
            check_id("agent.skills", skill.as_str())?;
            check_skill_level("agent.skills", *level)?;
        }
        if spec.max_open > MAX_OPEN_LIMIT {
            return Err(ApplyError::invalid("agent.max_open", format!("{} exceeds {MAX_OPEN_LIMIT}", spec.max_open)));
        }
        let id = spec.id.clone();
        match self.agents.get_mut(&id) {
            Some(agent) => agent.spec = spec,
            None => {
                self.agents.insert(id.clone(), Agent::new(spec));
            }
        }
        self.refresh_agent(&id);
        self.drain_agent(cx, &id);
        Ok(())
    }

    pub(crate) fn remove_agent(&mut self, cx: &mut Ctx<'_>, agent_id: &AgentId) -> Result<(), ApplyError> {
        if !self.agents.contains_key(agent_id) {
            return Err(ApplyError::UnknownAgent(agent_id.clone()));
        }
        if let Some(rule) =
            self.rules.iter().find(|rule| matches!(&rule.target, RuleTarget::Agent { agent } if agent == agent_id))
        {
            return Err(ApplyError::Precondition(format!(
                "agent {agent_id} is the target of routing rule {}; change the rules first",
                rule.id
            )));
        }
        // Leave every team, then route the agent's open and waiting conversations again.
        let teams: Vec<TeamId> = self.agents[agent_id].memberships.iter().map(|(team, _)| team.clone()).collect();
        for team_id in &teams {
            if let Some(team) = self.teams.get(team_id) {
                let mut spec = team.spec.clone();
                spec.members.retain(|member| member != agent_id);
                self.upsert_team(cx, spec)?;
            }
        }
        let open: Vec<ConversationId> = self.agents[agent_id].open.iter().cloned().collect();
        for conversation in &open {
            self.unassign(cx, self.ixu(conversation), UnassignReason::AgentRemoved);
        }
        let waiting: Vec<ConversationId> =
            self.agents[agent_id].personal.page(0, usize::MAX).into_iter().map(|(_, id)| id).collect();
        for conversation in &waiting {
            self.unplace(self.ixu(conversation));
        }
        self.agents.swap_remove(agent_id);
        for conversation in open.iter().chain(&waiting) {
            self.dispatch_to_team(cx, self.ixu(conversation));
        }
        Ok(())
    }

    pub(crate) fn upsert_team(&mut self, cx: &mut Ctx<'_>, spec: TeamSpec) -> Result<(), ApplyError> {
        check_id("team.id", spec.id.as_str())?;
        check_text("team.name", &spec.name)?;
        if spec.members.len() > TEAM_MEMBERS_MAX {
            return Err(ApplyError::invalid("team.members", format!("more than {TEAM_MEMBERS_MAX} members")));
        }
        let mut seen = BTreeSet::new();
        for member in &spec.members {
            if !self.agents.contains_key(member) {
                return Err(ApplyError::UnknownAgent(member.clone()));
            }
            if !seen.insert(member) {
                return Err(ApplyError::invalid("team.members", format!("agent {member} is listed twice")));
            }
        }
        for template in
            [&spec.templates.welcome, &spec.templates.away, &spec.templates.overcapacity].into_iter().flatten()
        {
            check_text("team.templates", template)?;
        }
        let calendar = Calendar::new(&spec.timezone, spec.business_hours.as_ref())?;
        let team_id = spec.id.clone();

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
        let default_handle_ms = u64::from(spec.options.default_handle_time_s) * 1000;
        let team = self.teams.entry(team_id.clone()).or_insert_with(|| Team {
            spec: spec.clone(),
            pools: vec![Pool::new(Requirement::default())],
            average_handle_ms: default_handle_ms,
            timer_version: 0,
            opening_timer_pending: false,
            calendar: None,
            waiting: Default::default(),
            after_hours: BTreeMap::new(),
        });
        team.spec = spec;
        team.calendar = Some(calendar);
        team.timer_version += 1;
        team.opening_timer_pending = false;
        let version = team.timer_version;
        let next_midnight = team.calendar.as_ref().map_or(cx.now_ms + 86_400_000, |c| c.next_midnight(cx.now_ms));
        cx.timers.schedule(next_midnight, self.id.clone(), Timer::Midnight { team: team_id.clone(), version });
        self.reindex_team(&team_id);

        // Capacity may have appeared (new members, new statuses allowed, new strategy).
        self.release_after_hours(cx, &team_id);
        let members = self.teams[&team_id].spec.members.clone();
        for member in &members {
            self.drain_agent(cx, member);
        }
        for pool in 0..self.teams[&team_id].pools.len() {
            self.drain_pool(cx, &team_id, pool as u32);
        }
        Ok(())
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
        for member in &team.spec.members {
            if let Some(agent) = self.agents.get_mut(member) {
                agent.memberships.retain(|(team, _)| team != team_id);
            }
        }
        self.teams.swap_remove(team_id);
        Ok(())
    }

    pub(crate) fn set_rules(&mut self, rules: Vec<RoutingRule>) -> Result<(), ApplyError> {
        if rules.len() > RULES_MAX {
            return Err(ApplyError::invalid("rules", format!("{} rules; the limit is {RULES_MAX}", rules.len())));
        }
        let mut ids = BTreeSet::new();
        for rule in &rules {
            check_id("rule.id", rule.id.as_str())?;
            if !ids.insert(&rule.id) {
                return Err(ApplyError::invalid("rule.id", format!("rule {} is defined twice", rule.id)));
            }
            match &rule.target {
                RuleTarget::Team { team, required_skills, .. } => {
                    if !self.teams.contains_key(team) {
                        return Err(ApplyError::UnknownTeam(team.clone()));
                    }
                    for level in required_skills.values() {
                        check_skill_level("rule.target.required_skills", *level)?;
                    }
                }
                RuleTarget::Agent { agent } => {
                    if !self.agents.contains_key(agent) {
                        return Err(ApplyError::UnknownAgent(agent.clone()));
                    }
                    if self.settings.default_team.is_none() && self.agents[agent].memberships.is_empty() {
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
        check_id("contact.id", spec.id.as_str())?;
        if let Some(agent) = &spec.dedicated_agent
            && !self.agents.contains_key(agent)
        {
            return Err(ApplyError::UnknownAgent(agent.clone()));
        }
        match self.contacts.get_mut(&spec.id) {
            Some(contact) => contact.spec = spec,
            None => {
                self.contacts.insert(spec.id.clone(), Contact { spec, last_agent: None, conversations: 0 });
            }
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
            let to_requeue: Vec<ConversationId> = self.agents[agent_id]
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
                self.unassign(cx, self.ixu(conversation), UnassignReason::AgentOffline);
                self.dispatch_to_team(cx, self.ixu(conversation));
            }
        }
        self.drain_agent(cx, agent_id);
        Ok(())
    }

    // ----- conversations ----------------------------------------------------------------------

    fn rule_matches(&self, rule: &CompiledRule, open: &OpenConversation, contact: Option<&Contact>) -> bool {
        let conditions = &rule.rule.conditions;
        let returning = contact.is_some_and(|c| c.conversations > 0);
        (conditions.channels.is_empty() || conditions.channels.contains(&open.channel))
            && (conditions.languages.is_empty()
                || open.language.as_ref().is_some_and(|l| conditions.languages.contains(l)))
            && (conditions.topics.is_empty() || open.topic.as_ref().is_some_and(|t| conditions.topics.contains(t)))
            && (conditions.tiers.is_empty()
                || contact.and_then(|c| c.spec.tier.as_ref()).is_some_and(|t| conditions.tiers.contains(t)))
            && (conditions.tags.is_empty() || open.tags.iter().any(|t| conditions.tags.contains(t)))
            && match conditions.customer {
                CustomerKind::Any => true,
                CustomerKind::New => !returning,
                CustomerKind::Returning => returning,
            }
            && (rule.keywords.is_empty() || {
                let mut end = open.first_message.len().min(KEYWORD_SCAN_MAX_BYTES);
                while !open.first_message.is_char_boundary(end) {
                    end -= 1;
                }
                open.first_message[..end]
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|word| !word.is_empty() && rule.keywords.iter().any(|k| k.as_str() == word.to_lowercase()))
            })
    }

    fn route(&self, open: &OpenConversation) -> Result<Route, ApplyError> {
        let contact = self.contacts.get(&open.contact);
        for rule in &self.compiled_rules {
            if !self.rule_matches(rule, open, contact) {
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
        check_id("conversation.id", open.conversation.as_str())?;
        check_id("conversation.contact", open.contact.as_str())?;
        if let Some(existing) = self.conversations.get(&open.conversation) {
            if existing.state != ConversationState::Closed {
                return Err(ApplyError::AlreadyOpen(open.conversation.clone()));
            }
            // A gateway that opens a closed conversation again means the customer is back.
            return self.customer_message(cx, &open.conversation);
        }
        let route = self.route(open)?;
        let contact = self.contacts.entry(open.contact.clone()).or_insert_with(|| Contact {
            spec: ContactSpec { id: open.contact.clone(), tier: None, dedicated_agent: None },
            last_agent: None,
            conversations: 0,
        });
        contact.conversations += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
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
            },
        );
        if let Some(message) = self.teams[&route.team].spec.templates.welcome.clone() {
            cx.effects.push(Effect::Welcome {
                workspace: self.id.clone(),
                conversation: id.clone(),
                team: route.team.clone(),
                message,
            });
        }
        self.admit(cx, Ix(index), route.rule_agent);
        Ok(())
    }

    /// Checks business hours and the activation delay, then routes.
    fn admit(&mut self, cx: &mut Ctx<'_>, ix: Ix, rule_agent: Option<AgentId>) {
        let team_id = self.conversations[ix.0].team.clone();
        let team = &self.teams[&team_id];
        let calendar = team.calendar.as_ref();
        if calendar.is_some_and(|c| !c.is_open(cx.now_ms)) {
            let opens_at_ms = calendar.and_then(|c| c.next_open(cx.now_ms));
            let message = team.spec.templates.away.clone();
            self.set_placement(ix, Placement::AfterHours);
            cx.effects.push(Effect::OutsideHours {
                workspace: self.id.clone(),
                conversation: self.cid(ix),
                team: team_id.clone(),
                opens_at_ms,
                message,
            });
            self.schedule_opening(cx, &team_id);
            return;
        }
        let delay_s = team.spec.options.assign_delay_s;
        if delay_s > 0 {
            self.set_placement(ix, Placement::Delayed);
            let generation = self.conversations[ix.0].generation;
            cx.timers.schedule(
                cx.now_ms + i64::from(delay_s) * 1000,
                self.id.clone(),
                Timer::Activate { conversation: self.cid(ix), generation },
            );
            return;
        }
        self.dispatch(cx, ix, rule_agent);
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
    fn dispatch(&mut self, cx: &mut Ctx<'_>, ix: Ix, rule_agent: Option<AgentId>) {
        let conversation = &self.conversations[ix.0];
        let contact = self.contacts.get(&conversation.contact);
        if let Some(dedicated) = contact.and_then(|c| c.spec.dedicated_agent.clone())
            && self.agents.contains_key(&dedicated)
        {
            if self.can_take(&dedicated, ix) {
                self.assign(cx, ix, &dedicated, AssignReason::Dedicated);
                return;
            }
            if self.settings.vip_waits_for_dedicated_agent {
                self.enqueue_personal(cx, ix, &dedicated, AssignReason::Dedicated);
                return;
            }
        }
        let conversation = &self.conversations[ix.0];
        let keeps_returning = self.teams[&conversation.team].spec.options.keep_returning_customers;
        if keeps_returning
            && let Some((previous, _)) = self.contacts.get(&conversation.contact).and_then(|c| c.last_agent.clone())
            && self.can_take(&previous, ix)
        {
            self.assign(cx, ix, &previous, AssignReason::Returning);
            return;
        }
        if let Some(agent) = rule_agent {
            if self.can_take(&agent, ix) {
                self.assign(cx, ix, &agent, AssignReason::RuleAgent);
            } else {
                self.enqueue_personal(cx, ix, &agent, AssignReason::RuleAgent);
            }
            return;
        }
        self.dispatch_to_team(cx, ix);
    }

    /// The team strategy, else the pool's queue.
    fn dispatch_to_team(&mut self, cx: &mut Ctx<'_>, ix: Ix) {
        let (team, pool) = {
            let c = &self.conversations[ix.0];
            (c.team.clone(), c.pool)
        };
        match self.pick(&team, pool, ix, None) {
            Some(agent) => {
                let strategy = self.teams[&team].spec.strategy;
                self.assign(cx, ix, &agent, AssignReason::Strategy(strategy));
            }
            None => self.enqueue_pool(cx, ix),
        }
    }

    /// Whether `agent_id` may take conversation `id` now (in the conversation's team's terms).
    fn can_take(&self, agent_id: &AgentId, ix: Ix) -> bool {
        let conversation = &self.conversations[ix.0];
        match (self.agents.get(agent_id), self.teams.get(&conversation.team)) {
            (Some(agent), Some(team)) => base_eligible(agent, team) && agent.has_room_on(conversation.channel),
            _ => false,
        }
    }

    /// Asks the pool's strategy for an agent for conversation `id`, skipping `exclude`.
    fn pick(&mut self, team_id: &TeamId, pool: u32, ix: Ix, exclude: Option<&AgentId>) -> Option<AgentId> {
        let channel = self.conversations[ix.0].channel;
        let Self { agents, teams, rng, .. } = self;
        let Team { spec, pools, .. } = teams.get_mut(team_id)?;
        let pool = pools.get_mut(pool as usize)?;
        if !pool.has_eligible() {
            return None;
        }
        let cursor = pool.cursor.as_ref().and_then(|last| {
            agents.get(last)?.memberships.iter().find(|(team, _)| team == team_id).map(|(_, position)| *position)
        });
        let position = pool.pick(cursor, rng, |position| {
            let member = &spec.members[position as usize];
            Some(member) != exclude && agents.get(member).is_some_and(|agent| agent.has_room_on(channel))
        })?;
        let agent = spec.members[position as usize].clone();
        if spec.strategy == Strategy::RoundRobin {
            pool.cursor = Some(agent.clone());
        }
        Some(agent)
    }

    fn expected_response_ms(&self, agent: &Agent, team: &TeamId) -> u64 {
        agent.average_response_ms.unwrap_or_else(|| {
            self.teams.get(team).map_or(120_000, |t| u64::from(t.spec.options.default_response_time_s) * 1000)
        })
    }

    fn assign(&mut self, cx: &mut Ctx<'_>, ix: Ix, agent_id: &AgentId, reason: AssignReason) {
        let (id, conversation) = self.conversations.get_index_mut(ix.0).expect("assign: conversation exists");
        let id = id.clone();
        conversation.state = ConversationState::Assigned;
        conversation.assignee = Some(agent_id.clone());
        conversation.last_agent = Some(agent_id.clone());
        conversation.placement = Placement::None;
        conversation.assigned_ms = cx.now_ms;
        conversation.replied = false;
        conversation.generation += 1;
        let (channel, team, contact_id, generation) =
            (conversation.channel, conversation.team.clone(), conversation.contact.clone(), conversation.generation);
        let agent = self.agents.get_mut(agent_id).expect("assign: agent exists");
        agent.open.insert(id.clone());
        agent.open_by_channel[channel.index()] += 1;
        agent.received_today = agent.received_today.saturating_add(1);
        agent.last_assigned_ms = cx.now_ms;
        self.refresh_agent(agent_id);
        if let Some(contact) = self.contacts.get_mut(&contact_id) {
            contact.last_agent = Some((agent_id.clone(), team.clone()));
        }
        let timeout_s = self.teams[&team].spec.options.no_reply_timeout_s;
        if timeout_s > 0 {
            cx.timers.schedule(
                cx.now_ms + i64::from(timeout_s) * 1000,
                self.id.clone(),
                Timer::NoReply { conversation: id.clone(), generation },
            );
        }
        let agent = &self.agents[agent_id];
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
    }

    /// Takes an assigned conversation away from its agent; the caller routes it again and
    /// then drains the agent.
    fn unassign(&mut self, cx: &mut Ctx<'_>, ix: Ix, reason: UnassignReason) -> Option<AgentId> {
        let (id, conversation) = self.conversations.get_index_mut(ix.0)?;
        let id = id.clone();
        let agent_id = conversation.assignee.take()?;
        conversation.state = ConversationState::Queued;
        conversation.generation += 1;
        let channel = conversation.channel;
        let team = conversation.team.clone();
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.open.remove(&id);
            agent.open_by_channel[channel.index()] -= 1;
        }
        self.refresh_agent(&agent_id);
        cx.effects.push(Effect::Unassigned {
            workspace: self.id.clone(),
            conversation: id,
            team,
            agent: agent_id.clone(),
            reason,
        });
        Some(agent_id)
    }

    fn set_placement(&mut self, ix: Ix, placement: Placement) {
        if let Some(conversation) = self.conversations.get_index_mut(ix.0).map(|(_, c)| c) {
            conversation.placement = placement;
        }
        self.place(ix);
    }

    /// Inserts a queued conversation into the structures its placement names.
    fn place(&mut self, ix: Ix) {
        let Some((id, conversation)) = self.conversations.get_index(ix.0) else {
            return;
        };
        let key = conversation.queue_key();
        let Some(team) = self.teams.get_mut(&conversation.team) else {
            return;
        };
        match &conversation.placement {
            Placement::None => return,
            Placement::Pool => {
                if let Some(pool) = team.pools.get_mut(conversation.pool as usize) {
                    pool.enqueue(conversation.channel, key, id.clone());
                }
            }
            Placement::Personal { agent, .. } => {
                if let Some(agent) = self.agents.get_mut(agent) {
                    agent.personal.insert(key, id.clone());
                }
            }
            Placement::Delayed => {}
            Placement::AfterHours => {
                team.after_hours.insert(key, id.clone());
            }
        }
        team.waiting.insert(key, id.clone());
    }

    /// Removes a queued conversation from every queue structure.
    fn unplace(&mut self, ix: Ix) {
        let Some(conversation) = self.conversations.get_index_mut(ix.0).map(|(_, c)| c) else {
            return;
        };
        let placement = std::mem::replace(&mut conversation.placement, Placement::None);
        let key = conversation.queue_key();
        let Some(team) = self.teams.get_mut(&conversation.team) else {
            return;
        };
        match placement {
            Placement::None => return,
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
        team.waiting.remove(&key);
    }

    fn enqueue_pool(&mut self, cx: &mut Ctx<'_>, ix: Ix) {
        self.set_placement(ix, Placement::Pool);
        let position = self.position_of(ix).unwrap_or(QueuePosition { position: 0, eta_ms: None, waiting_for: None });
        let conversation = &self.conversations[ix.0];
        let message = self.teams[&conversation.team].spec.templates.overcapacity.clone();
        cx.effects.push(Effect::Queued {
            workspace: self.id.clone(),
            conversation: self.cid(ix),
            team: conversation.team.clone(),
            position: position.position,
            eta_ms: position.eta_ms,
            waiting_for: None,
            message,
        });
    }

    fn enqueue_personal(&mut self, cx: &mut Ctx<'_>, ix: Ix, agent: &AgentId, reason: AssignReason) {
        self.set_placement(ix, Placement::Personal { agent: agent.clone(), reason });
        let position = self.position_of(ix).unwrap_or(QueuePosition { position: 0, eta_ms: None, waiting_for: None });
        let conversation = &self.conversations[ix.0];
        let message = self.teams[&conversation.team].spec.templates.overcapacity.clone();
        cx.effects.push(Effect::Queued {
            workspace: self.id.clone(),
            conversation: self.cid(ix),
            team: conversation.team.clone(),
            position: position.position,
            eta_ms: position.eta_ms,
            waiting_for: Some(agent.clone()),
            message,
        });
    }

    /// Assigns what an agent's new capacity allows: first the conversations waiting for this
    /// agent in particular, then the queues of every pool the agent serves.
    fn drain_agent(&mut self, cx: &mut Ctx<'_>, agent_id: &AgentId) {
        loop {
            let Some(agent) = self.agents.get(agent_id) else {
                return;
            };
            let Some((_, head)) = agent.personal.first() else {
                break;
            };
            let head = head.clone();
            let ix = self.ixu(&head);
            if !self.can_take(agent_id, ix) {
                break;
            }
            let reason = match &self.conversations[&head].placement {
                Placement::Personal { reason, .. } => *reason,
                _ => AssignReason::Manual,
            };
            self.unplace(ix);
            self.assign(cx, ix, agent_id, reason);
        }
        let count = self.agents[agent_id].memberships.len();
        for index in 0..count {
            let Some((team_id, _)) = self.agents.get(agent_id).and_then(|a| a.memberships.get(index)).cloned() else {
                break;
            };
            let pools = self.teams.get(&team_id).map_or(0, |t| t.pools.len());
            for pool in 0..pools {
                self.drain_pool(cx, &team_id, pool as u32);
            }
        }
    }

    /// Assigns the pool's waiting conversations, best first, while anyone can take them.
    fn drain_pool(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId, pool_index: u32) {
        loop {
            let Some(pool) = self.teams.get(team_id).and_then(|t| t.pools.get(pool_index as usize)) else {
                return;
            };
            if pool.queued() == 0 || !pool.has_eligible() {
                return;
            }
            let mut placed = false;
            for (_, id) in pool.heads() {
                let ix = self.ixu(&id);
                if let Some(agent) = self.pick(team_id, pool_index, ix, None) {
                    self.unplace(ix);
                    let strategy = self.teams[team_id].spec.strategy;
                    self.assign(cx, ix, &agent, AssignReason::Strategy(strategy));
                    placed = true;
                    break;
                }
            }
            if !placed {
                return;
            }
        }
    }

    /// Routes conversations that waited for business hours, if the team is open now.
    fn release_after_hours(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId) {
        let Some(team) = self.teams.get(team_id) else {
            return;
        };
        if team.after_hours.is_empty() {
            return;
        }
        if !team.calendar.as_ref().is_none_or(|c| c.is_open(cx.now_ms)) {
            self.schedule_opening(cx, team_id);
            return;
        }
        let waiting: Vec<ConversationId> = team.after_hours.values().cloned().collect();
        for id in &waiting {
            let ix = self.ixu(id);
            self.unplace(ix);
            self.admit(cx, ix, None);
        }
    }

    pub(crate) fn customer_message(&mut self, cx: &mut Ctx<'_>, id: &ConversationId) -> Result<(), ApplyError> {
        let conversation = self.conversations.get_mut(id).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))?;
        if conversation.state != ConversationState::Closed {
            return Ok(());
        }
        // Reopen: a new arrival in the queue order.
        conversation.state = ConversationState::Queued;
        conversation.generation += 1;
        conversation.seq = self.next_seq;
        self.next_seq += 1;
        conversation.opened_ms = cx.now_ms;
        let previous = conversation.last_agent.clone();
        let team_id = conversation.team.clone();
        cx.effects.push(Effect::Reopened {
            workspace: self.id.clone(),
            conversation: id.clone(),
            team: team_id.clone(),
        });
        let team = &self.teams[&team_id];
        if team.calendar.as_ref().is_some_and(|c| !c.is_open(cx.now_ms)) {
            self.admit(cx, self.ixu(id), None);
            return Ok(());
        }
        let reassign = team.spec.options.reassign_reopened_if_unavailable;
        match previous.filter(|agent| self.agents.contains_key(agent)) {
            Some(agent) if self.can_take(&agent, self.ixu(id)) => {
                self.assign(cx, self.ixu(id), &agent, AssignReason::Reopened)
            }
            Some(agent) if !reassign => self.enqueue_personal(cx, self.ixu(id), &agent, AssignReason::Reopened),
            _ => self.dispatch_to_team(cx, self.ixu(id)),
        }
        Ok(())
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
        let conversation = self.conversations.get_mut(id).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))?;
        if conversation.state != ConversationState::Assigned
            || conversation.assignee.as_ref() != Some(agent_id)
            || conversation.replied
        {
            return Ok(());
        }
        conversation.replied = true;
        let response_ms = (cx.now_ms - conversation.assigned_ms).max(0) as u64;
        let agent = self.agents.get_mut(agent_id).expect("checked above");
        agent.average_response_ms = Some(match agent.average_response_ms {
            None => response_ms,
            Some(previous) => moving_average(previous, response_ms),
        });
        Ok(())
    }

    pub(crate) fn close(&mut self, cx: &mut Ctx<'_>, id: &ConversationId) -> Result<(), ApplyError> {
        let ix = self.ix(id)?;
        let conversation = &self.conversations[ix.0];
        let mut freed = None;
        match conversation.state {
            ConversationState::Closed => return Err(ApplyError::Closed(id.clone())),
            ConversationState::Queued => self.unplace(ix),
            ConversationState::Assigned => {
                let handle_ms = (cx.now_ms - conversation.assigned_ms).max(0) as u64;
                if let Some(team) = self.teams.get_mut(&conversation.team) {
                    team.average_handle_ms = moving_average(team.average_handle_ms, handle_ms);
                }
                let conversation = &mut self.conversations[ix.0];
                let agent_id = conversation.assignee.take().expect("assigned conversations have an assignee");
                let channel = conversation.channel;
                if let Some(agent) = self.agents.get_mut(&agent_id) {
                    agent.open.remove(id);
                    agent.open_by_channel[channel.index()] -= 1;
                }
                self.refresh_agent(&agent_id);
                freed = Some(agent_id);
            }
        }
        let conversation = &mut self.conversations[ix.0];
        conversation.state = ConversationState::Closed;
        conversation.closed_ms = cx.now_ms;
        conversation.generation += 1;
        let generation = conversation.generation;
        let team = conversation.team.clone();
        cx.effects.push(Effect::Closed {
            workspace: self.id.clone(),
            conversation: id.clone(),
            team,
            agent: freed.clone(),
        });
        cx.timers.schedule(
            cx.now_ms + i64::from(self.settings.closed_retention_s) * 1000,
            self.id.clone(),
            Timer::Forget { conversation: id.clone(), generation },
        );
        if let Some(agent) = freed {
            self.drain_agent(cx, &agent);
        }
        Ok(())
    }

    fn queued_conversation(&self, id: &ConversationId) -> Result<&Conversation, ApplyError> {
        let conversation = self.conversations.get(id).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))?;
        if conversation.state != ConversationState::Queued {
            return Err(ApplyError::NotClaimable { conversation: id.clone(), state: conversation.state.label() });
        }
        Ok(conversation)
    }

    pub(crate) fn claim(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        agent_id: &AgentId,
    ) -> Result<(), ApplyError> {
        let agent = self.agents.get(agent_id).ok_or_else(|| ApplyError::UnknownAgent(agent_id.clone()))?;
        self.queued_conversation(id)?;
        if agent.open_count() >= agent.spec.max_open {
            return Err(ApplyError::AgentAtCapacity { agent: agent_id.clone(), max_open: agent.spec.max_open });
        }
        let ix = self.ixu(id);
        self.unplace(ix);
        self.assign(cx, ix, agent_id, AssignReason::Claimed);
        Ok(())
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
        self.queued_conversation(id)?;
        let ix = self.ixu(id);
        self.unplace(ix);
        self.assign(cx, ix, agent_id, AssignReason::Manual);
        Ok(())
    }

    pub(crate) fn transfer(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        target: TransferTarget,
    ) -> Result<(), ApplyError> {
        let conversation = self.conversations.get(id).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))?;
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
                self.unplace(self.ixu(id));
                None
            }
            ConversationState::Assigned => self.unassign(cx, self.ixu(id), UnassignReason::Transfer),
        };
        match target {
            TransferTarget::Agent(agent) => self.assign(cx, self.ixu(id), &agent, AssignReason::Transfer),
            TransferTarget::Team(team) => {
                let conversation = self.conversations.get_mut(id).expect("exists");
                conversation.team = team;
                conversation.pool = 0;
                self.dispatch_to_team(cx, self.ixu(id));
            }
        }
        if let Some(agent) = freed {
            self.drain_agent(cx, &agent);
        }
        Ok(())
    }

    // ----- timers ------------------------------------------------------------------------------

    pub(crate) fn fire(&mut self, cx: &mut Ctx<'_>, timer: Timer) {
        match timer {
            Timer::Activate { conversation, generation } => {
                let Some(c) = self.conversations.get(&conversation) else {
                    return;
                };
                if c.generation != generation || c.placement != Placement::Delayed {
                    return;
                }
                self.unplace(self.ixu(&conversation));
                self.dispatch(cx, self.ixu(&conversation), None);
            }
            Timer::NoReply { conversation, generation } => {
                let Some(c) = self.conversations.get(&conversation) else {
                    return;
                };
                if c.generation != generation || c.state != ConversationState::Assigned || c.replied {
                    return;
                }
                let (team, pool, current) = (c.team.clone(), c.pool, c.assignee.clone());
                // Move it only if someone else can take it; otherwise its agent keeps it.
                if let Some(next) = self.pick(&team, pool, self.ixu(&conversation), current.as_ref()) {
                    let previous = self.unassign(cx, self.ixu(&conversation), UnassignReason::NoReply);
                    let strategy = self.teams[&team].spec.strategy;
                    self.assign(cx, self.ixu(&conversation), &next, AssignReason::Strategy(strategy));
                    if let Some(previous) = previous {
                        self.drain_agent(cx, &previous);
                    }
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
            }
            Timer::Opening { team, version } => {
                let Some(t) = self.teams.get_mut(&team) else {
                    return;
                };
                if t.timer_version != version {
                    return;
                }
                t.opening_timer_pending = false;
                self.release_after_hours(cx, &team);
            }
            Timer::Midnight { team, version } => {
                let Some(t) = self.teams.get(&team) else {
                    return;
                };
                if t.timer_version != version {
                    return;
                }
                let next = t.calendar.as_ref().map_or(cx.now_ms + 86_400_000, |c| c.next_midnight(cx.now_ms));
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
                    self.drain_agent(cx, member);
                }
            }
        }
    }

    // ----- queries -----------------------------------------------------------------------------

    pub(crate) fn queue_position(&self, id: &ConversationId) -> Option<QueuePosition> {
        self.position_of(self.ix(id).ok()?)
    }

    fn position_of(&self, ix: Ix) -> Option<QueuePosition> {
        let conversation = &self.conversations[ix.0];
        if conversation.state != ConversationState::Queued {
            return None;
        }
        let team = self.teams.get(&conversation.team)?;
        let key = conversation.queue_key();
        match &conversation.placement {
            Placement::Personal { agent, .. } => {
                let agent_entry = self.agents.get(agent)?;
                let position = agent_entry.personal.rank(&key) as u64 + 1;
                let capacity = u64::from(agent_entry.spec.max_open.max(1));
                let serving = team.spec.options.allowed_statuses.contains(agent_entry.status);
                Some(QueuePosition {
                    position: position as u32,
                    eta_ms: serving.then(|| position * team.average_handle_ms / capacity),
                    waiting_for: Some(agent.clone()),
                })
            }
            _ => {
                let position = team.waiting.rank(&key) as u64 + 1;
                let serving = team.pools.get(conversation.pool as usize).map_or(0, |p| u64::from(p.serving));
                Some(QueuePosition {
                    position: position as u32,
                    eta_ms: (serving > 0).then(|| position * team.average_handle_ms / serving),
                    waiting_for: None,
                })
            }
        }
    }

    pub(crate) fn conversation_view(&self, id: &ConversationId) -> Option<ConversationView> {
        let c = self.conversations.get(id)?;
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
        let mut counts = [0; 4];
        for agent in self.agents.values() {
            counts[agent.status as usize] += 1;
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
                .enumerate()
                .map(|(index, (_, id))| {
                    let c = &self.conversations[&id];
                    QueuedView {
                        position: (offset + index + 1) as u32,
                        conversation: id,
                        priority: c.priority,
                        channel: c.channel,
                        waiting_for: match &c.placement {
                            Placement::Personal { agent, .. } => Some(agent.clone()),
                            _ => None,
                        },
                        opened_ms: c.opened_ms,
                    }
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
                    assigned += 1;
                    let agent = c.assignee.as_ref().ok_or(format!("{id} assigned without assignee"))?;
                    if !self.agents.get(agent).is_some_and(|a| a.open.contains(id)) {
                        return Err(format!("{id} assigned to {agent} who does not list it"));
                    }
                }
                ConversationState::Queued => {
                    if c.assignee.is_some() || c.placement == Placement::None {
                        return Err(format!("{id} queued but assignee {:?} placement {:?}", c.assignee, c.placement));
                    }
                }
                ConversationState::Closed => {
                    if c.assignee.is_some() {
                        return Err(format!("{id} closed with an assignee"));
                    }
                }
            }
        }
        let listed: usize = self.agents.values().map(|a| a.open.len()).sum();
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
                    let c = &self.conversations[&id];
                    let takers = team.spec.members.iter().filter(|m| {
                        let agent = &self.agents[*m];
                        // Weighted teams never draw an agent without reception right.
                        let has_reception_right =
                            team.spec.strategy != Strategy::Weighted || agent.spec.daily_limit > 0;
                        pool.requirement.is_met_by(&agent.spec)
                            && base_eligible(agent, team)
                            && has_reception_right
                            && agent.has_room_on(c.channel)
                    });
                    if let Some(taker) = takers.into_iter().next() {
                        return Err(format!("{id} waits in {team_id}/pool {index} while {taker} could take it"));
                    }
                }
            }
        }
        for (agent_id, agent) in &self.agents {
            if let Some((_, head)) = agent.personal.first()
                && self.can_take(agent_id, self.ixu(head))
            {
                return Err(format!("{head} waits for {agent_id} who could take it"));
            }
        }
        Ok(())
    }
}
