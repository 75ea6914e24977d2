//! The vocabulary of the domain: channels, statuses, strategies, and the configuration of
//! agents, teams, routing rules and contacts as an admin or gateway states them.

use crate::hours::BusinessHours;
use crate::ids::{AgentId, ContactId, Language, RuleId, Skill, TeamId};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The messaging channel a conversation arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// WhatsApp.
    WhatsApp,
    /// Facebook Messenger.
    Messenger,
    /// Instagram direct messages.
    Instagram,
    /// Telegram.
    Telegram,
    /// LINE.
    Line,
    /// E-mail.
    Email,
    /// The website chat widget.
    WebChat,
    /// SMS.
    Sms,
    /// Any other channel.
    Other,
}

impl Channel {
    /// Every channel, in declaration order.
    pub const ALL: [Channel; 9] = [
        Channel::WhatsApp,
        Channel::Messenger,
        Channel::Instagram,
        Channel::Telegram,
        Channel::Line,
        Channel::Email,
        Channel::WebChat,
        Channel::Sms,
        Channel::Other,
    ];

    /// Dense index, `0..9`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An agent's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AgentStatus {
    /// Available for new conversations.
    Online,
    /// Working but not wanting new conversations.
    Busy,
    /// Briefly away.
    Away,
    /// Not working.
    Offline,
}

impl AgentStatus {
    /// Every status, in declaration order.
    pub const ALL: [AgentStatus; 4] = [AgentStatus::Online, AgentStatus::Busy, AgentStatus::Away, AgentStatus::Offline];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of statuses, as a bit mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSet(u8);

impl StatusSet {
    /// Only `ONLINE`: the default, so that nobody who is not online receives conversations.
    pub const ONLINE_ONLY: StatusSet = StatusSet(1);

    /// A set of the given statuses.
    pub fn of(statuses: &[AgentStatus]) -> Self {
        Self(statuses.iter().fold(0, |mask, status| mask | status.bit()))
    }

    /// The statuses in the set, in declaration order.
    pub fn statuses(self) -> Vec<AgentStatus> {
        AgentStatus::ALL.into_iter().filter(|status| self.contains(*status)).collect()
    }

    /// Whether `status` is in the set.
    pub fn contains(self, status: AgentStatus) -> bool {
        self.0 & status.bit() != 0
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::ONLINE_ONLY
    }
}

/// How a team chooses among its eligible agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// A cursor walks the member order; the next eligible agent after it gets the conversation.
    RoundRobin,
    /// Fewest open conversations; ties by longest since last assignment, then id.
    LeastOpen,
    /// A draw with probability proportional to each eligible agent's `daily_limit`.
    Weighted,
    /// The first eligible agent in the configured member order.
    Ordered,
    /// Never automatic: agents pick (claim) from the queue.
    Manual,
}

impl Strategy {
    /// Lower-case label, as used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastOpen => "least_open",
            Strategy::Weighted => "weighted",
            Strategy::Ordered => "ordered",
            Strategy::Manual => "manual",
        }
    }
}

/// Agent configuration (presence is separate: see `SetAgentStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    /// The agent's id.
    pub id: AgentId,
    /// Shown to customers: "You are talking to Mary". Kept inline up to 24 bytes: every
    /// assignment copies it into its effect, and a separate allocation per agent was a cache
    /// miss of its own at 100,000 agents.
    pub display_name: CompactString,
    /// Skill name → level 1–5.
    pub skills: BTreeMap<Skill, u8>,
    /// Languages the agent answers in.
    pub languages: Vec<Language>,
    /// Concurrent open conversations allowed through automatic assignment.
    pub max_open: u32,
    /// Optional tighter limits per channel.
    pub max_open_per_channel: BTreeMap<Channel, u32>,
    /// Reception quota per day; also the weight of weighted draws. 0 = no reception right.
    pub daily_limit: u32,
    /// Never receives automatic assignments (can still claim or be assigned by a supervisor).
    pub auto_assign_excluded: bool,
}

impl AgentSpec {
    /// `max_open` of an agent that does not say.
    pub const DEFAULT_MAX_OPEN: u32 = 5;
    /// `daily_limit` of an agent that does not say.
    pub const DEFAULT_DAILY_LIMIT: u32 = 100;

    /// An agent with the given id and name, [`Self::DEFAULT_MAX_OPEN`] open conversations and a
    /// daily limit of [`Self::DEFAULT_DAILY_LIMIT`].
    pub fn new(id: impl Into<AgentId>, display_name: impl Into<CompactString>) -> Self {
        Self {
            id: id.into(),
            display_name: display_name.into(),
            skills: BTreeMap::new(),
            languages: Vec::new(),
            max_open: Self::DEFAULT_MAX_OPEN,
            max_open_per_channel: BTreeMap::new(),
            daily_limit: Self::DEFAULT_DAILY_LIMIT,
            auto_assign_excluded: false,
        }
    }
}

/// Behaviour switches of a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamOptions {
    /// Statuses that may receive automatic assignments. Default: `ONLINE` only.
    pub allowed_statuses: StatusSet,
    /// Treat `daily_limit` as a hard cap on conversations received per local day.
    pub daily_limit_hard_cap: bool,
    /// Send a returning customer back to the agent who served them last, if eligible.
    pub keep_returning_customers: bool,
    /// A reopened conversation whose agent is unavailable goes to another agent (otherwise it
    /// waits for its agent).
    pub reassign_reopened_if_unavailable: bool,
    /// When an agent goes `OFFLINE`, their open conversations of this team are requeued.
    pub requeue_on_offline: bool,
    /// Move a conversation to another agent when its agent has not replied within this many
    /// seconds of the assignment. 0 = off.
    pub no_reply_timeout_s: u32,
    /// Wait this many seconds in the unassigned queue (claimable) before automatic
    /// assignment. 0 = assign at once.
    pub assign_delay_s: u32,
    /// Handle time assumed for ETAs until real handle times are known.
    pub default_handle_time_s: u32,
    /// Response time announced for agents whose own response time is not known yet.
    pub default_response_time_s: u32,
    /// When the queue moves, tell each waiting customer whose position (or ETA, by a minute or
    /// more) changed, at most once per conversation per this many seconds. 0 = off.
    pub position_update_interval_s: u32,
}

