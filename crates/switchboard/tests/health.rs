//! Health tells the truth: a node that cannot take writes (no leader known, or a leader cut
//! off from its quorum) reports NOT_SERVING, and SERVING again once the cluster is whole. Writes
//! through such a node fail fast with UNAVAILABLE instead of waiting out the request timeout.

mod support;

use std::time::Duration;
use support::TestCluster;
use switchboard_client::pb;
use switchboard_client::pb::admin_client::AdminClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The node's health, as the server (`""`) and as one service report it; `None` unless both
/// say the same.
async fn status(addr: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?.connect().await.ok()?;
    let mut answers = Vec::new();
    for service in ["", "switchboard.v1.Events"] {
        let answer = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: service.into() })
            .await
            .ok()?
            .into_inner();
        answers.push(ServingStatus::try_from(answer.status).ok()?);
    }
    if answers[0] == answers[1] { Some(answers[0]) } else { None }
}

/// The code of one write through node `addr` alone, under a deadline of 6 s: the node's own
/// request timeout (10 s) would end in DEADLINE_EXCEEDED, a fast refusal is UNAVAILABLE.
async fn write_code(addr: &str) -> tonic::Code {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut request = tonic::Request::new(pb::ConfigureWorkspaceRequest {
        workspace: "cut-off".into(),
        settings: Some(pb::WorkspaceSettings::default()),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(6));
    match AdminClient::new(channel).configure_workspace(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Waits up to 20 s for node `addr` to report `wanted`.
async fn becomes(addr: &str, wanted: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = status(addr).await;
        if now == Some(wanted) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{addr} reports {now:?}, not {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The services reflection lists, over `grpc.reflection.v1` or `v1alpha`.
async fn reflected_services(addr: &str, alpha: bool) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    macro_rules! list {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::once(request))
                .await
                .expect("reflection answers")
                .into_inner();
            match answers.message().await.expect("a message").and_then(|m| m.message_response) {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    list.service.into_iter().map(|service| service.name).collect()
                }
                other => panic!("not a service list: {other:?}"),
            }
        }};
    }
    if alpha { list!(v1alpha) } else { list!(v1) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_serves_v1_and_v1alpha_with_health_listed() {
    let cluster = TestCluster::start(1).await;
    for alpha in [false, true] {
        let services = reflected_services(&cluster.api_addrs[0], alpha).await;
        for wanted in ["switchboard.v1.Events", "switchboard.v1.Cluster", "grpc.health.v1.Health"] {
            assert!(services.iter().any(|s| s == wanted), "v1alpha={alpha}: {wanted} not in {services:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_whether_a_node_can_take_writes() {
    let mut cluster = TestCluster::start(3).await;
    for addr in &cluster.api_addrs {
        becomes(addr, ServingStatus::Serving).await;
    }
    let (ok, output) = support::ctl(&cluster, &["health"]);
    assert!(ok && output.matches("SERVING").count() == 3, "ctl health on a whole cluster: {output}");
    // The leader alone: it still believes it leads, but no quorum answers it.
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &i in &followers {
        cluster.kill(i).await;
    }
    let leader_addr = cluster.api_addrs[leader].clone();
    becomes(&leader_addr, ServingStatus::NotServing).await;
    assert_eq!(write_code(&leader_addr).await, tonic::Code::Unavailable, "a write through a leader without quorum");
    // One follower back: a quorum again.
    cluster.restart(followers[0]).await;
    becomes(&leader_addr, ServingStatus::Serving).await;
    becomes(&cluster.api_addrs[followers[0]], ServingStatus::Serving).await;
    // A follower alone, after the leader and the other follower are gone: no leader.
    let leader = cluster.leader().await;
    let lone = (0..3).find(|i| *i != leader && cluster.nodes[*i].is_some()).expect("a follower");
    cluster.kill(leader).await;
    becomes(&cluster.api_addrs[lone], ServingStatus::NotServing).await;
    let (ok, output) = support::ctl(&cluster, &["--timeout", "2", "health"]);
    assert!(!ok && output.contains("NOT_SERVING"), "ctl health with a lone node: {output}");
    assert_eq!(write_code(&cluster.api_addrs[lone]).await, tonic::Code::Unavailable, "a write without a leader");
}
