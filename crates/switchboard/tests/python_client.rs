//! The API is usable from the .proto files alone: a Python client generated with grpcio-tools
//! from `proto/` drives a scenario against a real 3-node cluster.
//!
//! `make test` (and CI) prepare the Python environment first with `tests/python/setup_env.sh`
//! and pass its interpreter in `SWITCHBOARD_PYTHON`; without it this test runs the set-up itself.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::TestCluster;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHBOARD_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(python);
    }
    let script = repo_root().join("tests/python/setup_env.sh");
    let output = Command::new("bash").arg(&script).output().expect("bash runs");
    assert!(
        output.status.success(),
        "the Python environment could not be prepared by {}:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("setup_env.sh prints the interpreter's path last");
    PathBuf::from(last.trim())
}

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
