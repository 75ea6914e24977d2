//! Issue 12: the replicated log is the outbox. Real `switchboard node` processes and a real
//! nats-server: effects committed while NATS is down reach `SWITCHBOARD_EFFECTS` once NATS is
//! back, exactly once and in log order, whatever the nodes did meanwhile (SIGKILL of all of
//! them, or a graceful rolling restart; with or without a snapshot covering those entries).
//! And a node that starts while another leads never touches the leader's NATS consumer.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::nats::NatsServer;
use support::processes::NodeProcesses;
use switchboard_client::{Client, pb};

/// `(log index, sequence)` of effects.
type Ids = BTreeSet<(u64, u32)>;

fn ids(effects: &[pb::Effect]) -> Ids {
    effects.iter().map(|e| (e.log_index, e.sequence)).collect()
}

async fn open(client: &Client, conversation: &str) -> Ids {
    let published = client
        .publish(pb::PublishRequest { event: Some(support::opened("acme", conversation)) })
        .await
        .unwrap_or_else(|e| panic!("open {conversation}: {e}"));
    assert!(!published.effects.is_empty(), "{conversation} had no effect");
    ids(&published.effects)
}

/// Every `(log index, sequence)` in `SWITCHBOARD_EFFECTS`, in stream order.
async fn stream_ids(nats: &NatsServer) -> Vec<(u64, u32)> {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream("SWITCHBOARD_EFFECTS").await else { return Vec::new() };
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let header = |name: &str| {
            message.headers.get(name).and_then(|v| v.as_str().parse::<u64>().ok()).expect("effect headers")
        };
        out.push((header("Switchboard-Log-Index"), header("Switchboard-Sequence") as u32));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Restart {
    /// SIGKILL every node, then start them all.
    KillAll,
    /// SIGTERM one node, start it, wait until it serves, then the next.
    Rolling,
}

async fn effects_survive_an_outage(restart: Restart, snapshot: bool) {
    let mut nats = NatsServer::start().await;
    let raft = if snapshot { "[raft]\nsnapshot_every_entries = 100\nkeep_entries_after_snapshot = 0\n" } else { "" };
    let mut nodes = NodeProcesses::start(3, &format!("[nats]\nurl = \"{}\"\n{raft}", nats.url())).await;
    let client = nodes.client();
    support::setup_workspace(&client, "acme", pb::Strategy::LeastOpen, 3, 10_000).await;
    let mut expected = Ids::new();
    for n in 0..10 {
        expected.extend(open(&client, &format!("before-{n}")).await);
    }

    // NATS goes away; the cluster keeps deciding.
    nats.kill();
    let set = client
        .set_status(pb::SetStatusRequest {
            workspace: "acme".into(),
            agent: "a1".into(),
            status: pb::AgentStatus::Away.into(),
            ..Default::default()
        })
        .await
        .expect("a1 away");
    expected.insert((set.log_index, 0)); // the status effect: the reproduction of the issue
    let during = if snapshot { 150 } else { 20 };
    for n in 0..during {
        expected.extend(open(&client, &format!("during-{n}")).await);
    }
    let snapshots: Vec<bool> =
        (1..=3).map(|i| nodes.dir.path().join(format!("node{i}/state/snapshot.bin")).exists()).collect();
    if snapshot {
        // The snapshot covers entries whose effects are not in NATS yet.
        assert!(snapshots.iter().any(|s| *s), "no node took a snapshot while NATS was down");
    }

    match restart {
        Restart::KillAll => {
            for i in 0..3 {
                nodes.kill(i).await;
            }
            for i in 0..3 {
                nodes.start_node(i);
            }
        }
        Restart::Rolling => {
            for i in 0..3 {
                nodes.stop(i).await;
                nodes.start_node(i);
                // It has a leader and has caught up before the next one goes.
                let target = client.status_of(nodes.leader().await).await.map_or(0, |s| s.applied_index);
                let mut caught_up = false;
                for _ in 0..400 {
                    if nodes.client().status_of(i).await.is_ok_and(|s| s.leader_id > 0 && s.applied_index >= target) {
                        caught_up = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(caught_up, "node {} did not catch up after its restart:\n{}", i + 1, nodes.log(i));
            }
        }
    }
    nodes.leader().await;
    // Committed after the restart, still without NATS.
    expected.extend(open(&client, "after-restart").await);

    nats.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = stream_ids(&nats).await;
        let have: Ids = got.iter().copied().collect();
        if expected.is_subset(&have) || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let have: Ids = got.iter().copied().collect();
    eprintln!("DEBUG expected {} got {} snapshots {snapshots:?}", expected.len(), got.len());
    let missing: Vec<_> = expected.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "{} of {} effects never reached the stream ({restart:?}, snapshot {snapshot}): {missing:?}\nleader log:\n{}",
        missing.len(),
        expected.len(),
        nodes.log(nodes.leader().await)
    );
    assert_eq!(have.len(), got.len(), "an effect was stored twice");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "effects out of log order: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_committed_while_nats_is_down_survive_killing_every_node() {
    effects_survive_an_outage(Restart::KillAll, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_committed_while_nats_is_down_survive_killing_every_node_after_a_snapshot() {
    effects_survive_an_outage(Restart::KillAll, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_committed_while_nats_is_down_survive_a_rolling_restart() {
    effects_survive_an_outage(Restart::Rolling, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_committed_while_nats_is_down_survive_a_rolling_restart_after_a_snapshot() {
    effects_survive_an_outage(Restart::Rolling, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_while_another_leads_never_touches_the_consumer() {
    let nats = NatsServer::start().await;
    let mut nodes = NodeProcesses::start(3, &format!("[nats]\nurl = \"{}\"\n", nats.url())).await;
    let client = nodes.client();
    support::setup_workspace(&client, "acme", pb::Strategy::RoundRobin, 2, 100).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let consumer_info = || async {
        for _ in 0..200 {
            if let Ok(stream) = js.get_stream("SWITCHBOARD").await
                && let Ok(info) = stream.consumer_info("switchboard-assigner").await
            {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the leader never created its consumer");
    };
    let gateway = switchboard_client::gateway::Gateway::connect(&nats.url()).await.expect("gateway");
    // A node that was leader when it died restarts with its old vote, for itself: openraft may
    // report it as leader for a moment before it learns of the new one. That moment must not
    // start its NATS consumer or effect publisher.
    for round in 0..3 {
        let old_leader = nodes.leader().await;
        nodes.kill(old_leader).await;
        let leader = nodes.leader().await;
        // The new leader's consumer (it recreates it once, on taking over).
        let mut before = consumer_info().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let term = before.config.metadata.get("switchboard-leader-term").cloned().unwrap_or_default();
            let status = client.status_of(leader).await.expect("status");
            if term == status.term.to_string() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: node {leader} leads in term {} but the consumer is of term {term:?}",
                status.term
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            before = consumer_info().await;
        }
        let log_before = nodes.log(old_leader).len();
        nodes.start_node(old_leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Events still flow through the same consumer.
        let conversation = format!("after-restart-{round}");
        gateway.publish(&support::opened("acme", &conversation)).await.expect("published");
        let mut applied = false;
        for _ in 0..200 {
            let request = pb::GetConversationRequest {
                workspace: "acme".into(),
                conversation: conversation.clone(),
                ..Default::default()
            };
            if client.get_conversation(request).await.is_ok() {
                applied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(applied, "{conversation} was not applied");
        assert_eq!(nodes.leader().await, leader, "the leader changed; this round proves nothing");
        let after = consumer_info().await;
        assert_eq!(after.created, before.created, "round {round}: the consumer was deleted and created again");
        let log = nodes.log(old_leader);
        let restarted = &log[log_before.min(log.len())..];
        assert!(!restarted.contains("consuming SWITCHBOARD"), "the restarted node started consuming:\n{restarted}");
        assert!(!restarted.contains("publishing effects"), "the restarted node started publishing:\n{restarted}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_older_than_the_ring_is_served_from_the_outbox_and_out_of_range_once_released() {
    use switchboard_nats::NatsConfig;
    use switchboard_server::ServerConfig;
    // A ring of a handful of effects, and NATS configured but down: nothing is confirmed.
    let unreachable = format!("nats://127.0.0.1:{}", {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    });
    let config = ServerConfig { watch_retained_effects: 5, watch_backlog_max_effects: 5, ..support::unsupervised() };
    let nats = NatsConfig { url: unreachable, ..NatsConfig::default() };
    let cluster = support::TestCluster::start_with_nats(1, config, Some(nats)).await;
    let client = cluster.client().await;
    support::setup_workspace(&client, "acme", pb::Strategy::RoundRobin, 2, 1_000).await;
    let mut expected = Vec::new();
    let mut first_index = 0;
    for n in 0..30 {
        let conversation = format!("c{n}");
        let published = client
            .publish(pb::PublishRequest { event: Some(support::opened("acme", &conversation)) })
            .await
            .expect("open");
        if n == 0 {
            first_index = published.log_index;
        }
        expected.push(conversation);
    }
    let mut watch =
        client.watch(pb::WatchRequest { workspace: "acme".into(), from_index: first_index, ..Default::default() });
    let mut assigned = Vec::new();
    while assigned.len() < expected.len() {
        let effect = tokio::time::timeout(Duration::from_secs(10), watch.next_effect())
            .await
            .expect("effects within 10 s")
            .expect("stream open")
            .unwrap_or_else(|status| panic!("after {} effects: {status:?}", assigned.len()));
        if let Some(pb::effect::Kind::Assigned(a)) = &effect.kind {
            assigned.push(a.conversation.clone());
        }
    }
    assert_eq!(assigned, expected);

    // Without NATS the leader releases the outbox about once a second: then the same Watch
    // is OUT_OF_RANGE, naming where it could start.
    let config = ServerConfig { watch_retained_effects: 5, watch_backlog_max_effects: 5, ..support::unsupervised() };
    let cluster = support::TestCluster::start_with(1, config).await;
    let client = cluster.client().await;
    support::setup_workspace(&client, "acme", pb::Strategy::RoundRobin, 2, 1_000).await;
    let mut first_index = 0;
    for n in 0..30 {
        let published = client
            .publish(pb::PublishRequest { event: Some(support::opened("acme", &format!("c{n}"))) })
            .await
            .expect("open");
        if n == 0 {
            first_index = published.log_index;
        }
    }
    let mut assignments = switchboard_client::pb::assignments_client::AssignmentsClient::connect(format!(
        "http://{}",
        cluster.api_addrs[0]
    ))
    .await
    .expect("connect");
    let mut refused = None;
    for _ in 0..100 {
        let request = pb::WatchRequest { workspace: "acme".into(), from_index: first_index, ..Default::default() };
        match assignments.watch(request).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let refused = refused.expect("the released effects are out of range within 5 s");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
}
