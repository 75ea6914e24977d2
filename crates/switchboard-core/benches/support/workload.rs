//! A realistic, reproducible contact-center workload for benchmarking `State::apply`.
//!
//! One workspace, one team holding every agent (the worst case for the strategy index),
//! agents online with `max_open` 4 and varied daily limits. Set-up fills the team and, for a
//! queued configuration, the queue; the measured stream then keeps both levels steady with
//! a mix per 10 events of 4 opens, 4 closes (oldest first), 1 agent reply and 1 presence
//! change (an agent goes away, or comes back), on rotating channels and priorities.
//!
//! Entries are one millisecond apart and closed conversations are forgotten after
//! `CLOSED_RETENTION_S` of entry time, so after the warm-up the workspace holds a stable
//! number of conversations (about 24,000 closed ones besides the open and queued) and the run
//! measures a steady state, retention timers included, instead of the allocator and the
//! kernel handing out fresh memory (which, on this VM, costs more than the routing itself).
//! Customers come from a base of `CONTACTS` returning contacts.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use switchboard_core::{
    AgentId, AgentSpec, AgentStatus, Channel, Command, ConversationId, Event, Input, OpenConversation, State, Strategy,
    TeamId, TeamSpec, WorkspaceId, WorkspaceSettings,
};

pub const STRATEGIES: [Strategy; 5] =
    [Strategy::RoundRobin, Strategy::LeastOpen, Strategy::Weighted, Strategy::Ordered, Strategy::Manual];

pub const MAX_OPEN: u32 = 4;
/// Closed conversations are forgotten after this much entry time (= 60,000 events).
pub const CLOSED_RETENTION_S: u32 = 60;
/// Distinct customers.
pub const CONTACTS: u64 = 100_000;

pub struct Workload {
    pub state: State,
    pub now_ms: i64,
    agents: usize,
    next_conversation: u64,
    open: VecDeque<ConversationId>,
    away: VecDeque<usize>,
    step: u64,
    workspace: WorkspaceId,
}

fn event(workspace: &WorkspaceId, command: Command) -> Input {
    Input::Event(Event { workspace: workspace.clone(), event_id: None, command })
}

impl Workload {
    /// A workspace with `agents` agents using `strategy`, `queued` conversations waiting
    /// (agents full), or agents half full when `queued` is 0.
    pub fn new(strategy: Strategy, agents: usize, queued: usize) -> Self {
        let workspace = WorkspaceId::new("bench");
        let mut state = State::new();
        let now_ms = 1_795_428_000_000;
        let apply = |state: &mut State, command: Command| {
            let outcome = state.apply(now_ms, &event(&workspace, command));
            assert_eq!(outcome.result, Ok(()), "set-up command failed");
        };
        let settings = WorkspaceSettings { closed_retention_s: CLOSED_RETENTION_S, ..WorkspaceSettings::default() };
        apply(&mut state, Command::ConfigureWorkspace(settings.clone()));
        let mut members = Vec::with_capacity(agents);
        for index in 0..agents {
            let id = format!("agent-{index:06}");
            let mut spec = AgentSpec::new(id.as_str(), format!("Agent {index}"));
            spec.max_open = MAX_OPEN;
            spec.daily_limit = 50 + (index as u32 % 7) * 25;
            apply(&mut state, Command::UpsertAgent(spec));
            members.push(id);
        }
        let member_refs: Vec<&str> = members.iter().map(String::as_str).collect();
        apply(&mut state, Command::UpsertTeam(TeamSpec::new("support", strategy, &member_refs)));
        apply(
            &mut state,
            Command::ConfigureWorkspace(WorkspaceSettings { default_team: Some(TeamId::new("support")), ..settings }),
        );
        for id in &members {
            apply(&mut state, Command::SetAgentStatus { agent: AgentId::new(id), status: AgentStatus::Online });
        }
        let mut workload = Self {
            state,
            now_ms,
            agents,
            next_conversation: 0,
            open: VecDeque::new(),
            away: VecDeque::new(),
            step: 0,
            workspace,
        };
        // Manual teams never assign: their prefill is all queue.
        let assigned = if strategy == Strategy::Manual {
            0
        } else if queued > 0 {
            agents * MAX_OPEN as usize
        } else {
            agents * MAX_OPEN as usize / 2
        };
        for _ in 0..assigned + queued {
            let input = workload.open_input();
            let outcome = workload.state.apply(now_ms, &input);
            assert_eq!(outcome.result, Ok(()), "prefill failed");
        }
        workload
    }

    fn open_input(&mut self) -> Input {
        let n = self.next_conversation;
        self.next_conversation += 1;
        let id = ConversationId::new(format!("conv-{n:010}"));
        self.open.push_back(id.clone());
        let channel = Channel::ALL[(n % 8) as usize];
        let mut open = OpenConversation::new(id, format!("contact-{:08}", n % CONTACTS), channel);
        open.priority = (n % 3) as u8;
        event(&self.workspace, Command::OpenConversation(open))
    }

    /// The next event of the steady mix.
    pub fn next_input(&mut self) -> Input {
        self.step += 1;
        match self.step % 10 {
            0 | 2 | 4 | 6 => self.open_input(),
            1 | 3 | 5 | 7 => match self.open.pop_front() {
                Some(conversation) => event(&self.workspace, Command::CloseConversation { conversation }),
                None => self.open_input(),
            },
            8 => {
                let conversation = self.open.back().cloned().unwrap_or_else(|| ConversationId::new("none"));
                let agent = AgentId::new(format!("agent-{:06}", self.step as usize % self.agents));
                event(&self.workspace, Command::AgentReplied { conversation, agent })
            }
            _ => {
                // Presence churn: up to 1% of agents away at a time, returning oldest first.
                let limit = (self.agents / 100).max(1);
                let (index, status) = if self.away.len() >= limit {
                    (self.away.pop_front().unwrap_or(0), AgentStatus::Online)
                } else {
                    let index = (self.step as usize * 7919) % self.agents;
                    if self.away.contains(&index) {
                        return self.next_input();
                    }
                    self.away.push_back(index);
                    (index, AgentStatus::Away)
                };
                event(
                    &self.workspace,
                    Command::SetAgentStatus { agent: AgentId::new(format!("agent-{index:06}")), status },
                )
            }
        }
    }

    /// Prepares `count` inputs (not timed).
    pub fn batch(&mut self, count: usize) -> Vec<Input> {
        (0..count).map(|_| self.next_input()).collect()
    }

    /// Applies prepared inputs, one millisecond apart; returns how many failed.
    pub fn apply_all(&mut self, inputs: &[Input]) -> usize {
        let mut failed = 0;
        for input in inputs {
            self.now_ms += 1;
            if self.state.apply(self.now_ms, input).result.is_err() {
                failed += 1;
            }
        }
        failed
    }

    pub fn queue_depth(&self) -> usize {
        self.state.queue_depth(&self.workspace, &TeamId::new("support")).unwrap_or(0)
    }
}
