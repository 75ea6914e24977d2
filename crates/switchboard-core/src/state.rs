//! The whole replicated state: every workspace, the timer wheel and the clock, with the one
//! entry point [`State::apply`], snapshots and the state digest.

use crate::command::{Command, Event, Input, OpenConversation};
use crate::dedupe::Dedupe;
use crate::digest::{DIGEST_BACKLOG_MAX, DIGEST_SETTLE_CHUNK};
use crate::effect::Effect;
use crate::error::{ApplyError, Conflict, ErrorKind};
use crate::ids::ContactId;
use crate::ids::{AgentId, ConversationId, TeamId, WorkspaceId};
use crate::limits::{CLOCK_STEP_MS_MAX, TIMERS_PER_APPLY_MAX, TIMESTAMP_MS_MAX, WORKSPACES_MAX};
use crate::model::{AgentSpec, RoutingRule, TeamSpec, WorkspaceSettings};
use crate::timers::{Ctx, Timers};
use crate::view::{AgentView, ContactView, ConversationView, QueuedView};
use crate::workspace::{StoredWorkspace, Workspace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// First bytes of every snapshot.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SWBS";
/// Format version written by this build; bump it when the serialised layout changes.
pub const SNAPSHOT_VERSION: u16 = 4;
/// The oldest format version this build still reads (format 3 stores a workspace's contacts
/// and conversations inline; see `workspace/stored.rs`).
const SNAPSHOT_VERSION_MIN: u16 = 3;
/// Version of what [`State::state_digest`] hashes: a new one changes every digest, so nodes
/// of different versions report different digests for the same state.
const DIGEST_VERSION: u16 = 2;

/// What applying one entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Effects in the order they happened: timers that fell due first, then the command's.
    pub effects: Vec<Effect>,
    /// How many of `effects`, from the first, came from timers rather than the input.
    pub timer_effects: usize,
    /// Whether the command itself was applied. On `Err` the command changed nothing and its
    /// event id is not remembered (timer effects above still happened), except for
    /// [`ErrorKind::Internal`], see there.
    pub result: Result<(), ApplyError>,
}

/// A snapshot that cannot be restored.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic.
    #[error("not a Switchboard snapshot (bad magic bytes)")]
    BadMagic,
    /// Written by an incompatible version.
    #[error(
        "snapshot format version {found} is not supported (this build reads {SNAPSHOT_VERSION_MIN} to {SNAPSHOT_VERSION}): {}",
        version_hint(.found)
    )]
    UnsupportedVersion {
        /// The version in the snapshot.
        found: u16,
    },
    /// The payload does not decode.
    #[error("snapshot payload does not decode: {0}")]
    Decode(String),
    /// The payload decodes but describes an impossible state.
    #[error("snapshot describes an invalid state: {0}")]
    Invalid(ApplyError),
}

fn version_hint(found: &u16) -> &'static str {
    if *found > SNAPSHOT_VERSION {
        "it was written by a newer Switchboard; run that version, or restore from a peer"
    } else {
        "it was written by an older Switchboard; install a snapshot from a peer running this version, or \
         start this node with an empty data directory and let it catch up"
    }
}

/// The assigner state machine. [`State::snapshot`] and [`State::restore`] are its
/// persistent form (postcard only: the snapshot frames some maps in postcard's layout).
#[derive(Clone, Debug, Default, Serialize)]
pub struct State {
    /// Latest entry time seen: time never goes backwards, whatever the entries say.
    now_ms: i64,
    workspaces: BTreeMap<WorkspaceId, Workspace>,
    timers: Timers,
    /// Internal faults met while firing timers (bugs); not part of the replicated state.
    #[serde(skip)]
    timer_faults: u64,
}

/// A state as format 4 stores it, each workspace's largest maps still encoded.
#[derive(Deserialize)]
struct StoredState<'a> {
    now_ms: i64,
    #[serde(borrow)]
    workspaces: BTreeMap<WorkspaceId, StoredWorkspace<'a>>,
    timers: Timers,
}

