//! A conversation's life after it opens: customer messages (and reopening), agent replies,
//! closing, and what agents and supervisors do by hand (claim, assign, transfer).

use super::*;

impl Workspace {
    /// Where a closed conversation goes when its customer writes again: its team and pool if
    /// they still exist; else the routing rules (on what the conversation remembers: channel,
    /// language, topic, contact) and the default team, as for a new conversation.
    pub(super) fn reopen_route(
        &self,
        id: &ConversationId,
        conversation: &Conversation,
    ) -> Result<(TeamId, u32), ApplyError> {
        if let Some(team) = self.teams.get(&conversation.team) {
            let pool = if (conversation.pool as usize) < team.pools.len() { conversation.pool } else { 0 };
            return Ok((conversation.team.clone(), pool));
        }
        let open = OpenConversation {
            conversation: id.clone(),
            contact: conversation.contact.clone(),
            channel: conversation.channel,
            language: conversation.language.clone(),
            topic: conversation.topic.clone(),
            tags: Vec::new(),
            first_message: String::new(),
            priority: conversation.priority,
        };
        let route = self.route(&open).map_err(|error| {
            ApplyError::Precondition(Conflict::TeamRemoved {
                conversation: id.clone(),
                team: conversation.team.clone(),
                why: Box::new(error),
            })
        })?;
        Ok((route.team, route.pool))
    }

    pub(crate) fn customer_message(&mut self, cx: &mut Ctx<'_>, id: &ConversationId) -> Result<(), ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        if conversation.state != ConversationState::Closed {
            return Ok(());
        }
        // Everything that can refuse comes first.
        let (team_id, pool) = self.reopen_route(id, conversation)?;
        let previous = conversation.last_agent.clone().filter(|agent| self.agents.contains_key(agent));
        let team = self.team(&team_id)?;
        let closed_now = team.calendar.as_ref().is_some_and(|c| !c.is_open(cx.now_ms));
        let reassign = team.spec.options.reassign_reopened_if_unavailable;

