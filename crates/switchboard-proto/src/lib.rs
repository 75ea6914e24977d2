//! Switchboard's protobuf messages and gRPC stubs, generated from `proto/` at build time.
//!
//! - [`switchboard::v1`]: the public API (events, effects, presence, assignments, admin,
//!   cluster) that gateways, agent apps, `switchboard ctl` and dashboards use.
//! - [`raft::v1`]: the peer-only Raft transport between the nodes of a cluster.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Peer-only RPCs (`proto/raft/v1/raft.proto`).
pub mod raft {
    /// Version 1 of the peer protocol.
    pub mod v1 {
        tonic::include_proto!("raft.v1");
    }
}

/// The public API (`proto/switchboard/v1/*.proto`).
pub mod switchboard {
    /// Version 1 of the public API.
    pub mod v1 {
        tonic::include_proto!("switchboard.v1");
    }
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