impl StoredState<'_> {
    fn decode(self) -> Result<State, String> {
        let StoredState { now_ms, workspaces, timers } = self;
        let workspaces = workspaces
            .into_iter()
            .map(|(id, workspace)| workspace.decode().map(|workspace| (id, workspace)))
            .collect::<Result<_, _>>()?;
        Ok(State { now_ms, workspaces, timers, timer_faults: 0 })
    }
}

/// A state as format 3 stored it (its workspaces differ, see `workspace/stored.rs`).
#[derive(Deserialize)]
struct StateV3 {
    now_ms: i64,
    workspaces: BTreeMap<WorkspaceId, crate::workspace::WorkspaceFields>,
    timers: Timers,
}

impl From<StateV3> for State {
    fn from(stored: StateV3) -> Self {
        let StateV3 { now_ms, workspaces, timers } = stored;
        let workspaces = workspaces.into_iter().map(|(id, workspace)| (id, Workspace::from(workspace))).collect();
        State { now_ms, workspaces, timers, timer_faults: 0 }
    }
}

impl State {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one committed entry stamped `at_ms` (UTC milliseconds, written by the leader).
    ///
    /// Deterministic: the same sequence of `(at_ms, input)` gives the same outcomes and the
    /// same state on every replica. Time never goes backwards and moves forward at most
    /// [`CLOCK_STEP_MS_MAX`] per entry; at most [`TIMERS_PER_APPLY_MAX`] timers fire per entry.
    pub fn apply(&mut self, at_ms: i64, input: &Input) -> Outcome {
        self.apply_explaining(at_ms, input, None).0
    }

    /// [`State::apply`], also explaining the routing decision `input` takes about
    /// `conversation` when it opens or reopens it (`OpenConversation`, or `CustomerMessage` to a
    /// closed conversation): the explanation is read after the due timers fired and before the
    /// event, from exactly the state the decision saw. The state changes exactly as `apply`
    /// changes it; the explanation costs O(members of the routed team).
    pub fn apply_explained(
        &mut self,
        at_ms: i64,
        input: &Input,
        conversation: &ConversationId,
    ) -> (Outcome, Option<crate::explain::Explanation>) {
        self.apply_explaining(at_ms, input, Some(conversation))
    }

    fn apply_explaining(
        &mut self,
        at_ms: i64,
        input: &Input,
        explain: Option<&ConversationId>,
    ) -> (Outcome, Option<crate::explain::Explanation>) {
        self.now_ms = self.next_time(at_ms);
        let mut effects = Vec::new();
        let fired_in = self.fire_due_timers(&mut effects);
        let timer_effects = effects.len();
        let explanation = match (input, explain) {
            (Input::Event(event), Some(conversation)) => self.explain_event(event, conversation),
            _ => None,
        };
        let result = match input {
            Input::Tick => Ok(()),
            Input::Event(event) => self.apply_event(event, &mut effects),
        };
        self.settle_digest_after(input, &fired_in);
        (Outcome { effects, timer_effects, result }, explanation)
    }

    /// The explanation of `event`'s routing of `conversation`, if it opens or reopens it.
    fn explain_event(&self, event: &Event, conversation: &ConversationId) -> Option<crate::explain::Explanation> {
        let workspace = self.workspaces.get(&event.workspace)?;
        match &event.command {
            Command::OpenConversation(open) if &open.conversation == conversation => {
                workspace.explain_open(open, self.now_ms).ok()
            }
            Command::CustomerMessage { conversation: id } if id == conversation => {
                workspace.explain_reopen(id, self.now_ms).ok()
            }
            _ => None,
        }
    }

    /// The clock after an entry stamped `at_ms`: never backwards, at most one
    /// [`CLOCK_STEP_MS_MAX`] forward, never past [`TIMESTAMP_MS_MAX`]. The first entry sets it.
    fn next_time(&self, at_ms: i64) -> i64 {
        let at_ms = at_ms.clamp(0, TIMESTAMP_MS_MAX);
        if self.now_ms == 0 {
            return at_ms;
        }
        at_ms.max(self.now_ms).min(self.now_ms.saturating_add(CLOCK_STEP_MS_MAX))
    }

