//! Channels, statuses, strategies and the configuration of agents, teams, rules, contacts and
//! workspaces.

use super::ConvertError;
use super::{invalid, optional_id, optional_text, required, required_id};
use std::collections::BTreeMap;
use switchboard_core::{
    AgentSpec, AgentStatus, BusinessHours, Channel, ContactSpec, CustomerKind, OpeningInterval, RoutingRule,
    RuleConditions, RuleTarget, StatusSet, Strategy, TeamOptions, TeamSpec, Templates, WorkspaceSettings,
};
use switchboard_proto::switchboard::v1 as pb;

pub(crate) fn channel_from_pb(value: i32, field: &str) -> Result<Channel, ConvertError> {
    Ok(match pb::Channel::try_from(value) {
        Ok(pb::Channel::Whatsapp) => Channel::WhatsApp,
        Ok(pb::Channel::Messenger) => Channel::Messenger,
        Ok(pb::Channel::Instagram) => Channel::Instagram,
        Ok(pb::Channel::Telegram) => Channel::Telegram,
        Ok(pb::Channel::Line) => Channel::Line,
        Ok(pb::Channel::Email) => Channel::Email,
        Ok(pb::Channel::WebChat) => Channel::WebChat,
        Ok(pb::Channel::Sms) => Channel::Sms,
        Ok(pb::Channel::Other) => Channel::Other,
        Ok(pb::Channel::Unspecified) => return Err(invalid(field, "is required (CHANNEL_UNSPECIFIED given)")),
        Err(_) => return Err(invalid(field, format!("{value} is not a known channel"))),
    })
}

pub(crate) fn channel_to_pb(channel: Channel) -> pb::Channel {
    match channel {
        Channel::WhatsApp => pb::Channel::Whatsapp,
        Channel::Messenger => pb::Channel::Messenger,
        Channel::Instagram => pb::Channel::Instagram,
        Channel::Telegram => pb::Channel::Telegram,
        Channel::Line => pb::Channel::Line,
        Channel::Email => pb::Channel::Email,
        Channel::WebChat => pb::Channel::WebChat,
        Channel::Sms => pb::Channel::Sms,
        Channel::Other => pb::Channel::Other,
    }
}

/// An agent status; `None` for `AGENT_STATUS_UNSPECIFIED` (callers decide whether that is
/// allowed).
pub fn status_from_pb(value: i32, field: &str) -> Result<Option<AgentStatus>, ConvertError> {
    Ok(match pb::AgentStatus::try_from(value) {
        Ok(pb::AgentStatus::Online) => Some(AgentStatus::Online),
        Ok(pb::AgentStatus::Busy) => Some(AgentStatus::Busy),
        Ok(pb::AgentStatus::Away) => Some(AgentStatus::Away),
        Ok(pb::AgentStatus::Offline) => Some(AgentStatus::Offline),
        Ok(pb::AgentStatus::Unspecified) => None,
        Err(_) => return Err(invalid(field, format!("{value} is not a known agent status"))),
    })
}

pub(crate) fn required_status(value: i32, field: &str) -> Result<AgentStatus, ConvertError> {
    status_from_pb(value, field)?.ok_or_else(|| invalid(field, "is required (AGENT_STATUS_UNSPECIFIED given)"))
}

pub(crate) fn status_to_pb(status: AgentStatus) -> pb::AgentStatus {
    match status {
        AgentStatus::Online => pb::AgentStatus::Online,
        AgentStatus::Busy => pb::AgentStatus::Busy,
        AgentStatus::Away => pb::AgentStatus::Away,
        AgentStatus::Offline => pb::AgentStatus::Offline,
    }
}

pub(crate) fn strategy_from_pb(value: i32, field: &str) -> Result<Strategy, ConvertError> {
    Ok(match pb::Strategy::try_from(value) {
        Ok(pb::Strategy::RoundRobin) => Strategy::RoundRobin,
        Ok(pb::Strategy::LeastOpen) => Strategy::LeastOpen,
        Ok(pb::Strategy::Weighted) => Strategy::Weighted,
        Ok(pb::Strategy::Ordered) => Strategy::Ordered,
        Ok(pb::Strategy::Manual) => Strategy::Manual,
        Ok(pb::Strategy::Unspecified) => return Err(invalid(field, "is required (STRATEGY_UNSPECIFIED given)")),
        Err(_) => return Err(invalid(field, format!("{value} is not a known strategy"))),
    })
}

