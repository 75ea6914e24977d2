//! `switchboard.v1.Assignments`: conversations, queues, claim/assign/transfer/close, and Watch.

use crate::api::Api;
use crate::auth::Permission;
use crate::convert::effects::EffectOrigin;
use crate::convert::views::{conversation_to_pb, queue_entry_to_pb};
use crate::convert::{optional_id, required, required_id};
use crate::services::{page_size, unknown_workspace};
use crate::watch::{NextChange, StreamSlot, change_index};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::{AgentId, Command, ConversationId, Effect, TeamId, TransferTarget, WorkspaceId};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::assignments_server::Assignments;
use switchboard_raft::{AppliedEntry, EffectCursor, HistoryError, StateChange};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// How often an idle Watch stream reports progress.
const WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct AssignmentsService {
    pub(crate) api: Arc<Api>,
}

fn assignment_response(written: crate::api::Written) -> Response<pb::AssignmentResponse> {
    Response::new(pb::AssignmentResponse { log_index: written.log_index, effects: written.effects })
}

#[tonic::async_trait]
impl Assignments for AssignmentsService {
    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::ConversationInfo>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        let conversation: ConversationId = required_id(request.conversation, "conversation")?;
        if caller.agent().is_none() {
            caller.may(Permission::ReadRouting, Some(&workspace))?;
        }
        let read = self
            .api
            .read_entity(request.consistency, &workspace, "conversation", &conversation, |state| {
                state.conversation(&workspace, &conversation)
            })
            .await?;
        // An agent reads the conversations assigned to it.
        if let Some(agent) = caller.agent() {
            caller.may_act_as(agent, &workspace, Permission::ReadRouting)?;
            if read.value.assignee.as_ref() != Some(agent) {
                return Err(Status::permission_denied(format!(
                    "conversation {conversation} is not assigned to agent {agent}, whose token this is"
                )));
            }
        }
        Ok(Response::new(conversation_to_pb(read.value, read.applied_index)))
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        let team: TeamId = required_id(request.team, "team")?;
        match caller.agent() {
            // An agent reads the queues of its own teams.
            Some(agent) => {
                caller.may_act_as(agent, &workspace, Permission::ReadRouting)?;
                let member = self
                    .api
                    .node
                    .read_local(|state| state.agent(&workspace, agent).is_some_and(|view| view.teams.contains(&team)))
                    .value;
                if !member {
                    return Err(Status::permission_denied(format!(
                        "agent {agent}, whose token this is, is not a member of team {team}"
                    )));
                }
            }
            None => caller.may(Permission::ReadRouting, Some(&workspace))?,
        }
        let limit = page_size(request.limit, "limit")?;
        let offset = request.offset as usize;
        let read = self
            .api
            .read_entity(request.consistency, &workspace, "team", &team, |state| {
                let entries = state.team_queue(&workspace, &team, offset, limit)?;
                Some((entries, state.queue_depth(&workspace, &team).unwrap_or(0)))
            })
            .await?;
        let (entries, depth) = read.value;
        Ok(Response::new(pb::ListQueueResponse {
            entries: entries.into_iter().map(queue_entry_to_pb).collect(),
            depth: depth as u32,
            applied_index: read.applied_index,
        }))
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> Result<Response<pb::AssignmentResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        let agent = required_id(request.agent, "agent")?;
        caller.may_act_as(&agent, &workspace, Permission::Supervise)?;
        let command = Command::Claim { conversation: required_id(request.conversation, "conversation")?, agent };
        self.api.write(workspace, request.request_id, command).await.map(assignment_response)
    }

    async fn assign(&self, request: Request<pb::AssignRequest>) -> Result<Response<pb::AssignmentResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Supervise, Some(&workspace))?;
        let command = Command::Assign {
            conversation: required_id(request.conversation, "conversation")?,
            agent: required_id(request.agent, "agent")?,
        };
        self.api.write(workspace, request.request_id, command).await.map(assignment_response)
    }

    async fn transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::AssignmentResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Supervise, Some(&workspace))?;
        let conversation = required_id(request.conversation, "conversation")?;
        let target = match required(request.target, "target (agent or team)")? {
            pb::transfer_request::Target::Agent(agent) => TransferTarget::Agent(required_id(agent, "agent")?),
            pb::transfer_request::Target::Team(team) => TransferTarget::Team(required_id(team, "team")?),
        };
        self.api
            .write(workspace, request.request_id, Command::Transfer { conversation, target })
            .await
            .map(assignment_response)
    }

    async fn close(&self, request: Request<pb::CloseRequest>) -> Result<Response<pb::AssignmentResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Supervise, Some(&workspace))?;
        let conversation = required_id(request.conversation, "conversation")?;
        self.api
            .write(workspace, request.request_id, Command::CloseConversation { conversation })
            .await
            .map(assignment_response)
    }

    type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static>>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let filter = Filter {
            workspace: required_id(request.workspace, "workspace")?,
            team: optional_id(request.team, "team")?,
            agent: optional_id(request.agent, "agent")?,
            conversation: optional_id(request.conversation, "conversation")?,
        };
        // An agent watches what concerns it (the filter's agent is itself); others need Watch.
        match (caller.agent(), &filter.agent) {
            (Some(_), Some(agent)) => caller.may_act_as(agent, &filter.workspace, Permission::Watch)?,
            _ => caller.may(Permission::Watch, Some(&filter.workspace))?,
        }
        // Taken first, so that calls still waiting to catch up count among the open streams.
        let slot = self.api.watch.open_stream().map_err(|e| {
            crate::metrics::watch_stream_refused("stream_limit");
            Status::resource_exhausted(format!(
                "this node already serves {} Watch streams (watch_streams_max); close a stream you no longer read, \
                 or watch through another node",
                e.streams_max
            ))
        })?;
        check_workspace(&self.api, &filter.workspace, request.from_index).await?;
        let next_index = match request.from_index {
            0 => self.api.watch.start_from_now(),
            from_index => {
                self.api.watch.next_change(from_index).map_err(|e| not_retained(from_index, e.first_index))?;
                from_index
            }
        };
        let stream = WatchStream {
            newest: self.api.watch.newest(),
            stopping: self.api.stopping.clone(),
            api: self.api.clone(),
            filter,
            next_index,
            least_backlog: u64::MAX,
            sending: None,
            progress_due: Instant::now() + WATCH_PROGRESS_INTERVAL,
            ended: false,
            _slot: slot,
        };
        // No task per stream: the transport pulls each message when it has room for it, and
        // dropping the stream (the client went away) drops everything it held.
        let events = futures::stream::unfold(stream, |mut stream| async move {
            let event = stream.next_event().await?;
            Some((event, stream))
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn explain(&self, request: Request<pb::ExplainRequest>) -> Result<Response<pb::ExplainResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        let conversation: ConversationId = required_id(request.conversation, "conversation")?;
        caller.may(Permission::ReadRouting, Some(&workspace))?;
        // A linearizable read first: the node has applied everything committed before the call,
        // so the history includes every decision the caller could have seen.
        let known =
            self.api.read(pb::Consistency::Linearizable as i32, |state| state.has_workspace(&workspace)).await?;
        if !known.value {
            return Err(unknown_workspace(&workspace));
        }
        let history = self.api.node.conversation_history(&workspace, &conversation).await.map_err(|e| match e {
            HistoryError::NotFound { .. } => Status::not_found(e.to_string()),
            HistoryError::OutOfRange { .. } => Status::out_of_range(e.to_string()),
            HistoryError::Busy => Status::unavailable(e.to_string()),
            HistoryError::Storage(_) => Status::internal(e.to_string()),
        })?;
        Ok(Response::new(crate::convert::explain::history_to_pb(&history)))
    }
}

