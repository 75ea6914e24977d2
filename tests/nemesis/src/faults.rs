//! The nemesis: a seeded schedule of faults, one at a time, each held for a few seconds, then
//! healed; after each, the time until a conversation published through NATS is visible to a
//! linearizable read again (the cluster's recovery, end to end).

use crate::cluster::Cluster;
use crate::proxy::Cuts;
use anyhow::{Result, bail};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use switchboard_client::gateway::Gateway;
use switchboard_client::pb;

/// The workspace recovery probes use.
const PROBE_WORKSPACE: &str = "probe";
/// A cluster that does not recover within this long is wedged: the run fails.
const RECOVERY_MAX: Duration = Duration::from_secs(90);

/// The kinds of fault.
pub const KINDS: [&str; 8] =
    ["kill-leader", "kill-follower", "pause-leader", "isolate-leader", "split", "bridge", "nats-kill", "wipe-node"];

/// The fault schedule and what it measured.
pub struct Nemesis {
    rng: SmallRng,
    nodes: usize,
    /// Faults injected.
    pub faults: usize,
    /// Per kind: the recovery time after each.
    pub recoveries: BTreeMap<&'static str, Vec<Duration>>,
    probes: u64,
    probe_ready: bool,
}

fn cut_between(a: &[usize], b: &[usize]) -> Cuts {
    a.iter().flat_map(|x| b.iter().map(move |y| (*x, *y))).collect()
}

