//! Issue 11's routing corners, tried as a new user would on a live 3-node cluster: a workspace
//! applied with `switchboard ctl apply`, events published through the public API, the answer
//! read from the effects each call returns (or from a Watch stream, for what timers do).

mod support;

use std::time::Duration;
use support::{TestCluster, ctl};
use switchboard_client::{Client, pb};
use tonic::Code;

/// Applies `yaml` (a workspace file) and puts `online` agents online.
fn apply(cluster: &TestCluster, yaml: &str, online: &[&str]) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("workspace.yaml");
    std::fs::write(&path, yaml).expect("write");
    let (ok, out) = ctl(cluster, &["apply", "-f", path.to_str().expect("utf-8 path"), "--prune"]);
    assert!(ok, "{out}");
    for agent in online {
        let (ok, out) = ctl(cluster, &["--workspace", "acme", "set-status", agent, "online"]);
        assert!(ok, "{out}");
    }
}

/// A 3-node cluster with the workspace `yaml` applied and `online` agents online, and a client.
async fn cluster_with(yaml: &str, online: &[&str]) -> (TestCluster, Client) {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    apply(&cluster, yaml, online);
    (cluster, client)
}

fn event(id: &str, kind: pb::gateway_event::Kind) -> pb::GatewayEvent {
    pb::GatewayEvent { event_id: id.into(), workspace: "acme".into(), occurred_at_ms: 0, kind: Some(kind) }
}

/// Opens `conversation` for `contact` with `language`, `topic` and `priority`; returns its effects.
async fn open(
    client: &Client,
    conversation: &str,
    contact: &str,
    language: &str,
    topic: &str,
    priority: u32,
) -> Vec<pb::Effect> {
    let opened = pb::ConversationOpened {
        conversation: conversation.into(),
        contact: contact.into(),
        channel: pb::Channel::Whatsapp.into(),
        language: language.into(),
        topic: topic.into(),
        priority,
        ..Default::default()
    };
    let event = event(&format!("{conversation}-opened"), pb::gateway_event::Kind::ConversationOpened(opened));
    client.publish(pb::PublishRequest { event: Some(event) }).await.expect("open").effects
}

async fn close(client: &Client, conversation: &str) -> Vec<pb::Effect> {
    let closed = pb::ConversationClosed { conversation: conversation.into() };
    let event = event(&format!("{conversation}-closed"), pb::gateway_event::Kind::ConversationClosed(closed));
    client.publish(pb::PublishRequest { event: Some(event) }).await.expect("close").effects
}

async fn claim(client: &Client, conversation: &str, agent: &str) -> Result<pb::AssignmentResponse, tonic::Status> {
    let request = pb::ClaimRequest {
        workspace: "acme".into(),
        conversation: conversation.into(),
        agent: agent.into(),
        ..Default::default()
    };
    client.claim(request).await
}