    /// Fires the timers due by now; returns the workspaces they touched (each once per run
    /// of consecutive timers).
    fn fire_due_timers(&mut self, effects: &mut Vec<Effect>) -> Vec<WorkspaceId> {
        let mut touched: Vec<WorkspaceId> = Vec::new();
        for _ in 0..TIMERS_PER_APPLY_MAX {
            let Some((workspace_id, timer)) = self.timers.pop_due(self.now_ms) else {
                break;
            };
            if let Some(workspace) = self.workspaces.get_mut(&workspace_id) {
                let mut cx = Ctx { now_ms: self.now_ms, timers: &mut self.timers, effects };
                if workspace.fire(&mut cx, timer).is_err() {
                    self.timer_faults = self.timer_faults.saturating_add(1);
                }
                workspace.schedule_position_updates(&mut cx);
                if touched.last() != Some(&workspace_id) {
                    touched.push(workspace_id);
                }
            }
        }
        touched
    }

    /// Works off digest backlog at the end of an entry, hashing at most
    /// [`DIGEST_SETTLE_CHUNK`] records whatever the entry did: in the workspaces the entry
    /// touched once their backlog passes [`DIGEST_BACKLOG_MAX`], and on a `Tick` in every
    /// workspace with any (so that idle and small workspaces, and a restored state, drain too).
    fn settle_digest_after(&mut self, input: &Input, fired_in: &[WorkspaceId]) {
        let mut budget = DIGEST_SETTLE_CHUNK;
        let touched = match input {
            Input::Event(event) => Some(&event.workspace),
            Input::Tick => None,
        };
        for id in touched.into_iter().chain(fired_in) {
            if let Some(workspace) = self.workspaces.get_mut(id)
                && workspace.digest_backlog() > DIGEST_BACKLOG_MAX
            {
                budget = budget.saturating_sub(workspace.settle_digest(budget));
            }
        }
        if matches!(input, Input::Tick) {
            for workspace in self.workspaces.values_mut() {
                if budget == 0 {
                    break;
                }
                budget = budget.saturating_sub(workspace.settle_digest(budget));
            }
        }
    }

    fn apply_event(&mut self, event: &Event, effects: &mut Vec<Effect>) -> Result<(), ApplyError> {
        // Every bound first: nothing below runs on an input the edges would have refused.
        event.validate()?;
        let now_ms = self.now_ms;
        let Some(workspace) = self.workspaces.get_mut(&event.workspace) else {
            return self.create_workspace(event);
        };
        let event_hash = event.event_id.as_ref().map(|id| Dedupe::hash(id.as_str()));
        if let Some(hash) = event_hash
            && workspace.dedupe.contains(hash)
            && let Some(event_id) = &event.event_id
        {
            return Err(ApplyError::Duplicate { event_id: event_id.clone() });
        }
        let effects_before = effects.len();
        let mut cx = Ctx { now_ms, timers: &mut self.timers, effects };
        let result = match &event.command {
            Command::ConfigureWorkspace(settings) => workspace.configure(settings.clone()),
            Command::UpsertAgent(spec) => workspace.upsert_agent(&mut cx, spec.clone()),
            Command::RemoveAgent { agent } => workspace.remove_agent(&mut cx, agent),
            Command::UpsertTeam(spec) => workspace.upsert_team(&mut cx, spec.clone()),
            Command::RemoveTeam { team } => workspace.remove_team(team),
            Command::SetRoutingRules(rules) => workspace.set_rules(rules.clone()),
            Command::UpsertContact(spec) => workspace.upsert_contact(spec.clone()),
            Command::SetAgentStatus { agent, status } => workspace.set_agent_status(&mut cx, agent, *status),
            Command::OpenConversation(open) => workspace.open_conversation(&mut cx, open),
            Command::CustomerMessage { conversation } => workspace.customer_message(&mut cx, conversation),
            Command::AgentReplied { conversation, agent } => workspace.agent_replied(&mut cx, conversation, agent),
            Command::CloseConversation { conversation } => workspace.close(&mut cx, conversation),
            Command::Claim { conversation, agent } => workspace.claim(&mut cx, conversation, agent),
            Command::Assign { conversation, agent } => workspace.assign_manually(&mut cx, conversation, agent),
            Command::Transfer { conversation, target } => workspace.transfer(&mut cx, conversation, target.clone()),
        };
        // Refused commands moved no queue; an internal fault may have, like a success.
        workspace.schedule_position_updates(&mut cx);
        match &result {
            Ok(()) => workspace.remember(event_hash, now_ms),
            // A fault found mid-way may have changed the state already (identically on every
            // replica): remember the id so that a redelivery cannot apply the input twice.
            Err(error) if error.kind() == ErrorKind::Internal => workspace.remember(event_hash, now_ms),
            // Operations check everything before their first change, so a refusal changed
            // nothing; no effect of it may leave either.
            Err(_) => effects.truncate(effects_before),
        }
        result
    }

