//! What a node logs for its operators: with `--log-format json` every line is one JSON object;
//! a restart of the first node (the one that initialises a new cluster) logs no error; and the
//! INFO lines name the leader it finds.

mod support;

use std::time::Duration;
use support::processes::NodeProcesses;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_first_node_logs_json_lines_and_no_error() {
    let mut cluster = NodeProcesses::start(3, "").await;
    cluster.leader().await;
    cluster.stop(0).await;
    cluster.log_format = "json";
    // What an operator gets: the node's default filter.
    cluster.rust_log = None;
    cluster.start_node(0);
    // Until the restarted node has found the leader (its log says so), at most 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let lines: Vec<serde_json::Value> = loop {
        let log = cluster.log(0);
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
            .collect();
        if lines.iter().any(|line| line["fields"]["message"] == "leader changed") {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "no `leader changed` line after a restart:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let errors: Vec<&serde_json::Value> = lines.iter().filter(|line| line["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "a normal restart logged errors: {errors:#?}");
    let leader_line = lines.iter().find(|line| line["fields"]["message"] == "leader changed").expect("found above");
    assert!(leader_line["fields"]["term"].as_u64().is_some_and(|term| term >= 1), "{leader_line}");
    assert!(leader_line["fields"]["leader"].as_u64().is_some(), "{leader_line}");
}
