//! `switchboard.v1.Presence`: agent statuses, heartbeats and agent listings.

use crate::api::{Api, forwarded};
use crate::auth::Permission;
use crate::convert::model::{required_status, status_from_pb, status_to_pb};
use crate::convert::views::agent_to_pb;
use crate::convert::{optional_id, required_id};
use crate::services::{page_size, unknown_workspace};
use std::sync::Arc;
use switchboard_core::{AgentId, Command, TeamId, WorkspaceId};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::presence_client::PresenceClient;
use switchboard_proto::switchboard::v1::presence_server::Presence;
use tonic::{Request, Response, Status};

pub(crate) struct PresenceService {
    pub(crate) api: Arc<Api>,
}

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn set_status(
        &self,
        request: Request<pb::SetStatusRequest>,
    ) -> Result<Response<pb::SetStatusResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        let agent: AgentId = required_id(request.agent, "agent")?;
        caller.may_act_as(&agent, &workspace, Permission::Supervise)?;
        let status = required_status(request.status, "status")?;
        let written = self
            .api
            .write(workspace.clone(), request.request_id, Command::SetAgentStatus { agent: agent.clone(), status })
            .await?;
        // A status change is a sign of life too.
        if self.api.node.is_leader() {
            self.api.presence.heartbeat(workspace, agent, status);
        }
        Ok(Response::new(pb::SetStatusResponse { log_index: written.log_index }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let workspace: WorkspaceId = required_id(request.get_ref().workspace.clone(), "workspace")?;
        let agent: AgentId = required_id(request.get_ref().agent.clone(), "agent")?;
        caller.may_act_as(&agent, &workspace, Permission::Supervise)?;
        if let Some(leader) = self.api.leader_channel(&request)? {
            return PresenceClient::new(leader).heartbeat(forwarded(&request)).await;
        }
        let status = self.api.node.read_local(|state| {
            if !state.has_workspace(&workspace) {
                return Err(unknown_workspace(&workspace));
            }
            state
                .agent(&workspace, &agent)
                .map(|view| view.status)
                .ok_or_else(|| Status::not_found(format!("unknown agent {agent} in workspace {workspace}")))
        });
        let status = status.value?;
        self.api.presence.heartbeat(workspace, agent, status);
        let config = self.api.presence.config();
        Ok(Response::new(pb::HeartbeatResponse {
            timeout_ms: config.heartbeat_timeout.as_millis() as u64,
            status: status_to_pb(status).into(),
        }))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> Result<Response<pb::AgentState>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        let agent: AgentId = required_id(request.agent, "agent")?;
        caller.may_act_as(&agent, &workspace, Permission::ReadRouting)?;
        let read = self
            .api
            .read_entity(request.consistency, &workspace, "agent", &agent, |state| state.agent(&workspace, &agent))
            .await?;
        Ok(Response::new(agent_to_pb(read.value, read.applied_index)))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        caller.may(Permission::ReadRouting, Some(&workspace))?;
        let status = status_from_pb(request.status, "status")?;
        let team: Option<TeamId> = optional_id(request.team, "team")?;
        let after: Option<AgentId> = optional_id(request.page_after, "page_after")?;
        let limit = page_size(request.page_size, "page_size")?;
        let read = self
            .api
            .read(request.consistency, |state| {
                if !state.has_workspace(&workspace) {
                    return Err(unknown_workspace(&workspace));
                }
                if let Some(team) = &team
                    && state.team_spec(&workspace, team).is_none()
                {
                    return Err(Status::not_found(format!("unknown team {team} in workspace {workspace}")));
                }
                let ids = state.agent_ids(&workspace);
                let start = match &after {
                    Some(after) => ids.partition_point(|id| id <= after),
                    None => 0,
                };
                let mut agents = Vec::new();
                let mut next = None;
                for id in &ids[start..] {
                    let Some(view) = state.agent(&workspace, id) else { continue };
                    if status.is_some_and(|s| s != view.status)
                        || team.as_ref().is_some_and(|t| !view.teams.contains(t))
                    {
                        continue;
                    }
                    if agents.len() == limit {
                        next = agents.last().map(|a: &switchboard_core::AgentView| a.id.to_string());
                        break;
                    }
                    agents.push(view);
                }
                Ok((agents, next))
            })
            .await?;
        let (agents, next) = read.value?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.into_iter().map(|view| agent_to_pb(view, read.applied_index)).collect(),
            next_page_after: next.unwrap_or_default(),
            applied_index: read.applied_index,
        }))
    }
}
