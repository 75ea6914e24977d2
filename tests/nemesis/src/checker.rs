//! The verdict, from what a client can observe and nothing the cluster says about itself: the
//! `SWITCHBOARD_EFFECTS` stream read in stream order, the rejected stream, the recorded
//! requests and answers, and linearizable reads taken at the end.
//!
//! Checks:
//! - the effects stream is the log's effects, whole and once: `(log_index, sequence)` strictly
//!   increasing, each entry's sequence counting from 0 without a hole, every effect chained to
//!   the one before it (`Switchboard-Previous-Msg-Id`), no `(log_index, sequence)` twice;
//! - all effects of one event id or request id come from one log entry (nothing applied twice);
//! - every acknowledged open has exactly one decision (assigned, queued or outside hours), every
//!   acknowledged close one `closed`, every acknowledged message to a closed conversation one
//!   `reopened`, and a message or reply to an open conversation none;
//! - a write answered OK has its effects in the stream at the log index its answer named, equal
//!   to those the answer listed; a refused write has none;
//! - replaying the stream: no conversation has two assignees; no automatic assignment goes to
//!   an agent who is not online or who would hold more than their `max_open` at that index;
//!   automatic assignment takes the queue's best (priority, then arrival) and never serves a
//!   newcomer while the queue waits; the manual team is never assigned automatically;
//! - of two claims racing for one waiting conversation exactly one wins, a refused claim did not
//!   finish before the winner started, and an OK claim is the winner;
//! - the final linearizable reads of every conversation and agent equal the replayed state.

use crate::history::{Op, Outcome, Published, Request};
use crate::workload::{PICK_TEAM, WORKSPACE};
use anyhow::{Context as _, Result};
use futures::StreamExt;
use prost::Message as _;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use switchboard_client::pb;

/// One message of the effects stream.
#[derive(Clone, Debug)]
pub struct StreamEffect {
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// Its Nats-Msg-Id.
    pub msg_id: String,
    /// Its Switchboard-Previous-Msg-Id.
    pub expected_last: Option<String>,
    /// `Switchboard-Log-Index`.
    pub log_index: u64,
    /// `Switchboard-Sequence`.
    pub sequence: u32,
    /// The decoded effect.
    pub effect: pb::Effect,
}

/// Reads a whole stream in order with an ordered consumer.
async fn read_stream(js: &async_nats::jetstream::Context, name: &str) -> Result<Vec<async_nats::jetstream::Message>> {
    let Ok(mut stream) = js.get_stream(name).await else { return Ok(Vec::new()) };
    let last = stream.info().await.context("stream info")?.state.last_sequence;
    if last == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .context("ordered consumer")?;
    let mut messages = consumer.messages().await.context("messages")?;
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .with_context(|| format!("{name}: no message for 30 s after {} of {last}", out.len()))?;
        let Some(message) = next else { break };
        let message = message.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let sequence = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        out.push(message);
        if sequence >= last {
            break;
        }
    }
    Ok(out)
}

/// The effects stream and the rejected stream (Nats-Msg-Id of the original → reason).
pub async fn read_streams(nats_url: &str) -> Result<(Vec<StreamEffect>, BTreeMap<String, String>)> {
    let client = async_nats::connect(nats_url).await.context("connect to NATS")?;
    let js = async_nats::jetstream::new(client);
    let mut effects = Vec::new();
    for message in read_stream(&js, "SWITCHBOARD_EFFECTS").await? {
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        let stream_sequence = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        let effect = pb::Effect::decode(message.payload.clone())
            .with_context(|| format!("effect at stream sequence {stream_sequence} does not decode"))?;
        effects.push(StreamEffect {
            stream_sequence,
            msg_id: header("Nats-Msg-Id").unwrap_or_default(),
            expected_last: header("Switchboard-Previous-Msg-Id"),
            log_index: header("Switchboard-Log-Index").and_then(|v| v.parse().ok()).unwrap_or(0),
            sequence: header("Switchboard-Sequence").and_then(|v| v.parse().ok()).unwrap_or(u32::MAX),
            effect,
        });
    }
    let mut rejected = BTreeMap::new();
    for message in read_stream(&js, "SWITCHBOARD_REJECTED").await? {
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        rejected.insert(
            header("Switchboard-Msg-Id").unwrap_or_default(),
            format!(
                "{}: {}",
                header("Switchboard-Error").unwrap_or_default(),
                header("Switchboard-Error-Message").unwrap_or_default()
            ),
        );
    }
    Ok((effects, rejected))
}

/// What the final linearizable reads returned.
#[derive(Clone, Debug, Default)]
pub struct FinalReads {
    /// Conversation → (state, assignee); missing when the read found nothing.
    pub conversations: BTreeMap<String, (pb::ConversationState, String)>,
    /// Agent → (status, open conversations).
    pub agents: BTreeMap<String, (pb::AgentStatus, BTreeSet<String>)>,
}

/// The counts of the verdict line and the offending history.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Requests made.
    pub ops: usize,
    /// Requests that took effect for sure (acknowledged events, OK writes).
    pub acked: usize,
    /// Effects or decisions missing.
    pub lost: usize,
    /// Effects or inputs applied twice.
    pub doubled: usize,
    /// Decisions that break a rule.
    pub wrong: usize,
    /// One line per finding, with the history that shows it.
    pub findings: Vec<String>,
    /// Effects read from the stream.
    pub effects: usize,
    /// Races of two claims checked.
    pub races: usize,
}

