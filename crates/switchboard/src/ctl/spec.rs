//! The declarative workspace file of `switchboard ctl apply -f` (YAML), and its conversion to
//! and from the API's messages.
//!
//! The file says what the workspace should look like; `apply` compares it with what the cluster
//! has and sends only the changes. Values the file leaves out take the same defaults the server
//! gives them, so that an unchanged file shows no difference.
//!
//! Reading is bounded: a file is at most [`WORKSPACE_FILE_BYTES_MAX`] bytes and nested at most
//! [`WORKSPACE_FILE_DEPTH_MAX`] levels deep (checked before the YAML parser runs), and the
//! format is strict: unknown keys, a key given twice in a mapping, and two agents, teams or
//! rules with the same id are errors naming the item.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use switchboard_client::pb;
use switchboard_core::{AgentSpec, TeamSpec};

/// Largest workspace file `ctl apply` reads, in bytes (`workspace_file_bytes_max`): room for
/// about 100,000 agents.
pub(crate) const WORKSPACE_FILE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Deepest nesting of collections in a workspace file (`workspace_file_depth_max`); the format
/// itself needs 7 levels (`teams[].business_hours.weekly[].{days: [...]}`).
pub(crate) const WORKSPACE_FILE_DEPTH_MAX: usize = 32;

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
    AgentSpec::DEFAULT_MAX_OPEN
}

fn default_daily_limit() -> u32 {
    AgentSpec::DEFAULT_DAILY_LIMIT
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
    #[serde(default, deserialize_with = "unique_keys", skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) skills: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) languages: Vec<String>,
    #[serde(default, deserialize_with = "unique_keys", skip_serializing_if = "BTreeMap::is_empty")]
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
    TeamSpec::DEFAULT_TIMEZONE.to_owned()
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
    pub(crate) position_update_interval_s: u32,
}

impl Default for TeamOptions {
    /// The core's defaults, as the API states them: one place decides them.
    fn default() -> Self {
        let core = switchboard_core::TeamSpec::new("defaults", switchboard_core::Strategy::RoundRobin, &[]);
        let pb = switchboard_server::convert::model::team_to_pb(&core);
        TeamOptions::from_pb(&pb.options.unwrap_or_default())
    }
}

impl TeamOptions {
    /// As the API takes them, with the statuses already resolved (names are checked where the
    /// file's field path is known).
    fn to_pb(&self, allowed_statuses: Vec<i32>) -> pb::TeamOptions {
        pb::TeamOptions {
            allowed_statuses,
            daily_limit_hard_cap: self.daily_limit_hard_cap,
            keep_returning_customers: self.keep_returning_customers,
            reassign_reopened_if_unavailable: self.reassign_reopened_if_unavailable,
            requeue_on_offline: self.requeue_on_offline,
            no_reply_timeout_s: self.no_reply_timeout_s,
            assign_delay_s: self.assign_delay_s,
            default_handle_time_s: self.default_handle_time_s,
            default_response_time_s: self.default_response_time_s,
            position_update_interval_s: self.position_update_interval_s,
        }
    }

    fn from_pb(o: &pb::TeamOptions) -> Self {
        TeamOptions {
            allowed_statuses: o.allowed_statuses.iter().map(|s| status_name(*s)).collect(),
            daily_limit_hard_cap: o.daily_limit_hard_cap,
            keep_returning_customers: o.keep_returning_customers,
            reassign_reopened_if_unavailable: o.reassign_reopened_if_unavailable,
            requeue_on_offline: o.requeue_on_offline,
            no_reply_timeout_s: o.no_reply_timeout_s,
            assign_delay_s: o.assign_delay_s,
            default_handle_time_s: o.default_handle_time_s,
            default_response_time_s: o.default_response_time_s,
            position_update_interval_s: o.position_update_interval_s,
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
    #[serde(default, deserialize_with = "unique_keys", skip_serializing_if = "BTreeMap::is_empty")]
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

/// A mapping whose keys must be unique. serde fills a `BTreeMap` by inserting, so a key given
/// twice (`skills: {refunds: 1, refunds: 5}`) would silently keep the last value.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a mapping with unique keys")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some(key) = access.next_key::<String>()? {
                if map.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("key {key:?} is given twice")));
                }
                let value = access.next_value()?;
                map.insert(key, value);
            }
            Ok(map)
        }
    }

    deserializer.deserialize_map(UniqueKeys(std::marker::PhantomData))
}

