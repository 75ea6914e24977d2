//! # switchboard-server
//!
//! The public face of a Switchboard node: the `switchboard.v1` gRPC services over a
//! [`switchboard_raft::RaftNode`], plus what a node runs beside them.
//!
//! - [`serve`] (`server.rs`): binds the five services, `grpc.health.v1` and reflection to a
//!   listener, with request size limits (every service, health and reflection included) and
//!   graceful shutdown.
//! - `services/`: one file per service (`Events`, `Presence`, `Assignments`, `Admin`,
//!   `Cluster`). Writes take `Api::write` (`api.rs`), which gives every write an idempotency key
//!   and proposes it through Raft from any node; reads take `Api::read`, linearizable unless the
//!   request asks for a local read. Calls that must run on the leader but are not log writes
//!   (heartbeats, membership changes) are forwarded to the leader's public API once.
//! - [`convert`]: protobuf ⇄ core types, one file per family; every shape check names its
//!   field in a [`convert::ConvertError`]. Public for the other edges that speak protobuf: NATS
//!   ingest and egress (`switchboard-nats`) and `switchboard ctl apply`, which rehearses its
//!   writes on a local state machine with the same conversions the admin service makes.
//! - [`auth`]: bearer tokens, roles and workspace scopes; every `switchboard.v1` RPC asks who
//!   its caller is and whether it may.
//! - `status.rs`: the one place library errors become gRPC statuses.
//! - `watch.rs`: the ring of recent applied entries that makes Watch resumable, and the limits
//!   on Watch streams (how far one may fall behind, how many may be open).
//! - [`presence`]: leader-side heartbeat supervision of agents.
//! - [`metrics`]: series names, descriptions and the sampler.
//!
//! **Architecture Invariant:** only this crate (and the client and binary above it) knows
//! protobuf; the core and raft crates never see a generated type.

mod api;
pub mod auth;
pub mod convert;
mod grpc_metrics;
pub mod metrics;
pub mod presence;
mod process;
mod server;
mod services;
mod status;
mod watch;

pub use presence::PresenceConfig;
pub use server::{ANONYMOUS_REQUEST_MAX_BYTES, SERVICE_NAMES, ServeError, ServerConfig, serve};
pub use services::events::PUBLISH_BATCH_MAX_EVENTS;
pub use status::LEADER_METADATA_KEY;
pub use watch::{WatchHub, WatchLimits};
