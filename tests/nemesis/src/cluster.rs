//! The system under test as real processes on 127.0.0.1: one nats-server (JetStream,
//! `sync_interval: always`) and N `switchboard node` processes, each with its own data
//! directory, whose Raft traffic passes through the partition proxies of [`crate::proxy`].

use crate::proxy::{Cuts, Network};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchboard_client::{Client, ClientConfig, pb};

/// Where the binaries are and where the run keeps its files.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The `switchboard` binary.
    pub switchboard: PathBuf,
    /// nats-server 2.12 or later.
    pub nats_server: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends `signal` to `pid` with kill(1) (the workspace forbids `unsafe`, so no libc).
fn kill(signal: &str, pid: u32) -> Result<()> {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// One nats-server.
pub struct Nats {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// The client URL.
    pub url: String,
    port: u16,
    child: Option<Child>,
}

impl Nats {
    async fn start(binary: &Path, dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 1MB\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                dir.join("nats-store").display().to_string()
            ),
        )?;
        let mut nats = Self {
            binary: binary.to_owned(),
            config,
            log: dir.join("nats.log"),
            url: format!("nats://127.0.0.1:{port}"),
            port,
            child: None,
        };
        nats.launch().await?;
        Ok(nats)
    }

    async fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        self.child = Some(child);
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("nats-server did not start on {}", self.url)
    }

    /// SIGKILL, and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch().await
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node's process state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Up,
    /// Stopped with SIGSTOP.
    Paused,
    /// Not running.
    Down,
}

/// The cluster.
pub struct Cluster {
    dir: PathBuf,
    binaries: Binaries,
    /// The NATS server.
    pub nats: Nats,
    /// Every node's public API address.
    pub api_addrs: Vec<String>,
    configs: Vec<PathBuf>,
    data_dirs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
    states: Vec<NodeState>,
    /// The partition proxies.
    pub network: Network,
}

