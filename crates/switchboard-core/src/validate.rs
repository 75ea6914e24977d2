//! Stateless checks of an input's shape against [`crate::limits`]: every string's length, every
//! list's count, every number's range. They need no state, so the edges run the very same code
//! before proposing ([`Command::validate`], [`Event::validate`]) and `apply` runs it again
//! before the first mutation. Checks that need the state (does the team exist, is the member
//! listed twice) stay with the operation in `workspace/`.

use crate::command::{Command, Event, OpenConversation, TransferTarget};
use crate::error::ApplyError;
use crate::hours::BusinessHours;
use crate::ids::{EventId, Language, Skill};
use crate::limits::*;
use crate::model::{AgentSpec, ContactSpec, RoutingRule, RuleTarget, TeamSpec, WorkspaceSettings};
use std::collections::BTreeMap;

/// An identifier: 1 to [`ID_BYTES_MAX`] bytes.
pub(crate) fn check_id(field: &'static str, id: &str) -> Result<(), ApplyError> {
    if id.is_empty() {
        return Err(ApplyError::invalid(field, "must not be empty"));
    }
    check_bytes(field, id, ID_BYTES_MAX)
}

/// A string of at most `max` bytes.
pub(crate) fn check_bytes(field: &'static str, value: &str, max: usize) -> Result<(), ApplyError> {
    if value.len() > max {
        return Err(ApplyError::invalid(field, format!("is {} bytes; the limit is {max}", value.len())));
    }
    Ok(())
}

/// A list of at most `max` items.
pub(crate) fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), ApplyError> {
    if count > max {
        return Err(ApplyError::invalid(field, format!("has {count} items; the limit is {max}")));
    }
    Ok(())
}

/// A number in `min..=max`, with its unit for the message.
pub(crate) fn check_range(field: &'static str, value: u64, min: u64, max: u64, unit: &str) -> Result<(), ApplyError> {
    if value < min || value > max {
        return Err(ApplyError::invalid(field, format!("{value} {unit} is outside {min}..={max} {unit}")));
    }
    Ok(())
}

pub(crate) fn check_skill_level(field: &'static str, level: u8) -> Result<(), ApplyError> {
    if !(1..=5).contains(&level) {
        return Err(ApplyError::invalid(field, format!("level {level} is not between 1 and 5")));
    }
    Ok(())
}

fn check_language(field: &'static str, language: &Language) -> Result<(), ApplyError> {
    if language.as_str().is_empty() {
        return Err(ApplyError::invalid(field, "must not be empty"));
    }
    check_bytes(field, language.as_str(), LANGUAGE_BYTES_MAX)
}

fn check_skills(field: &'static str, skills: &BTreeMap<Skill, u8>, max: usize) -> Result<(), ApplyError> {
    check_count(field, skills.len(), max)?;
    for (skill, level) in skills {
        check_id(field, skill.as_str())?;
        check_skill_level(field, *level)?;
    }
    Ok(())
}

impl Event {
    /// Checks the event's shape: workspace id, event id and the command, without any state.
    pub fn validate(&self) -> Result<(), ApplyError> {
        check_id("workspace", self.workspace.as_str())?;
        if let Some(event_id) = &self.event_id {
            check_event_id(event_id)?;
        }
        self.command.validate()
    }
}

fn check_event_id(event_id: &EventId) -> Result<(), ApplyError> {
    if event_id.as_str().is_empty() {
        return Err(ApplyError::invalid("event_id", "must not be empty"));
    }
    check_bytes("event_id", event_id.as_str(), EVENT_ID_BYTES_MAX)
}

impl Command {
    /// Checks every bound of [`crate::limits`] that needs no state. The edges call it before
    /// proposing; `apply` calls it again. The error names the field at fault.
    pub fn validate(&self) -> Result<(), ApplyError> {
        match self {
            Command::ConfigureWorkspace(settings) => settings.validate(),
            Command::UpsertAgent(spec) => spec.validate(),
            Command::RemoveAgent { agent } => check_id("agent", agent.as_str()),
            Command::UpsertTeam(spec) => spec.validate(),
            Command::RemoveTeam { team } => check_id("team", team.as_str()),
            Command::SetRoutingRules(rules) => validate_rules(rules),
            Command::UpsertContact(spec) => spec.validate(),
            Command::SetAgentStatus { agent, .. } => check_id("agent", agent.as_str()),
            Command::OpenConversation(open) => open.validate(),
            Command::CustomerMessage { conversation } | Command::CloseConversation { conversation } => {
                check_id("conversation", conversation.as_str())
            }
            Command::AgentReplied { conversation, agent }
            | Command::Claim { conversation, agent }
            | Command::Assign { conversation, agent } => {
                check_id("conversation", conversation.as_str())?;
                check_id("agent", agent.as_str())
            }
            Command::Transfer { conversation, target } => {
                check_id("conversation", conversation.as_str())?;
                match target {
                    TransferTarget::Agent(agent) => check_id("target.agent", agent.as_str()),
                    TransferTarget::Team(team) => check_id("target.team", team.as_str()),
                }
            }
        }
    }
}

