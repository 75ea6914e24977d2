//! Heartbeat supervision: an agent whose app keeps heartbeating stays online; one whose app stops
//! is marked offline through the log on every node, and stops receiving conversations.

mod support;

use std::time::Duration;
use support::{TestCluster, assigned_agent, opened, setup_workspace};
use switchboard_client::{Client, pb};
use switchboard_server::{PresenceConfig, ServerConfig};
use tokio::time::{Instant, sleep};

/// Long enough that a loaded CI machine's stalls (a second or so) between two of a1's heartbeats,
/// a quarter of it apart, do not expire a1 (at 600 ms, one of over 450 ms would have).
const TIMEOUT: Duration = Duration::from_secs(2);

async fn status_on(client: &Client, agent: &str, local: bool) -> pb::AgentStatus {
    let consistency = if local { pb::Consistency::Local } else { pb::Consistency::Linearizable };
    let state = client
        .get_agent(pb::GetAgentRequest { workspace: "hb".into(), agent: agent.into(), consistency: consistency.into() })
        .await
        .expect("get agent");
    state.status()
}

async fn heartbeat(client: &Client, agent: &str) -> pb::HeartbeatResponse {
    client.heartbeat(pb::HeartbeatRequest { workspace: "hb".into(), agent: agent.into() }).await.expect("heartbeat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_whose_heartbeats_stop_are_marked_offline_through_the_log() {
    let config = ServerConfig {
        presence: PresenceConfig { heartbeat_timeout: TIMEOUT, expire_to: switchboard_core::AgentStatus::Offline },
        ..Default::default()
    };
    let cluster = TestCluster::start_with(3, config).await;
    // Heartbeats go through a follower: they are forwarded to the leader, which keeps deadlines.
    let client = cluster.client_of(cluster.follower().await).await;
    setup_workspace(&client, "hb", pb::Strategy::RoundRobin, 2, 10).await;
    let answer = heartbeat(&client, "a1").await;
    assert_eq!(answer.timeout_ms, TIMEOUT.as_millis() as u64);
    assert_eq!(answer.status(), pb::AgentStatus::Online);

    // a1's app heartbeats on its own timer, as an agent's app does, whatever else is going on;
    // a2's app has crashed. (Heartbeats sent between the test's other calls would make a1's
    // liveness depend on how fast those calls are on a loaded machine.)
    let app = tokio::spawn({
        let client = client.clone();
        async move {
            loop {
                heartbeat(&client, "a1").await;
                sleep(TIMEOUT / 4).await;
            }
        }
    });
    sleep(TIMEOUT * 4).await;
    assert_eq!(status_on(&client, "a1", false).await, pb::AgentStatus::Online);
    assert_eq!(status_on(&client, "a2", false).await, pb::AgentStatus::Offline);
    // The expiry went through the log: every replica has it.
    for i in 0..3 {
        let node = cluster.client_of(i).await;
        assert_eq!(status_on(&node, "a2", true).await, pb::AgentStatus::Offline, "node {i}");
    }
    // New conversations go only to the agent whose app is alive.
    for n in 0..4 {
        let published =
            client.publish(pb::PublishRequest { event: Some(opened("hb", &format!("c{n}"))) }).await.expect("publish");
        assert_eq!(assigned_agent(&published.effects).as_deref(), Some("a1"));
    }

    // The app stops: the agent is marked offline within a few timeouts (polled, not timed).
    app.abort();
    let _ = app.await;
    let deadline = Instant::now() + TIMEOUT * 20;
    while status_on(&client, "a1", false).await != pb::AgentStatus::Offline {
        assert!(Instant::now() < deadline, "a1 was never marked offline");
        sleep(TIMEOUT / 4).await;
    }
    // The agent comes back by setting a status; heartbeats then keep it.
    client
        .set_status(pb::SetStatusRequest {
            workspace: "hb".into(),
            agent: "a1".into(),
            status: pb::AgentStatus::Online.into(),
            ..Default::default()
        })
        .await
        .expect("back online");
    assert_eq!(heartbeat(&client, "a1").await.status(), pb::AgentStatus::Online);
}

/// A zero timeout turns supervision off; it must not mean "the default timeout". The test runs a
/// node with supervision off beside a control node with the default configuration, brings the
/// first node's agent online over a second earlier than the control's, then waits for the control
/// to expire its agent (the default timeout, 30 s): had zero been taken as the default, the first
/// node would have expired its agent before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_timeout_turns_supervision_off_instead_of_meaning_the_default() {
    let off = ServerConfig {
        presence: PresenceConfig {
            heartbeat_timeout: Duration::ZERO,
            expire_to: switchboard_core::AgentStatus::Offline,
        },
        ..Default::default()
    };
    let default_timeout = ServerConfig::default().presence.heartbeat_timeout;
    assert!(!default_timeout.is_zero());
    let off = TestCluster::start_with(1, off).await;
    let control = TestCluster::start_with(1, ServerConfig::default()).await;
    let off_client = off.client().await;
    let control_client = control.client().await;

    setup_workspace(&off_client, "hb", pb::Strategy::RoundRobin, 1, 10).await;
    let brought_online = Instant::now();
    assert_eq!(heartbeat(&off_client, "a1").await.timeout_ms, 0, "the answer says supervision is off");
    setup_workspace(&control_client, "hb", pb::Strategy::RoundRobin, 1, 10).await;
    // The control agent's deadline starts from its last heartbeat, sent a second after the other
    // agent came online; this orders the two deadlines, it decides no outcome.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(heartbeat(&control_client, "a1").await.timeout_ms, default_timeout.as_millis() as u64);

    let deadline = Instant::now() + default_timeout * 2;
    while status_on(&control_client, "a1", true).await != pb::AgentStatus::Offline {
        assert!(Instant::now() < deadline, "the control node never expired its agent");
        sleep(Duration::from_millis(200)).await;
    }
    assert!(brought_online.elapsed() > default_timeout, "the control expired its agent before the default timeout");
    assert_eq!(status_on(&off_client, "a1", false).await, pb::AgentStatus::Online, "supervision off expired an agent");
}
