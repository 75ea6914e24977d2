//! Configuration and presence: agents, teams, rules, settings and contacts change here, and the
//! capacity a change creates is drained at once. Every operation checks everything before its
//! first change, so a refusal changes nothing.

use super::*;

impl Workspace {
    pub(crate) fn configure(&mut self, settings: WorkspaceSettings) -> Result<(), ApplyError> {
        if let Some(team) = &settings.default_team
            && !self.teams.contains_key(team)
        {
            return Err(ApplyError::UnknownTeam(team.clone()));
        }
        // The seed only matters at creation; keep the running generator.
        self.settings = settings;
        Ok(())
    }

    pub(crate) fn upsert_agent(&mut self, cx: &mut Ctx<'_>, spec: AgentSpec) -> Result<(), ApplyError> {
        let id = spec.id.clone();
        match self.agents.get_mut(&id) {
            Some(agent) => agent.spec = spec,
            None => {
                if self.agents.len() >= AGENTS_PER_WORKSPACE_MAX {
                    return Err(ApplyError::Precondition(Conflict::AgentsFull(self.id.clone())));
                }
                self.agents.insert(id.clone(), Agent::new(spec));
            }
        }
        self.refresh_agent(&id);
        self.drain_agent(cx, &id)
    }

    pub(crate) fn remove_agent(&mut self, cx: &mut Ctx<'_>, agent_id: &AgentId) -> Result<(), ApplyError> {
        let Some(agent) = self.agents.get(agent_id) else {
            return Err(ApplyError::UnknownAgent(agent_id.clone()));
        };
        if let Some(rule) =
            self.rules.iter().find(|rule| matches!(&rule.target, RuleTarget::Agent { agent } if agent == agent_id))
        {
            return Err(ApplyError::Precondition(Conflict::AgentIsRuleTarget {
                agent: agent_id.clone(),
                rule: rule.id.clone(),
            }));
        }
        // Leave every team, then route the agent's open and waiting conversations again.
        let teams: Vec<TeamId> = agent.memberships.iter().map(|(team, _)| team.clone()).collect();
        for team_id in &teams {
            let mut spec = TeamSpec::clone(&self.team(team_id)?.spec);
            spec.members.retain(|member| member != agent_id);
            self.upsert_team(cx, spec)?;
        }
        let agent = self.agent(agent_id)?;
        let open: Vec<ConversationId> = agent.open.iter().cloned().collect();
        let waiting: Vec<ConversationId> = agent.personal.page(0, usize::MAX).into_iter().map(|(_, id)| id).collect();
        for conversation in &open {
            self.unassign(cx, self.ix_known(conversation)?, UnassignReason::AgentRemoved)?;
        }
        for conversation in &waiting {
            self.unplace(self.ix_known(conversation)?)?;
        }
        self.agents.swap_remove(agent_id);
        for conversation in open.iter().chain(&waiting) {
            self.dispatch_to_team(cx, self.ix_known(conversation)?)?;
        }
        Ok(())
    }

