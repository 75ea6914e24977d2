//! `switchboard dev`: a local cluster in one command. It starts N `switchboard node` processes
//! (this same binary) on 127.0.0.1, initialises them as one cluster, and optionally runs a demo
//! that configures a workspace and shows conversations being assigned.

use crate::ctl::{describe_effect, spec::WorkspaceFile};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    let mut children = Vec::new();
    for i in 1..=args.nodes {
        let dir = args.data_dir.join(format!("node{i}"));
        let config = format!(
            "# Written by `switchboard dev`.\nid = {i}\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nraft_listen = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n\n[presence]\nheartbeat_timeout_ms = 0\n{peers}",
            dir.display(),
            port(args.base_port, i)?,
            port(args.base_port, 100 + i)?,
            port(args.base_port, 2000 + i)?,
        );
        let path = args.data_dir.join(format!("node{i}.toml"));
        std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
        let mut child = Command::new(&exe)
            .arg("node")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[node{i}] {line}");
                }
            });
        }
        children.push(child);
    }
    let client = Client::connect(api_addrs.clone()).await?;
    let leader = wait_for_leader(&client).await?;
    println!();
    println!("Switchboard dev cluster: {} node(s), leader is node {leader}", args.nodes);
    for (i, api) in api_addrs.iter().enumerate() {
        println!(
            "  node{}  api {api}  metrics http://127.0.0.1:{}/metrics",
            i + 1,
            port(args.base_port, 2000 + i as u64 + 1)?
        );
    }
    println!("  data   {}", args.data_dir.display());
    let sb = program_name();
    println!("Try:  {sb} ctl status    |    {sb} ctl apply -f deploy/workspace.example.yaml");
    println!("Stop with Ctrl-C.\n");
    if args.demo {
        let demo_client = client.clone();
        let conversations = args.demo_conversations;
        tokio::spawn(async move {
            if let Err(error) = demo(&demo_client, conversations).await {
                eprintln!("demo stopped: {error:#}");
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        exited = wait_any(&mut children) => {
            eprintln!("a node exited ({exited}); stopping the others");
        }
    }
    for child in &mut children {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
    }
    for child in &mut children {
        if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    Ok(())
}

async fn wait_any(children: &mut [Child]) -> String {
    loop {
        for child in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return status.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
async fn demo(client: &Client, conversations: usize) -> Result<()> {
    let file = WorkspaceFile::parse(DEMO_WORKSPACE, "deploy/workspace.example.yaml")?;
    let ws = file.workspace.clone();
    println!("demo: applying deploy/workspace.example.yaml");
    crate::ctl::apply::apply(client, &file, false, false).await?;
    let mut watch = client.watch(pb::WatchRequest { workspace: ws.clone(), ..Default::default() });
    tokio::spawn(async move {
        while let Some(Ok(effect)) = watch.next_effect().await {
            println!("demo: {}", describe_effect(&effect));
        }
    });
    for (agent, status) in [
        ("mary", pb::AgentStatus::Online),
        ("john", pb::AgentStatus::Online),
        ("ana", pb::AgentStatus::Online),
        ("li", pb::AgentStatus::Busy),
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
    let run = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
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
        client.publish(pb::PublishRequest { event: Some(event) }).await?;
        // Every third conversation, an earlier one ends, which frees its agent for the queue.
        if n % 3 == 2 {
            let done = format!("demo-{run}-{}", n - 2);
            let _ = client
                .close(pb::CloseRequest { workspace: ws.clone(), conversation: done, ..Default::default() })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let sb = program_name();
    println!("demo: done. The cluster keeps running; try `{sb} ctl agents` or `{sb} ctl queue support`.");
    Ok(())
}
