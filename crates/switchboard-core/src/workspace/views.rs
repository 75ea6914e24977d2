//! Read-only answers for queries and dashboards, queue positions and ETAs, and the
//! structural invariants the tests walk.

use super::*;

impl Workspace {
    pub(crate) fn queue_position(&self, id: &ConversationId) -> Option<QueuePosition> {
        self.position_of(self.ix(id).ok()?).ok().flatten()
    }

    pub(super) fn position_of(&self, ix: Ix) -> Result<Option<QueuePosition>, ApplyError> {
        let conversation = self.conversation(ix)?;
        if conversation.state != ConversationState::Queued {
            return Ok(None);
        }
        let Some(team) = self.teams.get(&conversation.team) else {
            return Ok(None);
        };
        let key = conversation.queue_key();
        Ok(Some(match &conversation.placement {
            Placement::Personal { agent, .. } => {
                let Some(agent_entry) = self.agents.get(agent) else {
                    return Ok(None);
                };
                let position = (agent_entry.personal.rank(&key) as u64).saturating_add(1);
                let capacity = u64::from(agent_entry.spec.max_open.max(1));
                let serving = team.spec.options.allowed_statuses.contains(agent_entry.status);
                QueuePosition {
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    eta_ms: serving
                        .then(|| position.saturating_mul(team.average_handle_ms).checked_div(capacity))
                        .flatten(),
                    waiting_for: Some(agent.clone()),
                }
            }
            _ => {
                let position = (team.waiting.rank(&key) as u64).saturating_add(1);
                let serving = team.pools.get(conversation.pool as usize).map_or(0, |p| u64::from(p.serving));
                QueuePosition {
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    eta_ms: position.saturating_mul(team.average_handle_ms).checked_div(serving),
                    waiting_for: None,
                }
            }
        }))
    }

    pub(crate) fn conversation_view(&self, id: &ConversationId) -> Option<ConversationView> {
        let c = self.conversations.get(id)?;
        let requirement =
            self.teams.get(&c.team).and_then(|team| team.pools.get(c.pool as usize)).map(|p| &p.requirement);
        Some(ConversationView {
            id: id.clone(),
            contact: c.contact.clone(),
            channel: c.channel,
            language: c.language.clone(),
            topic: c.topic.clone(),
            priority: c.priority,
            state: c.state,
            team: c.team.clone(),
            assignee: c.assignee.clone(),
            last_agent: c.last_agent.clone(),
            opened_ms: c.opened_ms,
            queue: self.queue_position(id),
            required_skills: requirement.map(|r| r.skills.clone()).unwrap_or_default(),
            required_language: requirement.and_then(|r| r.language.clone()),
        })
    }

    pub(crate) fn agent_view(&self, id: &AgentId) -> Option<AgentView> {
        let agent = self.agents.get(id)?;
        Some(AgentView {
            id: id.clone(),
            display_name: agent.spec.display_name.to_string(),
            status: agent.status,
            open: agent.open_count(),
            max_open: agent.spec.max_open,
            received_today: agent.received_today,
            daily_limit: agent.spec.daily_limit,
            teams: agent.memberships.iter().map(|(team, _)| team.clone()).collect(),
            open_conversations: agent.open.iter().cloned().collect(),
        })
    }

    pub(crate) fn agent_spec(&self, id: &AgentId) -> Option<&AgentSpec> {
        self.agents.get(id).map(|agent| &agent.spec)
    }

    pub(crate) fn team_spec(&self, id: &TeamId) -> Option<&TeamSpec> {
        self.teams.get(id).map(|team| &*team.spec)
    }

    pub(crate) fn rules(&self) -> &[RoutingRule] {
        &self.rules
    }

    pub(crate) fn contact_view(&self, id: &ContactId) -> Option<ContactView> {
        let contact = self.contacts.get(id)?;
        Some(ContactView {
            spec: contact.spec.clone(),
            last_agent: contact.last_agent.as_ref().map(|(agent, _)| agent.clone()),
            conversations: contact.conversations,
        })
    }

    /// Agents per status, in `AgentStatus` order (Online, Busy, Away, Offline).
    pub(crate) fn agents_by_status(&self) -> [usize; 4] {
        let mut counts = [0usize; 4];
        for agent in self.agents.values() {
            if let Some(count) = counts.get_mut(agent.status as usize) {
                *count = count.saturating_add(1);
            }
        }
        counts
    }

