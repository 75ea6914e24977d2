//! Back up and restore, as deploy/README.md tells an operator to: `switchboard ctl snapshot`
//! copies a live cluster's state to a file; after every node is gone, `switchboard restore`
//! fills each node's empty data directory from it, and the restarted cluster elects a leader,
//! knows every conversation of the backup, agrees on its state digest and takes new writes.
//! A restore never overwrites a node's data, and a damaged file is refused.

mod support;

use std::time::Duration;
use support::processes::NodeProcesses;
use support::{opened, setup_workspace};
use switchboard_client::pb;

/// Runs the binary with `args`; (success, stdout and stderr).
fn switchboard(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).output().expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_restored_from_a_snapshot_file_knows_everything_it_held() {
    let mut cluster = NodeProcesses::start(3, "").await;
    cluster.leader().await;
    let client = cluster.client();
    setup_workspace(&client, "backup", pb::Strategy::RoundRobin, 3, 10).await;
    let events: Vec<pb::GatewayEvent> = (0..12).map(|i| opened("backup", &format!("c{i}"))).collect();
    client.publish_batch(pb::PublishBatchRequest { events }).await.expect("publish");

    // A later term than the first: the restored nodes must elect past the snapshot's term.
    let leader = cluster.leader().await;
    cluster.kill(leader).await;
    cluster.leader().await;
    cluster.start_node(leader);
    let term_before = client.status_of((leader + 1) % 3).await.expect("status").term;
    assert!(term_before >= 2, "term {term_before}");

    let file = cluster.dir.path().join("backup.snapshot");
    let file_arg = file.display().to_string();
    let nodes = cluster.api_addrs.join(",");
    let (ok, output) = switchboard(&["ctl", "--nodes", &nodes, "snapshot", "--out", &file_arg]);
    assert!(ok, "ctl snapshot: {output}");
    assert!(output.contains("at log index"), "{output}");
    let c7 = pb::GetConversationRequest { workspace: "backup".into(), conversation: "c7".into(), ..Default::default() };
    let before = client.get_conversation(c7.clone()).await.expect("c7 before");

    // Every node is lost, data and all.
    for i in 0..3 {
        cluster.kill(i).await;
        let data = cluster.dir.path().join(format!("node{}", i + 1));
        std::fs::remove_dir_all(&data).expect("remove the data directory");
    }
    // A damaged file is refused, and nothing is written.
    let damaged = cluster.dir.path().join("damaged.snapshot");
    let mut bytes = std::fs::read(&file).expect("the snapshot");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&damaged, &bytes).expect("write");
    let node1 = cluster.dir.path().join("node1").display().to_string();
    let (ok, output) = switchboard(&["restore", "--snapshot", &damaged.display().to_string(), "--data-dir", &node1]);
    assert!(!ok && output.contains("not a snapshot this build can restore"), "a damaged file: {output}");
    assert!(!cluster.dir.path().join("node1/raft.redb").exists(), "a refused restore wrote nothing");

    for i in 0..3 {
        let data = cluster.dir.path().join(format!("node{}", i + 1)).display().to_string();
        let (ok, output) = switchboard(&["restore", "--snapshot", &file_arg, "--data-dir", &data]);
        assert!(ok, "restore node {}: {output}", i + 1);
    }
    // A second restore into a node's data is refused.
    let (ok, output) = switchboard(&["restore", "--snapshot", &file_arg, "--data-dir", &node1]);
    assert!(!ok && output.contains("already holds a node's data"), "restore over data: {output}");

    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.leader().await;
    let term_after = client.status_of(0).await.expect("status").term;
    assert!(term_after > term_before, "the restored cluster elects in a later term: {term_after} after {term_before}");
    let after = client.get_conversation(c7).await.expect("c7 after the restore");
    assert_eq!(after.assignee, before.assignee, "the restored conversation keeps its agent");
    assert!(!after.assignee.is_empty(), "{after:?}");
    // New conversations are routed, on top of what the backup held (4 per agent of 10).
    let effects = client
        .publish(pb::PublishRequest { event: Some(opened("backup", "c-new")) })
        .await
        .expect("a write after the restore")
        .effects;
    assert!(support::assigned_agent(&effects).is_some(), "{effects:?}");
    // Every replica ends on the same state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for i in 0..3 {
            if let Ok(status) = client.status_of(i).await {
                seen.push((status.applied_index, status.state_digest));
            }
        }
        if seen.len() == 3 && seen.iter().all(|s| *s == seen[0]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "replicas differ after the restore: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
