//! `switchboard.v1.Assignments`: conversations, queues, claim/assign/transfer/close, and Watch.

use crate::api::Api;
use crate::convert::effects::EffectOrigin;
use crate::convert::views::{conversation_to_pb, queue_entry_to_pb};
use crate::convert::{optional_id, required, required_id};
use crate::services::{page_size, unknown_workspace};
use crate::watch::{Backlog, change_index};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::{AgentId, Command, ConversationId, Effect, TeamId, TransferTarget, WorkspaceId};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::assignments_server::Assignments;
use switchboard_raft::StateChange;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Buffered Watch messages per stream before the stream waits for its client.
const WATCH_BUFFER_MESSAGES: usize = 256;
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
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        let conversation: ConversationId = required_id(request.conversation, "conversation")?;
        let read = self
            .api
            .read(request.consistency, |state| {
                if !state.has_workspace(&workspace) {
                    return Err(unknown_workspace(&workspace));
                }
                state.conversation(&workspace, &conversation).ok_or_else(|| {
                    Status::not_found(format!("unknown conversation {conversation} in workspace {workspace}"))
                })
            })
            .await?;
        Ok(Response::new(conversation_to_pb(read.value?, read.applied_index)))
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueResponse>, Status> {
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        let team: TeamId = required_id(request.team, "team")?;
        let limit = page_size(request.limit, "limit")?;
        let offset = request.offset as usize;
        let read = self
            .api
            .read(request.consistency, |state| {
                if !state.has_workspace(&workspace) {
                    return Err(unknown_workspace(&workspace));
                }
                let entries = state
                    .team_queue(&workspace, &team, offset, limit)
                    .ok_or_else(|| Status::not_found(format!("unknown team {team} in workspace {workspace}")))?;
                Ok((entries, state.queue_depth(&workspace, &team).unwrap_or(0)))
            })
            .await?;
        let (entries, depth) = read.value?;
        Ok(Response::new(pb::ListQueueResponse {
            entries: entries.into_iter().map(queue_entry_to_pb).collect(),
            depth: depth as u32,
            applied_index: read.applied_index,
        }))
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> Result<Response<pb::AssignmentResponse>, Status> {
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        let command = Command::Claim {
            conversation: required_id(request.conversation, "conversation")?,
            agent: required_id(request.agent, "agent")?,
        };
        self.api.write(workspace, request.request_id, command).await.map(assignment_response)
    }

    async fn assign(&self, request: Request<pb::AssignRequest>) -> Result<Response<pb::AssignmentResponse>, Status> {
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
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
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
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
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        let conversation = required_id(request.conversation, "conversation")?;
        self.api
            .write(workspace, request.request_id, Command::CloseConversation { conversation })
            .await
            .map(assignment_response)
    }

    type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static>>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let filter = Filter {
            workspace: required_id(request.workspace, "workspace")?,
            team: optional_id(request.team, "team")?,
            agent: optional_id(request.agent, "agent")?,
            conversation: optional_id(request.conversation, "conversation")?,
        };
        let known = self.api.node.read_local(|state| state.has_workspace(&filter.workspace)).value;
        if !known {
            return Err(unknown_workspace(&filter.workspace));
        }
        let backlog =
            self.api.watch.backlog(request.from_index).map_err(|e| not_retained(request.from_index, e.first_index))?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER_MESSAGES);
        tokio::spawn(stream_changes(self.api.clone(), filter, request.from_index, backlog, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

fn not_retained(from_index: u64, first_index: u64) -> Status {
    Status::out_of_range(format!(
        "log index {from_index} is no longer retained by this node for Watch (the oldest is {first_index}); \
         re-read the state you display, then watch from_index 0 (now) or {first_index}"
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

/// Feeds one Watch stream: its backlog, then new changes, re-reading the ring when it falls
/// behind the broadcast. Ends when the client goes away.
async fn stream_changes(
    api: Arc<Api>,
    filter: Filter,
    from_index: u64,
    backlog: Backlog,
    sender: mpsc::Sender<Result<pb::WatchEvent, Status>>,
) {
    let Backlog { changes, mut receiver, start_index } = backlog;
    let mut next_index = start_index.max(from_index);
    let mut pending: std::collections::VecDeque<StateChange> = changes.into();
    let mut stopping = api.stopping.clone();
    let mut progress = tokio::time::interval(WATCH_PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    progress.tick().await;
    loop {
        let change = match pending.pop_front() {
            Some(change) => change,
            None => tokio::select! {
                received = receiver.recv() => match received {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match api.watch.backlog(next_index) {
                            Ok(again) => {
                                pending = again.changes.into();
                                receiver = again.receiver;
                                continue;
                            }
                            Err(e) => {
                                let _ = sender.send(Err(not_retained(next_index, e.first_index))).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = progress.tick() => {
                    // Everything before next_index has been streamed (or did not match), and
                    // nothing past the applied index exists yet (a from_index ahead of it).
                    let applied = api.node.read_local(|_| ()).applied_index;
                    let reached = next_index.saturating_sub(1).min(applied);
                    let event = pb::WatchEvent { event: Some(pb::watch_event::Event::Progress(reached)) };
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = sender.closed() => return,
                _ = stopping.changed() => {
                    let _ = sender
                        .send(Err(Status::unavailable(format!(
                            "this node is shutting down; resume the watch on another node with from_index {next_index}"
                        ))))
                        .await;
                    return;
                }
            },
        };
        let index = change_index(&change);
        if index < next_index {
            continue;
        }
        next_index = index + 1;
        let messages: Vec<pb::WatchEvent> = match &change {
            StateChange::SnapshotInstalled { index } => {
                vec![pb::WatchEvent { event: Some(pb::watch_event::Event::SnapshotInstalled(*index)) }]
            }
            StateChange::Entry { index, at_ms, outcomes } => {
                let origin = EffectOrigin { log_index: *index, at_ms: *at_ms };
                let mut sequence = 0u32;
                let mut messages = Vec::new();
                for outcome in outcomes.iter() {
                    for effect in &outcome.effects {
                        if filter.matches(&api, effect) {
                            let effect = crate::convert::effects::effect_to_pb(effect, origin, sequence);
                            messages.push(pb::WatchEvent { event: Some(pb::watch_event::Event::Effect(effect)) });
                        }
                        sequence += 1;
                    }
                }
                messages
            }
        };
        if !messages.is_empty() {
            progress.reset();
        }
        for message in messages {
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }
}
