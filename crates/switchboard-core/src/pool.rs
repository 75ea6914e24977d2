//! A pool is the set of a team's members who satisfy one requirement (skills, language),
//! indexed for the team's strategy, plus the conversations waiting for that pool.
//!
//! Every team has pool 0 (no requirement); a routing rule that asks for skills or a language
//! adds a pool. The index of a pool answers "who gets the next conversation" in O(log n):
//! - round-robin and ordered: the set of eligible member positions;
//! - least-open: the set of `(open, last_assigned, id)` keys of eligible members;
//! - weighted: a Fenwick tree of integer weights (`daily_limit`, 0 when ineligible).
//!
//! Each member's contribution is remembered in a [`Slot`], so that refreshing a member after
//! its state changed removes exactly what was inserted before, whatever changed.

use crate::fenwick::Fenwick;
use crate::ids::{AgentId, ConversationId, Language, Skill};
use crate::model::{AgentSpec, Channel, Strategy};
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a member must have to belong to a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Requirement {
    /// Skill → minimum level, sorted by skill.
    pub(crate) skills: Vec<(Skill, u8)>,
    /// A language the member must speak.
    pub(crate) language: Option<Language>,
}

impl Requirement {
    pub(crate) fn is_met_by(&self, agent: &AgentSpec) -> bool {
        self.skills.iter().all(|(skill, level)| agent.skills.get(skill).is_some_and(|have| have >= level))
            && self.language.as_ref().is_none_or(|language| agent.languages.contains(language))
    }
}

/// Order of a waiting line: higher priority first, then arrival.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct QueueKey {
    /// `255 - priority`, so that ascending order serves the highest priority first.
    pub(crate) priority_rank: u8,
    /// Arrival sequence number, unique within the workspace.
    pub(crate) seq: u64,
}

impl QueueKey {
    pub(crate) fn new(priority: u8, seq: u64) -> Self {
        Self { priority_rank: !priority, seq }
    }
}

/// Sort key of the least-open strategy: fewest open, then idle longest, then id.
pub(crate) type LeastOpenKey = (u32, i64, AgentId, u32);

/// Whether `strategy` picks by walking eligible positions in order (and so keeps them in a set).
fn walks_in_order(strategy: Strategy) -> bool {
    matches!(strategy, Strategy::RoundRobin | Strategy::Ordered)
}

/// What one member currently contributes to a pool's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    eligible: bool,
    serving: bool,
    least_open: Option<LeastOpenKey>,
    weight: u64,
}

/// The facts about a member that its slot is computed from.
pub(crate) struct MemberFacts<'a> {
    pub(crate) id: &'a AgentId,
    pub(crate) eligible: bool,
    pub(crate) serving: bool,
    pub(crate) open: u32,
    pub(crate) last_assigned_ms: i64,
    pub(crate) daily_limit: u32,
}

/// One pool of a team.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Pool {
    pub(crate) requirement: Requirement,
    /// Round-robin cursor: the member who received the last conversation.
    pub(crate) cursor: Option<AgentId>,
    #[serde(skip)]
    strategy: Option<Strategy>,
    #[serde(skip)]
    slots: Vec<Option<Slot>>,
    /// Eligible member positions, for the strategies that walk them in order (round-robin,
    /// ordered); the others index their members their own way and only count them.
    #[serde(skip)]
    eligible: BTreeSet<u32>,
    #[serde(skip)]
    eligible_count: u32,
    #[serde(skip)]
    least_open: BTreeSet<LeastOpenKey>,
    #[serde(skip)]
    weights: Fenwick,
    /// Members who satisfy the requirement and have an allowed status (capacity aside); the
    /// divisor of the ETA.
    #[serde(skip)]
    pub(crate) serving: u32,
    /// Conversations waiting for this pool, one ordered map per channel so that a full
    /// channel never hides another channel's head.
    #[serde(skip)]
    queues: [BTreeMap<QueueKey, ConversationId>; Channel::ALL.len()],
    #[serde(skip)]
    queued: usize,
}