impl Verdict {
    fn lost(&mut self, finding: String) {
        self.lost += 1;
        self.findings.push(format!("LOST: {finding}"));
    }
    fn doubled(&mut self, finding: String) {
        self.doubled += 1;
        self.findings.push(format!("DOUBLED: {finding}"));
    }
    fn wrong(&mut self, finding: String) {
        self.wrong += 1;
        self.findings.push(format!("WRONG: {finding}"));
    }

    /// Whether nothing was lost, doubled or wrong.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.doubled == 0 && self.wrong == 0
    }
}

fn describe(effect: &StreamEffect) -> String {
    match &effect.effect.kind {
        Some(kind) => format!("[{}.{} {kind:?}]", effect.log_index, effect.sequence),
        None => format!("[{}.{} no kind]", effect.log_index, effect.sequence),
    }
}

fn describe_op(op: &Op) -> String {
    format!(
        "{} {:?} invoked {:.3}s completed {:.3}s -> {:?}",
        op.process,
        op.request,
        op.invoked.as_secs_f64(),
        op.completed.as_secs_f64(),
        op.outcome
    )
}

/// When a write took effect, as a range of log indexes: exactly, when its answer said; else
/// after every index answered before it was sent and before every index of a request sent
/// after it completed (`None`: no bound).
struct Bounds {
    /// Indexes of answered requests, by completion time.
    completed: Vec<(Duration, u64)>,
    /// Indexes of answered requests, by invocation time.
    invoked: Vec<(Duration, u64)>,
}

impl Bounds {
    fn new(ops: &[Op]) -> Self {
        let mut completed = Vec::new();
        let mut invoked = Vec::new();
        for op in ops {
            if let Some(index) = op.log_index() {
                completed.push((op.completed, index));
                invoked.push((op.invoked, index));
            }
        }
        completed.sort_unstable();
        invoked.sort_unstable();
        Self { completed, invoked }
    }

    /// `(lowest, highest)` log index at which `op` may have taken effect.
    fn of(&self, op: &Op) -> (u64, u64) {
        if let Some(index) = op.log_index() {
            return (index, index);
        }
        let low = self.completed.iter().take_while(|(at, _)| *at < op.invoked).map(|(_, i)| *i).max().unwrap_or(0);
        let high = if op.ok() {
            // Answered before that request was sent, so in an earlier entry than its.
            self.invoked
                .iter()
                .filter(|(at, _)| *at > op.completed)
                .map(|(_, i)| i.saturating_sub(1))
                .min()
                .unwrap_or(u64::MAX)
        } else {
            // An unanswered write may apply at any later time.
            u64::MAX
        };
        (low, high)
    }
}

/// `max_open` of each agent over the log: the values the admin wrote, with when they applied.
struct Capacity {
    /// Agent → [(lowest index, highest index, definite, value)] in the order written.
    writes: BTreeMap<String, Vec<(u64, u64, bool, u32)>>,
}

impl Capacity {
    fn new(ops: &[Op], bounds: &Bounds) -> Self {
        let mut sorted: Vec<&Op> = ops.iter().collect();
        sorted.sort_by_key(|op| op.invoked);
        let mut writes: BTreeMap<String, Vec<(u64, u64, bool, u32)>> = BTreeMap::new();
        for op in sorted {
            if let Request::UpsertAgent { agent, max_open, .. } = &op.request
                && !matches!(op.outcome, Outcome::Refused { .. })
            {
                let (low, high) = bounds.of(op);
                writes.entry(agent.clone()).or_default().push((low, high, op.ok(), *max_open));
            }
        }
        Self { writes }
    }

    /// The largest `max_open` that `agent` may have had when an automatic assignment of entry
    /// `index` was made. A write in that same entry may have applied after the input that made
    /// the assignment (an entry holds many inputs, and a write's answer names only its entry),
    /// so it only may have applied; it surely had from the next entry on.
    fn allowed(&self, agent: &str, index: u64) -> u32 {
        let Some(writes) = self.writes.get(agent) else { return 0 };
        let mut allowed = None::<u32>;
        let mut maybe = 0u32;
        for (low, high, definite, value) in writes {
            if *definite && *high < index {
                allowed = Some(*value);
            } else if *low <= index {
                maybe = maybe.max(*value);
            }
        }
        allowed.unwrap_or(0).max(maybe)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ConversationState {
    Queued {
        team: String,
        general: bool,
    },
    Assigned {
        agent: String,
        team: String,
    },
    /// Between an `unassigned` or `reopened` and where it goes next.
    Moving {
        team: String,
    },
    Closed,
}

/// Where a conversation stands in its queue: higher priority first, then earlier arrival (the
/// log position of its opening or reopening).
type QueueKey = (Reverse<u32>, u64, u32);

#[derive(Clone, Debug)]
struct Conversation {
    state: ConversationState,
    key: QueueKey,
}

/// Replays the effects stream, checking every automatic decision as it goes.
struct Replay<'a> {
    capacity: &'a Capacity,
    priorities: &'a BTreeMap<String, u32>,
    conversations: BTreeMap<String, Conversation>,
    open: BTreeMap<String, BTreeSet<String>>,
    status: BTreeMap<String, i32>,
    /// Team → its general queue, best first.
    queues: BTreeMap<String, BTreeSet<(QueueKey, String)>>,
}

fn automatic(reason: i32) -> bool {
    use pb::AssignReason as R;
    [R::Strategy, R::Dedicated, R::Returning, R::RuleAgent, R::Reopened].iter().any(|r| *r as i32 == reason)
}

impl Replay<'_> {
    fn leave_queue(&mut self, conversation: &str) {
        if let Some(c) = self.conversations.get(conversation)
            && let ConversationState::Queued { team, .. } = &c.state
            && let Some(queue) = self.queues.get_mut(team)
        {
            queue.remove(&(c.key, conversation.to_owned()));
        }
    }

