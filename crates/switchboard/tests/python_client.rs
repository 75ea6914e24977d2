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

/// The same scenario against `switchboard dev --secure`: TLS on every API, mutual TLS between
/// the nodes, tokens; the Python client trusts the dev CA and sends an admin token (a gateway
/// one for publishing), as the README says a client in any language does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_drives_a_secure_dev_cluster_with_tls_and_tokens() {
    use std::time::Duration;
    use switchboard_client::{Client, ClientConfig, pb};
    let python = python();
    let dir = tempfile::tempdir().expect("dir");
    let base = support::processes::free_base_port();
    let _dev = support::processes::StopOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["dev", "--secure", "--no-nats", "--nodes", "3", "--base-port", &base.to_string(), "--data-dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dev starts"),
    );
    let tls = dir.path().join("tls");
    let addresses: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    // Ready once the tokens are written and a node answers with a leader over TLS.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (admin, gateway, ca) = loop {
        let read = |name: &str| std::fs::read_to_string(tls.join(name)).ok();
        if let (Some(admin), Some(gateway), Some(ca)) =
            (read("dev-admin.token"), read("dev-gateway.token"), std::fs::read(tls.join("ca.crt")).ok())
        {
            let config = ClientConfig {
                token: Some(admin.clone()),
                tls_ca_pem: Some(ca.clone()),
                retry_timeout: Duration::from_secs(1),
                ..Default::default()
            };
            let client = Client::with_config(addresses.clone(), config).expect("client");
            if client.status(pb::StatusRequest {}).await.is_ok_and(|status| status.leader_id != 0) {
                break (admin, gateway, ca);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the secure dev cluster did not come up within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Without TLS, or trusting no CA of this cluster, nothing answers.
    let plain = Client::with_config(
        addresses.clone(),
        ClientConfig { retry_timeout: Duration::from_secs(1), ..Default::default() },
    )
    .expect("client");
    plain.status(pb::StatusRequest {}).await.expect_err("plain text to a TLS port");
    let stranger = switchboard_tls::pki::Pki::new("stranger").expect("CA");
    let wrong_ca = ClientConfig {
        token: Some(admin.clone()),
        tls_ca_pem: Some(stranger.ca_pem().as_bytes().to_vec()),
        retry_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    Client::with_config(addresses.clone(), wrong_ca)
        .expect("client")
        .status(pb::StatusRequest {})
        .await
        .expect_err("a CA the nodes' certificates do not chain to");
    let _ = ca;

    let output = tokio::process::Command::new(&python)
        .arg(repo_root().join("tests/python/client_scenario.py"))
        .arg("--ca")
        .arg(tls.join("ca.crt"))
        .args(["--token", admin.trim(), "--gateway-token", gateway.trim()])
        .args(&addresses)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python scenario failed against the secure cluster:\n{stdout}\n{stderr}");
    println!("{stdout}");
}