        // Reopen: a new arrival in the queue order.
        let seq = self.take_seq();
        let conversation = self.conversation_mut(ix)?;
        conversation.state = ConversationState::Queued;
        conversation.generation = conversation.generation.wrapping_add(1);
        conversation.seq = seq;
        conversation.opened_ms = cx.now_ms;
        conversation.team = team_id.clone();
        conversation.pool = pool;
        cx.effects.push(Effect::Reopened { workspace: self.id.clone(), conversation: id.clone(), team: team_id });
        if closed_now {
            return self.admit(cx, ix, None);
        }
        // Back to the previous agent if they may take it; else, unless the team reassigns,
        // wait for them, but only if they still serve this team (an agent who left it, or
        // lacks what its routing requires, never will).
        match previous {
            Some(agent) if self.can_take(&agent, ix, AssignReason::Reopened) => {
                self.assign(cx, ix, &agent, AssignReason::Reopened)
            }
            Some(agent) if !reassign && self.could_serve(&agent, ix, AssignReason::Reopened) => {
                self.enqueue_personal(cx, ix, &agent, AssignReason::Reopened)
            }
            _ => self.dispatch_to_team(cx, ix),
        }
    }

    pub(crate) fn agent_replied(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        agent_id: &AgentId,
    ) -> Result<(), ApplyError> {
        self.known_agent(agent_id)?;
        let now_ms = cx.now_ms;
        let conversation = self.conversations.get_mut(id).ok_or_else(|| ApplyError::UnknownConversation(id.clone()))?;
        if conversation.state != ConversationState::Assigned
            || conversation.assignee.as_ref() != Some(agent_id)
            || conversation.replied
        {
            return Ok(());
        }
        conversation.replied = true;
        let response_ms = elapsed_ms(now_ms, conversation.assigned_ms);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.average_response_ms = Some(match agent.average_response_ms {
                None => response_ms,
                Some(previous) => moving_average(previous, response_ms),
            });
        }
        Ok(())
    }

    pub(crate) fn close(&mut self, cx: &mut Ctx<'_>, id: &ConversationId) -> Result<(), ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        let mut freed = None;
        match conversation.state {
            ConversationState::Closed => return Err(ApplyError::Closed(id.clone())),
            ConversationState::Queued => self.unplace(ix)?,
            ConversationState::Assigned => {
                let handle_ms = elapsed_ms(cx.now_ms, conversation.assigned_ms);
                let team_id = conversation.team.clone();
                if let Some(team) = self.teams.get_mut(&team_id) {
                    team.average_handle_ms = moving_average(team.average_handle_ms, handle_ms);
                }
                let conversation = self.conversation_mut(ix)?;
                let channel = conversation.channel;
                if let Some(agent_id) = conversation.assignee.take() {
                    if let Some(agent) = self.agents.get_mut(&agent_id) {
                        agent.remove_open(id, channel);
                    }
                    self.refresh_agent(&agent_id);
                    freed = Some(agent_id);
                }
            }
        }
        let conversation = self.conversation_mut(ix)?;
        conversation.state = ConversationState::Closed;
        conversation.closed_ms = cx.now_ms;
        conversation.generation = conversation.generation.wrapping_add(1);
        let generation = conversation.generation;
        let team = conversation.team.clone();
        cx.effects.push(Effect::Closed {
            workspace: self.id.clone(),
            conversation: id.clone(),
            team,
            agent: freed.clone(),
        });
        cx.timers.schedule(
            after_s(cx.now_ms, self.settings.closed_retention_s),
            self.id.clone(),
            Timer::Forget { conversation: id.clone(), generation },
        );
        match freed {
            Some(agent) => self.drain_agent(cx, &agent),
            None => Ok(()),
        }
    }

    pub(super) fn queued_conversation(&self, id: &ConversationId) -> Result<Ix, ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        if conversation.state != ConversationState::Queued {
            return Err(ApplyError::NotClaimable { conversation: id.clone(), state: conversation.state.label() });
        }
        Ok(ix)
    }

    pub(crate) fn claim(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        agent_id: &AgentId,
    ) -> Result<(), ApplyError> {
        let agent = self.agents.get(agent_id).ok_or_else(|| ApplyError::UnknownAgent(agent_id.clone()))?;
        let ix = self.queued_conversation(id)?;
        // Self-pick is for the team's members, and for the agent a conversation waits for in
        // particular (a dedicated or named agent); supervisors use Assign.
        let conversation = self.conversation(ix)?;
        let waits_for_this_agent =
            matches!(&conversation.placement, Placement::Personal { agent, .. } if agent == agent_id);
        let member = agent.memberships.binary_search_by(|(team, _)| team.cmp(&conversation.team)).is_ok();
        if !member && !waits_for_this_agent {
            return Err(ApplyError::Precondition(Conflict::NotTeamMember {
                agent: agent_id.clone(),
                team: conversation.team.clone(),
                conversation: id.clone(),
            }));
        }
        if agent.open_count() >= agent.spec.max_open {
            return Err(ApplyError::AgentAtCapacity { agent: agent_id.clone(), max_open: agent.spec.max_open });
        }
        self.unplace(ix)?;
        self.assign(cx, ix, agent_id, AssignReason::Claimed)
    }

    pub(crate) fn assign_manually(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        agent_id: &AgentId,
    ) -> Result<(), ApplyError> {
        self.known_agent(agent_id)?;
        let ix = self.queued_conversation(id)?;
        self.unplace(ix)?;
        self.assign(cx, ix, agent_id, AssignReason::Manual)
    }

    pub(crate) fn transfer(
        &mut self,
        cx: &mut Ctx<'_>,
        id: &ConversationId,
        target: TransferTarget,
    ) -> Result<(), ApplyError> {
        let ix = self.ix(id)?;
        let conversation = self.conversation(ix)?;
        match &target {
            TransferTarget::Agent(agent) => {
                self.known_agent(agent)?;
                if conversation.assignee.as_ref() == Some(agent) {
                    return Err(ApplyError::Precondition(Conflict::AlreadyAssigned {
                        conversation: id.clone(),
                        agent: agent.clone(),
                    }));
                }
            }
            TransferTarget::Team(team) => {
                if !self.teams.contains_key(team) {
                    return Err(ApplyError::UnknownTeam(team.clone()));
                }
            }
        }
        let freed = match conversation.state {
            ConversationState::Closed => return Err(ApplyError::Closed(id.clone())),
            ConversationState::Queued => {
                self.unplace(ix)?;
                None
            }
            ConversationState::Assigned => self.unassign(cx, ix, UnassignReason::Transfer)?,
        };
        match target {
            TransferTarget::Agent(agent) => self.assign(cx, ix, &agent, AssignReason::Transfer)?,
            TransferTarget::Team(team) => {
                let conversation = self.conversation_mut(ix)?;
                conversation.team = team;
                conversation.pool = 0;
                self.dispatch_to_team(cx, ix)?;
            }
        }
        match freed {
            Some(agent) => self.drain_agent(cx, &agent),
            None => Ok(()),
        }
    }
}