    pub(crate) fn upsert_team(&mut self, cx: &mut Ctx<'_>, spec: TeamSpec) -> Result<(), ApplyError> {
        let mut seen = BTreeSet::new();
        for member in &spec.members {
            self.known_agent(member)?;
            if !seen.insert(member) {
                return Err(ApplyError::invalid("team.members", format!("agent {member} is listed twice")));
            }
        }
        let calendar = Calendar::new(&spec.timezone, spec.business_hours.as_ref())?;
        let team_id = spec.id.clone();
        if !self.teams.contains_key(&team_id) && self.teams.len() >= TEAMS_PER_WORKSPACE_MAX {
            return Err(ApplyError::Precondition(Conflict::TeamsFull(self.id.clone())));
        }

        // Leave the old member list, join the new one (memberships stay in team-id order).
        if let Some(old) = self.teams.get(&team_id) {
            for member in &old.spec.members {
                if let Some(agent) = self.agents.get_mut(member) {
                    agent.memberships.retain(|(team, _)| team != &team_id);
                }
            }
        }
        for (position, member) in spec.members.iter().enumerate() {
            if let Some(agent) = self.agents.get_mut(member) {
                let at = agent.memberships.partition_point(|(team, _)| team < &team_id);
                agent.memberships.insert(at, (team_id.clone(), position as u32));
            }
        }
        let default_handle_ms = u64::from(spec.options.default_handle_time_s).saturating_mul(1000);
        let members = spec.members.clone();
        // Hashed once (up to `TEAM_MEMBERS_MAX` members), for a new team as for an old one.
        let spec = Hashed::new(spec);
        if let Some(team) = self.teams.get_mut(&team_id) {
            team.spec = spec;
        } else {
            self.teams.insert(
                team_id.clone(),
                Team {
                    spec,
                    pools: vec![Pool::new(Requirement::default())],
                    average_handle_ms: default_handle_ms,
                    timer_version: 0,
                    opening_timer_pending: false,
                    positions_pending: false,
                    calendar: None,
                    waiting: Default::default(),
                    after_hours: BTreeMap::new(),
                },
            );
        }
        let Some(team) = self.teams.get_mut(&team_id) else {
            return Err(ApplyError::missing("team", &team_id));
        };
        // Wrapping: versions are only compared for equality with the one a timer carries.
        team.timer_version = team.timer_version.wrapping_add(1);
        team.opening_timer_pending = false;
        team.positions_pending = false;
        let version = team.timer_version;
        let next_midnight = calendar.next_midnight(cx.now_ms);
        team.calendar = Some(calendar);
        let pools = team.pools.len();
        cx.timers.schedule(next_midnight, self.id.clone(), Timer::Midnight { team: team_id.clone(), version });
        self.reindex_team(&team_id);

        // Capacity may have appeared (new members, new statuses allowed, new strategy): for the
        // members, and for any agent a conversation of this team waits for in particular (a
        // dedicated, rule or previous agent, member or not), whose eligibility follows this
        // team's options. Walking the team's queue is O(queue), fine for an admin change.
        self.release_after_hours(cx, &team_id)?;
        let mut to_drain: BTreeSet<AgentId> = members.iter().cloned().collect();
        if let Some(team) = self.teams.get(&team_id) {
            for (_, id) in team.waiting.page(0, usize::MAX) {
                if let Some(Placement::Personal { agent, .. }) = self.conversations.get(&id).map(|c| &c.placement) {
                    to_drain.insert(agent.clone());
                }
            }
        }
        for member in &members {
            self.drain_agent(cx, member)?;
        }
        // A set, not `members.contains`: that was O(members²), 10^10 comparisons (about 14 s
        // of apply) for a team of TEAM_MEMBERS_MAX.
        let member_set: BTreeSet<&AgentId> = members.iter().collect();
        for agent in to_drain.iter().filter(|agent| !member_set.contains(agent)) {
            self.drain_agent(cx, agent)?;
        }
        let pools: Vec<(TeamId, u32)> = (0..pools).map(|pool| (team_id.clone(), pool as u32)).collect();
        self.drain_pools(cx, &pools)
    }

    pub(crate) fn remove_team(&mut self, team_id: &TeamId) -> Result<(), ApplyError> {
        let team = self.teams.get(team_id).ok_or_else(|| ApplyError::UnknownTeam(team_id.clone()))?;
        if self.settings.default_team.as_ref() == Some(team_id) {
            return Err(ApplyError::Precondition(Conflict::DefaultTeam(team_id.clone())));
        }
        if let Some(rule) =
            self.rules.iter().find(|rule| matches!(&rule.target, RuleTarget::Team { team, .. } if team == team_id))
        {
            return Err(ApplyError::Precondition(Conflict::TeamIsRuleTarget {
                team: team_id.clone(),
                rule: rule.id.clone(),
            }));
        }
        // The smallest id, so that every replica words the error the same way.
        if let Some(id) = self
            .conversations
            .iter()
            .filter(|(_, c)| c.team == *team_id && c.state != ConversationState::Closed)
            .map(|(id, _)| id)
            .min()
        {
            return Err(ApplyError::Precondition(Conflict::TeamHasOpenConversation {
                team: team_id.clone(),
                conversation: id.clone(),
            }));
        }
        // Closed conversations may still name the team: a customer who writes again is routed
        // afresh (see `customer_message`).
        for member in &team.spec.members {
            if let Some(agent) = self.agents.get_mut(member) {
                agent.memberships.retain(|(team, _)| team != team_id);
            }
        }
        self.teams.swap_remove(team_id);
        Ok(())
    }

