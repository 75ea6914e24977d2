//! `switchboard ctl`: the admin and operator client.

pub(crate) mod apply;
pub(crate) mod check;
pub(crate) mod spec;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use switchboard_client::{Client, pb};

/// Nodes of the local cluster `switchboard dev` starts.
pub(crate) const DEV_NODES: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

#[derive(Args, Debug)]
pub(crate) struct CtlArgs {
    /// Cluster nodes to talk to (host:port of their APIs), comma separated. Any node will do;
    /// the others are tried when one is down.
    #[arg(long, global = true, env = "SWITCHBOARD_NODES", default_value = DEV_NODES, value_delimiter = ',')]
    pub(crate) nodes: Vec<String>,
    /// The workspace (contact center) to act on.
    #[arg(long, short, global = true, env = "SWITCHBOARD_WORKSPACE", default_value = "demo")]
    pub(crate) workspace: String,
    /// Read this node's state without a quorum round trip (dashboards); default is linearizable.
    #[arg(long, global = true)]
    pub(crate) local: bool,
    /// How long to keep retrying when nodes are unreachable or the cluster has no leader.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5.0)]
    pub(crate) timeout: f64,
    /// The bearer token to call with (`<id>.<secret>`), for clusters with an `[auth]` table.
    /// Prefer the environment variable: a flag is visible to other users in the process list.
    #[arg(long, global = true, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The cluster CA (PEM file) for clusters whose API serves TLS; the node addresses must be
    /// names or IP addresses their certificates carry.
    #[arg(long, global = true, env = "SWITCHBOARD_CA", value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for clusters that map certificates to roles;
    /// with --key and --ca.
    #[arg(long, global = true, env = "SWITCHBOARD_CERT", value_name = "FILE", requires_all = ["key", "ca"])]
    pub(crate) cert: Option<PathBuf>,
    /// The key of --cert (PEM).
    #[arg(long, global = true, env = "SWITCHBOARD_KEY", value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Make a new token: prints it (once; keep it secret) and the `[[auth.tokens]]` entry,
    /// holding only its hash, to add to every node's configuration (then send the nodes
    /// SIGHUP). Contacts no node.
    Create {
        /// The token's name, shown in logs and errors (letters, digits, '-', '_').
        #[arg(long)]
        id: String,
        /// gateway, agent, supervisor, admin or operator.
        #[arg(long)]
        role: String,
        /// Workspaces it is for, comma separated, `*` for all; default: --workspace. Operators
        /// have none.
        #[arg(long, value_delimiter = ',')]
        workspaces: Option<Vec<String>>,
        /// The agent an agent token acts as.
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CtlCommand {
    /// Every node's view of the cluster: role, term, indexes, state digest.
    Status,
    /// Back up the cluster: write one node's whole state (every workspace, conversation,
    /// queue, the outbox and the audit trail) at its applied index to a snapshot file, which
    /// `switchboard restore` turns into a data directory. Needs an operator token.
    Snapshot {
        /// Where to write it (written beside it first, then renamed: never half a file).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Every node's gRPC health: SERVING while it can take writes. Exits 0 only if every node
    /// given with --nodes is SERVING (a container health check: `--nodes 127.0.0.1:7101`).
    Health,
    /// Declaratively configure a workspace from a YAML file, printing what changes.
    Apply {
        /// The workspace file (see deploy/workspace.example.yaml).
        #[arg(long, short)]
        file: PathBuf,
        /// Show the changes without applying them.
        #[arg(long)]
        dry_run: bool,
        /// Also remove agents and teams the file does not mention.
        #[arg(long)]
        prune: bool,
    },
    /// Print the workspace's configuration as a workspace file.
    Export,
    /// List agents with status, open conversations and capacity.
    Agents {
        /// Only this status (online, busy, away, offline).
        #[arg(long)]
        status: Option<String>,
        /// Only members of this team.
        #[arg(long)]
        team: Option<String>,
    },
    /// Set an agent's status.
    SetStatus {
        /// The agent id.
        agent: String,
        /// online, busy, away or offline.
        status: String,
    },
    /// Show one conversation.
    Conversation {
        /// The conversation id.
        id: String,
    },
    /// Why a conversation went where it went: every decision about it with its log index, and
    /// for its opening and reopenings the path that decided and every candidate's verdict
    /// (re-derived by the node from its snapshots and log).
    Explain {
        /// The conversation id.
        conversation: String,
    },
    /// List a team's queue.
    Queue {
        /// The team id.
        team: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Publish a "conversation opened" event, as a gateway would.
    Open {
        /// The conversation id.
        conversation: String,
        /// The customer's contact id.
        #[arg(long)]
        contact: String,
        /// whatsapp, messenger, instagram, telegram, line, email, web_chat, sms or other.
        #[arg(long, default_value = "whatsapp")]
        channel: String,
        /// The customer's language.
        #[arg(long)]
        language: Option<String>,
        /// The topic.
        #[arg(long)]
        topic: Option<String>,
        /// The first message (keyword rules search it).
        #[arg(long)]
        message: Option<String>,
        /// Priority (higher first), 0-255.
        #[arg(long, default_value_t = 0)]
        priority: u32,
    },
    /// An agent picks a waiting conversation.
    Claim {
        /// The conversation id.
        conversation: String,
        /// The agent id.
        agent: String,
    },
    /// Assign a waiting conversation to an agent (supervisor).
    Assign {
        /// The conversation id.
        conversation: String,
        /// The agent id.
        agent: String,
    },
    /// Move a conversation to an agent or a team (supervisor).
    Transfer {
        /// The conversation id.
        conversation: String,
        /// To this agent.
        #[arg(long, conflicts_with = "team", required_unless_present = "team")]
        agent: Option<String>,
        /// To this team.
        #[arg(long)]
        team: Option<String>,
    },
    /// Close a conversation.
    Close {
        /// The conversation id.
        conversation: String,
    },
    /// Stream effects as they happen (Ctrl-C to stop).
    Watch {
        /// Only this team's.
        #[arg(long)]
        team: Option<String>,
        /// Only effects naming this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Start at this log index (0 = now).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many effects.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Who changed the workspace's configuration (or, with --cluster, the membership), when,
    /// and whether it took effect.
    Audit {
        /// The cluster's membership changes instead of the workspace's (operators).
        #[arg(long)]
        cluster: bool,
        /// Only records after this log index.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many records (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Add a node as a learner (non-voting member).
    AddLearner {
        /// Its node id.
        id: u64,
        /// Its Raft address.
        raft_addr: String,
        /// Its API address.
        api_addr: String,
    },
    /// Bearer tokens for clusters with an `[auth]` table.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Set the voting members.
    ChangeMembership {
        /// Node ids of the voters.
        #[arg(value_delimiter = ',', required = true)]
        voters: Vec<u64>,
        /// Also remove learners that are not voters.
        #[arg(long)]
        remove_learners: bool,
    },
}

fn consistency(local: bool) -> i32 {
    if local { pb::Consistency::Local as i32 } else { pb::Consistency::Linearizable as i32 }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One line per effect, for people.
pub(crate) fn describe_effect(effect: &pb::Effect) -> String {
    use pb::effect::Kind;
    let body = match &effect.kind {
        Some(Kind::Assigned(a)) => format!(
            "assigned     {} -> {} ({}) in {} [{}], answers within ~{} s",
            a.conversation,
            a.agent,
            a.agent_name,
            a.team,
            match pb::AssignReason::try_from(a.reason) {
                Ok(pb::AssignReason::Strategy) => spec::strategy_name(a.strategy),
                Ok(reason) => reason.as_str_name().trim_start_matches("ASSIGN_REASON_").to_ascii_lowercase(),
                Err(_) => "?".to_owned(),
            },
            a.expected_response_ms / 1000
        ),
        Some(Kind::Unassigned(u)) => format!(
            "unassigned   {} left {} ({})",
            u.conversation,
            u.agent,
            pb::UnassignReason::try_from(u.reason)
                .map_or("?", |r| r.as_str_name())
                .trim_start_matches("UNASSIGN_REASON_")
                .to_ascii_lowercase()
        ),
        Some(Kind::Queued(q)) => format!(
            "queued       {} in {}: position {}{}{}",
            q.conversation,
            q.team,
            q.position,
            q.eta_ms.map_or_else(String::new, |eta| format!(", about {} min", eta.div_ceil(60_000))),
            if q.waiting_for.is_empty() { String::new() } else { format!(", waiting for {}", q.waiting_for) }
        ),
        Some(Kind::QueuePosition(q)) => format!(
            "position     {} in {}: now number {}{}",
            q.conversation,
            q.team,
            q.position,
            q.eta_ms.map_or_else(String::new, |eta| format!(", about {} min", eta.div_ceil(60_000)))
        ),
        Some(Kind::OutsideHours(o)) => format!(
            "closed-hours {} in {}: opens at {}",
            o.conversation,
            o.team,
            o.opens_at_ms.map_or_else(|| "never".to_owned(), utc)
        ),
        Some(Kind::Welcome(w)) => format!("welcome      {} in {}: {:?}", w.conversation, w.team, w.message),
        Some(Kind::Reopened(r)) => format!("reopened     {} in {}", r.conversation, r.team),
        Some(Kind::Closed(c)) => format!(
            "closed       {}{}",
            c.conversation,
            if c.agent.is_empty() { String::new() } else { format!(" (agent {} freed)", c.agent) }
        ),
        Some(Kind::AgentStatus(s)) => format!("agent        {} is now {}", s.agent, spec::status_name(s.status)),
        None => "(empty effect)".to_owned(),
    };
    format!("#{:<6} {body}", effect.log_index)
}

/// `ms` (UTC milliseconds) as an RFC 3339 time.
fn utc(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map_or_else(|| format!("{ms} ms"), |t| t.to_rfc3339())
}

/// An `Explain` answer as text: each decision with its time and log index, the explanation of
/// each routing, and what happened.
pub(crate) fn explained(conversation: &str, answer: pb::ExplainResponse) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "conversation {conversation}: {} decision(s) in log indexes {}..={}",
        answer.decisions.len(),
        answer.oldest_index,
        answer.applied_index
    );
    if answer.earlier_out_of_range {
        let _ =
            writeln!(out, "  (it existed before index {}: earlier decisions are out of reach)", answer.oldest_index);
    }
    if answer.omitted > 0 {
        let _ = writeln!(out, "  ({} older decision(s) left out)", answer.omitted);
    }
    for decision in answer.decisions {
        let source =
            if decision.event_id.is_empty() { String::new() } else { format!(", event {}", decision.event_id) };
        let _ =
            writeln!(out, "  {} {} (log index {}{source})", utc(decision.at_ms), decision.cause, decision.log_index);
        if let Some(why) = decision.explanation {
            let why = switchboard_server::convert::explain::explanation_from_pb(why)
                .context("the node's explanation could not be read")?;
            let winner = decision.effects.iter().find_map(|e| match &e.kind {
                Some(pb::effect::Kind::Assigned(a)) => Some(a.agent.as_str()),
                _ => None,
            });
            switchboard_replay::text::explanation(&mut out, &why, winner);
        }
        for effect in &decision.effects {
            let _ = writeln!(out, "    -> {}", describe_effect(effect));
        }
    }
    Ok(out)
}

fn print_effects(effects: &[pb::Effect]) {
    if effects.is_empty() {
        println!("(no effects)");
    }
    for effect in effects {
        println!("{}", describe_effect(effect));
    }
}

pub(crate) async fn run(args: CtlArgs) -> Result<()> {
    let nodes = args.nodes.join(",");
    execute(args).await.map_err(|err| explain(err, &nodes))
}

/// Rewrites an error whose cause is a gRPC status into `context: CODE: message`, with a hint
/// when no node could be reached.
fn explain(err: anyhow::Error, nodes: &str) -> anyhow::Error {
    let Some(status) = err.chain().find_map(|cause| cause.downcast_ref::<tonic::Status>()) else {
        return err;
    };
    let mut text = String::new();
    for cause in err.chain().take_while(|cause| cause.downcast_ref::<tonic::Status>().is_none()) {
        text.push_str(&format!("{cause}: "));
    }
    text.push_str(&format!("{:?}: {}", status.code(), status.message()));
    if status.code() == tonic::Code::Unavailable {
        text.push_str(&format!(
            "\n(no node of {nodes} could serve the call; is the cluster running? `make run` or \
             `switchboard dev` starts one, --nodes names another)"
        ));
    }
    anyhow::anyhow!(text)
}

async fn execute(args: CtlArgs) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds, not {}", args.timeout);
    }
    // A workspace file that cannot be right is refused before any node is contacted.
    let workspace_file = match &args.command {
        CtlCommand::Apply { file, .. } => {
            let text = spec::read_file(file)?;
            let spec = spec::WorkspaceFile::parse(&text, &file.display().to_string())?;
            spec.validate()?;
            Some(spec)
        }
        _ => None,
    };
    if let CtlCommand::Token { command: TokenCommand::Create { id, role, workspaces, agent } } = &args.command {
        let workspaces = match (workspaces, role.as_str()) {
            (Some(list), _) => list.clone(),
            (None, "operator") => Vec::new(),
            (None, _) => vec![args.workspace.clone()],
        };
        return token_create(id, role, &workspaces, agent.as_deref());
    }
    let tls_ca_pem = match &args.ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("--ca: cannot read {}", path.display()))?),
        None => None,
    };
    let tls_identity_pem = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read(cert).with_context(|| format!("--cert: cannot read {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("--key: cannot read {}", key.display()))?,
        )),
        _ => None,
    };
    let config = switchboard_client::ClientConfig {
        tls_identity_pem,
        retry_timeout: std::time::Duration::from_secs_f64(args.timeout),
        // An empty SWITCHBOARD_TOKEN is no token.
        token: args.token.clone().filter(|token| !token.is_empty()),
        tls_ca_pem,
        ..Default::default()
    };
    let client = Client::with_config(args.nodes.clone(), config).context("bad --nodes")?;
    let ws = args.workspace.clone();
    match args.command {
        CtlCommand::Snapshot { out } => snapshot(&client, &out).await?,
        CtlCommand::Health => {
            let mut serving = 0;
            for (i, address) in client.addresses().iter().enumerate() {
                let answer = match client.channel_of(i) {
                    Some(channel) => {
                        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
                        request.set_timeout(std::time::Duration::from_secs_f64(args.timeout.clamp(0.1, 60.0)));
                        tonic_health::pb::health_client::HealthClient::new(channel).check(request).await
                    }
                    None => Err(tonic::Status::internal("no channel")),
                };
                let status = match answer {
                    Ok(answer) => {
                        let status = tonic_health::pb::health_check_response::ServingStatus::try_from(
                            answer.into_inner().status,
                        )
                        .map_or("UNKNOWN", |status| status.as_str_name());
                        if status == "SERVING" {
                            serving += 1;
                        }
                        status.to_owned()
                    }
                    Err(error) => format!("unreachable ({})", error.message()),
                };
                println!("{address:<22} {status}");
            }
            if serving < client.addresses().len() {
                bail!("{} of {} nodes are not SERVING", client.addresses().len() - serving, client.addresses().len());
            }
        }
        CtlCommand::Status => {
            println!(
                "{:<6} {:<22} {:<10} {:>5} {:>7} {:>9} {:>9} {:>9}  state_digest",
                "node", "address", "role", "term", "leader", "last_log", "commit", "applied"
            );
            let mut failures = 0;
            let mut hint = "is the cluster running? (`make run` or `switchboard dev` starts one; a cluster that \
                            serves TLS needs --ca)";
            for (i, address) in client.addresses().iter().enumerate() {
                match client.status_of(i).await {
                    Ok(s) => println!(
                        "{:<6} {:<22} {:<10} {:>5} {:>7} {:>9} {:>9} {:>9}  {}",
                        s.node_id,
                        address,
                        s.role,
                        s.term,
                        s.leader_id,
                        s.last_log_index,
                        s.commit_index,
                        s.applied_index,
                        s.state_digest
                    ),
                    Err(status) => {
                        failures += 1;
                        let reason = match status.code() {
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                                hint = "give a token with --token or SWITCHBOARD_TOKEN";
                                format!("{:?}: {}", status.code(), status.message())
                            }
                            _ => {
                                let text = format!("{}{}", status.message(), source_text(&status));
                                if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
                                    hint = "does --ca (SWITCHBOARD_CA) name the CA that signed the nodes' certificates, \
                                            and do their certificates carry the addresses in --nodes?";
                                }
                                text
                            }
                        };
                        println!("{:<6} {:<22} unreachable: {reason}", "?", address);
                    }
                }
            }
            if failures == client.addresses().len() {
                bail!("no node answered; {hint}");
            }
        }
        CtlCommand::Apply { dry_run, prune, .. } => {
            let spec = workspace_file.context("the workspace file was read above")?;
            apply::apply(&client, &spec, dry_run, prune).await?;
        }
        CtlCommand::Export => {
            let config = client
                .get_workspace(pb::GetWorkspaceRequest { workspace: ws, consistency: consistency(args.local) })
                .await?;
            print!("{}", serde_norway::to_string(&spec::from_config(&config))?);
        }
        CtlCommand::Agents { status, team } => {
            let status = status.map(|s| spec::status(&s, "--status")).transpose()?;
            let mut page_after = String::new();
            let mut header = true;
            loop {
                let page = client
                    .list_agents(pb::ListAgentsRequest {
                        workspace: ws.clone(),
                        status: status.map_or(0, |s| s as i32),
                        team: team.clone().unwrap_or_default(),
                        page_after: page_after.clone(),
                        page_size: 1000,
                        consistency: consistency(args.local),
                    })
                    .await?;
                if std::mem::take(&mut header) {
                    println!(
                        "{:<20} {:<20} {:<8} {:>9} {:>11}  teams",
                        "agent", "name", "status", "open/max", "today/limit"
                    );
                }
                for a in &page.agents {
                    println!(
                        "{:<20} {:<20} {:<8} {:>9} {:>11}  {}",
                        a.id,
                        a.display_name,
                        spec::status_name(a.status),
                        format!("{}/{}", a.open_count, a.max_open),
                        format!("{}/{}", a.received_today, a.daily_limit),
                        a.teams.join(",")
                    );
                }
                if page.next_page_after.is_empty() {
                    break;
                }
                page_after = page.next_page_after;
            }
        }
        CtlCommand::SetStatus { agent, status } => {
            let status = spec::status(&status, "status")?;
            let done = client
                .set_status(pb::SetStatusRequest {
                    workspace: ws,
                    agent: agent.clone(),
                    status: status.into(),
                    ..Default::default()
                })
                .await?;
            println!("{agent} is {} (log index {})", spec::status_name(status as i32), done.log_index);
        }
        CtlCommand::Conversation { id } => {
            let c = client
                .get_conversation(pb::GetConversationRequest {
                    workspace: ws,
                    conversation: id,
                    consistency: consistency(args.local),
                })
                .await?;
            let state = pb::ConversationState::try_from(c.state).map_or("?", |s| s.as_str_name());
            println!("conversation {} ({} on {})", c.id, c.contact, spec::channel_name(c.channel));
            println!("  state     {}", state.trim_start_matches("CONVERSATION_STATE_").to_ascii_lowercase());
            println!("  team      {}", c.team);
            if !c.assignee.is_empty() {
                println!("  assignee  {}", c.assignee);
            }
            if let Some(q) = &c.queue {
                println!(
                    "  queue     position {}{}{}",
                    q.position,
                    q.eta_ms.map_or_else(String::new, |eta| format!(", about {} min", eta.div_ceil(60_000))),
                    if q.waiting_for.is_empty() { String::new() } else { format!(", waiting for {}", q.waiting_for) }
                );
            }
            println!("  (as of log index {})", c.applied_index);
        }
        CtlCommand::Explain { conversation } => {
            let answer =
                client.explain(pb::ExplainRequest { workspace: ws, conversation: conversation.clone() }).await?;
            print!("{}", explained(&conversation, answer)?);
        }
        CtlCommand::Queue { team, limit } => {
            let queue = client
                .list_queue(pb::ListQueueRequest {
                    workspace: ws,
                    team: team.clone(),
                    offset: 0,
                    limit,
                    consistency: consistency(args.local),
                })
                .await?;
            println!("team {team}: {} waiting", queue.depth);
            for e in &queue.entries {
                println!(
                    "  {:>4}. {:<24} priority {:<3} {:<10}{}",
                    e.position,
                    e.conversation,
                    e.priority,
                    spec::channel_name(e.channel),
                    if e.waiting_for.is_empty() { String::new() } else { format!(" waiting for {}", e.waiting_for) }
                );
            }
        }
        CtlCommand::Open { conversation, contact, channel, language, topic, message, priority } => {
            let channel = spec::channel(&channel, "--channel")?;
            let event = pb::GatewayEvent {
                event_id: client.new_request_id(),
                workspace: ws,
                occurred_at_ms: now_ms(),
                kind: Some(pb::gateway_event::Kind::ConversationOpened(pb::ConversationOpened {
                    conversation,
                    contact,
                    channel: channel.into(),
                    language: language.unwrap_or_default(),
                    topic: topic.unwrap_or_default(),
                    tags: Vec::new(),
                    first_message: message.unwrap_or_default(),
                    priority,
                })),
            };
            let published = client.publish(pb::PublishRequest { event: Some(event) }).await?;
            print_effects(&published.effects);
        }
        CtlCommand::Claim { conversation, agent } => {
            let done =
                client.claim(pb::ClaimRequest { workspace: ws, conversation, agent, ..Default::default() }).await?;
            print_effects(&done.effects);
        }
        CtlCommand::Assign { conversation, agent } => {
            let done =
                client.assign(pb::AssignRequest { workspace: ws, conversation, agent, ..Default::default() }).await?;
            print_effects(&done.effects);
        }
        CtlCommand::Transfer { conversation, agent, team } => {
            let target = match (agent, team) {
                (Some(agent), _) => pb::transfer_request::Target::Agent(agent),
                (None, Some(team)) => pb::transfer_request::Target::Team(team),
                (None, None) => bail!("give --agent or --team"),
            };
            let done = client
                .transfer(pb::TransferRequest {
                    workspace: ws,
                    conversation,
                    target: Some(target),
                    ..Default::default()
                })
                .await?;
            print_effects(&done.effects);
        }
        CtlCommand::Close { conversation } => {
            let done = client.close(pb::CloseRequest { workspace: ws, conversation, ..Default::default() }).await?;
            print_effects(&done.effects);
        }
        CtlCommand::Watch { team, agent, from, count } => {
            let mut stream = client.watch(pb::WatchRequest {
                workspace: ws,
                team: team.unwrap_or_default(),
                agent: agent.unwrap_or_default(),
                conversation: String::new(),
                from_index: from,
            });
            let mut seen = 0usize;
            while let Some(effect) = stream.next_effect().await {
                println!("{}", describe_effect(&effect?));
                seen += 1;
                if count.is_some_and(|count| seen >= count) {
                    break;
                }
            }
        }
        CtlCommand::Audit { cluster, after, limit } => {
            let workspace = if cluster { String::new() } else { ws.clone() };
            let answer = client.list_audit(pb::ListAuditRequest { workspace, after_index: after, limit }).await?;
            if answer.records.is_empty() {
                println!("(no changes recorded)");
            }
            for record in answer.records {
                let who = if record.credential.is_empty() {
                    record.role.clone()
                } else {
                    format!("{} ({})", record.credential, record.role)
                };
                println!(
                    "{:>8}  {}  {:<28}  {}  {}",
                    record.log_index,
                    utc(record.at_ms),
                    who,
                    record.action,
                    record.outcome
                );
            }
        }
        CtlCommand::AddLearner { id, raft_addr, api_addr } => {
            let done =
                client.add_learner(pb::AddLearnerRequest { id, raft_addr, api_addr, wait_for_catch_up: true }).await?;
            println!("node {id} added as a learner (log index {})", done.log_index);
        }
        CtlCommand::ChangeMembership { voters, remove_learners } => {
            let done = client
                .change_membership(pb::ChangeMembershipRequest { voters: voters.clone(), remove_learners })
                .await?;
            println!("voters are now {voters:?} (log index {})", done.log_index);
        }
        // Answered above without a client.
        CtlCommand::Token { .. } => {}
    }
    Ok(())
}

