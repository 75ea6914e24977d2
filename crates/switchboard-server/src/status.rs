//! Errors of the layers below, as gRPC statuses with the right code and a message a person can
//! act on. This is the only place `tonic::Status` is made from a library error.

use switchboard_core::ErrorKind;
use switchboard_raft::{LeaderHint, MembershipError, ProposeError, ReadError, Rejection};
use tonic::Status;

/// Metadata key carrying the leader's public address on `UNAVAILABLE` answers, when known.
pub const LEADER_METADATA_KEY: &str = "switchboard-leader";

fn with_leader(mut status: Status, leader: Option<&LeaderHint>) -> Status {
    if let Some(leader) = leader
        && !leader.node.api_addr.is_empty()
        && let Ok(value) = leader.node.api_addr.parse()
    {
        status.metadata_mut().insert(LEADER_METADATA_KEY, value);
    }
    status
}

/// A command the state machine refused.
pub(crate) fn rejection(rejection: &Rejection) -> Status {
    let message = rejection.message.clone();
    match rejection.kind {
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::FailedPrecondition => Status::failed_precondition(message),
        ErrorKind::AlreadyApplied => {
            // The core names the event id; a request id's key is internal (see
            // `api::request_event_id`) and not shown.
            let which = if message.chars().any(char::is_control) { "this request_id".to_owned() } else { message };
            Status::already_exists(format!(
                "already processed ({which}): the first call was applied and its answer carried the outcome; \
                 this repeat changed nothing"
            ))
        }
        ErrorKind::Internal => Status::internal(format!(
            "{message}. The cluster refused this input the same way on every node and keeps serving; \
             please report it"
        )),
    }
}

/// The gRPC code a rejection has, for batch results.
pub(crate) fn rejection_code(rejection: &Rejection) -> tonic::Code {
    match rejection.kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::AlreadyApplied => tonic::Code::AlreadyExists,
        ErrorKind::Internal => tonic::Code::Internal,
    }
}

/// A write that did not, or may not, take effect.
pub(crate) fn propose(error: ProposeError) -> Status {
    match &error {
        ProposeError::NotLeader { leader } => {
            with_leader(Status::unavailable(format!("{error}; retry, or call the leader")), leader.as_ref())
        }
        ProposeError::Uncertain { .. } => Status::unavailable(format!(
            "{error}. Retrying with the same request_id (or event_id) is safe: it is applied at most once"
        )),
        ProposeError::Unavailable { .. } => Status::unavailable(format!(
            "{error}. A majority of the cluster's voters must be up and connected; retry shortly"
        )),
        ProposeError::Invalid(_) => Status::invalid_argument(error.to_string()),
        ProposeError::ShuttingDown => Status::unavailable("this node is shutting down; call another node"),
    }
}

/// A read that could not be made linearizable.
pub(crate) fn read(error: ReadError) -> Status {
    match &error {
        ReadError::NotLeader { leader } => with_leader(Status::unavailable(error.to_string()), leader.as_ref()),
        ReadError::Unavailable { .. } => Status::unavailable(format!(
            "{error}. Retry, or ask for consistency CONSISTENCY_LOCAL to read this node's state without a quorum"
        )),
        ReadError::ShuttingDown => Status::unavailable("this node is shutting down; call another node"),
    }
}

/// A membership change that failed.
pub(crate) fn membership(error: MembershipError) -> Status {
    match &error {
        MembershipError::NotLeader { leader } => with_leader(Status::unavailable(error.to_string()), leader.as_ref()),
        MembershipError::AlreadyInitialized => Status::failed_precondition(error.to_string()),
        MembershipError::Invalid(_) => Status::failed_precondition(error.to_string()),
        MembershipError::Failed(_) => Status::unavailable(error.to_string()),
    }
}

/// A request of the wrong shape (a conversion's error names the field).
impl From<crate::convert::ConvertError> for Status {
    fn from(error: crate::convert::ConvertError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}
