//! Waiting: placing a conversation in its pool's queue, an agent's line, the activation delay
//! or the after-hours list; draining them when capacity appears; and telling queued customers
//! their new position when a queue moves (coalesced per team, once per interval).

use super::*;
use crate::pool::QueueKey;

impl Workspace {
    pub(super) fn set_placement(&mut self, ix: Ix, placement: Placement) -> Result<(), ApplyError> {
        self.conversation_mut(ix)?.placement = placement;
        self.place(ix)?;
        // Somebody queued ahead of others (a higher priority) moves them back.
        let conversation = self.conversation(ix)?;
        let key = conversation.queue_key();
        let team_id = conversation.team.clone();
        if let Some(team) = self.teams.get(&team_id)
            && team.wants_position_updates()
            && team.waiting.rank(&key).saturating_add(1) < team.waiting.len()
        {
            self.queue_moved(&team_id);
        }
        Ok(())
    }

    /// Notes that the queue of `team_id` moved, so that its waiting customers are told their
    /// new positions once the team's update interval has passed (one timer per team at a time).
    pub(super) fn queue_moved(&mut self, team_id: &TeamId) {
        let Some(team) = self.teams.get_mut(team_id) else {
            return;
        };
        if team.spec.options.position_update_interval_s == 0 || team.positions_pending {
            return;
        }
        team.positions_pending = true;
        self.moved_queues.push(team_id.clone());
    }

    /// Sets the position-update timers of the teams whose queue moved in this entry. Called
    /// once the entry's command or timer is done.
    pub(crate) fn schedule_position_updates(&mut self, cx: &mut Ctx<'_>) {
        for team_id in std::mem::take(&mut self.moved_queues) {
            let Some(team) = self.teams.get(&team_id) else {
                continue;
            };
            let at = after_s(cx.now_ms, team.spec.options.position_update_interval_s);
            let version = team.timer_version;
            cx.timers.schedule(at, self.id.clone(), Timer::Positions { team: team_id, version });
        }
    }

    /// Tells the waiting customers of `team_id` whose position changed, or whose ETA changed
    /// by [`POSITION_ETA_CHANGE_MS_MIN`] or more, where they now are: the first
    /// [`POSITION_UPDATES_PER_TEAM_MAX`] of the queue, each at most once per interval (one told
    /// too recently is told when the interval since has passed).
    pub(super) fn update_positions(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId) -> Result<(), ApplyError> {
        let Some(team) = self.teams.get(team_id) else {
            return Ok(());
        };
        let interval_ms = i64::from(team.spec.options.position_update_interval_s).saturating_mul(1000);
        if interval_ms == 0 {
            return Ok(());
        }
        let mut later: Option<i64> = None;
        for (_, id) in team.waiting.page(0, POSITION_UPDATES_PER_TEAM_MAX) {
            let ix = self.ix_known(&id)?;
            let Some(told) = self.conversation(ix)?.told else {
                continue;
            };
            let Some(now) = self.position_of(ix)? else {
                continue;
            };
            let eta_moved = match (told.eta_ms, now.eta_ms) {
                (Some(before), Some(after)) => before.abs_diff(after) >= POSITION_ETA_CHANGE_MS_MIN,
                (before, after) => before.is_some() != after.is_some(),
            };
            if told.position == now.position && !eta_moved {
                continue;
            }
            let due = told.at_ms.saturating_add(interval_ms);
            if due > cx.now_ms {
                later = Some(later.map_or(due, |at| at.min(due)));
                continue;
            }
            let conversation = self.conversation_mut(ix)?;
            conversation.told = Some(Told { position: now.position, eta_ms: now.eta_ms, at_ms: cx.now_ms });
            cx.effects.push(Effect::QueuePosition {
                workspace: self.id.clone(),
                conversation: id,
                team: team_id.clone(),
                position: now.position,
                eta_ms: now.eta_ms,
                waiting_for: now.waiting_for,
            });
        }
        if let Some(at) = later
            && let Some(team) = self.teams.get_mut(team_id)
        {
            team.positions_pending = true;
            let version = team.timer_version;
            cx.timers.schedule(at, self.id.clone(), Timer::Positions { team: team_id.clone(), version });
        }
        Ok(())
    }