    /// Creates a workspace from its first `ConfigureWorkspace`; anything else addressed to an
    /// unknown workspace is refused.
    fn create_workspace(&mut self, event: &Event) -> Result<(), ApplyError> {
        let Command::ConfigureWorkspace(settings) = &event.command else {
            return Err(ApplyError::UnknownWorkspace(event.workspace.clone()));
        };
        // Workspace ids name NATS subjects (`switchboard.events.<workspace>`). Only new ones are
        // checked: a workspace created before the rule keeps working (its effects reach Watch).
        if !crate::ids::is_subject_token(event.workspace.as_str()) {
            return Err(ApplyError::invalid(
                "workspace",
                format!(
                    "{:?} must not contain '.', '*', '>' or whitespace (it is a NATS subject token)",
                    event.workspace.as_str()
                ),
            ));
        }
        if let Some(team) = &settings.default_team {
            // A new workspace has no teams yet.
            return Err(ApplyError::UnknownTeam(team.clone()));
        }
        if self.workspaces.len() >= WORKSPACES_MAX {
            return Err(ApplyError::Precondition(Conflict::WorkspacesFull));
        }
        let mut workspace = Workspace::new(event.workspace.clone(), settings.clone());
        workspace.remember(event.event_id.as_ref().map(|id| Dedupe::hash(id.as_str())), self.now_ms);
        self.workspaces.insert(event.workspace.clone(), workspace);
        Ok(())
    }

    /// Internal faults met while firing timers since this replica started (bugs; each one
    /// dropped the timer). Not part of the replicated state.
    pub fn timer_faults(&self) -> u64 {
        self.timer_faults
    }

    /// The state's clock: the latest entry time applied.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Number of pending timers.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Workspaces, in id order.
    pub fn workspace_ids(&self) -> impl Iterator<Item = &WorkspaceId> {
        self.workspaces.keys()
    }

    /// Why `open` would go where it goes if it arrived at `at_ms` in this state: the path that
    /// decides and every candidate's verdict. Read-only, O(members of the routed team); the
    /// state is the one just before the event (with the timers due at `at_ms` fired: apply a
    /// `Tick` at `at_ms` first), so a replay can explain any decision after the fact.
    pub fn explain_open(
        &self,
        workspace: &WorkspaceId,
        open: &OpenConversation,
        at_ms: i64,
    ) -> Result<crate::explain::Explanation, ApplyError> {
        let Some(ws) = self.workspaces.get(workspace) else {
            return Err(ApplyError::UnknownWorkspace(workspace.clone()));
        };
        ws.explain_open(open, at_ms)
    }

    /// A conversation, with its queue position while queued.
    pub fn conversation(&self, workspace: &WorkspaceId, id: &ConversationId) -> Option<ConversationView> {
        self.workspaces.get(workspace)?.conversation_view(id)
    }

    /// Number of conversations a workspace holds (open and recently closed).
    pub fn conversation_count(&self, workspace: &WorkspaceId) -> usize {
        self.workspaces.get(workspace).map_or(0, Workspace::conversation_count)
    }

    /// An agent with presence and counters.
    pub fn agent(&self, workspace: &WorkspaceId, id: &AgentId) -> Option<AgentView> {
        self.workspaces.get(workspace)?.agent_view(id)
    }