impl Cluster {
    /// Starts NATS and `count` nodes in `dir`; node 1 initialises the cluster from the peers
    /// list, whose Raft addresses are the proxies.
    pub async fn start(binaries: &Binaries, dir: &Path, count: usize) -> Result<Self> {
        let nats = Nats::start(&binaries.nats_server, dir).await?;
        let network = Network::new(count);
        let mut nodes = Vec::new();
        for i in 0..count {
            let api = free_port()?;
            let raft = free_port()?;
            let upstream: SocketAddr = format!("127.0.0.1:{raft}").parse()?;
            let proxy = network.proxy(i, upstream).await?;
            nodes.push((api, raft, proxy));
        }
        let mut peers = String::new();
        for (i, (api, _, proxy)) in nodes.iter().enumerate() {
            peers.push_str(&format!(
                "\n[[peers]]\nid = {}\nraft_addr = \"{proxy}\"\napi_addr = \"127.0.0.1:{api}\"\n",
                i + 1
            ));
        }
        let mut configs = Vec::new();
        let mut data_dirs = Vec::new();
        for (i, (api, raft, proxy)) in nodes.iter().enumerate() {
            let data = dir.join(format!("node{}", i + 1));
            let path = dir.join(format!("node{}.toml", i + 1));
            // Small snapshot intervals so that a wiped node rejoins through a snapshot, and a
            // short ack wait so that a new leader gets a dead leader's events back quickly.
            std::fs::write(
                &path,
                format!(
                    "id = {id}\ndata_dir = {data:?}\nlisten = \"127.0.0.1:{api}\"\nraft_listen = \"127.0.0.1:{raft}\"\n\
                     advertise_raft = \"{proxy}\"\n\
                     [presence]\nheartbeat_timeout_ms = 0\n\
                     [raft]\nsnapshot_every_entries = 400\nkeep_entries_after_snapshot = 100\n\
                     [nats]\nurl = \"{url}\"\nstream_replicas = 1\nack_wait_s = 5\n{peers}",
                    id = i + 1,
                    data = data.display().to_string(),
                    url = nats.url,
                ),
            )?;
            configs.push(path);
            data_dirs.push(data);
        }
        let api_addrs = nodes.iter().map(|(api, _, _)| format!("127.0.0.1:{api}")).collect();
        let mut cluster = Self {
            dir: dir.to_owned(),
            binaries: binaries.clone(),
            nats,
            api_addrs,
            configs,
            data_dirs,
            children: (0..count).map(|_| None).collect(),
            states: vec![NodeState::Down; count],
            network,
        };
        for i in 0..count {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether the cluster has no nodes (never).
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Node `i`'s process state.
    pub fn state(&self, i: usize) -> NodeState {
        self.states[i]
    }

    /// Starts node `i` on its configuration and data.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        if self.children[i].is_some() {
            bail!("node {} is running", i + 1);
        }
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("node{}.log", i + 1)))?;
        let child = Command::new(&self.binaries.switchboard)
            .env("RUST_LOG", "info,openraft=warn")
            .arg("node")
            .arg("--config")
            .arg(&self.configs[i])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binaries.switchboard.display()))?;
        self.network.set_pid(i, Some(child.id()));
        self.children[i] = Some(child);
        self.states[i] = NodeState::Up;
        Ok(())
    }

    /// SIGKILL of node `i` (a paused node is killed as it is).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.network.set_pid(i, None);
        self.states[i] = NodeState::Down;
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        if let Some(child) = &self.children[i] {
            kill("STOP", child.id())?;
            self.states[i] = NodeState::Paused;
        }
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        if let Some(child) = &self.children[i] {
            kill("CONT", child.id())?;
            self.states[i] = NodeState::Up;
        }
        Ok(())
    }

    /// Removes node `i`'s data directory (the node must be down): it restarts with nothing.
    pub fn wipe(&mut self, i: usize) -> Result<()> {
        if self.children[i].is_some() {
            bail!("node {} is running", i + 1);
        }
        match std::fs::remove_dir_all(&self.data_dirs[i]) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Cuts the listed pairs of nodes from each other (and heals every other pair).
    pub fn partition(&self, cuts: Cuts) {
        self.network.set_cuts(cuts);
    }

    /// Whether node `i` exited on its own (it was started and is no longer running).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.children[i].as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// A client of every node.
    pub fn client(&self, request_timeout: Duration, retry_timeout: Duration) -> Result<Client> {
        Ok(Client::with_config(
            self.api_addrs.clone(),
            ClientConfig {
                request_timeout,
                retry_timeout,
                connect_timeout: Duration::from_millis(500),
                ..ClientConfig::default()
            },
        )?)
    }

    /// The running node that says it leads, if one does now.
    pub async fn leader(&self) -> Option<usize> {
        let client = self.client(Duration::from_millis(500), Duration::ZERO).ok()?;
        for i in 0..self.len() {
            if self.states[i] != NodeState::Up {
                continue;
            }
            if let Ok(status) = client.status_of(i).await
                && status.role == "leader"
            {
                return Some(i);
            }
        }
        None
    }

    /// Every node's (applied index, state digest), for nodes that answer.
    pub async fn digests(&self) -> Vec<Option<(u64, String)>> {
        let Ok(client) = self.client(Duration::from_secs(2), Duration::ZERO) else { return Vec::new() };
        let mut out = Vec::new();
        for i in 0..self.len() {
            out.push(client.status_of(i).await.ok().map(|s: pb::ClusterStatus| (s.applied_index, s.state_digest)));
        }
        out
    }

    /// What each node says of itself (role, term, leader, log, commit, applied, snapshot), or
    /// the error it answers with, for a wedge's report.
    pub async fn describe(&self) -> String {
        let Ok(client) = self.client(Duration::from_secs(2), Duration::ZERO) else { return String::new() };
        let mut out = Vec::new();
        for i in 0..self.len() {
            out.push(match client.status_of(i).await {
                Ok(s) => format!(
                    "node {}: {} term={} leader={} last_log={} commit={} applied={} snapshot={}",
                    i + 1,
                    s.role,
                    s.term,
                    s.leader_id,
                    s.last_log_index,
                    s.commit_index,
                    s.applied_index,
                    s.snapshot_index
                ),
                Err(status) => {
                    format!("node {} ({:?}): {:?} {}", i + 1, self.states[i], status.code(), status.message())
                }
            });
        }
        out.join("\n")
    }

    /// Writes every running node's thread stacks to `node<N>.stacks` in the run's directory
    /// with gdb, when gdb is installed (for a wedge: where is everyone waiting?).
    pub fn dump_stacks(&self) -> Vec<PathBuf> {
        let mut written = Vec::new();
        for (i, child) in self.children.iter().enumerate() {
            let Some(child) = child else { continue };
            let path = self.dir.join(format!("node{}.stacks", i + 1));
            let output = Command::new("gdb")
                .args(["-p", &child.id().to_string(), "-batch", "-ex", "thread apply all bt"])
                .stdin(Stdio::null())
                .output();
            if let Ok(output) = output
                && std::fs::write(&path, &output.stdout).is_ok()
            {
                written.push(path);
            }
        }
        written
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("node{}.log", i + 1))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            if self.states[i] == NodeState::Paused {
                let _ = self.resume(i);
            }
            self.kill(i);
        }
    }
}