pub(crate) fn strategy_to_pb(strategy: Strategy) -> pb::Strategy {
    match strategy {
        Strategy::RoundRobin => pb::Strategy::RoundRobin,
        Strategy::LeastOpen => pb::Strategy::LeastOpen,
        Strategy::Weighted => pb::Strategy::Weighted,
        Strategy::Ordered => pb::Strategy::Ordered,
        Strategy::Manual => pb::Strategy::Manual,
    }
}

fn small(value: u32, field: &str) -> Result<u8, ConvertError> {
    u8::try_from(value).map_err(|_| invalid(field, format!("{value} is out of range")))
}

fn skills_from_pb<K: Ord + From<String>>(
    skills: BTreeMap<String, u32>,
    field: &str,
) -> Result<BTreeMap<K, u8>, ConvertError> {
    skills
        .into_iter()
        .map(|(name, level)| {
            let field = format!("{field}[{name}]");
            Ok((required_id(name, &field)?, small(level, &field)?))
        })
        .collect()
}

fn ids_from_pb<T: From<String>>(values: Vec<String>, field: &str) -> Result<Vec<T>, ConvertError> {
    values.into_iter().enumerate().map(|(i, value)| required_id(value, &format!("{field}[{i}]"))).collect()
}

/// An agent's configuration as the admin service takes it.
pub fn agent_from_pb(agent: pb::Agent) -> Result<AgentSpec, ConvertError> {
    let mut max_open_per_channel = BTreeMap::new();
    for (i, limit) in agent.max_open_per_channel.into_iter().enumerate() {
        let channel = channel_from_pb(limit.channel, &format!("agent.max_open_per_channel[{i}].channel"))?;
        if max_open_per_channel.insert(channel, limit.max_open).is_some() {
            return Err(invalid("agent.max_open_per_channel", format!("{channel:?} is listed twice")));
        }
    }
    Ok(AgentSpec {
        id: required_id(agent.id, "agent.id")?,
        display_name: agent.display_name.into(),
        skills: skills_from_pb(agent.skills, "agent.skills")?,
        languages: ids_from_pb(agent.languages, "agent.languages")?,
        max_open: agent.max_open,
        max_open_per_channel,
        daily_limit: agent.daily_limit,
        auto_assign_excluded: agent.auto_assign_excluded,
    })
}

pub(crate) fn agent_to_pb(spec: &AgentSpec) -> pb::Agent {
    pb::Agent {
        id: spec.id.to_string(),
        display_name: spec.display_name.to_string(),
        skills: spec.skills.iter().map(|(skill, level)| (skill.to_string(), u32::from(*level))).collect(),
        languages: spec.languages.iter().map(ToString::to_string).collect(),
        max_open: spec.max_open,
        max_open_per_channel: spec
            .max_open_per_channel
            .iter()
            .map(|(channel, max_open)| pb::ChannelLimit {
                channel: channel_to_pb(*channel).into(),
                max_open: *max_open,
            })
            .collect(),
        daily_limit: spec.daily_limit,
        auto_assign_excluded: spec.auto_assign_excluded,
    }
}

fn options_from_pb(options: Option<pb::TeamOptions>) -> Result<TeamOptions, ConvertError> {
    let defaults = TeamOptions::default();
    let Some(options) = options else { return Ok(defaults) };
    let mut allowed = Vec::new();
    for (i, value) in options.allowed_statuses.iter().enumerate() {
        allowed.push(required_status(*value, &format!("team.options.allowed_statuses[{i}]"))?);
    }
    Ok(TeamOptions {
        allowed_statuses: if allowed.is_empty() { StatusSet::ONLINE_ONLY } else { StatusSet::of(&allowed) },
        daily_limit_hard_cap: options.daily_limit_hard_cap,
        keep_returning_customers: options.keep_returning_customers,
        reassign_reopened_if_unavailable: options.reassign_reopened_if_unavailable,
        requeue_on_offline: options.requeue_on_offline,
        no_reply_timeout_s: options.no_reply_timeout_s,
        assign_delay_s: options.assign_delay_s,
        default_handle_time_s: if options.default_handle_time_s == 0 {
            defaults.default_handle_time_s
        } else {
            options.default_handle_time_s
        },
        default_response_time_s: if options.default_response_time_s == 0 {
            defaults.default_response_time_s
        } else {
            options.default_response_time_s
        },
        position_update_interval_s: options.position_update_interval_s,
    })
}