    /// Whether the workspace has been configured.
    pub fn has_workspace(&self, workspace: &WorkspaceId) -> bool {
        self.workspaces.contains_key(workspace)
    }

    /// A workspace's settings.
    pub fn workspace_settings(&self, workspace: &WorkspaceId) -> Option<&WorkspaceSettings> {
        self.workspaces.get(workspace).map(|w| &w.settings)
    }

    /// An agent's configuration.
    pub fn agent_spec(&self, workspace: &WorkspaceId, id: &AgentId) -> Option<&AgentSpec> {
        self.workspaces.get(workspace)?.agent_spec(id)
    }

    /// A team's configuration.
    pub fn team_spec(&self, workspace: &WorkspaceId, id: &TeamId) -> Option<&TeamSpec> {
        self.workspaces.get(workspace)?.team_spec(id)
    }

    /// A workspace's routing rules, in order.
    pub fn routing_rules(&self, workspace: &WorkspaceId) -> Option<&[RoutingRule]> {
        self.workspaces.get(workspace).map(Workspace::rules)
    }

    /// A contact with what the router remembers about it.
    pub fn contact(&self, workspace: &WorkspaceId, id: &ContactId) -> Option<ContactView> {
        self.workspaces.get(workspace)?.contact_view(id)
    }

    /// How many agents of a workspace have each status, in `AgentStatus` order (online, busy,
    /// away, offline). O(agents): for periodic metrics, not per event.
    pub fn agents_by_status(&self, workspace: &WorkspaceId) -> [usize; 4] {
        self.workspaces.get(workspace).map(Workspace::agents_by_status).unwrap_or_default()
    }

    /// Every agent id of a workspace, in id order.
    pub fn agent_ids(&self, workspace: &WorkspaceId) -> Vec<AgentId> {
        self.workspaces.get(workspace).map(Workspace::agent_ids).unwrap_or_default()
    }

    /// Every team id of a workspace, in id order.
    pub fn team_ids(&self, workspace: &WorkspaceId) -> Vec<TeamId> {
        self.workspaces.get(workspace).map(Workspace::team_ids).unwrap_or_default()
    }

    /// A page of a team's queue, in service order.
    pub fn team_queue(
        &self,
        workspace: &WorkspaceId,
        team: &TeamId,
        offset: usize,
        limit: usize,
    ) -> Option<Vec<QueuedView>> {
        self.workspaces.get(workspace)?.team_queue(team, offset, limit)
    }

    /// Number of conversations waiting in a team's queue.
    pub fn queue_depth(&self, workspace: &WorkspaceId, team: &TeamId) -> Option<usize> {
        self.workspaces.get(workspace)?.queue_depth(team)
    }