    fn apply(&mut self, e: &StreamEffect, verdict: &mut Verdict) {
        use pb::effect::Kind;
        if e.effect.workspace != WORKSPACE {
            return;
        }
        let at = describe(e);
        let new_key = |priority: u32| (Reverse(priority), e.log_index, e.sequence);
        match &e.effect.kind {
            Some(Kind::Welcome(w)) => {
                let priority = self.priorities.get(&w.conversation).copied().unwrap_or(0);
                self.conversations.entry(w.conversation.clone()).or_insert(Conversation {
                    state: ConversationState::Moving { team: w.team.clone() },
                    key: new_key(priority),
                });
            }
            Some(Kind::Queued(q)) => {
                let priority = self.priorities.get(&q.conversation).copied().unwrap_or(0);
                self.leave_queue(&q.conversation);
                let conversation = self
                    .conversations
                    .entry(q.conversation.clone())
                    .or_insert(Conversation { state: ConversationState::Closed, key: new_key(priority) });
                if let ConversationState::Assigned { agent, .. } = &conversation.state {
                    verdict.wrong(format!("{at}: queued while assigned to {agent}"));
                }
                let general = q.waiting_for.is_empty();
                conversation.state = ConversationState::Queued { team: q.team.clone(), general };
                if general {
                    self.queues.entry(q.team.clone()).or_default().insert((conversation.key, q.conversation.clone()));
                }
            }
            Some(Kind::Assigned(a)) => {
                let priority = self.priorities.get(&a.conversation).copied().unwrap_or(0);
                self.leave_queue(&a.conversation);
                let conversation = self.conversations.entry(a.conversation.clone()).or_insert(Conversation {
                    state: ConversationState::Moving { team: a.team.clone() },
                    key: new_key(priority),
                });
                if let ConversationState::Assigned { agent, .. } = &conversation.state {
                    verdict.wrong(format!("{at}: {} assigned to {} while {agent} holds it", a.conversation, a.agent));
                }
                if let ConversationState::Closed = &conversation.state {
                    verdict.wrong(format!("{at}: {} assigned while closed", a.conversation));
                }
                let key = conversation.key;
                conversation.state = ConversationState::Assigned { agent: a.agent.clone(), team: a.team.clone() };
                let holds = self.open.entry(a.agent.clone()).or_default();
                holds.insert(a.conversation.clone());
                let holds = holds.len();
                if automatic(a.reason) {
                    let status = self.status.get(&a.agent).copied().unwrap_or(pb::AgentStatus::Offline as i32);
                    if status != pb::AgentStatus::Online as i32 {
                        let status = pb::AgentStatus::try_from(status).map_or("?", |s| s.as_str_name());
                        verdict.wrong(format!("{at}: automatic assignment to {} whose status is {status}", a.agent));
                    }
                    let allowed = self.capacity.allowed(&a.agent, e.log_index);
                    if holds as u64 > u64::from(allowed) {
                        verdict.wrong(format!(
                            "{at}: {} now holds {holds} conversations, above max_open {allowed}",
                            a.agent
                        ));
                    }
                    if a.team == PICK_TEAM {
                        verdict.wrong(format!("{at}: the manual team assigned {} automatically", a.conversation));
                    }
                }
                if a.reason == pb::AssignReason::Strategy as i32
                    && let Some((best, waiting)) = self.queues.get(&a.team).and_then(|q| q.first())
                    && *best < key
                {
                    verdict.wrong(format!(
                        "{at}: {} (priority {}, arrived {}.{}) assigned while {waiting} (priority {}, arrived {}.{}) waited in {}",
                        a.conversation, key.0.0, key.1, key.2, best.0.0, best.1, best.2, a.team
                    ));
                }
            }
            Some(Kind::Unassigned(u)) => {
                match self.conversations.get_mut(&u.conversation) {
                    Some(c)
                        if c.state == ConversationState::Assigned { agent: u.agent.clone(), team: u.team.clone() } =>
                    {
                        c.state = ConversationState::Moving { team: u.team.clone() };
                    }
                    other => {
                        verdict.wrong(format!("{at}: unassigned from {} but the conversation was {other:?}", u.agent))
                    }
                }
                if let Some(holds) = self.open.get_mut(&u.agent) {
                    holds.remove(&u.conversation);
                }
            }
            Some(Kind::Closed(c)) => {
                self.leave_queue(&c.conversation);
                match self.conversations.get_mut(&c.conversation) {
                    Some(conversation) => {
                        match &conversation.state {
                            ConversationState::Assigned { agent, .. } if *agent != c.agent => {
                                verdict.wrong(format!("{at}: closed naming {:?} but {agent} held it", c.agent));
                            }
                            ConversationState::Closed => verdict.wrong(format!("{at}: closed twice")),
                            _ => {}
                        }
                        conversation.state = ConversationState::Closed;
                    }
                    None => verdict.wrong(format!("{at}: closed a conversation never seen")),
                }
                if let Some(holds) = self.open.get_mut(&c.agent) {
                    holds.remove(&c.conversation);
                }
            }
            Some(Kind::Reopened(r)) => {
                let priority = self.priorities.get(&r.conversation).copied().unwrap_or(0);
                match self.conversations.get_mut(&r.conversation) {
                    Some(conversation) if conversation.state == ConversationState::Closed => {
                        conversation.state = ConversationState::Moving { team: r.team.clone() };
                        conversation.key = new_key(priority);
                    }
                    other => verdict.wrong(format!("{at}: reopened but the conversation was {other:?}")),
                }
            }
            Some(Kind::AgentStatus(s)) => {
                self.status.insert(s.agent.clone(), s.status);
            }
            Some(Kind::OutsideHours(o)) => {
                verdict.wrong(format!("{at}: outside hours for {}, but no team has hours", o.conversation));
            }
            Some(Kind::QueuePosition(_)) | None => {}
        }
    }
}

