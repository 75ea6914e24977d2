//! The declarative workspace file of `switchboard ctl apply -f` (YAML), and its conversion to
//! and from the API's messages.
//!
//! The file says what the workspace should look like; `apply` compares it with what the cluster
//! has and sends only the changes. Values the file leaves out take the same defaults the server
//! gives them, so that an unchanged file shows no difference.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchboard_client::pb;

/// A whole workspace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkspaceFile {
    /// The workspace id.
    pub(crate) workspace: String,
    #[serde(default)]
    pub(crate) settings: Settings,
    #[serde(default)]
    pub(crate) agents: Vec<AgentEntry>,
    #[serde(default)]
    pub(crate) teams: Vec<TeamEntry>,
    #[serde(default)]
    pub(crate) rules: Vec<RuleEntry>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) default_team: String,
    pub(crate) vip_waits_for_dedicated_agent: bool,
    pub(crate) dedupe_window_s: u32,
    pub(crate) dedupe_max_events: u32,
    pub(crate) closed_retention_s: u32,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub(crate) rng_seed: u64,
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

fn default_max_open() -> u32 {
    5
}

fn default_daily_limit() -> u32 {
    100
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentEntry {
    pub(crate) id: String,
    /// Display name shown to customers; defaults to the id.
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default = "default_max_open")]
    pub(crate) max_open: u32,
    #[serde(default = "default_daily_limit")]
    pub(crate) daily_limit: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) skills: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) languages: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) max_open_per_channel: BTreeMap<String, u32>,
    #[serde(default)]
    pub(crate) auto_assign_excluded: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TeamEntry {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    /// round_robin, least_open, weighted, ordered or manual.
    pub(crate) strategy: String,
    #[serde(default)]
    pub(crate) members: Vec<String>,
    #[serde(default = "default_timezone")]
    pub(crate) timezone: String,
    #[serde(default)]
    pub(crate) options: TeamOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) business_hours: Option<Hours>,
    #[serde(default)]
    pub(crate) templates: Templates,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TeamOptions {
    pub(crate) allowed_statuses: Vec<String>,
    pub(crate) daily_limit_hard_cap: bool,
    pub(crate) keep_returning_customers: bool,
    pub(crate) reassign_reopened_if_unavailable: bool,
    pub(crate) requeue_on_offline: bool,
    pub(crate) no_reply_timeout_s: u32,
    pub(crate) assign_delay_s: u32,
    pub(crate) default_handle_time_s: u32,
    pub(crate) default_response_time_s: u32,
}

