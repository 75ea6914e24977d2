//! A small driver for scenario tests: one workspace, a clock the test moves, and helpers
//! that read like the vendors' examples.

#![allow(dead_code, unreachable_pub, missing_docs)]

use switchboard_core::*;

pub const WS: &str = "acme";
/// Monday 2026-11-23 10:00:00 UTC.
pub const MONDAY_10_UTC: i64 = 1_795_428_000_000;

pub struct Sim {
    pub state: State,
    pub now_ms: i64,
    pub workspace: WorkspaceId,
    /// Walk the whole state's invariants after every command.
    pub check_invariants: bool,
}

impl Sim {
    /// A workspace with default settings at Monday 10:00 UTC.
    pub fn new() -> Self {
        Self::with_settings(WorkspaceSettings::default())
    }

    pub fn with_settings(settings: WorkspaceSettings) -> Self {
        let mut sim =
            Sim { state: State::new(), now_ms: MONDAY_10_UTC, workspace: WorkspaceId::new(WS), check_invariants: true };
        sim.ok(Command::ConfigureWorkspace(settings));
        sim
    }

    /// Moves time forward by `ms` with ticks, as an idle leader would: one tick per
    /// `limits::CLOCK_STEP_MS_MAX` at most (the state's clock moves no faster).
    pub fn advance(&mut self, ms: i64) -> Vec<Effect> {
        let target = self.now_ms + ms;
        let mut effects = Vec::new();
        while self.now_ms < target {
            self.now_ms = target.min(self.now_ms + limits::CLOCK_STEP_MS_MAX);
            effects.extend(self.state.apply(self.now_ms, &Input::Tick).effects);
            self.check();
        }
        effects
    }

    pub fn run(&mut self, command: Command) -> Outcome {
        self.run_with_id(None, command)
    }

    pub fn run_with_id(&mut self, event_id: Option<&str>, command: Command) -> Outcome {
        let event = Event { workspace: self.workspace.clone(), event_id: event_id.map(EventId::new), command };
        let outcome = self.state.apply(self.now_ms, &Input::Event(event));
        self.check();
        outcome
    }

    /// Runs a command that must succeed; returns its effects.
    pub fn ok(&mut self, command: Command) -> Vec<Effect> {
        let outcome = self.run(command.clone());
        assert_eq!(outcome.result, Ok(()), "command {command:?} failed");
        outcome.effects
    }

    /// Runs a command that must fail; returns the error.
    pub fn err(&mut self, command: Command) -> ApplyError {
        let outcome = self.run(command.clone());
        match outcome.result {
            Ok(()) => panic!("command {command:?} unexpectedly succeeded"),
            Err(error) => error,
        }
    }

    fn check(&self) {
        if !self.check_invariants {
            return;
        }
        if let Err(problem) = self.state.check_invariants() {
            panic!("invariant broken: {problem}");
        }
    }

    pub fn agent(&mut self, id: &str, name: &str) {
        self.ok(Command::UpsertAgent(AgentSpec::new(id, name)));
    }

    pub fn agent_spec(&mut self, spec: AgentSpec) {
        self.ok(Command::UpsertAgent(spec));
    }

    pub fn team(&mut self, spec: TeamSpec) {
        self.ok(Command::UpsertTeam(spec));
    }

    pub fn default_team(&mut self, team: &str) {
        let settings = WorkspaceSettings { default_team: Some(TeamId::new(team)), ..WorkspaceSettings::default() };
        self.ok(Command::ConfigureWorkspace(settings));
    }

    pub fn status(&mut self, agent: &str, status: AgentStatus) -> Vec<Effect> {
        self.ok(Command::SetAgentStatus { agent: AgentId::new(agent), status })
    }

    pub fn online(&mut self, agents: &[&str]) {
        for agent in agents {
            self.status(agent, AgentStatus::Online);
        }
    }

    pub fn open(&mut self, conversation: &str, contact: &str) -> Vec<Effect> {
        self.open_with(OpenConversation::new(conversation, contact, Channel::WhatsApp))
    }

    pub fn open_with(&mut self, open: OpenConversation) -> Vec<Effect> {
        self.ok(Command::OpenConversation(open))
    }

    pub fn close(&mut self, conversation: &str) -> Vec<Effect> {
        self.ok(Command::CloseConversation { conversation: ConversationId::new(conversation) })
    }

    pub fn conversation(&self, id: &str) -> ConversationView {
        self.state.conversation(&self.workspace, &ConversationId::new(id)).expect("conversation exists")
    }

    pub fn assignee(&self, id: &str) -> Option<String> {
        self.conversation(id).assignee.map(|a| a.to_string())
    }

    pub fn agent_view(&self, id: &str) -> AgentView {
        self.state.agent(&self.workspace, &AgentId::new(id)).expect("agent exists")
    }
}

/// The agents that effects assigned conversations to, in order.
pub fn assigned_agents(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Assigned { agent, .. } => Some(agent.to_string()),
            _ => None,
        })
        .collect()
}

/// An `Assigned` effect for a WhatsApp conversation `c-*` of contact `contact`.
pub fn assigned(
    conversation: &str,
    contact: &str,
    team: &str,
    agent: &str,
    name: &str,
    expected_response_ms: u64,
    reason: AssignReason,
) -> Effect {
    Effect::Assigned {
        workspace: WorkspaceId::new(WS),
        conversation: ConversationId::new(conversation),
        contact: ContactId::new(contact),
        channel: Channel::WhatsApp,
        team: TeamId::new(team),
        agent: AgentId::new(agent),
        agent_name: name.into(),
        expected_response_ms,
        reason,
    }
}

/// A team of `members` with `strategy`, made the workspace default, all members created and
/// online. Agent ids double as display names.
pub fn team_of(strategy: Strategy, members: &[&str]) -> Sim {
    let mut sim = Sim::new();
    for member in members {
        sim.agent(member, member);
    }
    sim.team(TeamSpec::new("support", strategy, members));
    sim.default_team("support");
    sim.online(members);
    sim
}