/// Refuses a Watch on a workspace this node does not know, but only once it has caught up with
/// what the caller knows: a caller that just created the workspace through another node names
/// that write's index as `from_index`, so the node first waits until it has applied that index
/// (up to `watch_catch_up_timeout`); and `NOT_FOUND` is decided by a linearizable read, like
/// every other read. A workspace this node already knows needs no wait: the stream itself waits
/// for `from_index` to be applied.
async fn check_workspace(api: &Api, workspace: &WorkspaceId, from_index: u64) -> Result<(), Status> {
    let known_here = || api.node.read_local(|state| state.has_workspace(workspace)).value;
    if known_here() {
        return Ok(());
    }
    if from_index > 0 {
        let timeout = api.watch.limits().catch_up_timeout;
        if let Err(reached) = api.watch.wait_for_index(from_index, timeout).await {
            return Err(Status::unavailable(format!(
                "this node has applied the log up to index {reached}, short of from_index {from_index} where the \
                 watch starts, and did not catch up within {} ms; retry, or watch through another node",
                timeout.as_millis()
            )));
        }
        if known_here() {
            return Ok(());
        }
    }
    let read = api.read(pb::Consistency::Linearizable as i32, |state| state.has_workspace(workspace)).await?;
    if read.value { Ok(()) } else { Err(unknown_workspace(workspace)) }
}

