//! Where a new conversation goes and who takes it: routing rules, the path of a conversation
//! (dedicated agent, returning customer, rule, team), eligibility (`can_take`), the pool's
//! strategy (`pick`), and assignment itself.

use super::*;

impl Workspace {
    pub(super) fn rule_matches(
        rule: &CompiledRule,
        open: &OpenConversation,
        contact: Option<&Contact>,
        words: &mut Option<BTreeSet<String>>,
    ) -> bool {
        let returning = contact.is_some_and(|c| c.conversations > 0);
        (rule.channels.is_empty() || rule.channels.contains(&open.channel))
            && (rule.languages.is_empty() || open.language.as_ref().is_some_and(|l| rule.languages.contains(l)))
            && (rule.topics.is_empty() || open.topic.as_ref().is_some_and(|t| rule.topics.contains(t)))
            && (rule.tiers.is_empty()
                || contact.and_then(|c| c.spec.tier.as_ref()).is_some_and(|t| rule.tiers.contains(t)))
            && (rule.tags.is_empty() || open.tags.iter().any(|t| rule.tags.contains(t)))
            && match rule.rule.conditions.customer {
                CustomerKind::Any => true,
                CustomerKind::New => !returning,
                CustomerKind::Returning => returning,
            }
            && (rule.keywords.is_empty() || {
                // The message is split into words once per conversation, and only if some
                // rule that got this far has keywords.
                let words = words.get_or_insert_with(|| message_words(&open.first_message));
                rule.keywords.iter().any(|keyword| words.contains(keyword))
            })
    }

    pub(super) fn route(&self, open: &OpenConversation) -> Result<Route, ApplyError> {
        let contact = self.contacts.get(&open.contact);
        let mut words = None;
        for rule in &self.compiled_rules {
            if !Self::rule_matches(rule, open, contact, &mut words) {
                continue;
            }
            return Ok(match &rule.target {
                CompiledTarget::Pool { team, pool } => Route { team: team.clone(), pool: *pool, rule_agent: None },
                CompiledTarget::Agent(agent) => {
                    let team = self
                        .settings
                        .default_team
                        .clone()
                        .or_else(|| self.agents.get(agent).and_then(|a| a.memberships.first().map(|(t, _)| t.clone())))
                        .ok_or_else(|| ApplyError::Precondition(Conflict::RuleWithoutTeam(rule.rule.id.clone())))?;
                    Route { team, pool: 0, rule_agent: Some(agent.clone()) }
                }
            });
        }
        match &self.settings.default_team {
            Some(team) => Ok(Route { team: team.clone(), pool: 0, rule_agent: None }),
            None => Err(ApplyError::Precondition(Conflict::NoDefaultTeam)),
        }
    }

    /// Opens a conversation. Takes the event by reference: the first message and tags are only
    /// read by rules, never stored, so they are not copied.
    pub(crate) fn open_conversation(&mut self, cx: &mut Ctx<'_>, open: &OpenConversation) -> Result<(), ApplyError> {
        if let Some(existing) = self.conversations.get(&open.conversation) {
            if existing.state != ConversationState::Closed {
                return Err(ApplyError::AlreadyOpen(open.conversation.clone()));
            }
            // A gateway that opens a closed conversation again means the customer is back.
            return self.customer_message(cx, &open.conversation);
        }
        let route = self.route(open)?;
        let welcome = self.team(&route.team)?.spec.templates.welcome.clone();
        if !self.contacts.contains_key(&open.contact) {
            self.check_contact_room()?;
        }
        if self.conversations.len() >= CONVERSATIONS_PER_WORKSPACE_MAX {
            return Err(ApplyError::Precondition(Conflict::ConversationsFull(self.id.clone())));
        }
        let Some(contact) = self.contacts.get_or_insert_with(open.contact.clone(), || Contact {
            spec: ContactSpec { id: open.contact.clone(), tier: None, dedicated_agent: None },
            last_agent: None,
            conversations: 0,
        }) else {
            return Err(ApplyError::missing("contact", &open.contact));
        };
        contact.conversations = contact.conversations.saturating_add(1);
        let seq = self.take_seq();
        let id = open.conversation.clone();
        let index = self.conversations.insert_full(
            id.clone(),
            Conversation {
                contact: open.contact.clone(),
                channel: open.channel,
                language: open.language.clone(),
                topic: open.topic.clone(),
                priority: open.priority,
                state: ConversationState::Queued,
                team: route.team.clone(),
                pool: route.pool,
                assignee: None,
                last_agent: None,
                placement: Placement::None,
                seq,
                opened_ms: cx.now_ms,
                assigned_ms: 0,
                closed_ms: 0,
                replied: false,
                generation: 0,
                told: None,
            },
        );
        if let Some(message) = welcome {
            cx.effects.push(Effect::Welcome {
                workspace: self.id.clone(),
                conversation: id,
                team: route.team,
                message,
            });
        }
        self.admit(cx, Ix(index), route.rule_agent)
    }

