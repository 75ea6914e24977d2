//! What happens when a timer falls due: activation delays, no-reply timeouts, forgetting
//! closed conversations, opening hours, position updates and the daily reset.

use super::*;

impl Workspace {
    pub(crate) fn fire(&mut self, cx: &mut Ctx<'_>, timer: Timer) -> Result<(), ApplyError> {
        match timer {
            Timer::Activate { conversation, generation } => {
                let Some(ix) = self.conversations.get_index_of(&conversation).map(Ix) else {
                    return Ok(());
                };
                let c = self.conversation(ix)?;
                if c.generation != generation || c.placement != Placement::Delayed {
                    return Ok(());
                }
                self.unplace(ix)?;
                self.dispatch(cx, ix, None)
            }
            Timer::NoReply { conversation, generation } => {
                let Some(ix) = self.conversations.get_index_of(&conversation).map(Ix) else {
                    return Ok(());
                };
                let c = self.conversation(ix)?;
                if c.generation != generation || c.state != ConversationState::Assigned || c.replied {
                    return Ok(());
                }
                let (team, pool, current) = (c.team.clone(), c.pool, c.assignee.clone());
                // Move it only if someone else can take it; otherwise its agent keeps it.
                let Some(next) = self.pick(&team, pool, ix, current.as_ref())? else {
                    return Ok(());
                };
                let previous = self.unassign(cx, ix, UnassignReason::NoReply)?;
                let strategy = self.team(&team)?.spec.strategy;
                self.assign(cx, ix, &next, AssignReason::Strategy(strategy))?;
                match previous {
                    Some(previous) => self.drain_agent(cx, &previous),
                    None => Ok(()),
                }
            }
            Timer::Forget { conversation, generation } => {
                if self
                    .conversations
                    .get(&conversation)
                    .is_some_and(|c| c.generation == generation && c.state == ConversationState::Closed)
                {
                    self.conversations.swap_remove(&conversation);
                }
                Ok(())
            }
            Timer::Positions { team, version } => {
                let Some(t) = self.teams.get_mut(&team) else {
                    return Ok(());
                };
                if t.timer_version != version {
                    return Ok(());
                }
                t.positions_pending = false;
                self.update_positions(cx, &team)
            }
            Timer::Opening { team, version } => {
                let Some(t) = self.teams.get_mut(&team) else {
                    return Ok(());
                };
                if t.timer_version != version {
                    return Ok(());
                }
                t.opening_timer_pending = false;
                self.release_after_hours(cx, &team)
            }
            Timer::Midnight { team, version } => {
                let Some(t) = self.teams.get(&team) else {
                    return Ok(());
                };
                if t.timer_version != version {
                    return Ok(());
                }
                let next = t.calendar.as_ref().map_or(cx.now_ms.saturating_add(DAY_MS), |c| c.next_midnight(cx.now_ms));
                cx.timers.schedule(next, self.id.clone(), Timer::Midnight { team: team.clone(), version });
                // An agent's day is the day of their primary (first) team.
                let members = t.spec.members.clone();
                for member in &members {
                    // Read first: a mutable borrow marks the agent changed for the digest.
                    let resets = self.agents.get(member).is_some_and(|agent| {
                        agent.received_today != 0 && agent.memberships.first().map(|(t, _)| t) == Some(&team)
                    });
                    let Some(agent) = self.agents.get_mut(member).filter(|_| resets) else {
                        continue;
                    };
                    agent.received_today = 0;
                    self.refresh_agent(member);
                    self.drain_agent(cx, member)?;
                }
                Ok(())
            }
        }
    }
}