    pub(crate) fn agent_ids(&self) -> Vec<AgentId> {
        sorted_keys(&self.agents)
    }

    pub(crate) fn team_ids(&self) -> Vec<TeamId> {
        sorted_keys(&self.teams)
    }

    pub(crate) fn team_queue(&self, team: &TeamId, offset: usize, limit: usize) -> Option<Vec<QueuedView>> {
        let team_entry = self.teams.get(team)?;
        Some(
            team_entry
                .waiting
                .page(offset, limit)
                .into_iter()
                .zip(offset..)
                .filter_map(|((_, id), index)| {
                    let c = self.conversations.get(&id)?;
                    Some(QueuedView {
                        position: u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX),
                        conversation: id,
                        priority: c.priority,
                        channel: c.channel,
                        waiting_for: match &c.placement {
                            Placement::Personal { agent, .. } => Some(agent.clone()),
                            _ => None,
                        },
                        opened_ms: c.opened_ms,
                    })
                })
                .collect(),
        )
    }

    pub(crate) fn queue_depth(&self, team: &TeamId) -> Option<usize> {
        self.teams.get(team).map(|t| t.waiting.len())
    }

    pub(crate) fn conversation_count(&self) -> usize {
        self.conversations.len()
    }

    /// Invariants that must hold after every apply; used by tests.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let mut assigned = 0usize;
        for (id, c) in &self.conversations {
            match c.state {
                ConversationState::Assigned => {
                    assigned = assigned.saturating_add(1);
                    let agent = c.assignee.as_ref().ok_or(format!("{id} assigned without assignee"))?;
                    if !self.agents.get(agent).is_some_and(|a| a.open.contains(id)) {
                        return Err(format!("{id} assigned to {agent} who does not list it"));
                    }
                }
                ConversationState::Queued => {
                    if c.assignee.is_some() || c.placement == Placement::None {
                        return Err(format!("{id} queued but assignee {:?} placement {:?}", c.assignee, c.placement));
                    }
                    if !self.teams.get(&c.team).is_some_and(|team| team.waiting.contains(&c.queue_key())) {
                        return Err(format!("{id} is queued in team {} but not in its waiting line", c.team));
                    }
                }
                ConversationState::Closed => {
                    if c.assignee.is_some() {
                        return Err(format!("{id} closed with an assignee"));
                    }
                }
            }
        }
        let listed = self.agents.values().map(|a| a.open.len()).fold(0usize, usize::saturating_add);
        if listed != assigned {
            return Err(format!("agents list {listed} open conversations but {assigned} are assigned"));
        }
        // Invariant 5: nobody waits in a pool queue while someone in that pool could take it.
        for (team_id, team) in &self.teams {
            for (index, pool) in team.pools.iter().enumerate() {
                if pool.queued() == 0 || !pool.has_eligible() {
                    continue;
                }
                for (_, id) in pool.heads() {
                    let c = self.conversations.get(&id).ok_or(format!("{id} is in a pool queue but missing"))?;
                    let taker = team.spec.members.iter().find(|m| {
                        self.agents.get(*m).is_some_and(|agent| {
                            // Weighted teams never draw an agent without reception right.
                            let has_reception_right =
                                team.spec.strategy != Strategy::Weighted || agent.spec.daily_limit > 0;
                            pool.requirement.is_met_by(&agent.spec)
                                && base_eligible(agent, team)
                                && has_reception_right
                                && agent.has_room_on(c.channel)
                        })
                    });
                    if let Some(taker) = taker {
                        return Err(format!("{id} waits in {team_id}/pool {index} while {taker} could take it"));
                    }
                }
            }
        }
        for (agent_id, agent) in &self.agents {
            for (_, waiting) in agent.personal.page(0, usize::MAX) {
                let ix = self.ix_known(&waiting).map_err(|e| e.to_string())?;
                let reason = match self.conversation(ix).map(|c| &c.placement) {
                    Ok(Placement::Personal { reason, .. }) => *reason,
                    _ => AssignReason::Manual,
                };
                if self.can_take(agent_id, ix, reason) {
                    return Err(format!("{waiting} waits for {agent_id} who could take it"));
                }
            }
        }
        Ok(())
    }
}