fn options_to_pb(options: &TeamOptions) -> pb::TeamOptions {
    pb::TeamOptions {
        allowed_statuses: options.allowed_statuses.statuses().into_iter().map(|s| status_to_pb(s).into()).collect(),
        daily_limit_hard_cap: options.daily_limit_hard_cap,
        keep_returning_customers: options.keep_returning_customers,
        reassign_reopened_if_unavailable: options.reassign_reopened_if_unavailable,
        requeue_on_offline: options.requeue_on_offline,
        no_reply_timeout_s: options.no_reply_timeout_s,
        assign_delay_s: options.assign_delay_s,
        default_handle_time_s: options.default_handle_time_s,
        default_response_time_s: options.default_response_time_s,
        position_update_interval_s: options.position_update_interval_s,
    }
}

fn hours_from_pb(hours: pb::BusinessHours) -> Result<BusinessHours, ConvertError> {
    let mut weekly = Vec::with_capacity(hours.weekly.len());
    for (i, interval) in hours.weekly.into_iter().enumerate() {
        let field = format!("team.business_hours.weekly[{i}]");
        let minute = |value: u32, name: &str| {
            u16::try_from(value).map_err(|_| invalid(&format!("{field}.{name}"), format!("{value} is out of range")))
        };
        weekly.push(OpeningInterval {
            weekday: small(interval.weekday, &format!("{field}.weekday"))?,
            open_minute: minute(interval.open_minute, "open_minute")?,
            close_minute: minute(interval.close_minute, "close_minute")?,
        });
    }
    Ok(BusinessHours { weekly, holidays: hours.holidays })
}

fn hours_to_pb(hours: &BusinessHours) -> pb::BusinessHours {
    pb::BusinessHours {
        weekly: hours
            .weekly
            .iter()
            .map(|interval| pb::OpeningInterval {
                weekday: u32::from(interval.weekday),
                open_minute: u32::from(interval.open_minute),
                close_minute: u32::from(interval.close_minute),
            })
            .collect(),
        holidays: hours.holidays.clone(),
    }
}

/// A team's configuration as the admin service takes it.
pub fn team_from_pb(team: pb::Team) -> Result<TeamSpec, ConvertError> {
    let id: switchboard_core::TeamId = required_id(team.id, "team.id")?;
    let templates = team.templates.unwrap_or_default();
    Ok(TeamSpec {
        name: if team.name.is_empty() { id.to_string() } else { team.name },
        id,
        members: ids_from_pb(team.members, "team.members")?,
        strategy: strategy_from_pb(team.strategy, "team.strategy")?,
        options: options_from_pb(team.options)?,
        timezone: if team.timezone.is_empty() { "UTC".to_owned() } else { team.timezone },
        business_hours: team.business_hours.map(hours_from_pb).transpose()?,
        templates: Templates {
            welcome: optional_text(templates.welcome),
            away: optional_text(templates.away),
            overcapacity: optional_text(templates.overcapacity),
        },
    })
}

/// A core team as the API states it (what `GetWorkspace` returns).
pub fn team_to_pb(spec: &TeamSpec) -> pb::Team {
    pb::Team {
        id: spec.id.to_string(),
        name: spec.name.clone(),
        members: spec.members.iter().map(ToString::to_string).collect(),
        strategy: strategy_to_pb(spec.strategy).into(),
        options: Some(options_to_pb(&spec.options)),
        timezone: spec.timezone.clone(),
        business_hours: spec.business_hours.as_ref().map(hours_to_pb),
        templates: Some(pb::Templates {
            welcome: spec.templates.welcome.clone().unwrap_or_default(),
            away: spec.templates.away.clone().unwrap_or_default(),
            overcapacity: spec.templates.overcapacity.clone().unwrap_or_default(),
        }),
    }
}

/// Routing rule `index` of a rule list, as the admin service takes it.
pub fn rule_from_pb(rule: pb::RoutingRule, index: usize) -> Result<RoutingRule, ConvertError> {
    let field = format!("rules[{index}]");
    let conditions = rule.conditions.unwrap_or_default();
    let mut channels = Vec::new();
    for (i, value) in conditions.channels.iter().enumerate() {
        channels.push(channel_from_pb(*value, &format!("{field}.conditions.channels[{i}]"))?);
    }
    let customer = match pb::CustomerKind::try_from(conditions.customer) {
        Ok(pb::CustomerKind::Any) => CustomerKind::Any,
        Ok(pb::CustomerKind::New) => CustomerKind::New,
        Ok(pb::CustomerKind::Returning) => CustomerKind::Returning,
        Err(_) => {
            return Err(invalid(
                &format!("{field}.conditions.customer"),
                format!("{} is not a known customer kind", conditions.customer),
            ));
        }
    };
    let target = required(rule.target.and_then(|t| t.target), &format!("{field}.target"))?;
    let target = match target {
        pb::rule_target::Target::Team(team) => RuleTarget::Team {
            team: required_id(team.team, &format!("{field}.target.team.team"))?,
            required_skills: skills_from_pb(team.required_skills, &format!("{field}.target.team.required_skills"))?,
            required_language: optional_id(team.required_language, &format!("{field}.target.team.required_language"))?,
        },
        pb::rule_target::Target::Agent(agent) => {
            RuleTarget::Agent { agent: required_id(agent, &format!("{field}.target.agent"))? }
        }
    };
    Ok(RoutingRule {
        id: required_id(rule.id, &format!("{field}.id"))?,
        conditions: RuleConditions {
            channels,
            languages: ids_from_pb(conditions.languages, &format!("{field}.conditions.languages"))?,
            topics: conditions.topics,
            tiers: conditions.tiers,
            tags: conditions.tags,
            customer,
            keywords: conditions.keywords,
        },
        target,
    })
}

