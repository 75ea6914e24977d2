//! Why a new conversation would go where it goes: the path that decides (dedicated agent,
//! returning customer, a rule, the team's strategy) and, for every candidate, whether they
//! could take it and if not, why. Computed on demand from a state by [`State::explain_open`]
//! (for example the state a replay holds just before the conversation's event), never on the
//! hot path.
//!
//! [`State::explain_open`]: crate::State::explain_open

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
    /// customers).
    pub returning: Option<Candidate>,
    /// The agent a rule names, tried next (the conversation waits for them if they cannot
    /// take it).
    pub rule_agent: Option<Candidate>,
    /// Every member of the team, in member order, for the strategy.
    pub candidates: Vec<Candidate>,
}
