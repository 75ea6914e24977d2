//! NATS with the shipped authorization (deploy/nats-accounts.conf) on a real nats-server: the
//! node connects with its own credentials; a gateway with credentials for workspace `acme`
//! publishes acme's events and reads acme's effects, and the server refuses it beta's subjects
//! — publishing into beta, a consumer of beta's effects, a subscription to them.

mod support;

use futures::StreamExt;
use std::time::Duration;
use support::nats::NatsServer;
use support::{TestCluster, setup_workspace};
use switchboard_client::gateway::{Gateway, NatsAuth, NatsSecurity, events};
use switchboard_client::pb;
use switchboard_nats::NatsConfig;

fn user(name: &str, password: &str, inbox: Option<&str>) -> NatsSecurity {
    NatsSecurity {
        auth: NatsAuth::UserPassword { user: name.to_owned(), password: password.to_owned() },
        tls_ca_file: None,
        inbox_prefix: inbox.map(str::to_owned),
    }
}

/// Waits up to `wait` for `effects` to deliver the assignment of `conversation`; the effects
/// before it (agents going online) are acked and passed over.
async fn assigned(effects: &mut switchboard_client::gateway::Effects, conversation: &str, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, effects.next()).await {
        let _ = delivery.ack().await;
        if let Some(pb::effect::Kind::Assigned(assigned)) = &delivery.effect.kind
            && assigned.conversation == conversation
        {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_reaches_only_its_own_workspace_through_nats() {
    let accounts = include_str!("../../../deploy/nats-accounts.conf");
    let nats = NatsServer::start_with(accounts).await;
    let node = NatsConfig {
        url: nats.url(),
        ack_wait: Duration::from_secs(5),
        security: user("switchboard-node", "CHANGE-ME-node", None),
        ..NatsConfig::default()
    };
    let cluster = TestCluster::start_with_nats(1, support::unsupervised(), Some(node)).await;
    let client = cluster.client().await;
    for workspace in ["acme", "beta"] {
        setup_workspace(&client, workspace, pb::Strategy::RoundRobin, 2, 10).await;
    }

    // Anonymous clients are refused by the server.
    assert!(Gateway::connect(&nats.url()).await.is_err(), "an anonymous NATS connection was accepted");

    let acme = Gateway::connect_with(&nats.url(), &user("gateway-acme", "CHANGE-ME-acme", Some("_INBOX_acme")))
        .await
        .expect("acme connects");
    let beta = Gateway::connect_with(&nats.url(), &user("gateway-beta", "CHANGE-ME-beta", Some("_INBOX_beta")))
        .await
        .expect("beta connects");

    // The node created the streams once connected; acme's own consumer and events work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut acme_effects = loop {
        match acme.effects("gateway-acme", "acme").await {
            Ok(effects) => break effects,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "acme's effects consumer: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    acme.publish(&events::opened("acme-1", "acme", "c1", "k1", pb::Channel::Whatsapp)).await.expect("acme publishes");
    assert!(assigned(&mut acme_effects, "c1", Duration::from_secs(20)).await, "acme reads its assignment");

    // Into beta: the server refuses acme's publish (no JetStream acknowledgement).
    let into_beta = acme.publish(&events::opened("acme-into-beta", "beta", "x1", "k1", pb::Channel::Whatsapp)).await;
    assert!(into_beta.is_err(), "acme published into beta: {into_beta:?}");
    // beta's effects: neither through a consumer (its own name or beta's) nor by subscribing.
    assert!(acme.effects("gateway-acme-b", "beta").await.is_err(), "acme made a consumer of beta's effects");
    assert!(acme.effects("gateway-beta", "beta").await.is_err(), "acme used beta's consumer");
    let mut sniffer = acme.client().subscribe("switchboard.effects.beta.>").await.expect("the client sends SUB");
    let mut beta_effects = beta.effects("gateway-beta", "beta").await.expect("beta's consumer");
    beta.publish(&events::opened("beta-1", "beta", "b1", "k1", pb::Channel::Whatsapp)).await.expect("beta publishes");
    assert!(assigned(&mut beta_effects, "b1", Duration::from_secs(20)).await, "beta reads its assignment");
    let sniffed = tokio::time::timeout(Duration::from_secs(2), sniffer.next()).await;
    assert!(!matches!(sniffed, Ok(Some(_))), "acme read a beta effect: {sniffed:?}");

    // Nothing acme tried reached beta: beta's conversation is the only one there.
    let beta_view = client
        .get_conversation(pb::GetConversationRequest {
            workspace: "beta".into(),
            conversation: "x1".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(beta_view.expect_err("x1 was never opened").code(), tonic::Code::NotFound);
    cluster.assert_replicas_agree().await;
}