impl WorkspaceSettings {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), ApplyError> {
        if let Some(team) = &self.default_team {
            check_id("default_team", team.as_str())?;
        }
        check_range("dedupe_window_s", self.dedupe_window_s.into(), 0, DEDUPE_WINDOW_S_MAX.into(), "s")?;
        check_range("dedupe_max_events", self.dedupe_max_events.into(), 1, DEDUPE_EVENTS_MAX.into(), "events")?;
        check_range("closed_retention_s", self.closed_retention_s.into(), 0, CLOSED_RETENTION_S_MAX.into(), "s")
    }
}

impl AgentSpec {
    /// Checks the agent's strings, lists and numbers.
    pub fn validate(&self) -> Result<(), ApplyError> {
        check_id("agent.id", self.id.as_str())?;
        if self.display_name.trim().is_empty() {
            return Err(ApplyError::invalid("agent.display_name", "must not be empty"));
        }
        check_bytes("agent.display_name", &self.display_name, TEXT_BYTES_MAX)?;
        check_skills("agent.skills", &self.skills, SKILLS_PER_AGENT_MAX)?;
        check_count("agent.languages", self.languages.len(), LANGUAGES_PER_AGENT_MAX)?;
        for language in &self.languages {
            check_language("agent.languages", language)?;
        }
        check_range("agent.max_open", self.max_open.into(), 0, MAX_OPEN_MAX.into(), "conversations")?;
        for limit in self.max_open_per_channel.values() {
            check_range("agent.max_open_per_channel", (*limit).into(), 0, MAX_OPEN_MAX.into(), "conversations")?;
        }
        check_range("agent.daily_limit", self.daily_limit.into(), 0, DAILY_LIMIT_MAX.into(), "conversations")
    }
}

impl TeamSpec {
    /// Checks the team's strings, lists, durations and schedule shape (the timezone and the
    /// schedule's contents are checked when the calendar is compiled).
    pub fn validate(&self) -> Result<(), ApplyError> {
        check_id("team.id", self.id.as_str())?;
        check_bytes("team.name", &self.name, TEXT_BYTES_MAX)?;
        check_count("team.members", self.members.len(), TEAM_MEMBERS_MAX)?;
        for member in &self.members {
            check_id("team.members", member.as_str())?;
        }
        let options = &self.options;
        let max = u64::from(TEAM_DURATION_S_MAX);
        check_range("team.options.no_reply_timeout_s", options.no_reply_timeout_s.into(), 0, max, "s")?;
        check_range("team.options.assign_delay_s", options.assign_delay_s.into(), 0, max, "s")?;
        check_range("team.options.default_handle_time_s", options.default_handle_time_s.into(), 0, max, "s")?;
        check_range("team.options.default_response_time_s", options.default_response_time_s.into(), 0, max, "s")?;
        let interval = options.position_update_interval_s;
        if interval != 0 && !(POSITION_UPDATE_INTERVAL_S_MIN..=POSITION_UPDATE_INTERVAL_S_MAX).contains(&interval) {
            return Err(ApplyError::invalid(
                "team.options.position_update_interval_s",
                format!(
                    "{interval} s is outside {POSITION_UPDATE_INTERVAL_S_MIN}..={POSITION_UPDATE_INTERVAL_S_MAX} s \
                     (0 turns queue position updates off)"
                ),
            ));
        }
        check_bytes("team.timezone", &self.timezone, ID_BYTES_MAX)?;
        if let Some(BusinessHours { weekly, holidays }) = &self.business_hours {
            check_count("team.business_hours.weekly", weekly.len(), OPENING_INTERVALS_MAX)?;
            check_count("team.business_hours.holidays", holidays.len(), HOLIDAYS_MAX)?;
            for holiday in holidays {
                check_bytes("team.business_hours.holidays", holiday, ID_BYTES_MAX)?;
            }
        }
        for template in
            [&self.templates.welcome, &self.templates.away, &self.templates.overcapacity].into_iter().flatten()
        {
            check_bytes("team.templates", template, TEXT_BYTES_MAX)?;
        }
        Ok(())
    }
}

