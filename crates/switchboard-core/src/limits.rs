//! Every bound on what the state machine accepts, in one place, each named with its unit.
//!
//! A replicated state machine must never be handed work it cannot finish quickly: one entry
//! that takes seconds to apply stalls every workspace of the Raft group, and one that grows
//! the state without bound ends in an out-of-memory kill on every replica at once. So every
//! string has a byte limit, every list a count limit and every number a range. The edges
//! (gRPC, NATS, `ctl apply`) check them through [`crate::Command::validate`] before anything
//! is proposed, with an error naming the field; [`crate::State::apply`] checks them again, so
//! an entry that reached the log some other way is refused the same way on every replica.
//!
//! Limits that bound the cost of one decision (rule sizes, the keyword scan) are chosen so that
//! routing one conversation stays well under a millisecond in the worst case.

/// Longest identifier (workspace, agent, team, conversation, contact, event, rule, skill), in bytes.
pub const ID_BYTES_MAX: usize = 128;
/// Longest display name, team name or message template, in bytes.
pub const TEXT_BYTES_MAX: usize = 4096;
/// Longest language tag (BCP 47), in bytes.
pub const LANGUAGE_BYTES_MAX: usize = 35;
/// Longest conversation topic, in bytes.
pub const TOPIC_BYTES_MAX: usize = 256;
/// Longest conversation tag, in bytes.
pub const TAG_BYTES_MAX: usize = 128;
/// Most tags on one conversation.
pub const TAGS_PER_CONVERSATION_MAX: usize = 64;
/// Longest first message a gateway may send with an opening conversation, in bytes.
pub const FIRST_MESSAGE_BYTES_MAX: usize = 16 * 1024;
/// How much of the first message keyword rules search, in bytes (longer messages are cut).
pub const KEYWORD_SCAN_BYTES_MAX: usize = 4096;
/// Longest contact tier (for example `VIP`), in bytes.
pub const TIER_BYTES_MAX: usize = 64;

/// Most skills one agent may have.
pub const SKILLS_PER_AGENT_MAX: usize = 64;
/// Most languages one agent may speak.
pub const LANGUAGES_PER_AGENT_MAX: usize = 32;
/// Highest `max_open` (and per-channel `max_open`) an agent may have, in conversations.
pub const MAX_OPEN_MAX: u32 = 10_000;
/// Highest `daily_limit` an agent may have, in conversations per day.
pub const DAILY_LIMIT_MAX: u32 = 1_000_000;
/// Most agents one workspace may have.
pub const AGENTS_PER_WORKSPACE_MAX: usize = 100_000;

/// Most teams one workspace may have.
pub const TEAMS_PER_WORKSPACE_MAX: usize = 1_000;
/// Most members one team may have.
pub const TEAM_MEMBERS_MAX: usize = 100_000;
/// Longest activation delay, no-reply timeout, default handle time or default response time of
/// a team, in seconds (7 days).
pub const TEAM_DURATION_S_MAX: u32 = 7 * 86_400;
/// Shortest queue-position update interval a team may set, in seconds (0 turns updates off).
pub const POSITION_UPDATE_INTERVAL_S_MIN: u32 = 5;
/// Longest queue-position update interval, in seconds.
pub const POSITION_UPDATE_INTERVAL_S_MAX: u32 = 86_400;
/// Waiting customers of one team told their new position per update: the first this many of
/// the queue (those further back are told once they move into this range).
pub const POSITION_UPDATES_PER_TEAM_MAX: usize = 1_000;
/// A change of the ETA alone this large (in milliseconds) is worth telling the customer.
pub const POSITION_ETA_CHANGE_MS_MIN: u64 = 60_000;
/// Most opening intervals in a team's weekly schedule.
pub const OPENING_INTERVALS_MAX: usize = 7 * 48;
/// Most holidays in a team's schedule.
pub const HOLIDAYS_MAX: usize = 1_000;

/// Most routing rules per workspace.
pub const RULES_MAX: usize = 1_000;
/// Most values in one condition list of a rule (channels, languages, topics, tiers, tags,
/// keywords) and most required skills of a rule target.
pub const RULE_LIST_MAX: usize = 256;
/// Longest keyword of a rule, in bytes.
pub const KEYWORD_BYTES_MAX: usize = 64;
/// Most condition values (all lists of all rules together) per workspace. Bounds the cost of
/// routing one conversation through every rule.
pub const RULE_TERMS_PER_WORKSPACE_MAX: usize = 20_000;

/// Most contacts one workspace remembers.
pub const CONTACTS_PER_WORKSPACE_MAX: usize = 5_000_000;
/// Most conversations (open and recently closed) one workspace holds.
pub const CONVERSATIONS_PER_WORKSPACE_MAX: usize = 5_000_000;
/// Most workspaces one state (Raft group) holds.
pub const WORKSPACES_MAX: usize = 10_000;

/// Longest event-id dedupe window, in seconds (7 days).
pub const DEDUPE_WINDOW_S_MAX: u32 = 7 * 86_400;
/// Most event ids one workspace remembers.
pub const DEDUPE_EVENTS_MAX: u32 = 10_000_000;
/// Longest retention of a closed conversation, in seconds (366 days).
pub const CLOSED_RETENTION_S_MAX: u32 = 366 * 86_400;

/// Most timers one apply fires; the rest stay due and fire with the next entries, so a large
/// backlog (after a long outage) is worked off in slices instead of in one long apply.
pub const TIMERS_PER_APPLY_MAX: usize = 10_000;
/// How far the state's clock may move forward in one entry, in milliseconds (1 hour). A leader
/// whose clock jumps ahead by days cannot fire a day of timers and midnights at once; time
/// catches up over the following entries (the leader proposes a tick about once a second).
pub const CLOCK_STEP_MS_MAX: i64 = 3_600_000;
/// Latest entry timestamp accepted, in UTC milliseconds (year 3000); later ones are clamped.
pub const TIMESTAMP_MS_MAX: i64 = 32_503_680_000_000;
/// Longest event id the state machine accepts, in bytes. Callers' ids are at most
/// [`ID_BYTES_MAX`]; the API adds a namespace prefix of its own to request ids, which this
/// leaves room for.
pub const EVENT_ID_BYTES_MAX: usize = ID_BYTES_MAX + 32;