impl Nemesis {
    /// A schedule from `seed` for a cluster of `nodes`.
    pub fn new(seed: u64, nodes: usize) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            nodes,
            faults: 0,
            recoveries: BTreeMap::new(),
            probes: 0,
            probe_ready: false,
        }
    }

    async fn leader_or_any(&mut self, cluster: &Cluster) -> usize {
        match cluster.leader().await {
            Some(leader) => leader,
            None => self.rng.random_range(0..self.nodes),
        }
    }

    /// One fault: a healthy pause, the fault held for a few seconds, the heal, and the recovery
    /// measured.
    pub async fn step(&mut self, cluster: &mut Cluster) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(1000..3000))).await;
        let kind = KINDS[self.rng.random_range(0..KINDS.len())];
        let hold = Duration::from_millis(self.rng.random_range(2000..6000));
        let mut order: Vec<usize> = (0..self.nodes).collect();
        order.shuffle(&mut self.rng);
        let leader = self.leader_or_any(cluster).await;
        let follower = *order.iter().find(|i| **i != leader).unwrap_or(&0);
        let started = Instant::now();
        eprintln!(
            "nemesis: fault {} {kind} (leader node {}) for {:.1}s",
            self.faults + 1,
            leader + 1,
            hold.as_secs_f64()
        );
        match kind {
            "kill-leader" | "kill-follower" | "wipe-node" => {
                let victim = match kind {
                    "kill-leader" => leader,
                    "kill-follower" => follower,
                    _ => order[0],
                };
                cluster.kill(victim);
                if kind == "wipe-node" {
                    cluster.wipe(victim)?;
                }
                tokio::time::sleep(hold).await;
                cluster.start_node(victim)?;
            }
            "pause-leader" => {
                cluster.pause(leader)?;
                tokio::time::sleep(hold).await;
                cluster.resume(leader)?;
            }
            "isolate-leader" | "split" | "bridge" => {
                let minority = (self.nodes - 1) / 2;
                let cuts = match kind {
                    "isolate-leader" => {
                        // The leader and (in a 5-node cluster) one other on the minority side.
                        let mut small = vec![leader];
                        small.extend(order.iter().filter(|i| **i != leader).take(minority - 1));
                        let rest: Vec<usize> = (0..self.nodes).filter(|i| !small.contains(i)).collect();
                        cut_between(&small, &rest)
                    }
                    "split" => cut_between(&order[..minority], &order[minority..]),
                    // Two sides that cannot talk, and one node that talks to both.
                    _ => {
                        let side = (self.nodes - 1) / 2;
                        cut_between(&order[..side], &order[side + 1..])
                    }
                };
                cluster.partition(cuts);
                tokio::time::sleep(hold).await;
                cluster.network.heal();
            }
            "nats-kill" => {
                cluster.nats.kill();
                tokio::time::sleep(hold).await;
                cluster.nats.restart().await?;
            }
            other => bail!("unknown fault {other}"),
        }
        self.faults += 1;
        let healed = Instant::now();
        let recovery = self.probe(cluster).await?;
        self.recoveries.entry(kind).or_default().push(recovery);
        eprintln!(
            "nemesis: fault {} {kind} healed after {:.1}s; recovered in {:.2}s",
            self.faults,
            (healed - started).as_secs_f64(),
            recovery.as_secs_f64()
        );
        Ok(())
    }

    /// Heals whatever may still be broken: resumes, restarts, reconnects.
    pub async fn heal_all(&mut self, cluster: &mut Cluster) -> Result<()> {
        cluster.network.heal();
        for i in 0..cluster.len() {
            match cluster.state(i) {
                crate::cluster::NodeState::Paused => cluster.resume(i)?,
                crate::cluster::NodeState::Down => cluster.start_node(i)?,
                crate::cluster::NodeState::Up => {}
            }
        }
        if !cluster.nats.running() {
            cluster.nats.restart().await?;
        }
        self.probe(cluster).await?;
        Ok(())
    }

    /// The time until a conversation published through NATS now is visible to a
    /// linearizable read.
    async fn probe(&mut self, cluster: &Cluster) -> Result<Duration> {
        let started = Instant::now();
        let client = cluster.client(Duration::from_secs(1), Duration::ZERO)?;
        if !self.probe_ready {
            // The probe workspace: one team, nobody in it; conversations just wait.
            loop {
                let done = setup_probe(&client).await;
                if done.is_ok() {
                    break;
                }
                if started.elapsed() > RECOVERY_MAX {
                    bail!("the cluster took no write for {RECOVERY_MAX:?}: {done:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.probe_ready = true;
        }
        self.probes += 1;
        let conversation = format!("probe-{}", self.probes);
        let event = pb::GatewayEvent {
            event_id: format!("{conversation}-open"),
            workspace: PROBE_WORKSPACE.into(),
            occurred_at_ms: 0,
            kind: Some(pb::gateway_event::Kind::ConversationOpened(pb::ConversationOpened {
                conversation: conversation.clone(),
                contact: conversation.clone(),
                channel: pb::Channel::WebChat.into(),
                ..Default::default()
            })),
        };
        let mut gateway = None;
        let mut published = false;
        loop {
            if started.elapsed() > RECOVERY_MAX {
                let mut views = Vec::new();
                for _ in 0..3 {
                    views.push(cluster.describe().await);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let stacks = cluster.dump_stacks();
                bail!(
                    "wedged: a conversation published through NATS was not visible {RECOVERY_MAX:?} after the heal (published: {published})\n\
                     the nodes, three times a second apart:\n{}\nthread stacks: {stacks:?}\n{}",
                    views.join("\n--\n"),
                    (0..cluster.len())
                        .map(|i| format!("node {}:\n{}", i + 1, cluster.log_tail(i, 15)))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            if gateway.is_none() {
                gateway = tokio::time::timeout(Duration::from_secs(2), Gateway::connect(&cluster.nats.url))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            if !published && let Some(gateway) = &gateway {
                published =
                    matches!(tokio::time::timeout(Duration::from_secs(2), gateway.publish(&event)).await, Ok(Ok(_)));
            }
            if published {
                let read = client
                    .get_conversation(pb::GetConversationRequest {
                        workspace: PROBE_WORKSPACE.into(),
                        conversation: conversation.clone(),
                        ..Default::default()
                    })
                    .await;
                if read.is_ok() {
                    return Ok(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn setup_probe(client: &switchboard_client::Client) -> Result<(), tonic::Status> {
    let ok = |r: Result<pb::WriteResponse, tonic::Status>| match r {
        Err(status) if status.code() != tonic::Code::AlreadyExists => Err(status),
        _ => Ok(()),
    };
    ok(client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: PROBE_WORKSPACE.into(),
            settings: Some(pb::WorkspaceSettings::default()),
            request_id: "probe-workspace".into(),
        })
        .await)?;
    ok(client
        .upsert_team(pb::UpsertTeamRequest {
            workspace: PROBE_WORKSPACE.into(),
            team: Some(pb::Team { id: "t".into(), strategy: pb::Strategy::LeastOpen.into(), ..Default::default() }),
            request_id: "probe-team".into(),
        })
        .await)?;
    ok(client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: PROBE_WORKSPACE.into(),
            settings: Some(pb::WorkspaceSettings { default_team: "t".into(), ..Default::default() }),
            request_id: "probe-default-team".into(),
        })
        .await)
}
