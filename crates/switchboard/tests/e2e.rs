//! End to end over real gRPC: a 3-node cluster on 127.0.0.1, driven by `switchboard ctl` and by
//! the Rust client.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use support::{TestCluster, assigned_agent, opened, setup_workspace};
use switchboard_client::pb;
use tonic::Code;

fn ctl(cluster: &TestCluster, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("ctl")
        .arg("--nodes")
        .arg(cluster.api_addrs.join(","))
        .args(args)
        .output()
        .expect("switchboard runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

const WORKSPACE_FILE: &str = r#"
workspace: acme
settings:
  default_team: support
agents:
  - {id: mary, name: Mary, max_open: 2}
  - {id: john, name: John, max_open: 2}
  - {id: ana, name: Ana, max_open: 2, languages: [es]}
teams:
  - id: support
    strategy: round_robin
    members: [mary, john]
    templates: {overcapacity: "Everyone is busy"}
  - id: soporte
    strategy: least_open
    members: [ana]
    timezone: America/Sao_Paulo
rules:
  - id: spanish
    when: {languages: [es]}
    team: soporte
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_route_and_watch_on_every_node() {
    let cluster = TestCluster::start(3).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("acme.yaml");
    std::fs::write(&path, WORKSPACE_FILE).expect("write");
    let path_arg = path.to_str().expect("utf-8 path");

    // First apply creates everything; the diff says so.
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok, "{out}");
    for expected in
        ["+ workspace (new)", "+ agent mary (Mary)", "+ team support (round_robin", "~ routing rules", "applied"]
    {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // Applying the same file again changes nothing.
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok && out.contains("workspace acme: no changes"), "{out}");
    // A change shows field by field, and a dry run applies nothing.
    std::fs::write(
        &path,
        WORKSPACE_FILE.replace("{id: john, name: John, max_open: 2}", "{id: john, name: John, max_open: 3}"),
    )
    .expect("write");
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg, "--dry-run"]);
    assert!(ok && out.contains("~ agent john") && out.contains("max_open: 2 -> 3") && out.contains("dry run"), "{out}");
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok && out.contains("1 change(s)"), "{out}");
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok && out.contains("no changes"), "{out}");

    // Agents online, through different nodes.
    for agent in ["mary", "john", "ana"] {
        let (ok, out) = ctl(&cluster, &["--workspace", "acme", "set-status", agent, "online"]);
        assert!(ok, "{out}");
    }

    // A Watch on every node, filtered by workspace.
    let mut watches = Vec::new();
    for i in 0..3 {
        let client = cluster.client_of(i).await;
        watches.push(client.watch(pb::WatchRequest { workspace: "acme".into(), ..Default::default() }));
    }
    // Let the streams subscribe before publishing.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Conversations published through a follower.
    let follower = cluster.follower().await;
    let client = cluster.client_of(follower).await;
    let mut expected = BTreeMap::new();
    for n in 0..5 {
        let conversation = format!("c{n}");
        let published =
            client.publish(pb::PublishRequest { event: Some(opened("acme", &conversation)) }).await.expect("publish");
        let agent = assigned_agent(&published.effects).expect("assigned at once");
        expected.insert(conversation, agent);
    }
    // Round robin over mary and john, until mary (max_open 2) is full; john now takes 3.
    let mut counts = BTreeMap::new();
    for agent in expected.values() {
        *counts.entry(agent.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([("john".to_owned(), 3), ("mary".to_owned(), 2)]));
    // A Spanish conversation goes to soporte by rule.
    let mut spanish = opened("acme", "es-1");
    if let Some(pb::gateway_event::Kind::ConversationOpened(open)) = &mut spanish.kind {
        open.language = "es".into();
    }
    let published = client.publish(pb::PublishRequest { event: Some(spanish) }).await.expect("publish");
    assert_eq!(assigned_agent(&published.effects).as_deref(), Some("ana"));
    expected.insert("es-1".to_owned(), "ana".to_owned());
    // Full house: the next one queues with its position.
    let published =
        client.publish(pb::PublishRequest { event: Some(opened("acme", "c-wait")) }).await.expect("publish");
    let queued = published.effects.iter().find_map(|e| match &e.kind {
        Some(pb::effect::Kind::Queued(q)) => Some(q.clone()),
        _ => None,
    });
    let queued = queued.expect("queued");
    assert_eq!((queued.position, queued.message.as_str()), (1, "Everyone is busy"));

    // Every node's Watch sees every assignment, in log order.
    for (i, watch) in watches.iter_mut().enumerate() {
        let mut seen = BTreeMap::new();
        while seen.len() < expected.len() {
            let effect = tokio::time::timeout(Duration::from_secs(10), watch.next_effect())
                .await
                .unwrap_or_else(|_| panic!("node {i}'s watch saw only {seen:?}"))
                .expect("stream open")
                .expect("no error");
            if let Some(pb::effect::Kind::Assigned(a)) = effect.kind {
                seen.insert(a.conversation, a.agent);
            }
        }
        assert_eq!(seen, expected, "node {i}'s watch");
    }
    // Linearizable reads on every node agree; the queued one has its position.
    for i in 0..3 {
        let client = cluster.client_of(i).await;
        for (conversation, agent) in &expected {
            let info = client
                .get_conversation(pb::GetConversationRequest {
                    workspace: "acme".into(),
                    conversation: conversation.clone(),
                    ..Default::default()
                })
                .await
                .expect("read");
            assert_eq!(&info.assignee, agent, "node {i}, {conversation}");
            assert_eq!(info.state, pb::ConversationState::Assigned as i32);
        }
        let waiting = client
            .get_conversation(pb::GetConversationRequest {
                workspace: "acme".into(),
                conversation: "c-wait".into(),
                ..Default::default()
            })
            .await
            .expect("read");
        assert_eq!(waiting.queue.map(|q| q.position), Some(1), "node {i}");
        let queue = client
            .list_queue(pb::ListQueueRequest { workspace: "acme".into(), team: "support".into(), ..Default::default() })
            .await
            .expect("queue");
        assert_eq!(queue.depth, 1);
        assert_eq!(queue.entries[0].conversation, "c-wait");
    }
    // Closing frees an agent who takes the waiting conversation in the same entry.
    let closed = client
        .close(pb::CloseRequest { workspace: "acme".into(), conversation: "c0".into(), ..Default::default() })
        .await
        .expect("close");
    assert_eq!(assigned_agent(&closed.effects).as_deref(), Some(expected["c0"].as_str()));

    // ctl reads work from the command line too.
    let (ok, out) = ctl(&cluster, &["--workspace", "acme", "agents"]);
    assert!(ok && out.contains("mary") && out.contains("online") && out.contains("3/3"), "{out}");
    let (ok, out) = ctl(&cluster, &["status"]);
    assert!(ok && out.contains("leader") && out.matches("follower").count() == 2, "{out}");
    let (ok, out) = ctl(&cluster, &["--workspace", "acme", "conversation", "c-wait"]);
    assert!(ok && out.contains("assigned"), "{out}");

    // Health and state digests: every node serving, replicas identical once caught up.
    for addr in &cluster.api_addrs {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: "switchboard.v1.Assignments".into() })
            .await
            .expect("health");
        assert_eq!(
            response.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    cluster.assert_replicas_agree().await;
    for i in 0..3 {
        let status = cluster.client_of(i).await.status(pb::StatusRequest {}).await.expect("status");
        assert_eq!(status.members.len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_race_has_exactly_one_winner() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    setup_workspace(&client, "race", pb::Strategy::Manual, 2, 50).await;
    let first = cluster.client_of(0).await;
    let second = cluster.client_of(2).await;
    for n in 0..10 {
        let conversation = format!("pick-{n}");
        let published =
            client.publish(pb::PublishRequest { event: Some(opened("race", &conversation)) }).await.expect("publish");
        assert!(assigned_agent(&published.effects).is_none(), "manual teams never assign");
        let claim = |client: switchboard_client::Client, agent: &'static str, conversation: String| async move {
            client
                .claim(pb::ClaimRequest {
                    workspace: "race".into(),
                    conversation,
                    agent: agent.into(),
                    ..Default::default()
                })
                .await
        };
        let (a, b) = tokio::join!(
            claim(first.clone(), "a1", conversation.clone()),
            claim(second.clone(), "a2", conversation.clone())
        );
        let (winner, loser) = match (a, b) {
            (Ok(won), Err(lost)) => (("a1", won), lost),
            (Err(lost), Ok(won)) => (("a2", won), lost),
            other => panic!("expected exactly one winner, got {other:?}"),
        };
        assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
        assert!(
            loser.message().contains(&conversation) && loser.message().contains("not waiting"),
            "{}",
            loser.message()
        );
        assert_eq!(assigned_agent(&winner.1.effects).as_deref(), Some(winner.0));
        let info = client
            .get_conversation(pb::GetConversationRequest {
                workspace: "race".into(),
                conversation,
                ..Default::default()
            })
            .await
            .expect("read");
        assert_eq!(info.assignee, winner.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_survive_a_killed_leader() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    setup_workspace(&client, "ha", pb::Strategy::LeastOpen, 4, 10_000).await;
    // The watch and the writer start on the leader, the node about to die.
    let leader = cluster.leader().await;
    let mut order: Vec<String> = vec![cluster.api_addrs[leader].clone()];
    order.extend(cluster.api_addrs.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, a)| a.clone()));
    let client = switchboard_client::Client::connect(order).await.expect("client");
    let mut watch = client.watch(pb::WatchRequest { workspace: "ha".into(), ..Default::default() });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let total = 200;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0;
            for n in 0..total {
                match client.publish(pb::PublishRequest { event: Some(opened("ha", &format!("k{n}"))) }).await {
                    Ok(_) => acknowledged += 1,
                    // The first attempt was applied but its answer was lost in the failover.
                    Err(status) if status.code() == Code::AlreadyExists => acknowledged += 1,
                    Err(status) => panic!("conversation k{n} failed: {status:?}"),
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.kill(leader).await;
    let acknowledged = writer.await.expect("writer");
    assert_eq!(acknowledged, total);

    // The watch resumed elsewhere: every conversation assigned exactly once, none missing.
    let mut assigned: BTreeMap<String, u32> = BTreeMap::new();
    while assigned.len() < total {
        let effect = tokio::time::timeout(Duration::from_secs(20), watch.next_effect())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {} assignments", assigned.len()))
            .expect("stream open")
            .expect("no error");
        if let Some(pb::effect::Kind::Assigned(a)) = effect.kind {
            *assigned.entry(a.conversation).or_default() += 1;
        }
    }
    assert!(assigned.values().all(|n| *n == 1), "some conversation was streamed twice");
    // Survivors agree.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in survivors {
        let c = cluster.client_of(i).await;
        let agents = c
            .list_agents(pb::ListAgentsRequest { workspace: "ha".into(), ..Default::default() })
            .await
            .expect("agents");
        let open: u32 = agents.agents.iter().map(|a| a.open_count).sum();
        assert_eq!(open as usize, total, "node {i}");
    }
    cluster.assert_replicas_agree().await;
}
