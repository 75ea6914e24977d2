//! A `switchboard node` whose Raft core stops for good exits non-zero and says why, so that its
//! supervisor restarts it and alerts fire (issue 10). The core is stopped from outside, as a
//! failing disk would: the node's snapshot directory is replaced by a file, so the first
//! snapshot cannot be written, openraft reports a fatal storage error and its core stops.

use std::process::Stdio;
use std::time::Duration;
use switchboard_client::{Client, ClientConfig, pb};
use tokio::io::AsyncReadExt;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_core_stops_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let api = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\ndata_dir = {:?}\nlisten = \"{api}\"\nraft_listen = \"{raft}\"\n\
             [presence]\nheartbeat_timeout_ms = 0\n\
             [raft]\nsnapshot_every_entries = 100\n\
             [[peers]]\nid = 1\nraft_addr = \"{raft}\"\napi_addr = \"{api}\"\n",
            data.display().to_string()
        ),
    )
    .expect("write config");
    let mut node = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("node")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info,openraft=off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the node starts");
    let mut stderr = node.stderr.take().expect("stderr");
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let client = Client::with_config(
        [api.clone()],
        ClientConfig { retry_timeout: Duration::from_secs(20), ..ClientConfig::default() },
    )
    .expect("client");
    client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: "w".into(),
            settings: Some(pb::WorkspaceSettings::default()),
            ..Default::default()
        })
        .await
        .expect("the node serves");

    // The disk "fails": snapshots can no longer be written (ENOTDIR, even for root).
    let state = data.join("state");
    std::fs::rename(&state, data.join("state.moved")).expect("move the snapshot directory");
    std::fs::write(&state, b"not a directory").expect("put a file in its place");

    // Write until the node goes away; its first snapshot is due after 100 entries.
    let writes = async {
        for n in 0.. {
            let agent = pb::Agent { id: format!("a{n}"), display_name: "A".into(), ..Default::default() };
            let request = pb::UpsertAgentRequest { workspace: "w".into(), agent: Some(agent), ..Default::default() };
            if client.upsert_agent(request).await.is_err() {
                return;
            }
        }
    };
    // A safety net only: without it a regression (the node staying up) would hang the test.
    let exited = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::select! {
            status = node.wait() => status,
            () = writes => node.wait().await,
        }
    })
    .await;
    let log = match exited {
        Ok(_) => log.await.expect("log reader"),
        Err(_) => {
            let _ = node.kill().await;
            panic!("the node kept running after its Raft core stopped:\n{}", log.await.unwrap_or_default());
        }
    };
    let status = exited.expect("exited").expect("wait");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("ERROR") && log.contains("the Raft core of node 1 stopped"), "{log}");
    assert!(log.contains("snapshot"), "the reason names the failed snapshot write:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}
