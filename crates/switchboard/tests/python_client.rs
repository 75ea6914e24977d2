//! The API is usable from the .proto files alone: a Python client generated with grpcio-tools
//! from `proto/` drives a scenario against a real 3-node cluster.
//!
//! `make test` (and CI) prepare the Python environment first with `tests/python/setup_env.sh`
//! and pass its interpreter in `SWITCHBOARD_PYTHON`; without it this test runs the set-up itself.

mod support;

use support::TestCluster;
use support::python::{python, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_client_generated_from_the_protos_drives_the_cluster() {
    let python = python();
    let cluster = TestCluster::start(3).await;
    let script = repo_root().join("tests/python/client_scenario.py");
    // Through a follower: its writes are forwarded to the leader.
    let follower = cluster.follower().await;
    let address = cluster.api_addrs[follower].clone();
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&address)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python scenario failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    // The scenario's writes are on every replica.
    cluster.assert_replicas_agree().await;
}
