//! A real Prometheus (Debian's `prometheus`, found on PATH or at `SWITCHBOARD_PROMETHEUS`)
//! scrapes a cluster of three real node processes under load, with `deploy/prometheus/alerts.yml`
//! loaded:
//! - `promtool check metrics` accepts a node's live scrape;
//! - PromQL answers the number of assignments the cluster made;
//! - every expression of the Grafana dashboard and of the alert rules evaluates without error
//!   against the real series, and the dashboard's panels find data;
//! - after a node is killed with SIGKILL, the node-down alert's expression is true for it and
//!   the alert is pending or firing.

mod support;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::processes::{NodeProcesses, StopOnDrop};
use support::{opened, setup_workspace};
use switchboard_client::pb;

/// The Prometheus server binary: `SWITCHBOARD_PROMETHEUS`, else `prometheus` on PATH.
fn prometheus_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_PROMETHEUS") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file());
    found.expect("prometheus is not installed: `apt-get install prometheus` (or set SWITCHBOARD_PROMETHEUS)")
}

/// The body of `GET http://{addr}{path}` (HTTP/1.0, so the answer is not chunked).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// `%`-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running Prometheus with its own storage and configuration.
struct Prometheus {
    _process: StopOnDrop,
    addr: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[String]) -> Self {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yml");
        let targets = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\n\
                 scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: [{targets}]\n",
                rules.canonicalize().expect("deploy/prometheus/alerts.yml").display().to_string()
            ),
        )
        .expect("write prometheus.yml");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let process = std::process::Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self { _process: StopOnDrop(process), addr }
    }

    /// The result vector of an instant query, or the error Prometheus gave.
    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let (status, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", encode(promql)))
            .map_err(|e| format!("cannot reach prometheus: {e}"))?;
        let answer: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{promql}: {}", answer["error"]));
        }
        match &answer["data"]["result"] {
            serde_json::Value::Array(samples) => Ok(samples.clone()),
            // A scalar answer is one sample.
            other => Ok(vec![other.clone()]),
        }
    }

    /// Waits up to `limit` until `check` accepts the answer to `promql`; returns the last one.
    async fn until(
        &self,
        promql: &str,
        limit: Duration,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let answer = self.query(promql);
            if let Ok(samples) = &answer
                && check(samples)
            {
                return samples.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "after {limit:?}, {promql} answers {answer:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The value of an instant-vector sample.
fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Every `expr` of the dashboard, with Grafana's interval variables given a value.
fn dashboard_expressions() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/switchboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("dashboard JSON");
    let mut found = Vec::new();
    fn walk(value: &serde_json::Value, title: &str, found: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                let title = map.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    found.push((title.to_owned(), expr.to_owned()));
                }
                for child in map.values() {
                    walk(child, title, found);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, title, found)),
            _ => {}
        }
    }
    walk(&dashboard, "", &mut found);
    found
        .into_iter()
        .map(|(title, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("${__rate_interval}", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "5m");
            (title, expr)
        })
        .collect()
}

/// Every rule of the alert file: (name, expression).
fn alert_rules() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yml");
    let rules: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("alerts.yml")).expect("alerts YAML");
    let mut found = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().or_else(|| rule["record"].as_str()).expect("a named rule");
            found.push((name.to_owned(), rule["expr"].as_str().expect("expr").to_owned()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_sees_the_cluster_and_pages_for_a_dead_node() {
    let mut cluster = NodeProcesses::start_with_metrics(3, "").await;
    let prometheus = Prometheus::start(cluster.dir.path(), &cluster.metrics_addrs);
    cluster.leader().await;
    let client = cluster.client();

    // Load: 40 conversations for 4 agents of 10 each: every one is assigned.
    setup_workspace(&client, "prom", pb::Strategy::RoundRobin, 4, 10).await;
    let events: Vec<pb::GatewayEvent> = (0..40).map(|i| opened("prom", &format!("c{i}"))).collect();
    for chunk in events.chunks(10) {
        client.publish_batch(pb::PublishBatchRequest { events: chunk.to_vec() }).await.expect("publish");
    }

    // A live scrape passes promtool's lint.
    let (status, scrape) = http_get(&cluster.metrics_addrs[0], "/metrics").expect("scrape");
    assert_eq!(status, 200, "{scrape}");
    for series in ["switchboard_build_info", "switchboard_serving", "switchboard_grpc_requests_total", "process_"] {
        assert!(scrape.contains(series), "the scrape has no {series}");
    }
    let promtool = prometheus_binary().with_file_name("promtool");
    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check.stdin.take().expect("stdin").write_all(scrape.as_bytes()).expect("feed promtool");
    let checked = check.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Every replica counts every assignment: max over the nodes is the cluster's count.
    let assigned = "sum(max without (instance) (switchboard_assignments_total{workspace=\"prom\"}))";
    prometheus
        .until(assigned, Duration::from_secs(60), |samples| samples.first().is_some_and(|s| value(s) == 40.0))
        .await;
    prometheus
        .until("count(up{job=\"switchboard\"} == 1)", Duration::from_secs(30), |s| {
            s.first().is_some_and(|s| value(s) == 3.0)
        })
        .await;
    // Ten scrapes, so that rates have two samples and the dashboard finds data.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let mut with_data = Vec::new();
    for (title, expr) in dashboard_expressions() {
        let samples = prometheus.query(&expr).unwrap_or_else(|error| panic!("panel {title:?}: {error}"));
        if !samples.is_empty() {
            with_data.push(expr);
        }
    }
    // Series of what did not happen (rejections, panics, gaps, snapshots, errors) may be empty;
    // the dashboard shows what did.
    for series in [
        "switchboard_assignments_total",
        "switchboard_raft_is_leader",
        "switchboard_raft_last_applied_index",
        "switchboard_agents",
        "switchboard_queue_depth",
        "switchboard_grpc_requests_total",
        "switchboard_serving",
        "switchboard_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(
            with_data.iter().any(|expr| expr.contains(series)),
            "no dashboard expression on {series} finds data; these do: {with_data:#?}"
        );
    }
    for (name, expr) in alert_rules() {
        prometheus.query(&expr).unwrap_or_else(|error| panic!("alert {name}: {error}"));
    }

    // A node dies: its `up` turns 0, which is the node-down alert's expression.
    let (_, node_down) =
        alert_rules().into_iter().find(|(name, _)| name == "SwitchboardNodeDown").expect("a SwitchboardNodeDown rule");
    assert!(prometheus.query(&node_down).expect("node down").is_empty(), "no node is down yet");
    cluster.kill(2).await;
    let down = prometheus.until(&node_down, Duration::from_secs(30), |samples| !samples.is_empty()).await;
    assert_eq!(down[0]["metric"]["instance"], cluster.metrics_addrs[2].as_str(), "{down:?}");
    let alerts = prometheus
        .until("ALERTS{alertname=\"SwitchboardNodeDown\"}", Duration::from_secs(30), |samples| !samples.is_empty())
        .await;
    assert!(
        alerts.iter().any(|a| a["metric"]["alertstate"] == "pending" || a["metric"]["alertstate"] == "firing"),
        "{alerts:?}"
    );
}
