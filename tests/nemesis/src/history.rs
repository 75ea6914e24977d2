//! What the clients did and what they were told: every request with its invocation and
//! completion time and its answer (or that the answer never came).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_client::pb;

/// An event a gateway published through NATS.
#[derive(Clone, Debug)]
pub enum Published {
    /// A conversation opened, with its priority.
    Open {
        /// The conversation.
        conversation: String,
        /// Its priority (higher first).
        priority: u32,
    },
    /// A customer message on a conversation the gateway believes open.
    Message {
        /// The conversation.
        conversation: String,
    },
    /// A customer message on a conversation the gateway closed: it reopens it.
    Reopen {
        /// The conversation.
        conversation: String,
    },
    /// An agent's reply.
    Reply {
        /// The conversation.
        conversation: String,
    },
    /// The gateway closed the conversation.
    Close {
        /// The conversation.
        conversation: String,
    },
}

/// What a request was.
#[derive(Clone, Debug)]
pub enum Request {
    /// A gateway event through NATS; `event_id` is its Nats-Msg-Id.
    Publish {
        /// The event id.
        event_id: String,
        /// The event.
        event: Published,
    },
    /// `Presence.SetStatus`.
    SetStatus {
        /// The agent.
        agent: String,
        /// The status asked for.
        status: pb::AgentStatus,
        /// The idempotency key.
        request_id: String,
    },
    /// `Presence.Heartbeat`.
    Heartbeat {
        /// The agent.
        agent: String,
    },
    /// `Assignments.Claim`; `race` numbers the pair of claims made at once.
    Claim {
        /// The conversation.
        conversation: String,
        /// The agent claiming.
        agent: String,
        /// The idempotency key.
        request_id: String,
        /// The race this claim is part of.
        race: u64,
    },
    /// `Assignments.Assign`.
    Assign {
        /// The conversation.
        conversation: String,
        /// The agent.
        agent: String,
        /// The idempotency key.
        request_id: String,
    },
    /// `Assignments.Transfer` to an agent.
    Transfer {
        /// The conversation.
        conversation: String,
        /// The agent.
        agent: String,
        /// The idempotency key.
        request_id: String,
    },
    /// `Admin.UpsertAgent` setting `max_open`.
    UpsertAgent {
        /// The agent.
        agent: String,
        /// Its new max_open.
        max_open: u32,
        /// The idempotency key.
        request_id: String,
    },
    /// `Admin.RemoveAgent`.
    RemoveAgent {
        /// The agent.
        agent: String,
        /// The idempotency key.
        request_id: String,
    },
    /// `Admin.UpsertTeam` changing the strategy or the members.
    UpsertTeam {
        /// The strategy.
        strategy: pb::Strategy,
        /// The members.
        members: Vec<String>,
        /// The idempotency key.
        request_id: String,
    },
}

impl Request {
    /// The idempotency key the effects of this request carry as their `event_id`.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Publish { event_id, .. } => Some(event_id),
            Self::SetStatus { request_id, .. }
            | Self::Claim { request_id, .. }
            | Self::Assign { request_id, .. }
            | Self::Transfer { request_id, .. }
            | Self::UpsertAgent { request_id, .. }
            | Self::RemoveAgent { request_id, .. }
            | Self::UpsertTeam { request_id, .. } => Some(request_id),
            Self::Heartbeat { .. } => None,
        }
    }
}

/// The answer a request got.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It took effect; `log_index` when the answer said where (a JetStream ack says nothing of
    /// the log), and the effects the answer listed.
    Ok {
        /// Log index of the entry that applied it, when known.
        log_index: Option<u64>,
        /// The effects the answer carried.
        effects: Vec<pb::Effect>,
    },
    /// It was refused and did not take effect (a definite error).
    Refused {
        /// The gRPC code.
        code: tonic::Code,
        /// The message.
        message: String,
    },
    /// No definite answer: it may or may not have taken effect.
    Unknown {
        /// The last error.
        error: String,
    },
}

/// One request and its answer.
#[derive(Clone, Debug)]
pub struct Op {
    /// Which client made it (`gateway-3`, `agent-a01`, `admin`, ...).
    pub process: String,
    /// What it asked.
    pub request: Request,
    /// When it was sent, since the start of the run.
    pub invoked: Duration,
    /// When the answer came (or the client gave up).
    pub completed: Duration,
    /// The answer.
    pub outcome: Outcome,
}

impl Op {
    /// Whether the request took effect for sure.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// The log index the answer named.
    pub fn log_index(&self) -> Option<u64> {
        match &self.outcome {
            Outcome::Ok { log_index, .. } => *log_index,
            _ => None,
        }
    }
}

/// The shared, append-only history of a run.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self { start: Instant::now(), ops: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Time since the start of the run.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a completed request.
    pub fn record(&self, process: &str, request: Request, invoked: Duration, outcome: Outcome) {
        let op = Op { process: process.to_owned(), request, invoked, completed: self.now(), outcome };
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    /// Every request so far, in completion order.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|ops| ops.clone()).unwrap_or_default()
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome of a gRPC write: success with its log index and effects, a definite refusal, or
/// unknown (unreachable, timed out, cancelled). `ALREADY_EXISTS` means an earlier attempt with
/// the same key took effect (refusals are not remembered by the cluster).
pub fn grpc_outcome<T>(result: &Result<T, tonic::Status>, index: impl Fn(&T) -> (u64, Vec<pb::Effect>)) -> Outcome {
    match result {
        Ok(answer) => {
            let (log_index, effects) = index(answer);
            Outcome::Ok { log_index: Some(log_index), effects }
        }
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            Outcome::Ok { log_index: None, effects: Vec::new() }
        }
        Err(status) => match status.code() {
            tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::OutOfRange => Outcome::Refused { code: status.code(), message: status.message().to_owned() },
            _ => Outcome::Unknown { error: format!("{:?}: {}", status.code(), status.message()) },
        },
    }
}