/// Judges a run. `finals` are the linearizable reads taken after every fault healed.
pub fn check(
    ops: &[Op],
    effects: &[StreamEffect],
    rejected: &BTreeMap<String, String>,
    finals: &FinalReads,
) -> Verdict {
    let mut verdict = Verdict { ops: ops.len(), effects: effects.len(), ..Verdict::default() };
    verdict.acked = ops.iter().filter(|op| op.ok()).count();
    check_stream(effects, &mut verdict);
    // An effect in the stream twice is counted once above; what follows judges the decisions.
    let mut seen = BTreeSet::new();
    let unique: Vec<StreamEffect> =
        effects.iter().filter(|e| seen.insert((e.log_index, e.sequence))).cloned().collect();
    let effects = unique.as_slice();

    // Effects by their cause.
    let mut by_key: BTreeMap<&str, Vec<&StreamEffect>> = BTreeMap::new();
    for e in effects {
        if !e.effect.event_id.is_empty() {
            by_key.entry(e.effect.event_id.as_str()).or_default().push(e);
        }
    }
    for (key, list) in &by_key {
        let entries: BTreeSet<u64> = list.iter().map(|e| e.log_index).collect();
        if entries.len() > 1 {
            let shown: Vec<String> = list.iter().map(|e| describe(e)).collect();
            verdict.doubled(format!("{key} took effect in {} entries: {}", entries.len(), shown.join(" ")));
        }
    }
    let by_index: BTreeMap<(u64, u32), &StreamEffect> =
        effects.iter().map(|e| ((e.log_index, e.sequence), e)).collect();
    let mut keys = BTreeSet::new();
    let mut priorities = BTreeMap::new();
    for op in ops {
        if let Some(key) = op.request.key() {
            keys.insert(key.to_owned());
        }
        if let Request::Publish { event: Published::Open { conversation, priority }, .. } = &op.request {
            priorities.insert(conversation.clone(), *priority);
        }
        check_op(
            op,
            by_key.get(op.request.key().unwrap_or("")).map_or(&[][..], |v| v.as_slice()),
            &by_index,
            rejected,
            &mut verdict,
        );
    }
    for (key, list) in &by_key {
        if !keys.contains(*key) && list.iter().any(|e| e.effect.workspace == WORKSPACE) {
            verdict.wrong(format!("effects of {key}, which no client sent: {}", describe(list[0])));
        }
    }
    check_races(ops, &by_key, &mut verdict);

    // Replay.
    let bounds = Bounds::new(ops);
    let capacity = Capacity::new(ops, &bounds);
    let mut replay = Replay {
        capacity: &capacity,
        priorities: &priorities,
        conversations: BTreeMap::new(),
        open: BTreeMap::new(),
        status: BTreeMap::new(),
        queues: BTreeMap::new(),
    };
    for e in effects {
        replay.apply(e, &mut verdict);
    }

    // The final reads equal the replayed state.
    for (id, conversation) in &replay.conversations {
        let expected = match &conversation.state {
            ConversationState::Queued { .. } | ConversationState::Moving { .. } => {
                (pb::ConversationState::Queued, String::new())
            }
            ConversationState::Assigned { agent, .. } => (pb::ConversationState::Assigned, agent.clone()),
            ConversationState::Closed => (pb::ConversationState::Closed, String::new()),
        };
        match finals.conversations.get(id) {
            Some(read) if *read == expected => {}
            Some(read) => {
                verdict.wrong(format!("{id}: the effects say {expected:?}, a linearizable read says {read:?}"))
            }
            None => verdict.lost(format!("{id}: in the effects but not found by a linearizable read")),
        }
    }
    for (agent, (status, open)) in &finals.agents {
        let replayed = replay.open.get(agent).cloned().unwrap_or_default();
        if *open != replayed {
            verdict.wrong(format!("{agent}: the effects leave {replayed:?} open, a linearizable read says {open:?}"));
        }
        if let Some(replayed) = replay.status.get(agent)
            && *replayed != *status as i32
        {
            verdict.wrong(format!("{agent}: the effects leave status {replayed}, a linearizable read says {status:?}"));
        }
    }
    verdict
}

