//! `switchboard dev` reports a node that dies and keeps serving with the others, so that a
//! failover can be tried locally; it stops by itself only when no node is left (issue 10).

mod support;

use std::process::Stdio;
use std::time::Duration;
use support::processes::free_base_port;
use switchboard_client::{Client, ClientConfig, pb};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Lines of the dev cluster's stdout and stderr, in arrival order.
struct Output {
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Output {
    /// Waits for a line containing `needle` and returns it.
    async fn line_with(&mut self, needle: &str) -> String {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        };
        // A safety net only: a regression must fail, not hang.
        match tokio::time::timeout(Duration::from_secs(90), wait).await {
            Ok(Some(line)) => line,
            _ => panic!("no line with {needle:?}; output so far:\n{}", self.seen.join("\n")),
        }
    }
}

fn kill(pid: &str) {
    let status = std::process::Command::new("kill").arg("-KILL").arg(pid).status().expect("kill runs");
    assert!(status.success(), "kill -KILL {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_reports_a_dead_node_and_keeps_serving_with_the_others() {
    let dir = tempfile::tempdir().expect("dir");
    let base = free_base_port();
    let mut dev = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["dev", "--no-nats", "--nodes", "3", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path().join("cluster"))
        .env("RUST_LOG", "warn,openraft=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("dev starts");
    let (sender, lines) = mpsc::unbounded_channel();
    for stream in [
        dev.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        dev.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = sender.send(line);
            }
        });
    }
    drop(sender);
    let mut output = Output { lines, seen: Vec::new() };

    // The banner names every node's pid.
    let mut pids = Vec::new();
    for node in 1..=3 {
        let line = output.line_with(&format!("  node{node}  pid ")).await;
        let pid = line.split_whitespace().nth(2).expect("a pid").to_owned();
        assert!(pid.parse::<u32>().is_ok(), "{line}");
        pids.push(pid);
    }

    // One node dies: dev says which and how, and keeps the other two.
    kill(&pids[0]);
    let report = output.line_with("dev: node1 exited").await;
    assert!(
        report.contains("signal: 9") && report.contains("2 of 3 node(s) still running"),
        "{report}\noutput so far:\n{}",
        output.seen.join("\n")
    );
    assert!(dev.try_wait().expect("try_wait").is_none(), "dev must keep running:\n{}", output.seen.join("\n"));
    // The two survivors still form a quorum and commit writes.
    let survivors = [format!("127.0.0.1:{}", base + 2), format!("127.0.0.1:{}", base + 3)];
    let client =
        Client::with_config(survivors, ClientConfig { retry_timeout: Duration::from_secs(30), ..Default::default() })
            .expect("client");
    client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: "after-failover".into(),
            settings: Some(pb::WorkspaceSettings::default()),
            ..Default::default()
        })
        .await
        .expect("the remaining nodes commit");

    // A second death leaves no quorum, which dev says; the last one ends dev with an error.
    kill(&pids[1]);
    let report = output.line_with("dev: node2 exited").await;
    assert!(
        report.contains("1 of 3 node(s) still running") && report.contains("no quorum"),
        "{report}\noutput so far:\n{}",
        output.seen.join("\n")
    );
    kill(&pids[2]);
    output.line_with("dev: node3 exited").await;
    let status = tokio::time::timeout(Duration::from_secs(60), dev.wait()).await.expect("dev exits").expect("wait");
    assert_eq!(status.code(), Some(1));
    output.line_with("every node of the dev cluster has exited").await;
}