fn not_retained(from_index: u64, first_index: u64) -> Status {
    Status::out_of_range(format!(
        "log index {from_index} is no longer retained by this node for Watch (the oldest is {first_index}); \
         re-read the state you display, then watch from_index 0 (now) or {first_index}"
    ))
}

fn fell_behind(backlog_effects: u64, limit: usize, resume_index: u64) -> Status {
    Status::resource_exhausted(format!(
        "this Watch stream fell {backlog_effects} effects behind this node, more than watch_backlog_max_effects \
         ({limit}): the client does not read as fast as effects are applied, and the node does not buffer for it; \
         resume with from_index {resume_index} (while it is retained) and read faster, or re-read the state you \
         display and watch from_index 0 (now)"
    ))
}

/// Which effects a Watch stream wants.
struct Filter {
    workspace: WorkspaceId,
    team: Option<TeamId>,
    agent: Option<AgentId>,
    conversation: Option<ConversationId>,
}

impl Filter {
    fn matches(&self, api: &Api, effect: &Effect) -> bool {
        if effect.workspace() != &self.workspace {
            return false;
        }
        if let Some(conversation) = &self.conversation
            && effect.conversation() != Some(conversation)
        {
            return false;
        }
        if let Some(agent) = &self.agent
            && effect.agent() != Some(agent)
        {
            return false;
        }
        if let Some(team) = &self.team {
            return match (effect.team(), effect) {
                (Some(effect_team), _) => effect_team == team,
                // A status change concerns the teams the agent belongs to.
                (None, Effect::AgentStatusChanged { agent, .. }) => {
                    api.node
                        .read_local(|state| {
                            state.agent(&self.workspace, agent).is_some_and(|view| view.teams.contains(team))
                        })
                        .value
                }
                (None, _) => false,
            };
        }
        true
    }
}

/// The change a stream is sending and where it is in it: the change is shared with the ring, and
/// each effect is converted only when the transport asks for it.
struct Sending {
    change: StateChange,
    /// The next effect of the entry (numbered over every effect, matching or not).
    cursor: EffectCursor,
    /// Whether a snapshot notice was sent.
    sent_notice: bool,
}

impl Sending {
    fn new(change: StateChange) -> Self {
        Self { change, cursor: EffectCursor::default(), sent_notice: false }
    }

    /// The next message of this change for `filter`, or `None` when the change is done.
    fn next_message(&mut self, api: &Api, filter: &Filter) -> Option<pb::WatchEvent> {
        match &self.change {
            StateChange::SnapshotInstalled { index } => {
                if std::mem::replace(&mut self.sent_notice, true) {
                    return None;
                }
                Some(pb::WatchEvent { event: Some(pb::watch_event::Event::SnapshotInstalled(*index)) })
            }
            StateChange::Entry(AppliedEntry { index, at_ms, outcomes }) => loop {
                let numbered = self.cursor.next(outcomes)?;
                if filter.matches(api, numbered.effect) {
                    let origin = EffectOrigin { log_index: *index, at_ms: *at_ms };
                    let effect = crate::convert::effects::effect_to_pb(
                        numbered.effect,
                        origin,
                        numbered.sequence,
                        numbered.cause,
                    );
                    return Some(pb::WatchEvent { event: Some(pb::watch_event::Event::Effect(effect)) });
                }
            },
        }
    }
}

