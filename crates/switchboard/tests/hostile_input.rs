//! Issue 10's two reproductions, tried as a new user would on a live 3-node cluster: an
//! ordinary sequence of calls that used to panic every replica for good, and a burst of huge
//! publishes that used to wedge replication. Both must leave the cluster serving and
//! committing, with replicas that agree.

mod support;

use support::{TestCluster, assigned_agent, ctl, opened};
use switchboard_client::pb;
use tonic::Code;

const WITHOUT_TEE: &str = r#"
workspace: acme
settings:
  default_team: support
agents:
  - {id: mary, name: Mary, max_open: 5}
  - {id: tom, name: Tom, max_open: 5}
teams:
  - {id: support, strategy: round_robin, members: [mary]}
"#;

/// `WITHOUT_TEE` plus team `tee` (tom) and a rule that sends topic `x` to it.
fn with_tee() -> String {
    let tee = [
        "  - {id: tee, strategy: round_robin, members: [tom]}",
        "rules:",
        "  - {id: x-to-tee, when: {topics: [x]}, team: tee}",
    ];
    format!("{WITHOUT_TEE}{}\n", tee.join("\n"))
}

fn event(id: &str, kind: pb::gateway_event::Kind) -> pb::GatewayEvent {
    pb::GatewayEvent { event_id: id.into(), workspace: "acme".into(), occurred_at_ms: 0, kind: Some(kind) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_writing_again_after_their_team_was_removed_is_served_and_the_cluster_keeps_going() {
    let cluster = TestCluster::start(3).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("acme.yaml");
    let path_arg = path.to_str().expect("utf-8 path").to_owned();
    std::fs::write(&path, with_tee()).expect("write");
    let (ok, out) = ctl(&cluster, &["apply", "-f", &path_arg]);
    assert!(ok, "{out}");
    for agent in ["mary", "tom"] {
        let (ok, out) = ctl(&cluster, &["--workspace", "acme", "set-status", agent, "online"]);
        assert!(ok, "{out}");
    }
    let client = cluster.client().await;

    // c1 goes to `tee` by the rule, and is closed.
    let mut open = opened("acme", "c1");
    if let Some(pb::gateway_event::Kind::ConversationOpened(o)) = &mut open.kind {
        o.topic = "x".into();
    }
    let published = client.publish(pb::PublishRequest { event: Some(open) }).await.expect("open");
    assert_eq!(assigned_agent(&published.effects).as_deref(), Some("tom"));
    let close = event(
        "c1-closed",
        pb::gateway_event::Kind::ConversationClosed(pb::ConversationClosed { conversation: "c1".into() }),
    );
    client.publish(pb::PublishRequest { event: Some(close) }).await.expect("close");

    // `tee` and its rule go (allowed: tee has no open conversation).
    std::fs::write(&path, WITHOUT_TEE).expect("write");
    let (ok, out) = ctl(&cluster, &["apply", "-f", &path_arg, "--prune"]);
    assert!(ok, "{out}");

    // The customer writes again: routed to the default team, assigned, on every replica.
    let message = event(
        "c1-message",
        pb::gateway_event::Kind::MessageReceived(pb::MessageReceived { conversation: "c1".into() }),
    );
    let published = client.publish(pb::PublishRequest { event: Some(message) }).await.expect("the message is served");
    assert_eq!(assigned_agent(&published.effects).as_deref(), Some("mary"));
    let later = client.publish(pb::PublishRequest { event: Some(opened("acme", "c2")) }).await.expect("next event");
    assert_eq!(assigned_agent(&later.effects).as_deref(), Some("mary"));
    cluster.assert_replicas_agree().await;
    for node in 0..3 {
        let status = client.status_of(node).await.expect("status");
        assert_ne!(status.role, "shutdown", "node {node} stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_publishes_are_refused_by_name_and_the_cluster_keeps_committing() {
    let cluster = TestCluster::start(3).await;
    support::setup_workspace(&cluster.client().await, "acme", pb::Strategy::RoundRobin, 2, 10_000).await;
    let leader = cluster.leader().await;
    let term_before = cluster.client().await.status_of(leader).await.expect("status").term;

    // 4 clients × 30 publishes whose topic is 3 MB (the issue's burst).
    let mut clients = Vec::new();
    for writer in 0..4 {
        let client = cluster.client_of(writer % 3).await;
        clients.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for n in 0..30 {
                let mut open = opened("acme", &format!("huge-{writer}-{n}"));
                if let Some(pb::gateway_event::Kind::ConversationOpened(o)) = &mut open.kind {
                    o.topic = "t".repeat(3 * 1024 * 1024);
                }
                let error = client.publish(pb::PublishRequest { event: Some(open) }).await.expect_err("refused");
                codes.push((error.code(), error.message().to_owned()));
            }
            codes
        }));
    }
    for client in clients {
        for (code, message) in client.await.expect("writer") {
            assert_eq!(code, Code::InvalidArgument, "{message}");
            assert!(message.contains("topic") && message.contains("limit is 256"), "{message}");
        }
    }

    // The cluster commits at once, without an election, and the replicas agree.
    let client = cluster.client().await;
    let published = client.publish(pb::PublishRequest { event: Some(opened("acme", "after")) }).await.expect("commits");
    assert!(assigned_agent(&published.effects).is_some());
    let status = client.status_of(leader).await.expect("status");
    assert_eq!(status.term, term_before, "an election happened during the burst");
    cluster.assert_replicas_agree().await;
}
