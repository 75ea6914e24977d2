//! `switchboard.v1.Admin`: workspace settings, agents, teams, routing rules and contacts.

use crate::api::Api;
use crate::auth::Permission;
use crate::convert::model::{
    agent_from_pb, agent_to_pb, contact_from_pb, rule_from_pb, rule_to_pb, settings_from_pb, settings_to_pb,
    team_from_pb, team_to_pb,
};
use crate::convert::views::contact_to_info;
use crate::convert::{invalid, required, required_id};
use crate::services::unknown_workspace;
use std::sync::Arc;
use switchboard_core::{Command, ContactId, WorkspaceId};
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

pub(crate) struct AdminService {
    pub(crate) api: Arc<Api>,
}

fn written(written: crate::api::Written) -> Response<pb::WriteResponse> {
    Response::new(pb::WriteResponse { log_index: written.log_index })
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn configure_workspace(
        &self,
        request: Request<pb::ConfigureWorkspaceRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        // A new workspace's id is checked by the core (one NATS subject token).
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Configure, Some(&workspace))?;
        let settings = settings_from_pb(required(request.settings, "settings")?)?;
        self.api
            .write_audited(&caller, workspace, request.request_id, Command::ConfigureWorkspace(settings))
            .await
            .map(written)
    }

    async fn get_workspace(
        &self,
        request: Request<pb::GetWorkspaceRequest>,
    ) -> Result<Response<pb::WorkspaceConfig>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        caller.may(Permission::ReadConfiguration, Some(&workspace))?;
        let read = self
            .api
            .read(request.consistency, |state| {
                let settings = state.workspace_settings(&workspace).ok_or_else(|| unknown_workspace(&workspace))?;
                Ok::<_, Status>(pb::WorkspaceConfig {
                    workspace: workspace.to_string(),
                    settings: Some(settings_to_pb(settings)),
                    agents: state
                        .agent_ids(&workspace)
                        .iter()
                        .filter_map(|id| state.agent_spec(&workspace, id).map(agent_to_pb))
                        .collect(),
                    teams: state
                        .team_ids(&workspace)
                        .iter()
                        .filter_map(|id| state.team_spec(&workspace, id).map(team_to_pb))
                        .collect(),
                    rules: state.routing_rules(&workspace).unwrap_or_default().iter().map(rule_to_pb).collect(),
                    applied_index: 0,
                })
            })
            .await?;
        let mut config: pb::WorkspaceConfig = read.value?;
        config.applied_index = read.applied_index;
        Ok(Response::new(config))
    }

    async fn upsert_agent(
        &self,
        request: Request<pb::UpsertAgentRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Configure, Some(&workspace))?;
        let spec = agent_from_pb(required(request.agent, "agent")?)?;
        self.api.write_audited(&caller, workspace, request.request_id, Command::UpsertAgent(spec)).await.map(written)
    }

    async fn remove_agent(
        &self,
        request: Request<pb::RemoveAgentRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Configure, Some(&workspace))?;
        let agent = required_id(request.agent, "agent")?;
        self.api
            .write_audited(&caller, workspace, request.request_id, Command::RemoveAgent { agent })
            .await
            .map(written)
    }

    async fn upsert_team(
        &self,
        request: Request<pb::UpsertTeamRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Configure, Some(&workspace))?;
        let spec = team_from_pb(required(request.team, "team")?)?;
        self.api.write_audited(&caller, workspace, request.request_id, Command::UpsertTeam(spec)).await.map(written)
    }

    async fn remove_team(
        &self,
        request: Request<pb::RemoveTeamRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Configure, Some(&workspace))?;
        let team = required_id(request.team, "team")?;
        self.api.write_audited(&caller, workspace, request.request_id, Command::RemoveTeam { team }).await.map(written)
    }

    async fn set_routing_rules(
        &self,
        request: Request<pb::SetRoutingRulesRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Configure, Some(&workspace))?;
        let rules = request
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| rule_from_pb(rule, i))
            .collect::<Result<Vec<_>, _>>()?;
        self.api
            .write_audited(&caller, workspace, request.request_id, Command::SetRoutingRules(rules))
            .await
            .map(written)
    }

    async fn upsert_contact(
        &self,
        request: Request<pb::UpsertContactRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace = required_id(request.workspace, "workspace")?;
        caller.may(Permission::Configure, Some(&workspace))?;
        let spec = contact_from_pb(required(request.contact, "contact")?, "contact")?;
        self.api.write_audited(&caller, workspace, request.request_id, Command::UpsertContact(spec)).await.map(written)
    }

    async fn get_contact(&self, request: Request<pb::GetContactRequest>) -> Result<Response<pb::ContactInfo>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        let workspace: WorkspaceId = required_id(request.workspace, "workspace")?;
        caller.may(Permission::ReadConfiguration, Some(&workspace))?;
        let contact: ContactId = required_id(request.contact, "contact")?;
        let read = self
            .api
            .read_entity(request.consistency, &workspace, "contact", &contact, |state| {
                state.contact(&workspace, &contact)
            })
            .await?;
        Ok(Response::new(contact_to_info(read.value, read.applied_index)))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let request = request.into_inner();
        if request.workspace.is_empty() {
            caller.may(Permission::ReadClusterAudit, None)?;
        } else {
            let workspace: WorkspaceId = required_id(request.workspace.clone(), "workspace")?;
            caller.may(Permission::ReadConfiguration, Some(&workspace))?;
        }
        let limit = match request.limit {
            0 => AUDIT_PAGE_DEFAULT,
            n if n <= AUDIT_PAGE_MAX => n as usize,
            n => return Err(invalid("limit", format!("{n} exceeds the limit of {AUDIT_PAGE_MAX}")).into()),
        };
        let read = self.api.node.audit(&request.workspace, request.after_index, limit);
        let records = read
            .value
            .into_iter()
            .map(|record| pb::AuditRecord {
                log_index: record.index,
                at_ms: record.at_ms,
                workspace: record.workspace,
                role: record.actor.role,
                credential: record.actor.credential,
                action: record.action,
                outcome: record.outcome,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { records, applied_index: read.applied_index }))
    }
}

/// Audit records in one answer when the request does not say.
const AUDIT_PAGE_DEFAULT: usize = 100;
/// Most audit records in one answer.
const AUDIT_PAGE_MAX: u32 = 1_000;
