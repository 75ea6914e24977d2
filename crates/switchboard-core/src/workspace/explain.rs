//! Explanations of routing decisions (`crate::explain`): the same checks `route`, `dispatch`
//! and `can_take` make, answered one by one instead of as a yes or no. Read-only; O(members of
//! the routed team).

use super::*;
use crate::explain::{Candidate, Explanation, Routed, Verdict};

impl Workspace {
    /// Why `open` would go where it goes if it arrived at `now_ms` in this state.
    pub(crate) fn explain_open(&self, open: &OpenConversation, now_ms: i64) -> Result<Explanation, ApplyError> {
        if self.conversations.contains_key(&open.conversation) {
            // Opening a known conversation reopens it (or is refused while it is open).
            return self.explain_reopen(&open.conversation, now_ms);
        }
        let route = self.route(open)?;
        let contact = self.contacts.get(&open.contact);
        let mut words = None;
        let routed =
            self.compiled_rules.iter().find(|rule| Self::rule_matches(rule, open, contact, &mut words)).map_or(
                Routed::DefaultTeam,
                |rule| Routed::Rule { rule: rule.rule.id.clone(), matched_on: conditions_of(&rule.rule.conditions) },
            );
        let team = self.team(&route.team)?;
        let requirement = team.pools.get(route.pool as usize).map(|pool| &pool.requirement);
        let judge = |agent: &AgentId, named: bool| self.candidate(agent, team, requirement, open.channel, named);
        let dedicated = contact.and_then(|c| c.spec.dedicated_agent.as_ref()).and_then(|agent| judge(agent, true));
        let returning = if team.spec.options.keep_returning_customers {
            contact.and_then(|c| c.last_agent.as_ref()).and_then(|(agent, _)| judge(agent, false))
        } else {
            None
        };
        let rule_agent = route.rule_agent.as_ref().and_then(|agent| judge(agent, true));
        let candidates = self.team_candidates(team, requirement, open.channel);
        Ok(Explanation {
            routed,
            team: route.team.clone(),
            strategy: team.spec.strategy,
            outside_hours: team.calendar.as_ref().is_some_and(|c| !c.is_open(now_ms)),
            assign_delay_s: team.spec.options.assign_delay_s,
            dedicated,
            returning,
            rule_agent,
            candidates,
        })
    }
}

impl Workspace {
    /// Why closed conversation `id` would go where it goes if its customer wrote at `now_ms`:
    /// `customer_message`'s path, answered one by one. `AlreadyOpen` unless it is closed.
    pub(crate) fn explain_reopen(&self, id: &ConversationId, now_ms: i64) -> Result<Explanation, ApplyError> {
        let conversation = self.conversation(self.ix(id)?)?;
        if conversation.state != ConversationState::Closed {
            return Err(ApplyError::AlreadyOpen(id.clone()));
        }
        let (team_id, pool) = self.reopen_route(id, conversation)?;
        let team = self.team(&team_id)?;
        let requirement = team.pools.get(pool as usize).map(|pool| &pool.requirement);
        let channel = conversation.channel;
        Ok(Explanation {
            routed: Routed::Reopened { reassign_if_unavailable: team.spec.options.reassign_reopened_if_unavailable },
            team: team_id.clone(),
            strategy: team.spec.strategy,
            outside_hours: team.calendar.as_ref().is_some_and(|c| !c.is_open(now_ms)),
            // A reopened conversation is dispatched at once (the activation delay is for new ones).
            assign_delay_s: 0,
            dedicated: None,
            returning: conversation
                .last_agent
                .as_ref()
                .and_then(|agent| self.candidate(agent, team, requirement, channel, false)),
            rule_agent: None,
            candidates: self.team_candidates(team, requirement, channel),
        })
    }

    /// Agent `agent_id` judged for `team` (`named`: by a rule or as a dedicated agent, so
    /// membership is not required); `None` for an agent that no longer exists.
    fn candidate(
        &self,
        agent_id: &AgentId,
        team: &Team,
        requirement: Option<&Requirement>,
        channel: Channel,
        named: bool,
    ) -> Option<Candidate> {
        let agent = self.agents.get(agent_id)?;
        Some(Candidate {
            agent: agent_id.clone(),
            verdict: verdict(agent, team, requirement, channel, named),
            open: agent.open_count(),
            weight: agent.spec.daily_limit,
        })
    }

    /// Every member of `team` in member order with their verdict for the strategy; in a
    /// weighted team an otherwise eligible member weighing 0 is never drawn.
    fn team_candidates(&self, team: &Team, requirement: Option<&Requirement>, channel: Channel) -> Vec<Candidate> {
        let weighted = team.spec.strategy == Strategy::Weighted;
        team.spec
            .members
            .iter()
            .filter_map(|member| self.candidate(member, team, requirement, channel, false))
            .map(|mut candidate| {
                if weighted && candidate.verdict.is_eligible() && candidate.weight == 0 {
                    candidate.verdict = Verdict::ZeroWeight;
                }
                candidate
            })
            .collect()
    }
}

/// The conditions a rule sets.
fn conditions_of(conditions: &crate::model::RuleConditions) -> Vec<String> {
    let mut set = Vec::new();
    let mut note = |present: bool, name: &'static str| {
        if present {
            set.push(name.to_owned());
        }
    };
    note(!conditions.channels.is_empty(), "channel");
    note(!conditions.languages.is_empty(), "language");
    note(!conditions.topics.is_empty(), "topic");
    note(!conditions.tiers.is_empty(), "tier");
    note(!conditions.tags.is_empty(), "tag");
    note(conditions.customer != CustomerKind::Any, "customer");
    note(!conditions.keywords.is_empty(), "keyword");
    set
}

/// `can_take`'s checks in turn, naming the first that fails.
fn verdict(agent: &Agent, team: &Team, requirement: Option<&Requirement>, channel: Channel, named: bool) -> Verdict {
    let member = agent.memberships.binary_search_by(|(t, _)| t.cmp(&team.spec.id)).is_ok();
    if !named && !member {
        return Verdict::NotMember;
    }
    if let Some(requirement) = requirement {
        for (skill, level) in &requirement.skills {
            if agent.spec.skills.get(skill).is_none_or(|have| have < level) {
                return Verdict::MissingSkill { skill: skill.clone(), level: *level };
            }
        }
        if let Some(language) = &requirement.language
            && !agent.spec.languages.contains(language)
        {
            return Verdict::MissingLanguage(language.clone());
        }
    }
    let options = &team.spec.options;
    if agent.spec.auto_assign_excluded {
        return Verdict::Excluded;
    }
    if !options.allowed_statuses.contains(agent.status) {
        return Verdict::Status(agent.status);
    }
    if agent.open_count() >= agent.spec.max_open {
        return Verdict::AtMaxOpen { open: agent.open_count(), max_open: agent.spec.max_open };
    }
    if options.daily_limit_hard_cap && agent.received_today >= agent.spec.daily_limit {
        return Verdict::DailyLimit { received: agent.received_today, daily_limit: agent.spec.daily_limit };
    }
    if !agent.has_room_on(channel) {
        let limit = agent.spec.max_open_per_channel.get(&channel).copied().unwrap_or(0);
        return Verdict::ChannelFull { channel, limit };
    }
    Verdict::Eligible
}