    /// Inserts a queued conversation into the structures its placement names.
    pub(super) fn place(&mut self, ix: Ix) -> Result<(), ApplyError> {
        let Some((id, conversation)) = self.conversations.get_index(ix.0) else {
            return Err(ApplyError::missing("conversation at", ix.0));
        };
        let key = conversation.queue_key();
        let Some(team) = self.teams.get_mut(&conversation.team) else {
            return Err(ApplyError::missing("team", &conversation.team));
        };
        match &conversation.placement {
            Placement::None => return Ok(()),
            Placement::Pool => {
                let Some(pool) = team.pools.get_mut(conversation.pool as usize) else {
                    return Err(ApplyError::missing("pool", format!("{}/{}", conversation.team, conversation.pool)));
                };
                pool.enqueue(conversation.channel, key, id.clone());
            }
            Placement::Personal { agent, .. } => {
                let Some(agent) = self.agents.get_mut(agent) else {
                    return Err(ApplyError::missing("agent", agent));
                };
                agent.personal.insert(key, id.clone());
            }
            Placement::Delayed => {}
            Placement::AfterHours => {
                team.after_hours.insert(key, id.clone());
            }
        }
        team.waiting.insert(key, id.clone());
        Ok(())
    }

    /// Removes a queued conversation from every queue structure. What is already gone (a
    /// removed team's queue) is simply not there to remove.
    pub(super) fn unplace(&mut self, ix: Ix) -> Result<(), ApplyError> {
        let Some((_, conversation)) = self.conversations.get_index_mut(ix.0) else {
            return Err(ApplyError::missing("conversation at", ix.0));
        };
        let placement = std::mem::replace(&mut conversation.placement, Placement::None);
        conversation.told = None;
        let key = conversation.queue_key();
        let Some(team) = self.teams.get_mut(&conversation.team) else {
            return Ok(());
        };
        match placement {
            Placement::None => return Ok(()),
            Placement::Pool => {
                if let Some(pool) = team.pools.get_mut(conversation.pool as usize) {
                    pool.dequeue(conversation.channel, &key);
                }
            }
            Placement::Personal { agent, .. } => {
                if let Some(agent) = self.agents.get_mut(&agent) {
                    agent.personal.remove(&key);
                }
            }
            Placement::Delayed => {}
            Placement::AfterHours => {
                team.after_hours.remove(&key);
            }
        }
        // Only teams that tell positions pay for the rank.
        let behind = team.wants_position_updates() && team.waiting.rank(&key).saturating_add(1) < team.waiting.len();
        team.waiting.remove(&key);
        if behind {
            let team_id = team.spec.id.clone();
            self.queue_moved(&team_id);
        }
        Ok(())
    }

    pub(super) fn enqueue_pool(&mut self, cx: &mut Ctx<'_>, ix: Ix) -> Result<(), ApplyError> {
        self.set_placement(ix, Placement::Pool)?;
        self.push_queued(cx, ix, None)
    }

    pub(super) fn enqueue_personal(
        &mut self,
        cx: &mut Ctx<'_>,
        ix: Ix,
        agent: &AgentId,
        reason: AssignReason,
    ) -> Result<(), ApplyError> {
        self.set_placement(ix, Placement::Personal { agent: agent.clone(), reason })?;
        self.push_queued(cx, ix, Some(agent.clone()))
    }

    /// The overcapacity effect of a conversation that was just queued.
    pub(super) fn push_queued(
        &mut self,
        cx: &mut Ctx<'_>,
        ix: Ix,
        waiting_for: Option<AgentId>,
    ) -> Result<(), ApplyError> {
        let position = self.position_of(ix)?.unwrap_or(QueuePosition { position: 0, eta_ms: None, waiting_for: None });
        let conversation = self.conversation(ix)?;
        let message = self.team(&conversation.team)?.spec.templates.overcapacity.clone();
        let told = Told { position: position.position, eta_ms: position.eta_ms, at_ms: cx.now_ms };
        self.conversation_mut(ix)?.told = Some(told);
        let conversation = self.conversation(ix)?;
        cx.effects.push(Effect::Queued {
            workspace: self.id.clone(),
            conversation: self.cid(ix)?,
            team: conversation.team.clone(),
            position: position.position,
            eta_ms: position.eta_ms,
            waiting_for,
            message,
        });
        Ok(())
    }