pub(crate) fn rule_to_pb(rule: &RoutingRule) -> pb::RoutingRule {
    let c = &rule.conditions;
    let target = match &rule.target {
        RuleTarget::Team { team, required_skills, required_language } => {
            pb::rule_target::Target::Team(pb::TeamTarget {
                team: team.to_string(),
                required_skills: required_skills
                    .iter()
                    .map(|(skill, level)| (skill.to_string(), u32::from(*level)))
                    .collect(),
                required_language: required_language.as_ref().map(ToString::to_string).unwrap_or_default(),
            })
        }
        RuleTarget::Agent { agent } => pb::rule_target::Target::Agent(agent.to_string()),
    };
    pb::RoutingRule {
        id: rule.id.to_string(),
        conditions: Some(pb::RuleConditions {
            channels: c.channels.iter().map(|channel| channel_to_pb(*channel).into()).collect(),
            languages: c.languages.iter().map(ToString::to_string).collect(),
            topics: c.topics.clone(),
            tiers: c.tiers.clone(),
            tags: c.tags.clone(),
            customer: match c.customer {
                CustomerKind::Any => pb::CustomerKind::Any,
                CustomerKind::New => pb::CustomerKind::New,
                CustomerKind::Returning => pb::CustomerKind::Returning,
            }
            .into(),
            keywords: c.keywords.clone(),
        }),
        target: Some(pb::RuleTarget { target: Some(target) }),
    }
}

pub(crate) fn contact_from_pb(contact: pb::Contact, field: &str) -> Result<ContactSpec, ConvertError> {
    Ok(ContactSpec {
        id: required_id(contact.id, &format!("{field}.id"))?,
        tier: optional_text(contact.tier),
        dedicated_agent: optional_id(contact.dedicated_agent, &format!("{field}.dedicated_agent"))?,
    })
}

pub(crate) fn contact_to_pb(spec: &ContactSpec) -> pb::Contact {
    pb::Contact {
        id: spec.id.to_string(),
        tier: spec.tier.clone().unwrap_or_default(),
        dedicated_agent: spec.dedicated_agent.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

/// Workspace settings as the admin service takes them (zero means the default).
pub fn settings_from_pb(settings: pb::WorkspaceSettings) -> Result<WorkspaceSettings, ConvertError> {
    let defaults = WorkspaceSettings::default();
    let or = |value: u32, default: u32| if value == 0 { default } else { value };
    Ok(WorkspaceSettings {
        default_team: optional_id(settings.default_team, "settings.default_team")?,
        vip_waits_for_dedicated_agent: settings.vip_waits_for_dedicated_agent,
        dedupe_window_s: or(settings.dedupe_window_s, defaults.dedupe_window_s),
        dedupe_max_events: or(settings.dedupe_max_events, defaults.dedupe_max_events),
        closed_retention_s: or(settings.closed_retention_s, defaults.closed_retention_s),
        rng_seed: if settings.rng_seed == 0 { defaults.rng_seed } else { settings.rng_seed },
    })
}

pub(crate) fn settings_to_pb(settings: &WorkspaceSettings) -> pb::WorkspaceSettings {
    pb::WorkspaceSettings {
        default_team: settings.default_team.as_ref().map(ToString::to_string).unwrap_or_default(),
        vip_waits_for_dedicated_agent: settings.vip_waits_for_dedicated_agent,
        dedupe_window_s: settings.dedupe_window_s,
        dedupe_max_events: settings.dedupe_max_events,
        closed_retention_s: settings.closed_retention_s,
        rng_seed: settings.rng_seed,
    }
}