impl Default for TeamOptions {
    fn default() -> Self {
        Self {
            allowed_statuses: vec!["online".to_owned()],
            daily_limit_hard_cap: false,
            keep_returning_customers: false,
            reassign_reopened_if_unavailable: false,
            requeue_on_offline: false,
            no_reply_timeout_s: 0,
            assign_delay_s: 0,
            default_handle_time_s: 300,
            default_response_time_s: 120,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Hours {
    /// Opening intervals: days (mon..sun) and local times.
    pub(crate) weekly: Vec<Interval>,
    /// Closed dates, YYYY-MM-DD.
    pub(crate) holidays: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Interval {
    pub(crate) days: Vec<String>,
    /// "09:00".
    pub(crate) open: String,
    /// "18:00" ("24:00" for midnight).
    pub(crate) close: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Templates {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) welcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) away: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) overcapacity: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleEntry {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) when: Conditions,
    /// Target team (or give `agent`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) team: String,
    /// Target agent (or give `team`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) agent: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) required_skills: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) required_language: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Conditions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) channels: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) languages: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) topics: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tiers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// any, new or returning.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) customer: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) keywords: Vec<String>,
}

// ----- names ---------------------------------------------------------------------------------

const CHANNELS: [(&str, pb::Channel); 9] = [
    ("whatsapp", pb::Channel::Whatsapp),
    ("messenger", pb::Channel::Messenger),
    ("instagram", pb::Channel::Instagram),
    ("telegram", pb::Channel::Telegram),
    ("line", pb::Channel::Line),
    ("email", pb::Channel::Email),
    ("web_chat", pb::Channel::WebChat),
    ("sms", pb::Channel::Sms),
    ("other", pb::Channel::Other),
];

const STATUSES: [(&str, pb::AgentStatus); 4] = [
    ("online", pb::AgentStatus::Online),
    ("busy", pb::AgentStatus::Busy),
    ("away", pb::AgentStatus::Away),
    ("offline", pb::AgentStatus::Offline),
];

const STRATEGIES: [(&str, pb::Strategy); 5] = [
    ("round_robin", pb::Strategy::RoundRobin),
    ("least_open", pb::Strategy::LeastOpen),
    ("weighted", pb::Strategy::Weighted),
    ("ordered", pb::Strategy::Ordered),
    ("manual", pb::Strategy::Manual),
];

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn lookup<T: Copy>(table: &[(&str, T)], name: &str, what: &str, field: &str) -> Result<T> {
    let wanted = name.to_ascii_lowercase().replace('-', "_");
    table.iter().find(|(n, _)| *n == wanted).map(|(_, v)| *v).with_context(|| {
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        format!("{field}: {name:?} is not a {what} (one of {})", names.join(", "))
    })
}

fn name_of<T: Copy + PartialEq>(table: &[(&str, T)], value: T) -> String {
    table.iter().find(|(_, v)| *v == value).map_or_else(|| "unspecified".to_owned(), |(n, _)| (*n).to_owned())
}

pub(crate) fn channel(name: &str, field: &str) -> Result<pb::Channel> {
    lookup(&CHANNELS, name, "channel", field)
}

pub(crate) fn channel_name(value: i32) -> String {
    pb::Channel::try_from(value).map_or_else(|_| value.to_string(), |c| name_of(&CHANNELS, c))
}

pub(crate) fn status(name: &str, field: &str) -> Result<pb::AgentStatus> {
    lookup(&STATUSES, name, "status", field)
}

pub(crate) fn status_name(value: i32) -> String {
    pb::AgentStatus::try_from(value).map_or_else(|_| value.to_string(), |s| name_of(&STATUSES, s))
}

pub(crate) fn strategy_name(value: i32) -> String {
    pb::Strategy::try_from(value).map_or_else(|_| value.to_string(), |s| name_of(&STRATEGIES, s))
}

fn minute(text: &str, field: &str) -> Result<u32> {
    let (hours, minutes) = text.split_once(':').with_context(|| format!("{field}: {text:?} is not HH:MM"))?;
    let hours: u32 = hours.parse().with_context(|| format!("{field}: {text:?} is not HH:MM"))?;
    let minutes: u32 = minutes.parse().with_context(|| format!("{field}: {text:?} is not HH:MM"))?;
    if minutes > 59 || hours * 60 + minutes > 1440 {
        bail!("{field}: {text:?} is not a time between 00:00 and 24:00");
    }
    Ok(hours * 60 + minutes)
}

fn hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

// ----- file -> API ---------------------------------------------------------------------------

impl WorkspaceFile {
    pub(crate) fn parse(text: &str, source: &str) -> Result<Self> {
        let file: WorkspaceFile =
            serde_norway::from_str(text).with_context(|| format!("{source} is not a valid workspace file"))?;
        if file.workspace.is_empty() {
            bail!("{source}: `workspace` (the workspace id) is required");
        }
        Ok(file)
    }

    /// The settings as the API takes them, with server defaults filled in.
    /// Checks everything that can be checked without the cluster: names of strategies,
    /// channels and statuses, times of day, rule shapes.
    pub(crate) fn validate(&self) -> Result<()> {
        self.agents_pb()?;
        self.teams_pb()?;
        self.rules_pb()?;
        Ok(())
    }

    pub(crate) fn settings_pb(&self) -> pb::WorkspaceSettings {
        let s = &self.settings;
        normalize_settings(pb::WorkspaceSettings {
            default_team: s.default_team.clone(),
            vip_waits_for_dedicated_agent: s.vip_waits_for_dedicated_agent,
            dedupe_window_s: s.dedupe_window_s,
            dedupe_max_events: s.dedupe_max_events,
            closed_retention_s: s.closed_retention_s,
            rng_seed: s.rng_seed,
        })
    }

    pub(crate) fn agents_pb(&self) -> Result<Vec<pb::Agent>> {
        self.agents
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut per_channel = Vec::new();
                for (name, max_open) in &a.max_open_per_channel {
                    let channel = channel(name, &format!("agents[{i}].max_open_per_channel"))?;
                    per_channel.push(pb::ChannelLimit { channel: channel.into(), max_open: *max_open });
                }
                per_channel.sort_by_key(|limit| limit.channel);
                Ok(pb::Agent {
                    id: a.id.clone(),
                    display_name: if a.name.is_empty() { a.id.clone() } else { a.name.clone() },
                    skills: a.skills.clone(),
                    languages: a.languages.clone(),
                    max_open: a.max_open,
                    max_open_per_channel: per_channel,
                    daily_limit: a.daily_limit,
                    auto_assign_excluded: a.auto_assign_excluded,
                })
            })
            .collect()
    }