    /// Checks the structural invariants and invariant 5 (nobody waits while an eligible agent
    /// has capacity). For tests and debugging: it walks the whole state.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, workspace) in &self.workspaces {
            workspace.check_invariants().map_err(|error| format!("workspace {id}: {error}"))?;
        }
        Ok(())
    }

    /// Serialises the whole state: magic, format version, then the postcard encoding of the
    /// source-of-truth fields (indexes are rebuilt on restore).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1024);
        // Writing to a Vec cannot fail, and every field serialises: an error here would be a
        // bug in a serde derive. The header alone then still restores to "not decodable".
        if self.snapshot_into(&mut bytes).is_err() {
            bytes.truncate(SNAPSHOT_MAGIC.len().saturating_add(2));
        }
        bytes
    }

    /// Writes what [`State::snapshot`] returns to `out` as it is encoded, a few bytes at a
    /// time (give it a buffered writer), without holding the whole encoding in memory. An
    /// error is `out`'s own (the first one), or (never expected) the encoder's; `out` then
    /// holds a prefix.
    pub fn snapshot_into<W: std::io::Write>(&self, out: W) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut out = FirstError { out, error: None };
        let written = out
            .write_all(SNAPSHOT_MAGIC)
            .and_then(|()| out.write_all(&SNAPSHOT_VERSION.to_le_bytes()))
            .and_then(|()| postcard::to_io(self, &mut out).map(drop).map_err(|e| std::io::Error::other(e.to_string())));
        // The encoder reports a failed write as a full buffer, and the writer above keeps only
        // the kind: the error to pass on is the one the wrapped writer gave.
        written.map_err(|error| out.error.take().unwrap_or(error))
    }

    /// Restores a state written by [`State::snapshot`].
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC) else {
            return Err(SnapshotError::BadMagic);
        };
        let Some(([low, high], payload)) = rest.split_first_chunk::<2>().map(|(v, p)| (*v, p)) else {
            return Err(SnapshotError::BadMagic);
        };
        let found = u16::from_le_bytes([low, high]);
        let mut state = match found {
            SNAPSHOT_VERSION => postcard::from_bytes::<StoredState<'_>>(payload)
                .map_err(|e| SnapshotError::Decode(e.to_string()))?
                .decode()
                .map_err(SnapshotError::Decode)?,
            SNAPSHOT_VERSION_MIN => postcard::from_bytes::<StateV3>(payload)
                .map(State::from)
                .map_err(|e| SnapshotError::Decode(e.to_string()))?,
            _ => return Err(SnapshotError::UnsupportedVersion { found }),
        };
        for workspace in state.workspaces.values_mut() {
            workspace.rebuild().map_err(SnapshotError::Invalid)?;
        }
        Ok(state)
    }

    /// A digest of the whole state (XXH3-128, hex). Two replicas that applied the same log
    /// have the same digest, and so does a state restored from either's snapshot: it covers
    /// every field a snapshot holds. Kept up to date as entries apply (see `digest.rs`), so
    /// reading it costs O([`State::digest_backlog`]), not O(state).
    pub fn state_digest(&self) -> String {
        #[derive(serde::Serialize)]
        struct StateDigest<'a> {
            version: u16,
            now_ms: i64,
            timers: (u64, u64, u64),
            workspaces: Vec<crate::workspace::WorkspaceDigest<'a>>,
        }
        // Every field, so that a new one cannot be left out of the digest unnoticed.
        let State { now_ms, workspaces, timers, timer_faults: _ } = self;
        let summary = StateDigest {
            version: DIGEST_VERSION,
            now_ms: *now_ms,
            timers: timers.digest(),
            workspaces: workspaces.values().map(Workspace::digest).collect(),
        };
        // Encoding to a Vec cannot fail for these types (see `snapshot`).
        let bytes = postcard::to_allocvec(&summary).unwrap_or_default();
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
    }

    /// Entity records changed since the digest last hashed them: what reading
    /// [`State::state_digest`] costs now. It stays under a few thousand per workspace while
    /// entries apply; a restored state starts with every record in it and works it off a
    /// few thousand records per entry.
    pub fn digest_backlog(&self) -> usize {
        self.workspaces.values().map(Workspace::digest_backlog).fold(0, usize::saturating_add)
    }

    /// Hashes every changed record now, emptying [`State::digest_backlog`]: O(backlog). The
    /// state does this itself a few thousand records at a time; this is for callers that
    /// want the whole backlog gone at a moment of their choosing (and for tests, which
    /// otherwise never pass the threshold on small states).
    pub fn settle_digest(&mut self) {
        for workspace in self.workspaces.values_mut() {
            workspace.settle_digest(usize::MAX);
        }
    }

    /// How many records the state holds (entities, pending timers, remembered event ids): a
    /// measure of its size that costs O(workspaces), for deciding how to read the whole of it.
    pub fn record_count(&self) -> usize {
        self.workspaces.values().map(Workspace::record_count).fold(self.timers.len(), usize::saturating_add)
    }
}

/// A writer that keeps the first error of the one it wraps, for [`State::snapshot_into`].
struct FirstError<W> {
    out: W,
    error: Option<std::io::Error>,
}

impl<W> FirstError<W> {
    fn keep(&mut self, error: std::io::Error) -> std::io::Error {
        let kind = error.kind();
        if self.error.is_none() {
            self.error = Some(error);
        }
        kind.into()
    }
}