impl Pool {
    pub(crate) fn new(requirement: Requirement) -> Self {
        Self {
            requirement,
            cursor: None,
            strategy: None,
            slots: Vec::new(),
            eligible: BTreeSet::new(),
            eligible_count: 0,
            least_open: BTreeSet::new(),
            weights: Fenwick::default(),
            serving: 0,
            queues: Default::default(),
            queued: 0,
        }
    }

    /// Clears the index for a team of `members` members using `strategy` (queues are kept).
    pub(crate) fn reset_index(&mut self, strategy: Strategy, members: usize) {
        self.strategy = Some(strategy);
        self.slots = vec![None; members];
        self.eligible.clear();
        self.eligible_count = 0;
        self.least_open.clear();
        self.weights = Fenwick::with_len(if strategy == Strategy::Weighted { members } else { 0 });
        self.serving = 0;
    }

    fn strategy(&self) -> Strategy {
        self.strategy.unwrap_or(Strategy::Manual)
    }

    /// Replaces member `position`'s contribution; `facts` is `None` when the member does not
    /// satisfy the requirement.
    pub(crate) fn refresh(&mut self, position: u32, facts: Option<MemberFacts<'_>>) {
        let index = position as usize;
        let strategy = self.strategy();
        let new = facts.map(|facts| {
            let eligible = facts.eligible && (strategy != Strategy::Weighted || facts.daily_limit > 0);
            Slot {
                eligible,
                serving: facts.serving,
                least_open: (eligible && strategy == Strategy::LeastOpen)
                    .then(|| (facts.open, facts.last_assigned_ms, facts.id.clone(), position)),
                weight: if eligible && strategy == Strategy::Weighted { u64::from(facts.daily_limit) } else { 0 },
            }
        });
        // Most refreshes change nothing this pool indexes (an agent who takes one more
        // conversation and stays eligible): skip the removal and re-insertion.
        let Some(current) = self.slots.get_mut(index) else {
            // Pools are sized to the team when indexed; a position past the end is ignored.
            return;
        };
        if *current == new {
            return;
        }
        if let Some(old) = current.take() {
            if old.eligible {
                self.eligible_count = self.eligible_count.saturating_sub(1);
                if walks_in_order(strategy) {
                    self.eligible.remove(&position);
                }
            }
            if let Some(key) = old.least_open {
                self.least_open.remove(&key);
            }
            if old.weight > 0 {
                self.weights.set(index, 0);
            }
            if old.serving {
                self.serving = self.serving.saturating_sub(1);
            }
        }
        let Some(slot) = new else { return };
        if slot.eligible {
            self.eligible_count = self.eligible_count.saturating_add(1);
            if walks_in_order(strategy) {
                self.eligible.insert(position);
            }
        }
        if let Some(key) = &slot.least_open {
            self.least_open.insert(key.clone());
        }
        if slot.weight > 0 {
            self.weights.set(index, slot.weight);
        }
        if slot.serving {
            self.serving = self.serving.saturating_add(1);
        }
        if let Some(current) = self.slots.get_mut(index) {
            *current = Some(slot);
        }
    }

    /// Whether any member could take a conversation now (channel limits aside).
    pub(crate) fn has_eligible(&self) -> bool {
        self.strategy() != Strategy::Manual && self.eligible_count > 0
    }

