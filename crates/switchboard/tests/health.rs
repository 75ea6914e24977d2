//! Health tells the truth: a node that cannot take writes (no leader known, or a leader cut
//! off from its quorum) reports NOT_SERVING, and SERVING again once the cluster is whole.

mod support;

use std::time::Duration;
use support::TestCluster;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_whether_a_node_can_take_writes() {
    let mut cluster = TestCluster::start(3).await;
    for addr in &cluster.api_addrs {
        becomes(addr, ServingStatus::Serving).await;
    }
    // The leader alone: it still believes it leads, but no quorum answers it.
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &i in &followers {
        cluster.kill(i).await;
    }
    let leader_addr = cluster.api_addrs[leader].clone();
    becomes(&leader_addr, ServingStatus::NotServing).await;
    // One follower back: a quorum again.
    cluster.restart(followers[0]).await;
    becomes(&leader_addr, ServingStatus::Serving).await;
    becomes(&cluster.api_addrs[followers[0]], ServingStatus::Serving).await;
    // A follower alone, after the leader and the other follower are gone: no leader.
    let leader = cluster.leader().await;
    let lone = (0..3).find(|i| *i != leader && cluster.nodes[*i].is_some()).expect("a follower");
    cluster.kill(leader).await;
    becomes(&cluster.api_addrs[lone], ServingStatus::NotServing).await;
}
