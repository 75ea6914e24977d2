//! Why a new or reopened conversation would go where it goes: the path that decides (dedicated
//! agent, returning customer, a rule, the previous agent, the team's strategy) and, for every
//! candidate, whether they could take it and if not, why. Computed on demand from a state by
//! [`State::explain_open`], or while applying by [`State::apply_explained`] (from exactly the
//! state the decision saw), never on the hot path.
//!
//! [`State::explain_open`]: crate::State::explain_open
//! [`State::apply_explained`]: crate::State::apply_explained

use crate::ids::{AgentId, Language, RuleId, Skill, TeamId};
use crate::model::{AgentStatus, Channel, Strategy};
use serde::{Deserialize, Serialize};

/// Whether one agent could take the conversation now, and if not the first reason why, in the
/// order the router checks them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Could take it now.
    Eligible,
    /// Not a member of the team (and not named by a rule or as the contact's agent).
    NotMember,
    /// Lacks a skill at the level the routing requires.
    MissingSkill {
        /// The skill.
        skill: Skill,
        /// The level required.
        level: u8,
    },
    /// Does not speak the language the routing requires.
    MissingLanguage(Language),
    /// Excluded from automatic assignment.
    Excluded,
    /// Their status is not one the team assigns to.
    Status(AgentStatus),
    /// At `max_open`.
    AtMaxOpen {
        /// Conversations open now.
        open: u32,
        /// The limit.
        max_open: u32,
    },
    /// Reached the daily limit, which the team makes a hard cap.
    DailyLimit {
        /// Received today.
        received: u32,
        /// The limit.
        daily_limit: u32,
    },
    /// Otherwise eligible, but weighs 0 in a weighted team (`daily_limit` 0): never drawn.
    ZeroWeight,
    /// At the agent's limit for the conversation's channel.
    ChannelFull {
        /// The channel.
        channel: Channel,
        /// The limit.
        limit: u32,
    },
}

impl Verdict {
    /// Whether the agent could take it.
    pub fn is_eligible(&self) -> bool {
        matches!(self, Verdict::Eligible)
    }
}

/// The verdict in words ("at max_open (3 of 3)").
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Eligible => f.write_str("eligible"),
            Verdict::NotMember => f.write_str("not a member of the team"),
            Verdict::MissingSkill { skill, level } => write!(f, "lacks skill {skill} at level {level}"),
            Verdict::MissingLanguage(language) => write!(f, "does not speak {language}"),
            Verdict::Excluded => f.write_str("excluded from automatic assignment"),
            Verdict::Status(status) => write!(f, "status {status:?}, which the team does not assign to"),
            Verdict::AtMaxOpen { open, max_open } => write!(f, "at max_open ({open} of {max_open})"),
            Verdict::DailyLimit { received, daily_limit } => {
                write!(f, "daily limit reached ({received} of {daily_limit}, a hard cap in this team)")
            }
            Verdict::ZeroWeight => f.write_str("weighs 0 in this weighted team (daily_limit 0): never drawn"),
            Verdict::ChannelFull { channel, limit } => write!(f, "at the {channel:?} limit ({limit})"),
        }
    }
}

/// One member of the routed team and their verdict, with what the strategy compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The agent.
    pub agent: AgentId,
    /// Whether they could take it.
    pub verdict: Verdict,
    /// Conversations they hold now (what least-open compares).
    pub open: u32,
    /// Their weight (daily limit; what weighted draws by).
    pub weight: u32,
}

/// How the team was chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Routed {
    /// The first routing rule that matched, and the conditions it has (all of which matched).
    Rule {
        /// The rule.
        rule: RuleId,
        /// The conditions the rule sets: `channel`, `language`, `topic`, `tier`, `tag`,
        /// `customer`, `keyword`; empty for a rule that matches everything.
        matched_on: Vec<String>,
    },
    /// No rule matched: the workspace's default team.
    DefaultTeam,
    /// The customer wrote again in a closed conversation: it goes back to its team (or, if
    /// that team is gone, where the rules send it). Its previous agent, in
    /// [`Explanation::returning`], is tried first; if they cannot take it, it waits for them,
    /// unless the team reassigns reopened conversations, and otherwise the strategy decides.
    Reopened {
        /// The team's `reassign_reopened_if_unavailable`.
        reassign_if_unavailable: bool,
    },
}

/// Why a new conversation goes where it goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// How the team was chosen.
    pub routed: Routed,
    /// The team.
    pub team: TeamId,
    /// The team's strategy.
    pub strategy: Strategy,
    /// The team is closed now: the conversation waits for opening time.
    pub outside_hours: bool,
    /// The team waits this long before automatic assignment (0 = none).
    pub assign_delay_s: u32,
    /// The contact's dedicated agent, tried first.
    pub dedicated: Option<Candidate>,
    /// The returning customer's previous agent, tried next (when the team keeps returning
    /// customers); for a reopened conversation, its previous agent.
    pub returning: Option<Candidate>,
    /// The agent a rule names, tried next (the conversation waits for them if they cannot
    /// take it).
    pub rule_agent: Option<Candidate>,
    /// Every member of the team, in member order, for the strategy.
    pub candidates: Vec<Candidate>,
}