    /// Assigns what an agent's new capacity allows: first the conversations waiting for this
    /// agent in particular, then the queues of every pool the agent serves.
    pub(super) fn drain_agent(&mut self, cx: &mut Ctx<'_>, agent_id: &AgentId) -> Result<(), ApplyError> {
        // The agent's own line holds conversations of several teams, whose options differ
        // (allowed statuses, hard caps) and channels, whose limits differ: one the agent cannot
        // take must not block the ones behind it. Skipped entries are counted, so each step is
        // one O(log n) rank lookup; the walk ends at once when the agent has no room at all.
        let mut skipped = 0usize;
        loop {
            let Some(agent) = self.agents.get(agent_id) else {
                return Ok(());
            };
            if agent.open_count() >= agent.spec.max_open || agent.spec.auto_assign_excluded {
                break;
            }
            let Some((_, head)) = agent.personal.page(skipped, 1).into_iter().next() else {
                break;
            };
            let ix = self.ix_known(&head)?;
            let reason = match &self.conversation(ix)?.placement {
                Placement::Personal { reason, .. } => *reason,
                _ => AssignReason::Manual,
            };
            if !self.can_take(agent_id, ix, reason) {
                skipped = skipped.saturating_add(1);
                continue;
            }
            self.unplace(ix)?;
            self.assign(cx, ix, agent_id, reason)?;
        }
        // Then the queues of every pool of every team the agent serves, merged.
        let mut pools = Vec::new();
        for (team_id, _) in &self.agent(agent_id)?.memberships {
            let count = self.teams.get(team_id).map_or(0, |t| t.pools.len());
            pools.extend((0..count).map(|pool| (team_id.clone(), pool as u32)));
        }
        self.drain_pools(cx, &pools)
    }

    /// Assigns the waiting conversations of `pools` while anyone can take them, best first
    /// across all of them: highest priority, then earliest arrival (sequence numbers are
    /// workspace-wide, so arrivals in different teams compare). An agent in several teams
    /// therefore serves the one that has waited longest, and no team starves behind another.
    /// Each step looks at the channel heads of the given pools only: O(pools × channels), the
    /// pools being those of one agent's few teams or of one team.
    pub(super) fn drain_pools(&mut self, cx: &mut Ctx<'_>, pools: &[(TeamId, u32)]) -> Result<(), ApplyError> {
        // Candidates are (head key, which of `pools`, channel): no id is copied until one is
        // tried, and the list is reused by every step of the drain.
        let mut candidates: Vec<(QueueKey, usize, Channel)> = Vec::new();
        loop {
            candidates.clear();
            for (at, (team_id, pool_index)) in pools.iter().enumerate() {
                let Some(pool) = self.teams.get(team_id).and_then(|t| t.pools.get(*pool_index as usize)) else {
                    continue;
                };
                if pool.queued() == 0 || !pool.has_eligible() {
                    continue;
                }
                candidates.extend(pool.head_keys().map(|(key, channel)| (key, at, channel)));
            }
            // Sequence numbers are unique in the workspace: the order is total.
            candidates.sort_unstable_by_key(|candidate| candidate.0);
            let mut placed = false;
            for &(_, at, channel) in &candidates {
                let Some((team_id, pool_index)) = pools.get(at) else {
                    continue;
                };
                let head = self
                    .teams
                    .get(team_id)
                    .and_then(|t| t.pools.get(*pool_index as usize))
                    .and_then(|p| p.head(channel));
                let Some(id) = head.cloned() else {
                    continue;
                };
                let ix = self.ix_known(&id)?;
                if let Some(agent) = self.pick(team_id, *pool_index, ix, None)? {
                    self.unplace(ix)?;
                    let strategy = self.team(team_id)?.spec.strategy;
                    self.assign(cx, ix, &agent, AssignReason::Strategy(strategy))?;
                    placed = true;
                    break;
                }
            }
            if !placed {
                return Ok(());
            }
        }
    }

    /// Routes conversations that waited for business hours, if the team is open now.
    pub(super) fn release_after_hours(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId) -> Result<(), ApplyError> {
        let Some(team) = self.teams.get(team_id) else {
            return Ok(());
        };
        if team.after_hours.is_empty() {
            return Ok(());
        }
        if !team.calendar.as_ref().is_none_or(|c| c.is_open(cx.now_ms)) {
            self.schedule_opening(cx, team_id);
            return Ok(());
        }
        let waiting: Vec<ConversationId> = team.after_hours.values().cloned().collect();
        for id in &waiting {
            let ix = self.ix_known(id)?;
            self.unplace(ix)?;
            self.admit(cx, ix, None)?;
        }
        Ok(())
    }
}
