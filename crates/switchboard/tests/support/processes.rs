//! A cluster of real `switchboard node` processes on 127.0.0.1, for tests that kill them with
//! SIGKILL or stop them gracefully (SIGTERM) and start them again on the same data.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use switchboard_client::{Client, ClientConfig};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A base port whose nine ports `switchboard dev --nodes 3` uses (API base+i, Raft base+100+i,
/// metrics base+2000+i) are free right now.
///
/// The range stays below Linux's ephemeral ports (32768 and up by default): those are handed to
/// the outgoing connections of every test running beside this one, and one taken between this
/// check and the node's bind made a dev node exit at start (CI, 2026-12-05).
pub fn free_base_port() -> u16 {
    const LOW: u32 = 10_000;
    const SPAN: u32 = 20_000; // the highest port used is below 30_000 + 2_003 < 32_768
    let start = (std::process::id() % 2_000) * 10;
    (0..2_000u32)
        .map(|step| (LOW + (start + step * 7) % SPAN) as u16)
        .find(|base| {
            [1, 2, 3, 101, 102, 103, 2001, 2002, 2003]
                .iter()
                .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
        })
        .expect("a free range of ports")
}

/// A process stopped gracefully when dropped: SIGTERM, up to 20 s to exit, then SIGKILL. For
/// `switchboard dev`, which stops its nodes on SIGTERM but would leave them running if it were
/// killed outright.
pub struct StopOnDrop(pub std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct NodeProcesses {
    pub dir: tempfile::TempDir,
    pub api_addrs: Vec<String>,
    /// Where each node serves Prometheus metrics (`/metrics`).
    pub metrics_addrs: Vec<String>,
    /// `--log-format` of the nodes started from now on (`text` unless changed).
    pub log_format: &'static str,
    /// `RUST_LOG` of the nodes started from now on; `None`: the node's own default filter.
    pub rust_log: Option<&'static str>,
    configs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
}

impl NodeProcesses {
    /// Writes the configuration of `count` nodes (`extra` is appended to each, e.g. a `[nats]`
    /// or `[raft]` table) and starts them.
    pub async fn start(count: usize, extra: &str) -> Self {
        Self::start_nodes(count, extra, false).await
    }

    /// As [`Self::start`], with each node serving metrics at `metrics_addrs[i]`. Only where a
    /// test reads them: every port picked ahead may be taken by then (a client's ephemeral
    /// port), and a node that cannot bind its metrics port does not start.
    pub async fn start_with_metrics(count: usize, extra: &str) -> Self {
        Self::start_nodes(count, extra, true).await
    }

    async fn start_nodes(count: usize, extra: &str, metrics: bool) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let metrics_addrs: Vec<String> =
            if metrics { (0..count).map(|_| format!("127.0.0.1:{}", free_port())).collect() } else { Vec::new() };
        let mut peers = String::new();
        for (i, (api, raft)) in ports.iter().enumerate() {
            peers.push_str(&format!(
                "\n[[peers]]\nid = {}\nraft_addr = \"127.0.0.1:{raft}\"\napi_addr = \"127.0.0.1:{api}\"\n",
                i + 1
            ));
        }
        let mut configs = Vec::new();
        for (i, (api, raft)) in ports.iter().enumerate() {
            let data = dir.path().join(format!("node{}", i + 1));
            let path = dir.path().join(format!("node{}.toml", i + 1));
            std::fs::write(
                &path,
                format!(
                    "id = {}\ndata_dir = {:?}\nlisten = \"127.0.0.1:{api}\"\nraft_listen = \"127.0.0.1:{raft}\"\n\
                     {}[presence]\nheartbeat_timeout_ms = 0\n{extra}\n{peers}",
                    i + 1,
                    data.display().to_string(),
                    metrics_addrs.get(i).map(|addr| format!("metrics_listen = \"{addr}\"\n")).unwrap_or_default(),
                ),
            )
            .expect("write config");
            configs.push(path);
        }
        let api_addrs = ports.iter().map(|(api, _)| format!("127.0.0.1:{api}")).collect();
        let mut cluster = Self {
            dir,
            api_addrs,
            metrics_addrs,
            log_format: "text",
            rust_log: Some("info,openraft=warn"),
            configs,
            children: (0..count).map(|_| None).collect(),
        };
        for i in 0..count {
            cluster.start_node(i);
        }
        cluster
    }

    /// Starts node `i` (0-based) on its configuration and data.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {} is running", i + 1);
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", i + 1)))
            .or_else(|_| std::fs::File::create("/dev/null"))
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        match self.rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .arg("--log-format")
            .arg(self.log_format)
            .arg("node")
            .arg("--config")
            .arg(&self.configs[i])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the node starts");
        self.children[i] = Some(child);
    }

    /// SIGKILL: the node stops at once, mid-write if it was writing.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits for the node to exit (it stops gracefully).
    pub async fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            }
            match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
                Ok(status) => {
                    let status = status.expect("wait");
                    assert!(status.success(), "node {} exited with {status} on SIGTERM", i + 1);
                }
                Err(_) => panic!("node {} did not stop within 20 s of SIGTERM", i + 1),
            }
        }
    }

    /// Node `i`'s configuration file.
    pub fn config_path(&self, i: usize) -> &std::path::Path {
        &self.configs[i]
    }

    /// Sends node `i` the signal `name` (`HUP`, `TERM`, ...).
    pub async fn signal(&self, i: usize, name: &str) {
        let pid = self.children[i].as_ref().and_then(Child::id).expect("the node runs");
        let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().await.expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// A client of every node, patient enough for elections and restarts.
    pub fn client(&self) -> Client {
        Client::with_config(
            self.api_addrs.clone(),
            ClientConfig { retry_timeout: Duration::from_secs(30), ..ClientConfig::default() },
        )
        .expect("client")
    }

    /// The index of the node that reports itself leader, waiting for one.
    pub async fn leader(&self) -> usize {
        let client = self.client();
        for _ in 0..400 {
            for i in 0..self.api_addrs.len() {
                if self.children[i].is_none() {
                    continue;
                }
                if let Ok(status) = client.status_of(i).await
                    && status.role == "leader"
                {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader");
    }

    /// The node's log (stderr), for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{}.log", i + 1))).unwrap_or_default()
    }
}