/// Reads a workspace file of at most [`WORKSPACE_FILE_BYTES_MAX`] bytes, without reading more
/// than that from a larger one (or from a device that never ends).
pub(crate) fn read_file(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(WORKSPACE_FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > WORKSPACE_FILE_BYTES_MAX {
        bail!(
            "{} is larger than {WORKSPACE_FILE_BYTES_MAX} bytes (workspace_file_bytes_max); split the workspace or \
             check that this is the right file",
            path.display()
        );
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Refuses text nested deeper than [`WORKSPACE_FILE_DEPTH_MAX`] before the YAML parser sees it:
/// the parser's time grows with the square of the nesting depth (a 60,000-deep `[[[...]]]`
/// took 17 s to refuse).
///
/// One pass, no allocation but a stack of columns; an estimate rather than a parser. It counts
/// flow brackets outside quoted scalars and comments, and block collections by the columns of
/// their indicators (`- `, `? `, `key: `: a collection nested in another starts further right),
/// skipping the content of block scalars (`|`, `>`). Odd layouts can only make the estimate
/// larger, and a workspace file stays far below the limit.
pub(crate) fn check_nesting(text: &str, source: &str) -> Result<()> {
    /// Opens a block collection at `column` unless it continues the innermost one.
    fn open(block: &mut Vec<usize>, column: usize) {
        if block.last().is_none_or(|top| column > *top) {
            block.push(column);
        }
    }
    let blank = |byte: u8| byte == b' ' || byte == b'\t';
    // Columns of the open block collections, innermost last.
    let mut block: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    // Inside a block scalar: lines indented deeper than this column are its text.
    let mut block_scalar: Option<usize> = None;
    for (number, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        if let Some(parent) = block_scalar {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if quote.is_none() && flow == 0 {
            if indent == bytes.len() || bytes[indent] == b'#' {
                continue;
            }
            while block.last().is_some_and(|top| *top > indent) {
                block.pop();
            }
        }
        let mut previous: Option<u8> = None;
        let mut significant: Option<u8> = None;
        let mut key_start: Option<usize> = None;
        let mut last_token = indent;
        let mut end = bytes.len();
        // Still in the line's leading `- ` / `? ` indicators (compact nesting: `- - x`).
        let mut prefix = true;
        let mut i = indent;
        while i < bytes.len() {
            let byte = bytes[i];
            let next = bytes.get(i + 1).copied();
            if let Some(open_quote) = quote {
                // `\"` in double quotes and `''` in single quotes do not end the scalar.
                let escape = (byte == b'\\' && open_quote == b'"')
                    || (byte == b'\'' && open_quote == b'\'' && next == Some(b'\''));
                if escape {
                    i += 1;
                } else if byte == open_quote {
                    quote = None;
                }
                previous = Some(byte);
                significant = Some(byte);
                i += 1;
                continue;
            }
            if previous.is_some_and(blank) && !blank(byte) {
                last_token = i;
            }
            let token_start = previous.is_none_or(|p| blank(p) || matches!(p, b'[' | b'{' | b','));
            let after_indicator = significant.is_none_or(|s| matches!(s, b'-' | b'?' | b':' | b'[' | b'{' | b','));
            let spaced = next.is_none_or(blank);
            match byte {
                b'#' if previous.is_none_or(blank) => {
                    end = i;
                    break;
                }
                b'"' | b'\'' if token_start && after_indicator => {
                    quote = Some(byte);
                    prefix = false;
                    key_start.get_or_insert(i);
                }
                b'[' | b'{' => {
                    flow += 1;
                    prefix = false;
                }
                b']' | b'}' => flow = flow.saturating_sub(1),
                b'-' | b'?' if flow == 0 && prefix && spaced => open(&mut block, i),
                b':' if flow == 0 && spaced => {
                    if let Some(start) = key_start.take() {
                        open(&mut block, start);
                    }
                }
                b' ' | b'\t' => {}
                _ => {
                    prefix = false;
                    key_start.get_or_insert(i);
                }
            }
            if block.len() + flow > WORKSPACE_FILE_DEPTH_MAX {
                bail!(
                    "{source}: line {}: nested deeper than {WORKSPACE_FILE_DEPTH_MAX} levels \
                     (workspace_file_depth_max); a workspace file needs about 7",
                    number + 1
                );
            }
            if !blank(byte) {
                significant = Some(byte);
            }
            previous = Some(byte);
            i += 1;
        }
        // `key: |` or `- >-`: the following, deeper indented lines are text.
        let token = line[last_token.min(end)..end].trim_end();
        if quote.is_none()
            && flow == 0
            && token.starts_with(['|', '>'])
            && token[1..].bytes().all(|b| matches!(b, b'-' | b'+' | b'0'..=b'9'))
        {
            block_scalar = Some(block.last().copied().unwrap_or(indent));
        }
    }
    Ok(())
}

// ----- names ---------------------------------------------------------------------------------

/// A protobuf enum as YAML names it: each value's protobuf name without the enum's prefix, in
/// lower case (`CHANNEL_WEB_CHAT` is `web_chat`). The names come from the generated code, so a
/// value added to the proto is a YAML name at once.
trait YamlName: Copy + PartialEq + TryFrom<i32> {
    /// The prefix of every value's protobuf name (`CHANNEL_`).
    const PREFIX: &str;
    /// What a value is called in errors (`channel`).
    const WHAT: &str;
    fn proto_name(self) -> &'static str;
    fn from_proto_name(name: &str) -> Option<Self>;

    /// Every value but the zero `*_UNSPECIFIED`, as (YAML name, value).
    fn table() -> Vec<(String, Self)> {
        (1..)
            .map_while(|n| Self::try_from(n).ok())
            .map(|value| (value.proto_name().trim_start_matches(Self::PREFIX).to_ascii_lowercase(), value))
            .collect()
    }
}

macro_rules! yaml_names {
    ($($ty:ty => $prefix:literal, $what:literal;)*) => {$(
        impl YamlName for $ty {
            const PREFIX: &str = $prefix;
            const WHAT: &str = $what;
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        }
    )*};
}

yaml_names! {
    pb::Channel => "CHANNEL_", "channel";
    pb::AgentStatus => "AGENT_STATUS_", "status";
    pb::Strategy => "STRATEGY_", "strategy";
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn lookup<T: YamlName>(name: &str, field: &str) -> Result<T> {
    let wanted = name.to_ascii_uppercase().replace('-', "_");
    T::from_proto_name(&format!("{}{wanted}", T::PREFIX))
        .filter(|value| T::table().iter().any(|(_, v)| v == value))
        .with_context(|| {
            let names: Vec<String> = T::table().into_iter().map(|(n, _)| n).collect();
            format!("{field}: {name:?} is not a {} (one of {})", T::WHAT, names.join(", "))
        })
}

fn name_of<T: YamlName>(value: i32) -> String {
    match T::try_from(value) {
        Ok(value) => {
            T::table().into_iter().find(|(_, v)| *v == value).map_or_else(|| "unspecified".to_owned(), |(n, _)| n)
        }
        Err(_) => value.to_string(),
    }
}

pub(crate) fn channel(name: &str, field: &str) -> Result<pb::Channel> {
    lookup(name, field)
}

pub(crate) fn channel_name(value: i32) -> String {
    name_of::<pb::Channel>(value)
}

pub(crate) fn status(name: &str, field: &str) -> Result<pb::AgentStatus> {
    lookup(name, field)
}

pub(crate) fn status_name(value: i32) -> String {
    name_of::<pb::AgentStatus>(value)
}

pub(crate) fn strategy_name(value: i32) -> String {
    name_of::<pb::Strategy>(value)
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

/// Refuses a list in which two items have the same id: the second would silently replace the
/// first.
fn unique_ids<'a>(list: &str, what: &str, ids: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = BTreeMap::new();
    for (i, id) in ids.enumerate() {
        if let Some(first) = seen.insert(id, i) {
            bail!("{list}[{i}]: {what} id {id:?} is already used by {list}[{first}]; each {what} is listed once");
        }
    }
    Ok(())
}

fn hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

// ----- file -> API ---------------------------------------------------------------------------

impl WorkspaceFile {
    /// Parses a workspace file, refusing one too large or too deeply nested before the YAML
    /// parser runs.
    pub(crate) fn parse(text: &str, source: &str) -> Result<Self> {
        if text.len() > WORKSPACE_FILE_BYTES_MAX {
            bail!("{source} is larger than {WORKSPACE_FILE_BYTES_MAX} bytes (workspace_file_bytes_max)");
        }
        check_nesting(text, source)?;
        let file: WorkspaceFile =
            serde_norway::from_str(text).with_context(|| format!("{source} is not a valid workspace file"))?;
        if file.workspace.is_empty() {
            bail!("{source}: `workspace` (the workspace id) is required");
        }
        Ok(file)
    }

    /// Checks everything that can be checked without the state machine: ids given once, names
    /// of strategies, channels and statuses, times of day, rule shapes. What the state machine
    /// decides (unknown members, timezones, limits) is checked by rehearsing the writes
    /// (`check.rs`).
    pub(crate) fn validate(&self) -> Result<()> {
        unique_ids("agents", "agent", self.agents.iter().map(|a| a.id.as_str()))?;
        unique_ids("teams", "team", self.teams.iter().map(|t| t.id.as_str()))?;
        unique_ids("rules", "rule", self.rules.iter().map(|r| r.id.as_str()))?;
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
                let mut per_channel: Vec<pb::ChannelLimit> = Vec::new();
                for (name, max_open) in &a.max_open_per_channel {
                    let field = format!("agents[{i}] ({}).max_open_per_channel", a.id);
                    let channel = channel(name, &field)?;
                    // `web-chat` and `web_chat` name the same channel.
                    if per_channel.iter().any(|limit| limit.channel == channel as i32) {
                        bail!("{field}: channel {name:?} is given twice");
                    }
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
            let strategy = lookup::<pb::Strategy>(&t.strategy, &format!("{field}.strategy"))?;
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
                options: Some(o.to_pb(allowed)),
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
        options: TeamOptions::from_pb(&o),
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

#[cfg(test)]
impl WorkspaceFile {
    /// The configuration a cluster that applied this file exports (for tests of the plan and
    /// the rehearsal).
    pub(crate) fn config_pb(&self) -> pb::WorkspaceConfig {
        pb::WorkspaceConfig {
            workspace: self.workspace.clone(),
            settings: Some(self.settings_pb()),
            agents: self.agents_pb().expect("agents"),
            teams: self.teams_pb().expect("teams"),
            rules: self.rules_pb().expect("rules"),
            applied_index: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        format!("{:#}", WorkspaceFile::parse(text, "w.yaml").and_then(|f| f.validate()).expect_err("refused"))
    }

    #[test]
    fn the_shipped_files_are_well_within_the_nesting_limit() {
        for text in [include_str!("../../../../deploy/workspace.example.yaml"), "workspace: w\n"] {
            check_nesting(text, "f").expect("accepted");
            WorkspaceFile::parse(text, "f").expect("parses").validate().expect("valid");
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_runs_in_every_layout() {
        let deep = 60_000;
        let layouts = [
            format!("workspace: w\nagents: {}{}\n", "[".repeat(deep), "]".repeat(deep)),
            format!("workspace: w\nagents: {}1{}\n", "{a: ".repeat(deep), "}".repeat(deep)),
            format!("workspace: w\nagents:\n{}x\n", "- ".repeat(deep)),
            (0..200).map(|level| format!("{}k{level}:\n", " ".repeat(level))).collect::<String>(),
            format!("workspace: w\nagents: [\n{}\n{}]\n", "[\n".repeat(100), "]\n".repeat(100)),
        ];
        for text in layouts {
            let message = refusal(&text);
            assert!(message.contains("nested deeper than 32 levels (workspace_file_depth_max)"), "{message}");
        }
    }

    #[test]
    fn brackets_in_quotes_comments_and_block_scalars_are_not_nesting() {
        let brackets = "[".repeat(100);
        let text = format!(
            "workspace: w\n# {brackets}\nteams:\n  - id: t\n    strategy: manual\n    name: \"{brackets}\"\n    \
             templates:\n      welcome: '{brackets} it''s'\n      away: |\n        {brackets}\n        - - - - -\n      \
             overcapacity: it's {brackets}\n"
        );
        let text = text.replace("overcapacity: it's", "overcapacity: >-\n        it's");
        check_nesting(&text, "f").expect("accepted");
        let file = WorkspaceFile::parse(&text, "f").expect("parses");
        assert_eq!(file.teams[0].templates.welcome, format!("{brackets} it's"));
    }

    #[test]
    fn a_key_given_twice_in_a_mapping_is_refused() {
        for (text, key) in [
            ("workspace: w\nagents:\n  - {id: a, skills: {refunds: 1, refunds: 5}}\n", "refunds"),
            ("workspace: w\nagents:\n  - id: a\n    max_open_per_channel: {sms: 1, sms: 2}\n", "sms"),
            ("workspace: w\nrules:\n  - {id: r, team: t, required_skills: {x: 1, x: 2}}\n", "\"x\""),
            ("workspace: w\nagents:\n  - {id: a, max_open: 1, max_open: 2}\n", "max_open"),
        ] {
            let message = refusal(text);
            assert!((message.contains(key) && message.contains("twice")) || message.contains("duplicate"), "{message}");
            assert!(message.contains("agents[0]") || message.contains("rules[0]"), "{message}");
        }
        let message =
            refusal("workspace: w\nagents:\n  - id: a\n    max_open_per_channel: {web_chat: 1, web-chat: 2}\n");
        assert!(message.contains("agents[0] (a).max_open_per_channel: channel \"web_chat\""), "{message}");
    }

    #[test]
    fn two_items_with_the_same_id_are_refused_naming_both() {
        let message = refusal("workspace: w\nagents:\n  - {id: a}\n  - {id: b}\n  - {id: a, max_open: 9}\n");
        assert!(message.contains("agents[2]: agent id \"a\" is already used by agents[0]"), "{message}");
        let message = refusal("workspace: w\nteams:\n  - {id: t, strategy: manual}\n  - {id: t, strategy: ordered}\n");
        assert!(message.contains("teams[1]: team id \"t\" is already used by teams[0]"), "{message}");
        let message = refusal("workspace: w\nrules:\n  - {id: r, team: x}\n  - {id: r, agent: y}\n");
        assert!(message.contains("rules[1]: rule id \"r\" is already used by rules[0]"), "{message}");
    }

    #[test]
    fn a_file_over_the_byte_limit_is_refused_without_reading_all_of_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).expect("create");
        // Sparse: a huge file costs nothing on disk, and only the limit is read.
        file.set_len(4 * WORKSPACE_FILE_BYTES_MAX as u64).expect("set_len");
        let message = format!("{:#}", read_file(&path).expect_err("refused"));
        assert!(message.contains("larger than 16777216 bytes (workspace_file_bytes_max)"), "{message}");
        std::fs::write(&path, "workspace: w\n").expect("write");
        assert_eq!(read_file(&path).expect("read"), "workspace: w\n");
    }
}