fn check_stream(effects: &[StreamEffect], verdict: &mut Verdict) {
    let mut seen = BTreeSet::new();
    let mut previous: Option<&StreamEffect> = None;
    for e in effects {
        if (e.log_index, e.sequence) != (e.effect.log_index, e.effect.sequence) {
            verdict.wrong(format!(
                "stream #{}: headers say {}.{}, the effect {}.{}",
                e.stream_sequence, e.log_index, e.sequence, e.effect.log_index, e.effect.sequence
            ));
        }
        if e.msg_id != format!("{}.{}", e.log_index, e.sequence) {
            verdict.wrong(format!(
                "stream #{}: Nats-Msg-Id {:?} is not {}.{}",
                e.stream_sequence, e.msg_id, e.log_index, e.sequence
            ));
        }
        if !seen.insert((e.log_index, e.sequence)) {
            verdict.doubled(format!("stream #{}: {} is in the stream twice", e.stream_sequence, describe(e)));
            continue;
        }
        match previous {
            None if e.sequence != 0 => verdict.lost(format!(
                "stream #{}: the first effect {} is not its entry's first",
                e.stream_sequence,
                describe(e)
            )),
            None => {}
            Some(p) => {
                if (e.log_index, e.sequence) < (p.log_index, p.sequence) {
                    verdict.wrong(format!("stream #{}: {} after {}", e.stream_sequence, describe(e), describe(p)));
                } else if e.log_index == p.log_index && e.sequence != p.sequence + 1
                    || e.log_index != p.log_index && e.sequence != 0
                {
                    verdict.lost(format!(
                        "stream #{}: a hole between {} and {}",
                        e.stream_sequence,
                        describe(p),
                        describe(e)
                    ));
                }
                if e.expected_last.as_deref() != Some(p.msg_id.as_str()) {
                    verdict.lost(format!(
                        "stream #{}: {} expects {:?} before it, the stream has {}",
                        e.stream_sequence,
                        describe(e),
                        e.expected_last,
                        p.msg_id
                    ));
                }
            }
        }
        previous = Some(e);
    }
}

fn check_op(
    op: &Op,
    caused: &[&StreamEffect],
    by_index: &BTreeMap<(u64, u32), &StreamEffect>,
    rejected: &BTreeMap<String, String>,
    verdict: &mut Verdict,
) {
    use pb::effect::Kind;
    let count = |f: fn(&Option<Kind>) -> bool| caused.iter().filter(|e| f(&e.effect.kind)).count();
    let shown = || caused.iter().map(|e| describe(e)).collect::<Vec<_>>().join(" ");
    let ok = op.ok();
    if let Outcome::Refused { .. } = op.outcome
        && !caused.is_empty()
    {
        verdict.wrong(format!("a refused request took effect: {} / {}", describe_op(op), shown()));
        return;
    }
    match &op.request {
        Request::Publish { event_id, event } => {
            let (expected, actual) = match event {
                Published::Open { .. } => (
                    "a decision",
                    count(|k| matches!(k, Some(Kind::Assigned(_) | Kind::Queued(_) | Kind::OutsideHours(_)))),
                ),
                Published::Close { .. } => ("a closed effect", count(|k| matches!(k, Some(Kind::Closed(_))))),
                Published::Reopen { .. } => ("a reopened effect", count(|k| matches!(k, Some(Kind::Reopened(_))))),
                Published::Message { .. } | Published::Reply { .. } => {
                    if !caused.is_empty() {
                        verdict.wrong(format!(
                            "a message to an open conversation had effects: {} / {}",
                            describe_op(op),
                            shown()
                        ));
                    }
                    return;
                }
            };
            match actual {
                1 => {}
                0 if ok => {
                    let reason = rejected.get(event_id).map(|r| format!(" (rejected: {r})")).unwrap_or_default();
                    verdict.lost(format!("acknowledged event without {expected}{reason}: {}", describe_op(op)));
                }
                0 => {}
                n => verdict.doubled(format!("{n} times {expected}: {} / {}", describe_op(op), shown())),
            }
        }
        Request::Claim { .. } | Request::Assign { .. } | Request::Transfer { .. } => {
            let assigned = count(|k| matches!(k, Some(Kind::Assigned(_))));
            if ok && assigned != 1 {
                verdict.lost(format!("an OK {} has {assigned} assigned effects: {}", "write", describe_op(op)));
            }
        }
        _ => {}
    }
    if let Outcome::Ok { log_index: Some(index), effects } = &op.outcome {
        if let Some(e) = caused.iter().find(|e| e.log_index != *index) {
            verdict.wrong(format!("answered at index {index}, its effect is at {}: {}", describe(e), describe_op(op)));
        }
        for answered in effects {
            match by_index.get(&(answered.log_index, answered.sequence)) {
                Some(e) if e.effect.encode_to_vec() == answered.encode_to_vec() => {}
                Some(e) => verdict.wrong(format!(
                    "the answer's effect differs from the stream's {}: {}",
                    describe(e),
                    describe_op(op)
                )),
                None => verdict.lost(format!(
                    "the answer's effect {}.{} is not in the stream: {}",
                    answered.log_index,
                    answered.sequence,
                    describe_op(op)
                )),
            }
        }
    }
}