/// `ctl token create`: a new token and its configuration entry, checked as a node would.
fn token_create(id: &str, role: &str, workspaces: &[String], agent: Option<&str>) -> Result<()> {
    use switchboard_server::auth::{CredentialSpec, new_token};
    let (token, sha256) = new_token(id).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let spec = CredentialSpec {
        id: id.to_owned(),
        role: role.to_owned(),
        workspaces: workspaces.to_vec(),
        agent: agent.map(str::to_owned),
        sha256: sha256.clone(),
        certificate_name: None,
    };
    spec.check("token").map_err(|e| anyhow::anyhow!("{e}"))?;
    let quoted: Vec<String> = workspaces.iter().map(|w| format!("{w:?}")).collect();
    println!("token: {token}");
    println!();
    println!("# Add to the [auth] section of every node's configuration, then send the nodes SIGHUP:");
    println!("[[auth.tokens]]");
    println!("id = {id:?}");
    println!("role = {role:?}");
    println!("workspaces = [{}]", quoted.join(", "));
    if let Some(agent) = agent {
        println!("agent = {agent:?}");
    }
    println!("sha256 = {sha256:?}");
    Ok(())
}

/// The transport error under a status, if any (`: <cause>`), which says why a TLS connection
/// failed.
/// `ctl snapshot`: the leader (through the first node that answers) streams its state into
/// `out`.
async fn snapshot(client: &Client, out: &std::path::Path) -> Result<()> {
    let name = out.file_name().with_context(|| format!("--out {} names no file", out.display()))?;
    let mut partial_name = name.to_owned();
    partial_name.push(".partial");
    let partial = out.with_file_name(partial_name);
    let mut last_error = None;
    for (i, address) in client.addresses().iter().enumerate() {
        match snapshot_from(client, i, &partial).await {
            Ok((index, term, bytes)) => {
                std::fs::rename(&partial, out)
                    .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
                println!(
                    "snapshot at log index {index} (term {term}) through {address}, {bytes} bytes: {}",
                    out.display()
                );
                return Ok(());
            }
            Err(error) => {
                let _ = std::fs::remove_file(&partial);
                last_error = Some(error.context(format!("{address} did not export a snapshot")));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no node to ask")))
}

/// Streams node `i`'s export into `partial`, synced; (index, term, bytes).
async fn snapshot_from(client: &Client, i: usize, partial: &std::path::Path) -> Result<(u64, u64, u64)> {
    use std::io::Write as _;
    let mut chunks = client.export_snapshot_of(i).await?;
    let mut file = std::fs::File::create(partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let (mut index, mut term, mut total, mut written) = (0, 0, 0u64, 0u64);
    while let Some(chunk) = chunks.message().await.context("the export stopped")? {
        if written == 0 {
            (index, term, total) = (chunk.last_log_index, chunk.last_log_term, chunk.total_bytes);
        }
        file.write_all(&chunk.data).with_context(|| format!("cannot write {}", partial.display()))?;
        written += chunk.data.len() as u64;
    }
    if written != total || written == 0 {
        bail!("received {written} of {total} bytes");
    }
    file.sync_all().with_context(|| format!("cannot write {}", partial.display()))?;
    Ok((index, term, written))
}

fn source_text(status: &tonic::Status) -> String {
    let mut text = String::new();
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.contains(&said) && !status.message().contains(&said) {
            text.push_str(&format!(": {said}"));
        }
        cause = error.source();
    }
    text
}