    /// Chooses a member position by the strategy among eligible members that `accept`s.
    /// `cursor_position` is the round-robin cursor resolved to a member position.
    pub(crate) fn pick(
        &mut self,
        cursor_position: Option<u32>,
        rng: &mut SplitMix64,
        mut accept: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        match self.strategy() {
            Strategy::Manual => None,
            Strategy::Ordered => self.eligible.iter().copied().find(|&p| accept(p)),
            Strategy::RoundRobin => match cursor_position {
                None => self.eligible.iter().copied().find(|&p| accept(p)),
                Some(cursor) => self
                    .eligible
                    .range(cursor.saturating_add(1)..)
                    .chain(self.eligible.range(..=cursor))
                    .copied()
                    .find(|&p| accept(p)),
            },
            Strategy::LeastOpen => self.least_open.iter().map(|key| key.3).find(|&p| accept(p)),
            Strategy::Weighted => {
                // Draw; a drawn member that refuses this conversation (channel limit,
                // excluded) is set aside and the draw is repeated among the others.
                let mut set_aside: Vec<(usize, u64)> = Vec::new();
                let mut chosen = None;
                loop {
                    let total = self.weights.total();
                    if total == 0 {
                        break;
                    }
                    let index = self.weights.find(rng.below(total));
                    if accept(index as u32) {
                        chosen = Some(index as u32);
                        break;
                    }
                    set_aside.push((index, self.weights.get(index)));
                    self.weights.set(index, 0);
                }
                for (index, weight) in set_aside {
                    self.weights.set(index, weight);
                }
                chosen
            }
        }
    }

    pub(crate) fn enqueue(&mut self, channel: Channel, key: QueueKey, conversation: ConversationId) {
        if let Some(queue) = self.queues.get_mut(channel.index())
            && queue.insert(key, conversation).is_none()
        {
            self.queued = self.queued.saturating_add(1);
        }
    }

    pub(crate) fn dequeue(&mut self, channel: Channel, key: &QueueKey) {
        if let Some(queue) = self.queues.get_mut(channel.index())
            && queue.remove(key).is_some()
        {
            self.queued = self.queued.saturating_sub(1);
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// The key of each channel's queue head, with its channel, in channel order.
    pub(crate) fn head_keys(&self) -> impl Iterator<Item = (QueueKey, Channel)> + '_ {
        self.queues
            .iter()
            .zip(Channel::ALL)
            .filter_map(|(queue, channel)| queue.first_key_value().map(|(key, _)| (*key, channel)))
    }

    /// The conversation at the head of one channel's queue.
    pub(crate) fn head(&self, channel: Channel) -> Option<&ConversationId> {
        self.queues.get(channel.index()).and_then(|queue| queue.first_key_value()).map(|(_, id)| id)
    }

    /// The head of each channel's queue, best first.
    pub(crate) fn heads(&self) -> Vec<(QueueKey, ConversationId)> {
        let mut heads: Vec<(QueueKey, ConversationId)> = self
            .queues
            .iter()
            .filter_map(|queue| queue.first_key_value().map(|(key, id)| (*key, id.clone())))
            .collect();
        heads.sort_unstable_by_key(|(key, _)| *key);
        heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: &AgentId, eligible: bool) -> Option<MemberFacts<'_>> {
        Some(MemberFacts { id, eligible, serving: true, open: 0, last_assigned_ms: 0, daily_limit: 10 })
    }

    #[test]
    fn a_pool_has_eligible_members_exactly_while_one_is_eligible_whatever_its_strategy() {
        let ids = [AgentId::new("a"), AgentId::new("b")];
        for strategy in [Strategy::RoundRobin, Strategy::LeastOpen, Strategy::Weighted, Strategy::Ordered] {
            let mut pool = Pool::new(Requirement::default());
            pool.reset_index(strategy, 2);
            assert!(!pool.has_eligible(), "{strategy:?}: nobody yet");
            pool.refresh(0, facts(&ids[0], true));
            pool.refresh(1, facts(&ids[1], true));
            pool.refresh(0, facts(&ids[0], true));
            assert!(pool.has_eligible(), "{strategy:?}: two eligible");
            pool.refresh(0, facts(&ids[0], false));
            assert!(pool.has_eligible(), "{strategy:?}: one left");
            pool.refresh(1, None);
            assert!(!pool.has_eligible(), "{strategy:?}: one ineligible, one out of the pool");
            let mut rng = SplitMix64::from_seed(1);
            assert_eq!(pool.pick(None, &mut rng, |_| true), None, "{strategy:?}: nobody to pick");
            pool.refresh(1, facts(&ids[1], true));
            assert_eq!(pool.pick(None, &mut rng, |_| true), Some(1), "{strategy:?}: the eligible one");
        }
    }
}
