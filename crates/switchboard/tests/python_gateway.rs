//! The NATS contract is usable from README.md and the .proto files alone: a gateway written in
//! Python (nats-py, stubs generated with grpcio-tools from `proto/`) publishes events to and
//! consumes effects from a real nats-server in front of a real 3-node cluster.
//!
//! `make test` (and CI) prepare the Python environment first with `tests/python/setup_env.sh`
//! and pass its interpreter in `SWITCHBOARD_PYTHON`; without it this test runs the set-up itself.

mod support;

use std::time::Duration;
use support::TestCluster;
use support::nats::NatsServer;
use support::python::{python, repo_root};
use switchboard_nats::NatsConfig;

/// Serves this process's metrics on a free port. The three nodes run in this process and share
/// its one recorder, so this single endpoint sums them, as scraping each node would.
fn serve_metrics() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(addr).install().expect("metrics endpoint");
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_gateway_written_from_the_readme_and_the_protos_works_over_nats() {
    let python = python();
    let metrics = serve_metrics();
    let nats = NatsServer::start().await;
    let config = NatsConfig { url: nats.url(), ack_wait: Duration::from_secs(5), ..NatsConfig::default() };
    let cluster = TestCluster::start_with_nats(3, support::unsupervised(), Some(config)).await;
    let script = repo_root().join("tests/python/gateway_scenario.py");
    // Through a follower first: its writes are forwarded to the leader.
    let follower = cluster.follower().await;
    let mut nodes = cluster.api_addrs.clone();
    nodes.swap(0, follower);
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--nats", &nats.url()])
        .args(["--grpc", &nodes.join(",")])
        .args(["--metrics", &metrics])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(50), run)
        .await
        .expect("the Python gateway scenario finishes within 50 s")
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python gateway scenario failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    cluster.assert_replicas_agree().await;
}