    pub(crate) fn teams_pb(&self) -> Result<Vec<pb::Team>> {
        let mut teams = Vec::new();
        for (i, t) in self.teams.iter().enumerate() {
            let field = format!("teams[{i}] ({})", t.id);
            let strategy = lookup(&STRATEGIES, &t.strategy, "strategy", &format!("{field}.strategy"))?;
            let o = &t.options;
            let mut allowed = Vec::new();
            for name in &o.allowed_statuses {
                allowed.push(status(name, &format!("{field}.options.allowed_statuses"))? as i32);
            }
            let business_hours = match &t.business_hours {
                None => None,
                Some(hours) => {
                    let mut weekly = Vec::new();
                    for (j, interval) in hours.weekly.iter().enumerate() {
                        let interval_field = format!("{field}.business_hours.weekly[{j}]");
                        if interval.days.is_empty() {
                            bail!("{interval_field}.days: name at least one day (mon..sun)");
                        }
                        for day in &interval.days {
                            let weekday = DAYS.iter().position(|d| d.eq_ignore_ascii_case(day)).with_context(|| {
                                format!("{interval_field}.days: {day:?} is not one of {}", DAYS.join(", "))
                            })?;
                            weekly.push(pb::OpeningInterval {
                                weekday: weekday as u32,
                                open_minute: minute(&interval.open, &format!("{interval_field}.open"))?,
                                close_minute: minute(&interval.close, &format!("{interval_field}.close"))?,
                            });
                        }
                    }
                    Some(pb::BusinessHours { weekly, holidays: hours.holidays.clone() })
                }
            };
            teams.push(normalize_team(pb::Team {
                id: t.id.clone(),
                name: t.name.clone(),
                members: t.members.clone(),
                strategy: strategy.into(),
                options: Some(pb::TeamOptions {
                    allowed_statuses: allowed,
                    daily_limit_hard_cap: o.daily_limit_hard_cap,
                    keep_returning_customers: o.keep_returning_customers,
                    reassign_reopened_if_unavailable: o.reassign_reopened_if_unavailable,
                    requeue_on_offline: o.requeue_on_offline,
                    no_reply_timeout_s: o.no_reply_timeout_s,
                    assign_delay_s: o.assign_delay_s,
                    default_handle_time_s: o.default_handle_time_s,
                    default_response_time_s: o.default_response_time_s,
                }),
                timezone: t.timezone.clone(),
                business_hours,
                templates: Some(pb::Templates {
                    welcome: t.templates.welcome.clone(),
                    away: t.templates.away.clone(),
                    overcapacity: t.templates.overcapacity.clone(),
                }),
            }));
        }
        Ok(teams)
    }

    pub(crate) fn rules_pb(&self) -> Result<Vec<pb::RoutingRule>> {
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let field = format!("rules[{i}] ({})", r.id);
            let target = match (r.team.is_empty(), r.agent.is_empty()) {
                (false, true) => pb::rule_target::Target::Team(pb::TeamTarget {
                    team: r.team.clone(),
                    required_skills: r.required_skills.clone(),
                    required_language: r.required_language.clone(),
                }),
                (true, false) => {
                    if !r.required_skills.is_empty() || !r.required_language.is_empty() {
                        bail!("{field}: required_skills and required_language apply to a team target, not an agent");
                    }
                    pb::rule_target::Target::Agent(r.agent.clone())
                }
                _ => bail!("{field}: give exactly one of `team` or `agent` as the target"),
            };
            let mut channels = Vec::new();
            for name in &r.when.channels {
                channels.push(channel(name, &format!("{field}.when.channels"))? as i32);
            }
            let customer = match r.when.customer.as_str() {
                "" | "any" => pb::CustomerKind::Any,
                "new" => pb::CustomerKind::New,
                "returning" => pb::CustomerKind::Returning,
                other => bail!("{field}.when.customer: {other:?} is not any, new or returning"),
            };
            rules.push(pb::RoutingRule {
                id: r.id.clone(),
                conditions: Some(pb::RuleConditions {
                    channels,
                    languages: r.when.languages.clone(),
                    topics: r.when.topics.clone(),
                    tiers: r.when.tiers.clone(),
                    tags: r.when.tags.clone(),
                    customer: customer.into(),
                    keywords: r.when.keywords.clone(),
                }),
                target: Some(pb::RuleTarget { target: Some(target) }),
            });
        }
        Ok(rules)
    }
}

/// Fills in what the server fills in, so that equal configurations compare equal.
pub(crate) fn normalize_settings(mut settings: pb::WorkspaceSettings) -> pb::WorkspaceSettings {
    let or = |value: &mut u32, default: u32| {
        if *value == 0 {
            *value = default;
        }
    };
    or(&mut settings.dedupe_window_s, 600);
    or(&mut settings.dedupe_max_events, 1_000_000);
    or(&mut settings.closed_retention_s, 30 * 86_400);
    settings
}

