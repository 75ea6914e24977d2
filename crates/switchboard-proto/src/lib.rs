//! Switchboard's protobuf messages and gRPC stubs, generated from `proto/` at build time.
//!
//! - [`raft::v1`]: the peer-only Raft transport between the nodes of a cluster.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Peer-only RPCs (`proto/raft/v1/raft.proto`).
pub mod raft {
    /// Version 1 of the peer protocol.
    pub mod v1 {
        tonic::include_proto!("raft.v1");
    }
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
