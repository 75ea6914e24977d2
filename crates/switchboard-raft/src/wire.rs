//! The answers of the two forwarding RPCs (`Propose`, `ReadIndex`) as they cross the peer link.
//!
//! [`ProposeError`] and [`ReadError`] are library errors: their variants and texts may change
//! with the code. What a leader sends a follower is this module's types instead, encoded with
//! postcard under [`PAYLOAD_FORMAT`](crate::network::PAYLOAD_FORMAT). postcard encodes variants
//! by position, so these enums only ever grow at the end; any other change to them, or to the
//! shape of what they carry, raises `PAYLOAD_FORMAT`. The test below pins their bytes.

use crate::error::{LeaderHint, ProposeError, ReadError};
use crate::node::Committed;
use serde::{Deserialize, Serialize};

/// A write forwarded to the leader: the inputs and who made them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProposeRequest {
    /// The inputs.
    pub(crate) inputs: Vec<switchboard_core::Input>,
    /// For the audit trail.
    pub(crate) actor: Option<crate::audit::Actor>,
}

/// The leader's answer to a forwarded write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ProposeReply {
    /// Committed and applied.
    Committed(Committed),
    /// The answering node is not the leader.
    NotLeader(Option<LeaderHint>),
    /// The outcome is unknown.
    Uncertain(String),
    /// No leader could take the write.
    Unavailable(String),
    /// The write is unacceptable.
    Invalid(String),
    /// The leader is stopping.
    ShuttingDown,
}

impl From<Result<Committed, ProposeError>> for ProposeReply {
    fn from(result: Result<Committed, ProposeError>) -> Self {
        match result {
            Ok(committed) => Self::Committed(committed),
            Err(ProposeError::NotLeader { leader }) => Self::NotLeader(leader),
            Err(ProposeError::Uncertain { reason }) => Self::Uncertain(reason),
            Err(ProposeError::Unavailable { reason }) => Self::Unavailable(reason),
            Err(ProposeError::Invalid(reason)) => Self::Invalid(reason),
            Err(ProposeError::ShuttingDown) => Self::ShuttingDown,
        }
    }
}

impl From<ProposeReply> for Result<Committed, ProposeError> {
    fn from(reply: ProposeReply) -> Self {
        match reply {
            ProposeReply::Committed(committed) => Ok(committed),
            ProposeReply::NotLeader(leader) => Err(ProposeError::NotLeader { leader }),
            ProposeReply::Uncertain(reason) => Err(ProposeError::Uncertain { reason }),
            ProposeReply::Unavailable(reason) => Err(ProposeError::Unavailable { reason }),
            ProposeReply::Invalid(reason) => Err(ProposeError::Invalid(reason)),
            ProposeReply::ShuttingDown => Err(ProposeError::ShuttingDown),
        }
    }
}

/// The leader's answer to a forwarded read-index request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ReadIndexReply {
    /// The index a linearizable read must wait for.
    Index(u64),
    /// The answering node is not the leader.
    NotLeader(Option<LeaderHint>),
    /// Leadership could not be confirmed.
    Unavailable(String),
    /// The leader is stopping.
    ShuttingDown,
}

impl From<Result<u64, ReadError>> for ReadIndexReply {
    fn from(result: Result<u64, ReadError>) -> Self {
        match result {
            Ok(index) => Self::Index(index),
            Err(ReadError::NotLeader { leader }) => Self::NotLeader(leader),
            Err(ReadError::Unavailable { reason }) => Self::Unavailable(reason),
            Err(ReadError::ShuttingDown) => Self::ShuttingDown,
        }
    }
}

impl From<ReadIndexReply> for Result<u64, ReadError> {
    fn from(reply: ReadIndexReply) -> Self {
        match reply {
            ReadIndexReply::Index(index) => Ok(index),
            ReadIndexReply::NotLeader(leader) => Err(ReadError::NotLeader { leader }),
            ReadIndexReply::Unavailable(reason) => Err(ReadError::Unavailable { reason }),
            ReadIndexReply::ShuttingDown => Err(ReadError::ShuttingDown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeInfo;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes a leader of this build sends. If this fails, the wire changed: keep the old
    /// encoding readable or raise `PAYLOAD_FORMAT` (peers of mixed versions then refuse each
    /// other's forwarded calls with a clear error instead of misreading them).
    #[test]
    fn the_encoding_of_forwarded_answers_is_pinned() {
        let leader = LeaderHint { id: 2, node: NodeInfo::new("10.0.0.2:7002", "10.0.0.2:7102") };
        let committed = Committed { index: 7, at_ms: 1_000, first_effect_sequence: 3, outcomes: Vec::new() };
        let cases: Vec<(ProposeReply, &str)> = vec![
            (ProposeReply::Committed(committed), "0007d00f0300"),
            (
                ProposeReply::NotLeader(Some(leader.clone())),
                "0101020d31302e302e302e323a373030320d31302e302e302e323a37313032",
            ),
            (ProposeReply::NotLeader(None), "0100"),
            (ProposeReply::Uncertain("u".to_owned()), "020175"),
            (ProposeReply::Unavailable("n".to_owned()), "03016e"),
            (ProposeReply::Invalid("i".to_owned()), "040169"),
            (ProposeReply::ShuttingDown, "05"),
        ];
        for (reply, expected) in cases {
            assert_eq!(hex(&postcard::to_allocvec(&reply).expect("encodes")), expected, "{reply:?}");
        }
        let reads: Vec<(ReadIndexReply, &str)> = vec![
            (ReadIndexReply::Index(300), "00ac02"),
            (ReadIndexReply::NotLeader(None), "0100"),
            (ReadIndexReply::Unavailable("n".to_owned()), "02016e"),
            (ReadIndexReply::ShuttingDown, "03"),
        ];
        for (reply, expected) in reads {
            assert_eq!(hex(&postcard::to_allocvec(&reply).expect("encodes")), expected, "{reply:?}");
        }
        let request = ProposeRequest {
            inputs: vec![switchboard_core::Input::Tick],
            actor: Some(crate::audit::Actor { role: "admin".into(), credential: "a".into() }),
        };
        assert_eq!(hex(&postcard::to_allocvec(&request).expect("encodes")), "0100010561646d696e0161");
    }

    #[test]
    fn every_error_crosses_the_link_unchanged() {
        let leader = Some(LeaderHint { id: 3, node: NodeInfo::new("a:1", "b:2") });
        let errors = [
            ProposeError::NotLeader { leader: leader.clone() },
            ProposeError::Uncertain { reason: "u".to_owned() },
            ProposeError::Unavailable { reason: "n".to_owned() },
            ProposeError::Invalid("i".to_owned()),
            ProposeError::ShuttingDown,
        ];
        for error in errors {
            let sent = ProposeReply::from(Err::<Committed, _>(error.clone()));
            let bytes = postcard::to_allocvec(&sent).expect("encodes");
            let received: ProposeReply = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(Result::<Committed, ProposeError>::from(received), Err(error));
        }
        let errors = [
            ReadError::NotLeader { leader },
            ReadError::Unavailable { reason: "n".to_owned() },
            ReadError::ShuttingDown,
        ];
        for error in errors {
            let sent = ReadIndexReply::from(Err::<u64, _>(error.clone()));
            let bytes = postcard::to_allocvec(&sent).expect("encodes");
            let received: ReadIndexReply = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(Result::<u64, ReadError>::from(received), Err(error));
        }
    }
}