/// Fills in what the server fills in for a team.
pub(crate) fn normalize_team(mut team: pb::Team) -> pb::Team {
    if team.name.is_empty() {
        team.name = team.id.clone();
    }
    if team.timezone.is_empty() {
        team.timezone = "UTC".to_owned();
    }
    let options = team.options.get_or_insert_with(Default::default);
    if options.allowed_statuses.is_empty() {
        options.allowed_statuses = vec![pb::AgentStatus::Online.into()];
    }
    options.allowed_statuses.sort_unstable();
    options.allowed_statuses.dedup();
    if options.default_handle_time_s == 0 {
        options.default_handle_time_s = 300;
    }
    if options.default_response_time_s == 0 {
        options.default_response_time_s = 120;
    }
    team.templates.get_or_insert_with(Default::default);
    team
}

// ----- API -> file ---------------------------------------------------------------------------

/// The cluster's configuration as a workspace file (`ctl export`, and the "before" of diffs).
pub(crate) fn from_config(config: &pb::WorkspaceConfig) -> WorkspaceFile {
    let settings = config.settings.clone().unwrap_or_default();
    WorkspaceFile {
        workspace: config.workspace.clone(),
        settings: Settings {
            default_team: settings.default_team,
            vip_waits_for_dedicated_agent: settings.vip_waits_for_dedicated_agent,
            dedupe_window_s: settings.dedupe_window_s,
            dedupe_max_events: settings.dedupe_max_events,
            closed_retention_s: settings.closed_retention_s,
            rng_seed: 0,
        },
        agents: config.agents.iter().map(agent_entry).collect(),
        teams: config.teams.iter().map(team_entry).collect(),
        rules: config.rules.iter().map(rule_entry).collect(),
    }
}

pub(crate) fn agent_entry(a: &pb::Agent) -> AgentEntry {
    AgentEntry {
        id: a.id.clone(),
        name: a.display_name.clone(),
        max_open: a.max_open,
        daily_limit: a.daily_limit,
        skills: a.skills.clone(),
        languages: a.languages.clone(),
        max_open_per_channel: a.max_open_per_channel.iter().map(|l| (channel_name(l.channel), l.max_open)).collect(),
        auto_assign_excluded: a.auto_assign_excluded,
    }
}

pub(crate) fn team_entry(t: &pb::Team) -> TeamEntry {
    let o = t.options.clone().unwrap_or_default();
    let templates = t.templates.clone().unwrap_or_default();
    TeamEntry {
        id: t.id.clone(),
        name: t.name.clone(),
        strategy: strategy_name(t.strategy),
        members: t.members.clone(),
        timezone: t.timezone.clone(),
        options: TeamOptions {
            allowed_statuses: o.allowed_statuses.iter().map(|s| status_name(*s)).collect(),
            daily_limit_hard_cap: o.daily_limit_hard_cap,
            keep_returning_customers: o.keep_returning_customers,
            reassign_reopened_if_unavailable: o.reassign_reopened_if_unavailable,
            requeue_on_offline: o.requeue_on_offline,
            no_reply_timeout_s: o.no_reply_timeout_s,
            assign_delay_s: o.assign_delay_s,
            default_handle_time_s: o.default_handle_time_s,
            default_response_time_s: o.default_response_time_s,
        },
        business_hours: t.business_hours.as_ref().map(|h| Hours {
            weekly: h
                .weekly
                .iter()
                .map(|i| Interval {
                    days: vec![DAYS.get(i.weekday as usize).copied().unwrap_or("?").to_owned()],
                    open: hhmm(i.open_minute),
                    close: hhmm(i.close_minute),
                })
                .collect(),
            holidays: h.holidays.clone(),
        }),
        templates: Templates { welcome: templates.welcome, away: templates.away, overcapacity: templates.overcapacity },
    }
}

pub(crate) fn rule_entry(r: &pb::RoutingRule) -> RuleEntry {
    let c = r.conditions.clone().unwrap_or_default();
    let mut entry = RuleEntry {
        id: r.id.clone(),
        when: Conditions {
            channels: c.channels.iter().map(|v| channel_name(*v)).collect(),
            languages: c.languages,
            topics: c.topics,
            tiers: c.tiers,
            tags: c.tags,
            customer: match pb::CustomerKind::try_from(c.customer) {
                Ok(pb::CustomerKind::New) => "new".to_owned(),
                Ok(pb::CustomerKind::Returning) => "returning".to_owned(),
                _ => String::new(),
            },
            keywords: c.keywords,
        },
        team: String::new(),
        agent: String::new(),
        required_skills: BTreeMap::new(),
        required_language: String::new(),
    };
    match r.target.as_ref().and_then(|t| t.target.as_ref()) {
        Some(pb::rule_target::Target::Team(team)) => {
            entry.team = team.team.clone();
            entry.required_skills = team.required_skills.clone();
            entry.required_language = team.required_language.clone();
        }
        Some(pb::rule_target::Target::Agent(agent)) => entry.agent = agent.clone(),
        None => {}
    }
    entry
}