/// One Watch stream: where it is in the log and in the one change it is sending. It reads the
/// node's ring of retained changes only when the transport asks for a message, so it holds no
/// more than one message however slow its client is.
struct WatchStream {
    api: Arc<Api>,
    filter: Filter,
    /// Every change before this index has been sent (or did not match).
    next_index: u64,
    /// The least backlog (effects behind the newest retained change) this stream has had.
    least_backlog: u64,
    /// The change being sent, if its messages are not all taken yet.
    sending: Option<Sending>,
    /// The newest index the ring holds, to wait for the next change.
    newest: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    /// When to send a progress message if nothing matched until then.
    progress_due: Instant,
    ended: bool,
    /// This stream's place among the node's open streams, freed when the stream is dropped.
    _slot: StreamSlot,
}

impl WatchStream {
    /// The next message; `None` once the stream has ended.
    async fn next_event(&mut self) -> Option<Result<pb::WatchEvent, Status>> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(sending) = &mut self.sending {
                if let Some(message) = sending.next_message(&self.api, &self.filter) {
                    self.progress_due = Instant::now() + WATCH_PROGRESS_INTERVAL;
                    return Some(Ok(message));
                }
                self.sending = None;
            }
            if *self.stopping.borrow() {
                return self.end(self.shutting_down());
            }
            if Instant::now() >= self.progress_due {
                self.progress_due = Instant::now() + WATCH_PROGRESS_INTERVAL;
                return Some(Ok(self.progress()));
            }
            // Marks the current newest index seen before looking, so that a change pushed after
            // the look wakes the wait below.
            self.newest.borrow_and_update();
            match self.api.watch.next_change(self.next_index) {
                Err(e) => return self.end(not_retained(self.next_index, e.first_index)),
                Ok(NextChange::Change { change, backlog_effects }) => {
                    // Measured from the least backlog so far, so that a stream asked to start far
                    // back is not cut off for where it started, only for falling further behind.
                    self.least_backlog = self.least_backlog.min(backlog_effects);
                    let limit = self.api.watch.limits().backlog_max_effects;
                    if backlog_effects > self.least_backlog.saturating_add(limit as u64) {
                        crate::metrics::watch_stream_refused("fell_behind");
                        return self.end(fell_behind(backlog_effects, limit, self.next_index));
                    }
                    self.next_index = change_index(&change) + 1;
                    self.sending = Some(Sending::new(change));
                    // A stream catching up walks many changes in one call; let other tasks run.
                    tokio::task::coop::consume_budget().await;
                }
                Ok(NextChange::NotYet) => {
                    self.least_backlog = 0;
                    tokio::select! {
                        changed = self.newest.changed() => {
                            // The hub is gone: the server is stopping.
                            if changed.is_err() {
                                return self.end(self.shutting_down());
                            }
                        }
                        () = tokio::time::sleep_until(self.progress_due) => {}
                        changed = self.stopping.changed() => {
                            if changed.is_err() {
                                return self.end(self.shutting_down());
                            }
                        }
                    }
                }
            }
        }
    }

    fn end(&mut self, status: Status) -> Option<Result<pb::WatchEvent, Status>> {
        self.ended = true;
        self.sending = None;
        Some(Err(status))
    }

    fn shutting_down(&self) -> Status {
        Status::unavailable(format!(
            "this node is shutting down; resume the watch on another node with from_index {}",
            self.next_index
        ))
    }

    /// Everything before `next_index` has been sent (or did not match), and nothing past the
    /// applied index exists yet (a `from_index` ahead of it).
    fn progress(&self) -> pb::WatchEvent {
        let applied = self.api.node.read_local(|_| ()).applied_index;
        let reached = self.next_index.saturating_sub(1).min(applied);
        pb::WatchEvent { event: Some(pb::watch_event::Event::Progress(reached)) }
    }
}