impl Default for TeamOptions {
    fn default() -> Self {
        Self {
            allowed_statuses: StatusSet::ONLINE_ONLY,
            daily_limit_hard_cap: false,
            keep_returning_customers: false,
            reassign_reopened_if_unavailable: false,
            requeue_on_offline: false,
            no_reply_timeout_s: 0,
            assign_delay_s: 0,
            default_handle_time_s: 300,
            default_response_time_s: 120,
            position_update_interval_s: 0,
        }
    }
}

/// Messages a gateway sends on the team's behalf; carried in effects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Templates {
    /// Sent when a conversation opens (the team "sends a welcome").
    pub welcome: Option<String>,
    /// Sent outside business hours.
    pub away: Option<String>,
    /// Sent when the conversation has to wait in the queue.
    pub overcapacity: Option<String>,
}

/// Team configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamSpec {
    /// The team's id.
    pub id: TeamId,
    /// Human name.
    pub name: String,
    /// Members in their configured order (round-robin and ordered strategies walk it).
    pub members: Vec<AgentId>,
    /// How members are chosen.
    pub strategy: Strategy,
    /// Behaviour switches.
    pub options: TeamOptions,
    /// IANA timezone for business hours and the daily reset of counts.
    pub timezone: String,
    /// Opening hours; `None` = always open.
    pub business_hours: Option<BusinessHours>,
    /// Messages carried in effects.
    pub templates: Templates,
}

impl TeamSpec {
    /// `timezone` of a team that does not say.
    pub const DEFAULT_TIMEZONE: &str = "UTC";

    /// A team with default options, [`Self::DEFAULT_TIMEZONE`], always open.
    pub fn new(id: impl Into<TeamId>, strategy: Strategy, members: &[&str]) -> Self {
        let id = id.into();
        Self {
            name: id.to_string(),
            id,
            members: members.iter().map(AgentId::new).collect(),
            strategy,
            options: TeamOptions::default(),
            timezone: Self::DEFAULT_TIMEZONE.to_string(),
            business_hours: None,
            templates: Templates::default(),
        }
    }
}

/// Whether a rule applies to new customers, returning ones, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerKind {
    /// Any customer.
    #[default]
    Any,
    /// Only customers never seen before.
    New,
    /// Only customers with an earlier conversation.
    Returning,
}

/// What a rule matches. Every non-empty list must match (any of its values); an empty list
/// matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleConditions {
    /// Any of these channels.
    pub channels: Vec<Channel>,
    /// Any of these conversation languages.
    pub languages: Vec<Language>,
    /// Any of these topics.
    pub topics: Vec<String>,
    /// Any of these contact tiers (for example `vip`).
    pub tiers: Vec<String>,
    /// Any of these conversation tags.
    pub tags: Vec<String>,
    /// New or returning customers.
    pub customer: CustomerKind,
    /// Any of these words in the first customer message (case-insensitive, whole words).
    pub keywords: Vec<String>,
}

/// Where a rule sends a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleTarget {
    /// A team, optionally only to members with skills (at least the level) and a language.
    Team {
        /// The team.
        team: TeamId,
        /// Skill name → minimum level.
        required_skills: BTreeMap<Skill, u8>,
        /// A language the agent must speak.
        required_language: Option<Language>,
    },
    /// One agent; the conversation waits for them if they are unavailable.
    Agent {
        /// The agent.
        agent: AgentId,
    },
}

/// A routing rule. Rules are ordered; the first match wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    /// The rule's id.
    pub id: RuleId,
    /// What it matches.
    pub conditions: RuleConditions,
    /// Where it sends a match.
    pub target: RuleTarget,
}

/// Contact (customer) data a gateway or CRM keeps in sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactSpec {
    /// The contact's id.
    pub id: ContactId,
    /// Tier, for example `vip`; matched by rules.
    pub tier: Option<String>,
    /// The contact's dedicated agent (VIP).
    pub dedicated_agent: Option<AgentId>,
}

/// Workspace-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSettings {
    /// The team that receives conversations no rule matches.
    pub default_team: Option<TeamId>,
    /// A VIP whose dedicated agent is unavailable waits for that agent (`true`) or is routed
    /// to the team like anyone else (`false`, the default).
    pub vip_waits_for_dedicated_agent: bool,
    /// Event ids are remembered at least this long for deduplication.
    pub dedupe_window_s: u32,
    /// And at most this many of them (the oldest are forgotten first).
    pub dedupe_max_events: u32,
    /// Closed conversations are forgotten this long after closing (reopening then starts a
    /// new conversation record).
    pub closed_retention_s: u32,
    /// Seed of the workspace's PRNG, used only when the workspace is created.
    pub rng_seed: u64,
}

impl WorkspaceSettings {
    /// `dedupe_window_s` of a workspace that does not say: event ids are remembered 10 minutes.
    pub const DEFAULT_DEDUPE_WINDOW_S: u32 = 600;
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            default_team: None,
            vip_waits_for_dedicated_agent: false,
            dedupe_window_s: Self::DEFAULT_DEDUPE_WINDOW_S,
            dedupe_max_events: 1_000_000,
            closed_retention_s: 30 * 86_400,
            rng_seed: 0x5157_1C4B_0A2D,
        }
    }
}