    pub(crate) fn set_rules(&mut self, rules: Vec<RoutingRule>) -> Result<(), ApplyError> {
        validate_rules(&rules)?;
        let mut ids = BTreeSet::new();
        for rule in &rules {
            if !ids.insert(&rule.id) {
                return Err(ApplyError::invalid("rule.id", format!("rule {} is defined twice", rule.id)));
            }
            match &rule.target {
                RuleTarget::Team { team, .. } => {
                    if !self.teams.contains_key(team) {
                        return Err(ApplyError::UnknownTeam(team.clone()));
                    }
                }
                RuleTarget::Agent { agent } => {
                    let Some(agent_entry) = self.agents.get(agent) else {
                        return Err(ApplyError::UnknownAgent(agent.clone()));
                    };
                    if self.settings.default_team.is_none() && agent_entry.memberships.is_empty() {
                        return Err(ApplyError::Precondition(Conflict::RuleAgentWithoutTeam {
                            rule: rule.id.clone(),
                            agent: agent.clone(),
                        }));
                    }
                }
            }
        }
        let previous = std::mem::replace(&mut self.rules, rules);
        if let Err(error) = self.compile_rules() {
            self.rules = previous;
            self.compile_rules()?;
            return Err(error);
        }
        // New pools start empty; fill them with the members that qualify.
        let team_ids: Vec<TeamId> = self.teams.keys().cloned().collect();
        for team_id in &team_ids {
            self.reindex_team(team_id);
        }
        Ok(())
    }

    pub(crate) fn upsert_contact(&mut self, spec: ContactSpec) -> Result<(), ApplyError> {
        if let Some(agent) = &spec.dedicated_agent
            && !self.agents.contains_key(agent)
        {
            return Err(ApplyError::UnknownAgent(agent.clone()));
        }
        match self.contacts.get_mut(&spec.id) {
            Some(contact) => contact.spec = spec,
            None => {
                self.check_contact_room()?;
                self.contacts.insert(spec.id.clone(), Contact { spec, last_agent: None, conversations: 0 });
            }
        }
        Ok(())
    }

    pub(super) fn check_contact_room(&self) -> Result<(), ApplyError> {
        if self.contacts.len() >= CONTACTS_PER_WORKSPACE_MAX {
            return Err(ApplyError::Precondition(Conflict::ContactsFull(self.id.clone())));
        }
        Ok(())
    }

    // ----- presence --------------------------------------------------------------------------

    pub(crate) fn set_agent_status(
        &mut self,
        cx: &mut Ctx<'_>,
        agent_id: &AgentId,
        status: AgentStatus,
    ) -> Result<(), ApplyError> {
        let agent = self.agents.get_mut(agent_id).ok_or_else(|| ApplyError::UnknownAgent(agent_id.clone()))?;
        if agent.status == status {
            return Ok(());
        }
        agent.status = status;
        cx.effects.push(Effect::AgentStatusChanged { workspace: self.id.clone(), agent: agent_id.clone(), status });
        self.refresh_agent(agent_id);
        if status == AgentStatus::Offline {
            let to_requeue: Vec<ConversationId> = self
                .agent(agent_id)?
                .open
                .iter()
                .filter(|id| {
                    self.conversations
                        .get(*id)
                        .and_then(|c| self.teams.get(&c.team))
                        .is_some_and(|team| team.spec.options.requeue_on_offline)
                })
                .cloned()
                .collect();
            for conversation in &to_requeue {
                self.unassign(cx, self.ix_known(conversation)?, UnassignReason::AgentOffline)?;
                self.dispatch_to_team(cx, self.ix_known(conversation)?)?;
            }
        }
        self.drain_agent(cx, agent_id)
    }
}