    /// The next arrival sequence number. 2^64 arrivals cannot happen; saturating keeps the
    /// order of everything before.
    pub(super) fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        seq
    }

    /// Checks business hours and the activation delay, then routes.
    pub(super) fn admit(&mut self, cx: &mut Ctx<'_>, ix: Ix, rule_agent: Option<AgentId>) -> Result<(), ApplyError> {
        let team_id = self.conversation(ix)?.team.clone();
        let team = self.team(&team_id)?;
        let calendar = team.calendar.as_ref();
        if calendar.is_some_and(|c| !c.is_open(cx.now_ms)) {
            let opens_at_ms = calendar.and_then(|c| c.next_open(cx.now_ms));
            let message = team.spec.templates.away.clone();
            self.set_placement(ix, Placement::AfterHours)?;
            cx.effects.push(Effect::OutsideHours {
                workspace: self.id.clone(),
                conversation: self.cid(ix)?,
                team: team_id.clone(),
                opens_at_ms,
                message,
            });
            self.schedule_opening(cx, &team_id);
            return Ok(());
        }
        let delay_s = team.spec.options.assign_delay_s;
        if delay_s > 0 {
            self.set_placement(ix, Placement::Delayed)?;
            let generation = self.conversation(ix)?.generation;
            cx.timers.schedule(
                after_s(cx.now_ms, delay_s),
                self.id.clone(),
                Timer::Activate { conversation: self.cid(ix)?, generation },
            );
            return Ok(());
        }
        self.dispatch(cx, ix, rule_agent)
    }

    pub(super) fn schedule_opening(&mut self, cx: &mut Ctx<'_>, team_id: &TeamId) {
        let Some(team) = self.teams.get_mut(team_id) else {
            return;
        };
        if team.opening_timer_pending {
            return;
        }
        if let Some(at) = team.calendar.as_ref().and_then(|c| c.next_open(cx.now_ms)) {
            team.opening_timer_pending = true;
            cx.timers.schedule(
                at,
                self.id.clone(),
                Timer::Opening { team: team_id.clone(), version: team.timer_version },
            );
        }
    }

    /// Routes a conversation that is ready for an agent: dedicated agent, returning
    /// customer's agent, rule's agent, then the team's strategy, else the queue.
    pub(super) fn dispatch(&mut self, cx: &mut Ctx<'_>, ix: Ix, rule_agent: Option<AgentId>) -> Result<(), ApplyError> {
        let conversation = self.conversation(ix)?;
        let contact = self.contacts.get(&conversation.contact);
        if let Some(dedicated) = contact.and_then(|c| c.spec.dedicated_agent.clone())
            && self.agents.contains_key(&dedicated)
        {
            if self.can_take(&dedicated, ix, AssignReason::Dedicated) {
                return self.assign(cx, ix, &dedicated, AssignReason::Dedicated);
            }
            // Waiting makes sense only for an agent who could take it one day: one with the
            // skills and language the routing asked for.
            if self.settings.vip_waits_for_dedicated_agent && self.could_serve(&dedicated, ix, AssignReason::Dedicated)
            {
                return self.enqueue_personal(cx, ix, &dedicated, AssignReason::Dedicated);
            }
        }
        let conversation = self.conversation(ix)?;
        let keeps_returning = self.team(&conversation.team)?.spec.options.keep_returning_customers;
        if keeps_returning
            && let Some((previous, _)) = self.contacts.get(&conversation.contact).and_then(|c| c.last_agent.clone())
            && self.can_take(&previous, ix, AssignReason::Returning)
        {
            return self.assign(cx, ix, &previous, AssignReason::Returning);
        }
        if let Some(agent) = rule_agent {
            return if self.can_take(&agent, ix, AssignReason::RuleAgent) {
                self.assign(cx, ix, &agent, AssignReason::RuleAgent)
            } else {
                self.enqueue_personal(cx, ix, &agent, AssignReason::RuleAgent)
            };
        }
        self.dispatch_to_team(cx, ix)
    }

    /// The team strategy, else the pool's queue.
    pub(super) fn dispatch_to_team(&mut self, cx: &mut Ctx<'_>, ix: Ix) -> Result<(), ApplyError> {
        let (team, pool) = {
            let c = self.conversation(ix)?;
            (c.team.clone(), c.pool)
        };
        match self.pick(&team, pool, ix, None)? {
            Some(agent) => {
                let strategy = self.team(&team)?.spec.strategy;
                self.assign(cx, ix, &agent, AssignReason::Strategy(strategy))
            }
            None => self.enqueue_pool(cx, ix),
        }
    }

    /// Whether `agent_id` may take conversation `ix` automatically now, for `reason`. Every
    /// path (dedicated, returning, reopened, a waiting line) applies what the strategy applies:
    /// a member of the conversation's team, with the skills and language its pool requires,
    /// eligible by the team's options (status, `max_open`, hard cap, not excluded), with room
    /// on the channel. An agent named explicitly — by a routing rule or as a contact's
    /// dedicated agent — need not be a member: the configuration chose that person.
    pub(super) fn can_take(&self, agent_id: &AgentId, ix: Ix, reason: AssignReason) -> bool {
        let Ok(conversation) = self.conversation(ix) else {
            return false;
        };
        match (self.agents.get(agent_id), self.teams.get(&conversation.team)) {
            (Some(agent), Some(team)) => {
                self.serves(agent, conversation, reason)
                    && base_eligible(agent, team)
                    && agent.has_room_on(conversation.channel)
            }
            _ => false,
        }
    }

    /// Whether `agent` could take the conversation for `reason` once they have room and the
    /// right status: a member of its team (unless named explicitly) meeting its pool's
    /// requirement (skills, language).
    pub(super) fn serves(&self, agent: &Agent, conversation: &Conversation, reason: AssignReason) -> bool {
        let named = matches!(reason, AssignReason::RuleAgent | AssignReason::Dedicated);
        let member = named || agent.memberships.binary_search_by(|(team, _)| team.cmp(&conversation.team)).is_ok();
        let qualified = self
            .teams
            .get(&conversation.team)
            .and_then(|team| team.pools.get(conversation.pool as usize))
            .is_none_or(|pool| pool.requirement.is_met_by(&agent.spec));
        member && qualified
    }

    pub(super) fn could_serve(&self, agent_id: &AgentId, ix: Ix, reason: AssignReason) -> bool {
        match (self.agents.get(agent_id), self.conversation(ix)) {
            (Some(agent), Ok(conversation)) => self.serves(agent, conversation, reason),
            _ => false,
        }
    }

    /// Asks the pool's strategy for an agent for conversation `ix`, skipping `exclude`.
    pub(super) fn pick(
        &mut self,
        team_id: &TeamId,
        pool: u32,
        ix: Ix,
        exclude: Option<&AgentId>,
    ) -> Result<Option<AgentId>, ApplyError> {
        let channel = self.conversation(ix)?.channel;
        let Self { agents, teams, rng, .. } = self;
        let Team { spec, pools, .. } = teams.get_mut(team_id).ok_or_else(|| ApplyError::missing("team", team_id))?;
        let pool =
            pools.get_mut(pool as usize).ok_or_else(|| ApplyError::missing("pool", format!("{team_id}/{pool}")))?;
        if !pool.has_eligible() {
            return Ok(None);
        }
        let cursor = pool.cursor.as_ref().and_then(|last| {
            agents.get(last)?.memberships.iter().find(|(team, _)| team == team_id).map(|(_, position)| *position)
        });
        let members = &spec.members;
        let picked = pool.pick(cursor, rng, |position| {
            members.get(position as usize).is_some_and(|member| {
                Some(member) != exclude && agents.get(member).is_some_and(|agent| agent.has_room_on(channel))
            })
        });
        let Some(agent) = picked.and_then(|position| members.get(position as usize)).cloned() else {
            return Ok(None);
        };
        if spec.strategy == Strategy::RoundRobin {
            pool.cursor = Some(agent.clone());
        }
        Ok(Some(agent))
    }

    pub(super) fn expected_response_ms(&self, agent: &Agent, team: &TeamId) -> u64 {
        agent.average_response_ms.unwrap_or_else(|| {
            self.teams
                .get(team)
                .map_or(120_000, |t| u64::from(t.spec.options.default_response_time_s).saturating_mul(1000))
        })
    }

    pub(super) fn assign(
        &mut self,
        cx: &mut Ctx<'_>,
        ix: Ix,
        agent_id: &AgentId,
        reason: AssignReason,
    ) -> Result<(), ApplyError> {
        // Both looked up before anything changes.
        self.agent(agent_id)?;
        let id = self.cid(ix)?;
        let conversation = self.conversation_mut(ix)?;
        conversation.state = ConversationState::Assigned;
        conversation.assignee = Some(agent_id.clone());
        conversation.last_agent = Some(agent_id.clone());
        conversation.placement = Placement::None;
        conversation.assigned_ms = cx.now_ms;
        conversation.replied = false;
        // Generations are only compared for equality with the one a timer carries.
        conversation.generation = conversation.generation.wrapping_add(1);
        let (channel, team, contact_id, generation) =
            (conversation.channel, conversation.team.clone(), conversation.contact.clone(), conversation.generation);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.add_open(id.clone(), channel);
            agent.received_today = agent.received_today.saturating_add(1);
            agent.last_assigned_ms = cx.now_ms;
        }
        self.refresh_agent(agent_id);
        if let Some(contact) = self.contacts.get_mut(&contact_id) {
            contact.last_agent = Some((agent_id.clone(), team.clone()));
        }
        let timeout_s = self.team(&team)?.spec.options.no_reply_timeout_s;
        if timeout_s > 0 {
            cx.timers.schedule(
                after_s(cx.now_ms, timeout_s),
                self.id.clone(),
                Timer::NoReply { conversation: id.clone(), generation },
            );
        }
        let agent = self.agent(agent_id)?;
        cx.effects.push(Effect::Assigned {
            workspace: self.id.clone(),
            conversation: id,
            contact: contact_id,
            channel,
            expected_response_ms: self.expected_response_ms(agent, &team),
            team,
            agent: agent_id.clone(),
            agent_name: agent.spec.display_name.clone(),
            reason,
        });
        Ok(())
    }

    /// Takes an assigned conversation away from its agent; the caller routes it again and
    /// then drains the agent.
    pub(super) fn unassign(
        &mut self,
        cx: &mut Ctx<'_>,
        ix: Ix,
        reason: UnassignReason,
    ) -> Result<Option<AgentId>, ApplyError> {
        let id = self.cid(ix)?;
        let conversation = self.conversation_mut(ix)?;
        let Some(agent_id) = conversation.assignee.take() else {
            return Ok(None);
        };
        conversation.state = ConversationState::Queued;
        conversation.generation = conversation.generation.wrapping_add(1);
        let channel = conversation.channel;
        let team = conversation.team.clone();
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.remove_open(&id, channel);
        }
        self.refresh_agent(&agent_id);
        cx.effects.push(Effect::Unassigned {
            workspace: self.id.clone(),
            conversation: id,
            team,
            agent: agent_id.clone(),
            reason,
        });
        Ok(Some(agent_id))
    }
}