fn check_races(ops: &[Op], by_key: &BTreeMap<&str, Vec<&StreamEffect>>, verdict: &mut Verdict) {
    let mut races: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let Request::Claim { race, .. } = &op.request {
            races.entry(*race).or_default().push(op);
        }
    }
    for claims in races.values() {
        verdict.races += 1;
        let won = |op: &Op| {
            by_key.get(op.request.key().unwrap_or("")).is_some_and(|list| {
                list.iter().any(|e| matches!(&e.effect.kind, Some(pb::effect::Kind::Assigned(a)) if a.reason == pb::AssignReason::Claimed as i32))
            })
        };
        let winners: Vec<&&Op> = claims.iter().filter(|op| won(op)).collect();
        let refused: Vec<&&Op> = claims
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Refused { code: tonic::Code::FailedPrecondition, .. }))
            .collect();
        let history = || claims.iter().map(|op| describe_op(op)).collect::<Vec<_>>().join("\n    ");
        match winners.as_slice() {
            [] if !refused.is_empty() => {
                verdict.wrong(format!("no claim won, yet one was refused:\n    {}", history()))
            }
            [] => {}
            [winner] => {
                for loser in &refused {
                    if loser.completed < winner.invoked {
                        verdict.wrong(format!(
                            "a claim was refused before the winning claim was sent (not linearizable):\n    {}",
                            history()
                        ));
                    }
                }
            }
            _ => verdict.wrong(format!("{} claims won the same conversation:\n    {}", winners.len(), history())),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The checker finds what it is meant to find: each test feeds it a small history with one
    //! fault planted, and a clean one that it must pass.

    use super::*;
    use crate::workload::AUTO_TEAM;
    use pb::effect::Kind;

    fn op(request: Request, invoked: u64, completed: u64, outcome: Outcome) -> Op {
        Op {
            process: "test".into(),
            request,
            invoked: Duration::from_millis(invoked),
            completed: Duration::from_millis(completed),
            outcome,
        }
    }

    fn acked() -> Outcome {
        Outcome::Ok { log_index: None, effects: Vec::new() }
    }

    fn at(index: u64) -> Outcome {
        Outcome::Ok { log_index: Some(index), effects: Vec::new() }
    }

    fn open(conversation: &str, priority: u32) -> Request {
        Request::Publish {
            event_id: format!("{conversation}-open"),
            event: Published::Open { conversation: conversation.into(), priority },
        }
    }

    fn max_open(agent: &str, value: u32) -> Request {
        Request::UpsertAgent { agent: agent.into(), max_open: value, request_id: format!("max-{agent}-{value}") }
    }

    fn online(agent: &str) -> Request {
        Request::SetStatus {
            agent: agent.into(),
            status: pb::AgentStatus::Online,
            request_id: format!("online-{agent}"),
        }
    }

    fn assigned(conversation: &str, agent: &str, reason: pb::AssignReason) -> Kind {
        Kind::Assigned(pb::Assigned {
            conversation: conversation.into(),
            agent: agent.into(),
            team: AUTO_TEAM.into(),
            reason: reason.into(),
            ..Default::default()
        })
    }

    fn queued(conversation: &str) -> Kind {
        Kind::Queued(pb::Queued {
            conversation: conversation.into(),
            team: AUTO_TEAM.into(),
            position: 1,
            ..Default::default()
        })
    }

    fn status(agent: &str, status: pb::AgentStatus) -> Kind {
        Kind::AgentStatus(pb::AgentStatusChanged { agent: agent.into(), status: status.into() })
    }

    fn closed(conversation: &str, agent: &str) -> Kind {
        Kind::Closed(pb::Closed { conversation: conversation.into(), team: AUTO_TEAM.into(), agent: agent.into() })
    }

    /// A well-formed stream of `(log_index, event_id, kind)`: sequences within each entry,
    /// every effect chained to the one before.
    fn stream(entries: &[(u64, &str, Kind)]) -> Vec<StreamEffect> {
        let mut out: Vec<StreamEffect> = Vec::new();
        for (log_index, event_id, kind) in entries {
            let sequence = match out.last() {
                Some(last) if last.log_index == *log_index => last.sequence + 1,
                _ => 0,
            };
            out.push(StreamEffect {
                stream_sequence: out.len() as u64 + 1,
                msg_id: format!("{log_index}.{sequence}"),
                expected_last: out.last().map(|e| e.msg_id.clone()),
                log_index: *log_index,
                sequence,
                effect: pb::Effect {
                    workspace: WORKSPACE.into(),
                    log_index: *log_index,
                    sequence,
                    event_id: (*event_id).into(),
                    kind: Some(kind.clone()),
                    ..Default::default()
                },
            });
        }
        out
    }

    /// a1 with max_open 1, online; c1 assigned to it; c2 queued.
    fn base() -> (Vec<Op>, Vec<(u64, &'static str, Kind)>) {
        let ops = vec![
            op(max_open("a1", 1), 0, 10, at(1)),
            op(online("a1"), 20, 30, at(2)),
            op(open("c1", 0), 40, 50, acked()),
            op(open("c2", 0), 60, 70, acked()),
        ];
        let entries = vec![
            (2, "online-a1", status("a1", pb::AgentStatus::Online)),
            (3, "c1-open", assigned("c1", "a1", pb::AssignReason::Strategy)),
            (4, "c2-open", queued("c2")),
        ];
        (ops, entries)
    }

    fn finals_of(entries: &[(&str, pb::ConversationState, &str)]) -> FinalReads {
        let mut finals = FinalReads::default();
        for (conversation, state, agent) in entries {
            finals.conversations.insert((*conversation).into(), (*state, (*agent).into()));
        }
        finals
    }

    fn verdict(ops: &[Op], entries: &[(u64, &str, Kind)], finals: &FinalReads) -> Verdict {
        check(ops, &stream(entries), &BTreeMap::new(), finals)
    }

    fn base_finals() -> FinalReads {
        finals_of(&[("c1", pb::ConversationState::Assigned, "a1"), ("c2", pb::ConversationState::Queued, "")])
    }

    #[test]
    fn a_clean_history_passes() {
        let (ops, entries) = base();
        let v = verdict(&ops, &entries, &base_finals());
        assert!(v.clean(), "{:?}", v.findings);
    }

    #[test]
    fn an_effect_twice_in_the_stream_is_doubled() {
        let (ops, entries) = base();
        let mut effects = stream(&entries);
        let mut again = effects[1].clone();
        again.expected_last = Some(effects[2].msg_id.clone());
        effects.push(again);
        let v = check(&ops, &effects, &BTreeMap::new(), &base_finals());
        assert_eq!((v.doubled, v.lost), (1, 0), "{:?}", v.findings);
    }

    #[test]
    fn a_hole_in_the_stream_is_lost() {
        let (ops, mut entries) = base();
        entries
            .insert(2, (3, "c1-open", Kind::Welcome(pb::Welcome { conversation: "c1".into(), ..Default::default() })));
        let mut effects = stream(&entries);
        effects.remove(1);
        let v = check(&ops, &effects, &BTreeMap::new(), &base_finals());
        assert!(v.lost >= 1, "{:?}", v.findings);
    }

    #[test]
    fn an_acknowledged_open_without_a_decision_is_lost_and_one_decided_twice_is_doubled() {
        let (ops, mut entries) = base();
        entries.pop();
        let v = verdict(&ops, &entries, &finals_of(&[("c1", pb::ConversationState::Assigned, "a1")]));
        assert_eq!(v.lost, 1, "{:?}", v.findings);
        let (ops, mut entries) = base();
        entries.push((5, "c2-open", queued("c2")));
        let v = verdict(&ops, &entries, &base_finals());
        assert!(v.doubled >= 1, "{:?}", v.findings);
    }

    #[test]
    fn an_automatic_assignment_above_max_open_is_wrong() {
        let (ops, mut entries) = base();
        entries[2] = (4, "c2-open", assigned("c2", "a1", pb::AssignReason::Strategy));
        let finals =
            finals_of(&[("c1", pb::ConversationState::Assigned, "a1"), ("c2", pb::ConversationState::Assigned, "a1")]);
        let v = verdict(&ops, &entries, &finals);
        assert_eq!(v.wrong, 1, "{:?}", v.findings);
        assert!(v.findings[0].contains("above max_open 1"), "{:?}", v.findings);
    }

    #[test]
    fn an_automatic_assignment_to_an_agent_not_online_is_wrong() {
        let (ops, mut entries) = base();
        entries[0] = (2, "online-a1", status("a1", pb::AgentStatus::Away));
        let v = verdict(&ops, &entries, &base_finals());
        assert!(v.findings.iter().any(|f| f.contains("status is AGENT_STATUS_AWAY")), "{:?}", v.findings);
    }

    #[test]
    fn serving_a_newcomer_or_a_later_arrival_before_the_queue_is_wrong() {
        // c2 waits; a1 closes c1 and takes c3, who came later with the same priority.
        let (mut ops, mut entries) = base();
        ops.push(op(open("c3", 0), 80, 90, acked()));
        ops.push(op(
            Request::Publish { event_id: "c1-close".into(), event: Published::Close { conversation: "c1".into() } },
            100,
            110,
            acked(),
        ));
        entries.push((5, "c3-open", queued("c3")));
        entries.push((6, "c1-close", closed("c1", "a1")));
        entries.push((6, "c1-close", assigned("c3", "a1", pb::AssignReason::Strategy)));
        let finals = finals_of(&[
            ("c1", pb::ConversationState::Closed, ""),
            ("c2", pb::ConversationState::Queued, ""),
            ("c3", pb::ConversationState::Assigned, "a1"),
        ]);
        let v = verdict(&ops, &entries, &finals);
        assert!(v.findings.iter().any(|f| f.contains("waited in auto")), "{:?}", v.findings);
        // With c3 at a higher priority, taking it first is right.
        ops[4] = op(open("c3", 2), 80, 90, acked());
        let v = verdict(&ops, &entries, &finals);
        assert!(v.clean(), "{:?}", v.findings);
    }

    #[test]
    fn the_final_reads_must_match_the_replayed_effects() {
        let (ops, entries) = base();
        let finals = finals_of(&[("c1", pb::ConversationState::Closed, ""), ("c2", pb::ConversationState::Queued, "")]);
        let v = verdict(&ops, &entries, &finals);
        assert_eq!(v.wrong, 1, "{:?}", v.findings);
    }

    fn claim(agent: &str, invoked: u64, completed: u64, outcome: Outcome) -> Op {
        op(
            Request::Claim {
                conversation: "r1".into(),
                agent: agent.into(),
                request_id: format!("claim-r1-{agent}"),
                race: 1,
            },
            invoked,
            completed,
            outcome,
        )
    }

    fn refused() -> Outcome {
        Outcome::Refused { code: tonic::Code::FailedPrecondition, message: "not claimable".into() }
    }

    #[test]
    fn claims_have_exactly_one_winner_and_a_linearizable_history() {
        let entries = [(
            10,
            "claim-r1-p1",
            Kind::Assigned(pb::Assigned {
                conversation: "r1".into(),
                agent: "p1".into(),
                team: PICK_TEAM.into(),
                reason: pb::AssignReason::Claimed.into(),
                ..Default::default()
            }),
        )];
        let finals = finals_of(&[("r1", pb::ConversationState::Assigned, "p1")]);
        // Overlapping claims: one wins, one refused.
        let ops = [claim("p1", 0, 50, at(10)), claim("p2", 10, 40, refused())];
        assert!(verdict(&ops, &entries, &finals).clean());
        // The refusal came before the winner was even sent.
        let ops = [claim("p1", 100, 150, at(10)), claim("p2", 10, 40, refused())];
        let v = verdict(&ops, &entries, &finals);
        assert!(v.findings.iter().any(|f| f.contains("not linearizable")), "{:?}", v.findings);
        // Both refused, nobody won.
        let ops = [claim("p1", 0, 50, refused()), claim("p2", 10, 40, refused())];
        let v = verdict(&ops, &[], &FinalReads::default());
        assert!(v.findings.iter().any(|f| f.contains("no claim won")), "{:?}", v.findings);
        // A refused claim that took effect.
        let ops = [claim("p1", 0, 50, refused()), claim("p2", 10, 40, refused())];
        let v = verdict(&ops, &entries, &finals);
        assert!(v.findings.iter().any(|f| f.contains("a refused request took effect")), "{:?}", v.findings);
    }

    #[test]
    fn capacity_follows_the_admin_writes_with_their_uncertainty() {
        // max_open 1 at index 1, raised to 3 by a write whose index is unknown but which was
        // answered before a write at index 20 was sent.
        let ops = vec![
            op(max_open("a1", 1), 0, 10, at(1)),
            op(max_open("a1", 3), 100, 200, acked()),
            op(online("a1"), 300, 310, at(20)),
        ];
        let bounds = Bounds::new(&ops);
        let capacity = Capacity::new(&ops, &bounds);
        assert_eq!(capacity.allowed("a1", 5), 3, "maybe raised already");
        assert_eq!(capacity.allowed("a1", 20), 3);
        assert_eq!(capacity.allowed("nobody", 20), 0);
        let ops = vec![op(max_open("a1", 1), 0, 10, at(1)), op(max_open("a1", 3), 100, 200, at(8))];
        let capacity = Capacity::new(&ops, &Bounds::new(&ops));
        assert_eq!((capacity.allowed("a1", 7), capacity.allowed("a1", 8)), (1, 3));
    }

    #[test]
    fn a_max_open_lowered_in_the_entry_of_an_assignment_may_have_applied_after_it() {
        // Seen in a nemesis run (seed 1796461463): a05 going online and its max_open lowered
        // from 4 to 2, both held up by a fault, committed together in entry 2980. Going online
        // came first in the entry and took two queued conversations (4 held), and only then
        // was max_open lowered: right, but the checker held the lower limit against them.
        let ops = vec![
            op(max_open("a1", 4), 0, 10, at(1)),
            op(online("a1"), 20, 300, at(8)),
            op(max_open("a1", 2), 30, 310, at(8)),
        ];
        let capacity = Capacity::new(&ops, &Bounds::new(&ops));
        assert_eq!(capacity.allowed("a1", 8), 4, "the lower limit may have come after");
        assert_eq!(capacity.allowed("a1", 9), 2, "in force from the next entry");
        // c1..c3 queued while a1 was away, then all taken as it came online.
        let entries = vec![
            (3, "c1-open", queued("c1")),
            (4, "c2-open", queued("c2")),
            (5, "c3-open", queued("c3")),
            (8, "online-a1", status("a1", pb::AgentStatus::Online)),
            (8, "online-a1", assigned("c1", "a1", pb::AssignReason::Strategy)),
            (8, "online-a1", assigned("c2", "a1", pb::AssignReason::Strategy)),
            (8, "online-a1", assigned("c3", "a1", pb::AssignReason::Strategy)),
        ];
        let mut ops = ops;
        for conversation in ["c1", "c2", "c3"] {
            ops.push(op(open(conversation, 0), 40, 50, acked()));
        }
        let finals = finals_of(&[
            ("c1", pb::ConversationState::Assigned, "a1"),
            ("c2", pb::ConversationState::Assigned, "a1"),
            ("c3", pb::ConversationState::Assigned, "a1"),
        ]);
        let v = verdict(&ops, &entries, &finals);
        assert!(v.clean(), "{:?}", v.findings);
    }
}