impl RoutingRule {
    /// Checks one rule's lists and strings; returns how many condition values it has.
    fn validate_terms(&self) -> Result<usize, ApplyError> {
        check_id("rule.id", self.id.as_str())?;
        let c = &self.conditions;
        check_count("rule.conditions.channels", c.channels.len(), RULE_LIST_MAX)?;
        check_count("rule.conditions.languages", c.languages.len(), RULE_LIST_MAX)?;
        for language in &c.languages {
            check_language("rule.conditions.languages", language)?;
        }
        check_count("rule.conditions.topics", c.topics.len(), RULE_LIST_MAX)?;
        for topic in &c.topics {
            check_bytes("rule.conditions.topics", topic, TOPIC_BYTES_MAX)?;
        }
        check_count("rule.conditions.tiers", c.tiers.len(), RULE_LIST_MAX)?;
        for tier in &c.tiers {
            check_bytes("rule.conditions.tiers", tier, TIER_BYTES_MAX)?;
        }
        check_count("rule.conditions.tags", c.tags.len(), RULE_LIST_MAX)?;
        for tag in &c.tags {
            check_bytes("rule.conditions.tags", tag, TAG_BYTES_MAX)?;
        }
        check_count("rule.conditions.keywords", c.keywords.len(), RULE_LIST_MAX)?;
        for keyword in &c.keywords {
            check_bytes("rule.conditions.keywords", keyword, KEYWORD_BYTES_MAX)?;
        }
        match &self.target {
            RuleTarget::Team { team, required_skills, required_language } => {
                check_id("rule.target.team", team.as_str())?;
                check_skills("rule.target.required_skills", required_skills, RULE_LIST_MAX)?;
                if let Some(language) = required_language {
                    check_language("rule.target.required_language", language)?;
                }
            }
            RuleTarget::Agent { agent } => check_id("rule.target.agent", agent.as_str())?,
        }
        Ok([c.channels.len(), c.languages.len(), c.topics.len(), c.tiers.len(), c.tags.len(), c.keywords.len()]
            .into_iter()
            .fold(0usize, usize::saturating_add))
    }
}

/// Checks a whole rule list: each rule, their count and the workspace's total of condition
/// values.
pub(crate) fn validate_rules(rules: &[RoutingRule]) -> Result<(), ApplyError> {
    check_count("rules", rules.len(), RULES_MAX)?;
    let mut terms = 0usize;
    for rule in rules {
        terms = terms.saturating_add(rule.validate_terms()?);
    }
    if terms > RULE_TERMS_PER_WORKSPACE_MAX {
        return Err(ApplyError::invalid(
            "rules",
            format!("the rules have {terms} condition values in all; the limit is {RULE_TERMS_PER_WORKSPACE_MAX}"),
        ));
    }
    Ok(())
}

impl ContactSpec {
    /// Checks the contact's strings.
    pub fn validate(&self) -> Result<(), ApplyError> {
        check_id("contact.id", self.id.as_str())?;
        if let Some(tier) = &self.tier {
            check_bytes("contact.tier", tier, TIER_BYTES_MAX)?;
        }
        if let Some(agent) = &self.dedicated_agent {
            check_id("contact.dedicated_agent", agent.as_str())?;
        }
        Ok(())
    }
}

impl OpenConversation {
    /// Checks the new conversation's strings and lists.
    pub fn validate(&self) -> Result<(), ApplyError> {
        check_id("conversation.id", self.conversation.as_str())?;
        check_id("conversation.contact", self.contact.as_str())?;
        if let Some(language) = &self.language {
            check_language("conversation.language", language)?;
        }
        if let Some(topic) = &self.topic {
            check_bytes("conversation.topic", topic, TOPIC_BYTES_MAX)?;
        }
        check_count("conversation.tags", self.tags.len(), TAGS_PER_CONVERSATION_MAX)?;
        for tag in &self.tags {
            check_bytes("conversation.tags", tag, TAG_BYTES_MAX)?;
        }
        check_bytes("conversation.first_message", &self.first_message, FIRST_MESSAGE_BYTES_MAX)
    }
}