/// `(conversation, agent, reason)` of every assignment among `effects`.
fn assignments(effects: &[pb::Effect]) -> Vec<(String, String, pb::AssignReason)> {
    effects
        .iter()
        .filter_map(|effect| match &effect.kind {
            Some(pb::effect::Kind::Assigned(a)) => Some((a.conversation.clone(), a.agent.clone(), a.reason())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_customer_sent_to_another_team_by_a_rule_is_not_given_their_previous_agent() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let base = r#"
workspace: acme
settings: {default_team: t}
agents:
  - {id: amy, name: Amy, languages: [en]}
  - {id: sofia, name: Sofia, languages: [es]}
teams:
  - {id: t, strategy: round_robin, members: [amy], options: {keep_returning_customers: true}}
  - {id: soporte, strategy: round_robin, members: [sofia], options: {keep_returning_customers: true}}
"#;
    apply(&cluster, base, &["amy", "sofia"]);
    assert_eq!(
        assignments(&open(&client, "x1", "+X", "", "", 0).await),
        [("x1".into(), "amy".into(), pb::AssignReason::Strategy)]
    );
    close(&client, "x1").await;
    let with_rule =
        format!("{base}rules:\n  - {{id: spanish, when: {{languages: [es]}}, team: soporte, required_language: es}}\n");
    apply(&cluster, &with_rule, &[]);
    // amy served +X before, but she is not in `soporte` and does not speak Spanish.
    assert_eq!(
        assignments(&open(&client, "x2", "+X", "es", "", 0).await),
        [("x2".into(), "sofia".into(), pb::AssignReason::Strategy)]
    );
    cluster.assert_replicas_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reopened_chat_does_not_go_back_to_an_agent_who_left_the_team() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    let team = |members: &str| {
        format!(
            r#"
workspace: acme
settings: {{default_team: t}}
agents:
  - {{id: john, name: John}}
  - {{id: william, name: William}}
  - {{id: mary, name: Mary}}
teams:
  - {{id: t, strategy: round_robin, members: [{members}], options: {{reassign_reopened_if_unavailable: true}}}}
"#
        )
    };
    apply(&cluster, &team("john, william, mary"), &["john", "william", "mary"]);
    assert_eq!(
        assignments(&open(&client, "c", "k", "", "", 0).await),
        [("c".into(), "john".into(), pb::AssignReason::Strategy)]
    );
    close(&client, "c").await;
    apply(&cluster, &team("william, mary"), &[]);
    let message =
        event("c-message", pb::gateway_event::Kind::MessageReceived(pb::MessageReceived { conversation: "c".into() }));
    let effects = client.publish(pb::PublishRequest { event: Some(message) }).await.expect("message").effects;
    let assigned = assignments(&effects);
    assert_eq!(assigned.len(), 1, "{effects:?}");
    assert!(["william", "mary"].contains(&assigned[0].1.as_str()), "reopened to {assigned:?}");
    cluster.assert_replicas_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_in_two_teams_serves_the_longest_waiting_first_and_claims_are_for_members() {
    let (cluster, client) = cluster_with(
        r#"
workspace: acme
settings: {default_team: a}
agents:
  - {id: amy, name: Amy, max_open: 1}
  - {id: bob, name: Bob}
teams:
  - {id: a, strategy: round_robin, members: [amy]}
  - {id: b, strategy: round_robin, members: [amy]}
  - {id: m, strategy: manual, members: [amy]}
  - {id: other, strategy: manual, members: [bob]}
rules:
  - {id: to-b, when: {topics: [b]}, team: b}
  - {id: to-m, when: {topics: [m]}, team: m}
"#,
        &["amy", "bob"],
    )
    .await;
    // amy is busy; "old" waits in b, then "new" in a.
    assert_eq!(assignments(&open(&client, "busy", "k0", "", "", 0).await)[0].1, "amy");
    assert!(assignments(&open(&client, "old", "k1", "", "b", 0).await).is_empty());
    assert!(assignments(&open(&client, "new", "k2", "", "", 0).await).is_empty());
    // Her chat closes: the one waiting longest, in either of her teams, is hers.
    assert_eq!(assignments(&close(&client, "busy").await), [("old".into(), "amy".into(), pb::AssignReason::Strategy)]);
    assert_eq!(assignments(&close(&client, "old").await), [("new".into(), "amy".into(), pb::AssignReason::Strategy)]);

    // A conversation waiting in the manual team m: bob, not a member, cannot pick it.
    assert!(assignments(&open(&client, "pick-me", "k3", "", "m", 0).await).is_empty());
    let refused = claim(&client, "pick-me", "bob").await.expect_err("bob is not in m");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("bob"), "{refused:?}");
    close(&client, "new").await;
    let claimed = claim(&client, "pick-me", "amy").await.expect("amy is");
    assert_eq!(assignments(&claimed.effects), [("pick-me".into(), "amy".into(), pb::AssignReason::Claimed)]);
    cluster.assert_replicas_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_customers_hear_their_new_position_once_the_interval_has_passed() {
    let (cluster, client) = cluster_with(
        r#"
workspace: acme
settings: {default_team: t}
agents:
  - {id: amy, name: Amy, max_open: 1}
teams:
  - {id: t, strategy: round_robin, members: [amy], options: {position_update_interval_s: 5}}
"#,
        &["amy"],
    )
    .await;
    for (n, conversation) in ["c1", "c2", "c3", "c4"].into_iter().enumerate() {
        open(&client, conversation, &format!("k{n}"), "", "", 0).await;
    }
    let closed = client
        .close(pb::CloseRequest { workspace: "acme".into(), conversation: "c1".into(), request_id: "close-c1".into() })
        .await
        .expect("close");
    // Every effect of the call names the request behind it.
    assert!(closed.effects.iter().all(|e| e.event_id == "close-c1"), "{:?}", closed.effects);
    // Watch from the close on another node: c3 and c4 hear they moved up, once, from a timer.
    let mut watch =
        client.watch(pb::WatchRequest { workspace: "acme".into(), from_index: closed.log_index, ..Default::default() });
    let mut told = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while told.len() < 2 {
        let effect = tokio::time::timeout_at(deadline, watch.next_effect())
            .await
            .unwrap_or_else(|_| panic!("no position update within 20 s; told so far: {told:?}"))
            .expect("stream open")
            .expect("effect");
        if let Some(pb::effect::Kind::QueuePosition(p)) = &effect.kind {
            assert!(effect.event_id.is_empty(), "a timer's effect names no event: {effect:?}");
            assert!(effect.at_ms >= closed.effects[0].at_ms + 5_000, "told before the interval: {effect:?}");
            told.push((p.conversation.clone(), p.position));
        }
    }
    assert_eq!(told, [("c3".to_owned(), 1), ("c4".to_owned(), 2)]);
    cluster.assert_replicas_agree().await;
}