impl<W: std::io::Write> std::io::Write for FirstError<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.out.write(bytes).map_err(|e| self.keep(e))
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes).map_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().map_err(|e| self.keep(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::model::{AgentSpec, WorkspaceSettings};

    const NOW: i64 = 1_795_428_000_000;

    fn event(workspace: &str, command: Command) -> Input {
        Input::Event(Event { workspace: WorkspaceId::new(workspace), event_id: None, command })
    }

    /// A state of `workspaces` workspaces with `agents` agents each, restored from its
    /// snapshot: every record is digest backlog.
    fn restored(workspaces: usize, agents: usize) -> State {
        let mut state = State::new();
        for w in 0..workspaces {
            let name = format!("w{w}");
            let configure = event(&name, Command::ConfigureWorkspace(WorkspaceSettings::default()));
            assert_eq!(state.apply(NOW, &configure).result, Ok(()));
            for a in 0..agents {
                let upsert = event(&name, Command::UpsertAgent(AgentSpec::new(format!("a{a}").as_str(), "A")));
                assert_eq!(state.apply(NOW, &upsert).result, Ok(()));
            }
        }
        State::restore(&state.snapshot()).expect("restores")
    }

    #[test]
    fn a_tick_drains_small_workspaces_that_never_pass_the_threshold() {
        let mut state = restored(3, 100);
        assert_eq!(state.digest_backlog(), 300);
        let digest = state.state_digest();
        state.apply(NOW, &Input::Tick);
        assert_eq!(state.digest_backlog(), 0, "three workspaces of 100 records each, under the threshold");
        assert_eq!(state.state_digest(), digest, "settling changes the caches, not the digest");
    }

    #[test]
    fn one_entry_hashes_at_most_one_chunk_of_a_restored_backlog() {
        let records = DIGEST_SETTLE_CHUNK + DIGEST_SETTLE_CHUNK / 2;
        // One workspace over the threshold: an event in it hashes one chunk, a tick the rest.
        let mut state = restored(1, records);
        assert_eq!(state.digest_backlog(), records);
        let upsert = event("w0", Command::UpsertAgent(AgentSpec::new("a0", "B")));
        assert_eq!(state.apply(NOW, &upsert).result, Ok(()));
        assert_eq!(state.digest_backlog(), records - DIGEST_SETTLE_CHUNK);
        state.apply(NOW, &Input::Tick);
        assert_eq!(state.digest_backlog(), 0);
        // Two workspaces under the threshold: a tick's one chunk spans both.
        let mut state = restored(2, records / 2);
        state.apply(NOW, &Input::Tick);
        assert_eq!(state.digest_backlog(), records - DIGEST_SETTLE_CHUNK);
        state.apply(NOW, &Input::Tick);
        assert_eq!(state.digest_backlog(), 0);
    }

    /// Takes `room` bytes, then fails every write with "no space left on device".
    struct FullDisk {
        taken: Vec<u8>,
        room: usize,
    }

    impl std::io::Write for FullDisk {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let n = bytes.len().min(self.room - self.taken.len());
            if n == 0 && !bytes.is_empty() {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            self.taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_streamed_snapshot_is_the_snapshot_and_a_failed_write_is_reported_as_it_was() {
        let state = restored(2, 50);
        let whole = state.snapshot();
        let mut streamed = Vec::new();
        state.snapshot_into(&mut streamed).expect("a Vec takes it all");
        assert_eq!(streamed, whole);
        // `snapshot` is built on `snapshot_into`, so the line above cannot tell them apart: what
        // was streamed must also restore to the same state.
        assert_eq!(State::restore(&streamed).expect("restores").state_digest(), state.state_digest());
        for room in [0, 3, 100, whole.len() - 1] {
            let mut disk = FullDisk { taken: Vec::new(), room };
            let error = state.snapshot_into(&mut disk).expect_err("the disk fills up");
            assert_eq!(error.raw_os_error(), Some(28), "room {room}: {error}");
            assert_eq!(disk.taken[..], whole[..room]);
        }
    }
}
