//! The clients of a contact center, each a task that records every request and its answer:
//! gateways publishing conversations through NATS, agent apps (presence, heartbeats), pairs of
//! agents racing to claim the same conversation, a supervisor assigning and transferring, and
//! an admin changing the workspace while traffic flows.

use crate::history::{History, Outcome, Published, Request, grpc_outcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchboard_client::gateway::Gateway;
use switchboard_client::{Client, pb};
use tokio::task::JoinSet;

/// The workspace the workload uses.
pub const WORKSPACE: &str = "nemesis";
/// The team of automatic assignment.
pub const AUTO_TEAM: &str = "auto";
/// The manual team (claims, supervisor assignments).
pub const PICK_TEAM: &str = "pick";
/// Agents of the automatic team; the last one is removed and added again by the admin.
pub const AUTO_AGENTS: [&str; 6] = ["a01", "a02", "a03", "a04", "a05", "a06"];
/// The agent the admin removes and adds again.
pub const REMOVABLE_AGENT: &str = "a06";
/// Agents of the manual team; always online, with room for everything.
pub const PICK_AGENTS: [&str; 2] = ["p1", "p2"];
/// max_open of the manual team's agents.
pub const PICK_MAX_OPEN: u32 = 1000;
/// The topic a routing rule sends to the manual team.
pub const PICK_TOPIC: &str = "pick";

/// How long a client keeps retrying one request before it records "unknown".
const GIVE_UP: Duration = Duration::from_secs(30);

/// What every workload task shares.
#[derive(Clone)]
pub struct Context {
    /// The record of requests.
    pub history: History,
    /// A client that does not retry on its own (each attempt is counted here).
    pub client: Client,
    /// A client for reads, patient through elections.
    pub reader: Client,
    /// NATS URL.
    pub nats_url: String,
    /// Set when the workload should stop.
    pub stop: Arc<AtomicBool>,
}

impl Context {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs a gRPC write until it gets a definite answer or [`GIVE_UP`], with the same
    /// idempotency key on every attempt, and records it. A refusal that came on a retry is
    /// recorded as unknown: an earlier attempt, delayed in the network, may still apply.
    async fn write<T, F, Fut>(
        &self,
        process: &str,
        request: Request,
        mut call: F,
        index: impl Fn(&T) -> (u64, Vec<pb::Effect>),
    ) -> Outcome
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let invoked = self.history.now();
        let mut attempts = 0u32;
        let outcome = loop {
            attempts += 1;
            let result = call().await;
            let outcome = grpc_outcome(&result, &index);
            match outcome {
                Outcome::Unknown { .. } if self.history.now() - invoked < GIVE_UP => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Outcome::Refused { code, message } if attempts > 1 => {
                    break Outcome::Unknown { error: format!("refused on attempt {attempts}: {code:?}: {message}") };
                }
                other => break other,
            }
        };
        self.history.record(process, request, invoked, outcome.clone());
        outcome
    }

    /// Publishes a gateway event through NATS until JetStream acknowledges it (or
    /// [`GIVE_UP`]), always with the same Nats-Msg-Id. Returns whether it was acknowledged.
    async fn publish(&self, gateway: &Gateway, process: &str, event: pb::GatewayEvent, what: Published) -> bool {
        let invoked = self.history.now();
        let mut last_error = String::new();
        let acked = loop {
            match tokio::time::timeout(Duration::from_secs(5), gateway.publish(&event)).await {
                Ok(Ok(_)) => break true,
                Ok(Err(error)) => last_error = error.to_string(),
                Err(_) => last_error = "no acknowledgement within 5 s".to_owned(),
            }
            if self.history.now() - invoked >= GIVE_UP {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let outcome = if acked {
            Outcome::Ok { log_index: None, effects: Vec::new() }
        } else {
            Outcome::Unknown { error: last_error }
        };
        self.history.record(
            process,
            Request::Publish { event_id: event.event_id.clone(), event: what },
            invoked,
            outcome,
        );
        acked
    }

    /// Waits (linearizable reads) until `conversation` is queued; false if it never is.
    async fn until_queued(&self, conversation: &str) -> bool {
        for _ in 0..300 {
            if self.stopped() {
                return false;
            }
            let read = self
                .reader
                .get_conversation(pb::GetConversationRequest {
                    workspace: WORKSPACE.into(),
                    conversation: conversation.into(),
                    ..Default::default()
                })
                .await;
            if let Ok(info) = read {
                return info.state == pb::ConversationState::Queued as i32;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn event(event_id: String, kind: pb::gateway_event::Kind) -> pb::GatewayEvent {
    pb::GatewayEvent { event_id, workspace: WORKSPACE.into(), occurred_at_ms: now_ms(), kind: Some(kind) }
}

fn open_event(event_id: String, conversation: &str, priority: u32, topic: &str) -> pb::GatewayEvent {
    event(
        event_id,
        pb::gateway_event::Kind::ConversationOpened(pb::ConversationOpened {
            conversation: conversation.into(),
            contact: format!("contact-{conversation}"),
            channel: pb::Channel::Whatsapp.into(),
            topic: topic.into(),
            priority,
            ..Default::default()
        }),
    )
}

fn close_event(event_id: String, conversation: &str) -> pb::GatewayEvent {
    event(
        event_id,
        pb::gateway_event::Kind::ConversationClosed(pb::ConversationClosed { conversation: conversation.into() }),
    )
}

fn message_event(event_id: String, conversation: &str) -> pb::GatewayEvent {
    event(event_id, pb::gateway_event::Kind::MessageReceived(pb::MessageReceived { conversation: conversation.into() }))
}

/// An agent of the automatic team as the admin writes it.
pub fn auto_agent(id: &str, max_open: u32) -> pb::Agent {
    pb::Agent { id: id.into(), display_name: id.to_uppercase(), max_open, daily_limit: 100, ..Default::default() }
}

/// The automatic team with `strategy` and `members`.
pub fn auto_team(strategy: pb::Strategy, members: Vec<String>) -> pb::Team {
    pb::Team { id: AUTO_TEAM.into(), members, strategy: strategy.into(), ..Default::default() }
}

/// Creates the workspace: the automatic team of [`AUTO_AGENTS`] (max_open 2, least open), the
/// manual team of [`PICK_AGENTS`] with a rule sending topic [`PICK_TOPIC`] to it, and every
/// agent online. Each write goes through the recorded path, so the checker knows every
/// agent's `max_open` from the start.
pub async fn setup(cx: &Context) -> anyhow::Result<()> {
    let admin = "setup";
    let result = cx
        .reader
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: WORKSPACE.into(),
            settings: Some(pb::WorkspaceSettings::default()),
            request_id: "setup-workspace".into(),
        })
        .await;
    applied(result, "the workspace")?;
    let mut agents: Vec<(String, u32)> = AUTO_AGENTS.iter().map(|a| ((*a).to_owned(), 2)).collect();
    agents.extend(PICK_AGENTS.iter().map(|a| ((*a).to_owned(), PICK_MAX_OPEN)));
    for (agent, max_open) in &agents {
        let request_id = format!("setup-agent-{agent}");
        let outcome = upsert_agent(cx, admin, agent, *max_open, &request_id).await;
        anyhow::ensure!(matches!(outcome, Outcome::Ok { .. }), "agent {agent}: {outcome:?}");
    }
    let members: Vec<String> = AUTO_AGENTS.iter().map(|a| (*a).to_owned()).collect();
    let outcome = upsert_team(cx, admin, auto_team(pb::Strategy::LeastOpen, members), "setup-team-auto").await;
    anyhow::ensure!(matches!(outcome, Outcome::Ok { .. }), "team auto: {outcome:?}");
    let pick = pb::Team {
        id: PICK_TEAM.into(),
        members: PICK_AGENTS.iter().map(|a| (*a).to_owned()).collect(),
        strategy: pb::Strategy::Manual.into(),
        ..Default::default()
    };
    let outcome = upsert_team(cx, admin, pick, "setup-team-pick").await;
    anyhow::ensure!(matches!(outcome, Outcome::Ok { .. }), "team pick: {outcome:?}");
    let rules = vec![pb::RoutingRule {
        id: "pick".into(),
        conditions: Some(pb::RuleConditions { topics: vec![PICK_TOPIC.into()], ..Default::default() }),
        target: Some(pb::RuleTarget {
            target: Some(pb::rule_target::Target::Team(pb::TeamTarget {
                team: PICK_TEAM.into(),
                ..Default::default()
            })),
        }),
    }];
    let result = cx
        .reader
        .set_routing_rules(pb::SetRoutingRulesRequest {
            workspace: WORKSPACE.into(),
            rules,
            request_id: "setup-rules".into(),
        })
        .await;
    applied(result, "the routing rules")?;
    let result = cx
        .reader
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: WORKSPACE.into(),
            settings: Some(pb::WorkspaceSettings { default_team: AUTO_TEAM.into(), ..Default::default() }),
            request_id: "setup-default-team".into(),
        })
        .await;
    applied(result, "the default team")?;
    for (agent, _) in &agents {
        let outcome = set_status(cx, admin, agent, pb::AgentStatus::Online, format!("setup-online-{agent}")).await;
        anyhow::ensure!(matches!(outcome, Outcome::Ok { .. }), "{agent} online: {outcome:?}");
    }
    Ok(())
}

/// A setup write that must have taken effect (now or on an earlier attempt).
fn applied<T>(result: Result<T, tonic::Status>, what: &str) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => Err(anyhow::anyhow!("{what} could not be set: {status}")),
    }
}

async fn upsert_agent(cx: &Context, process: &str, agent: &str, max_open: u32, request_id: &str) -> Outcome {
    let request = pb::UpsertAgentRequest {
        workspace: WORKSPACE.into(),
        agent: Some(auto_agent(agent, max_open)),
        request_id: request_id.into(),
    };
    cx.write(
        process,
        Request::UpsertAgent { agent: agent.into(), max_open, request_id: request_id.into() },
        || cx.client.upsert_agent(request.clone()),
        |r| (r.log_index, Vec::new()),
    )
    .await
}

async fn upsert_team(cx: &Context, process: &str, team: pb::Team, request_id: &str) -> Outcome {
    let strategy = team.strategy();
    let members = team.members.clone();
    let request =
        pb::UpsertTeamRequest { workspace: WORKSPACE.into(), team: Some(team), request_id: request_id.into() };
    cx.write(
        process,
        Request::UpsertTeam { strategy, members, request_id: request_id.into() },
        || cx.client.upsert_team(request.clone()),
        |r| (r.log_index, Vec::new()),
    )
    .await
}

async fn set_status(cx: &Context, process: &str, agent: &str, status: pb::AgentStatus, request_id: String) -> Outcome {
    let request = pb::SetStatusRequest {
        workspace: WORKSPACE.into(),
        agent: agent.into(),
        status: status.into(),
        request_id: request_id.clone(),
    };
    cx.write(
        process,
        Request::SetStatus { agent: agent.into(), status, request_id },
        || cx.client.set_status(request.clone()),
        |r| (r.log_index, Vec::new()),
    )
    .await
}

/// A conversation as a gateway tracks it.
struct Tracked {
    id: String,
    open: bool,
    reopened: bool,
    events: u32,
}

/// A gateway: opens conversations, relays customer messages and agent replies, closes them and
/// sometimes has the customer write again after the close (a reopen). A conversation whose
/// event got no acknowledgement is dropped: what happened to it is unknown.
async fn gateway(cx: Context, n: usize, seed: u64) {
    let process = format!("gateway-{n}");
    let Ok(gateway) = Gateway::connect(&cx.nats_url).await else { return };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut conversations: Vec<Tracked> = Vec::new();
    let mut next = 0u64;
    while !cx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        let open_count = conversations.iter().filter(|c| c.open).count();
        let roll = rng.random_range(0..100);
        if roll < 30 && open_count < 12 || open_count == 0 {
            let conversation = format!("g{n}-{next}");
            next += 1;
            let priority = rng.random_range(0..3);
            let id = format!("{conversation}-open");
            let what = Published::Open { conversation: conversation.clone(), priority };
            if cx.publish(&gateway, &process, open_event(id, &conversation, priority, ""), what).await {
                conversations.push(Tracked { id: conversation, open: true, reopened: false, events: 1 });
            }
            continue;
        }
        let Some(index) = (!conversations.is_empty()).then(|| rng.random_range(0..conversations.len())) else {
            continue;
        };
        let tracked = &mut conversations[index];
        tracked.events += 1;
        let id = format!("{}-{}", tracked.id, tracked.events);
        let conversation = tracked.id.clone();
        let (event, what) = if tracked.open {
            match roll {
                0..60 => (message_event(id, &conversation), Published::Message { conversation }),
                60..75 => {
                    let agent = AUTO_AGENTS[rng.random_range(0..AUTO_AGENTS.len() - 1)];
                    let reply = pb::gateway_event::Kind::AgentReplied(pb::AgentReplied {
                        conversation: conversation.clone(),
                        agent: agent.into(),
                    });
                    (event(id, reply), Published::Reply { conversation })
                }
                _ => (close_event(id, &conversation), Published::Close { conversation }),
            }
        } else if !tracked.reopened && roll < 50 {
            (message_event(id, &conversation), Published::Reopen { conversation })
        } else {
            // Done with it.
            conversations.swap_remove(index);
            continue;
        };
        let kind = std::mem::discriminant(&what);
        let acked = cx.publish(&gateway, &process, event, what.clone()).await;
        let Some(tracked) = conversations.get_mut(index) else { continue };
        if !acked {
            conversations.swap_remove(index);
        } else if kind == std::mem::discriminant(&Published::Close { conversation: String::new() }) {
            tracked.open = false;
        } else if kind == std::mem::discriminant(&Published::Reopen { conversation: String::new() }) {
            tracked.open = true;
            tracked.reopened = true;
        }
    }
}

/// An agent's app: changes presence now and then and sends heartbeats.
async fn agent_app(cx: Context, agent: &'static str, seed: u64) {
    let process = format!("agent-{agent}");
    let mut rng = SmallRng::seed_from_u64(seed);
    // The first two agents are nearly always online, so traffic keeps moving.
    let steady = AUTO_AGENTS[..2].contains(&agent);
    let mut n = 0u64;
    while !cx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..3000))).await;
        let roll = rng.random_range(0..10);
        let status = match (steady, roll) {
            (true, 0) | (false, 0..2) => pb::AgentStatus::Away,
            (false, 2..4) => pb::AgentStatus::Offline,
            _ => pb::AgentStatus::Online,
        };
        n += 1;
        set_status(&cx, &process, agent, status, format!("{process}-{n}")).await;
        let invoked = cx.history.now();
        let result =
            cx.client.heartbeat(pb::HeartbeatRequest { workspace: WORKSPACE.into(), agent: agent.into() }).await;
        let outcome = grpc_outcome(&result, |_| (0, Vec::new()));
        let outcome = match outcome {
            Outcome::Ok { .. } => Outcome::Ok { log_index: None, effects: Vec::new() },
            other => other,
        };
        cx.history.record(&process, Request::Heartbeat { agent: agent.into() }, invoked, outcome);
    }
}

/// Opens a conversation for the manual team through NATS and waits until it is queued.
async fn open_for_pick(cx: &Context, gateway: &Gateway, process: &str, conversation: &str) -> bool {
    let id = format!("{conversation}-open");
    let what = Published::Open { conversation: conversation.into(), priority: 0 };
    cx.publish(gateway, process, open_event(id, conversation, 0, PICK_TOPIC), what).await
        && cx.until_queued(conversation).await
}

async fn close_through(cx: &Context, gateway: &Gateway, process: &str, conversation: &str) {
    let id = format!("{conversation}-close");
    cx.publish(gateway, process, close_event(id, conversation), Published::Close { conversation: conversation.into() })
        .await;
}

/// Two agents click "claim" on the same waiting conversation at once, over and over.
async fn racer(cx: Context, seed: u64) {
    let process = "racer";
    let Ok(gateway) = Gateway::connect(&cx.nats_url).await else { return };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut race = 0u64;
    while !cx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        race += 1;
        let conversation = format!("r{race}");
        if !open_for_pick(&cx, &gateway, process, &conversation).await {
            continue;
        }
        let claim = |agent: &'static str| {
            let cx = cx.clone();
            let conversation = conversation.clone();
            async move {
                let request_id = format!("claim-{conversation}-{agent}");
                let request = pb::ClaimRequest {
                    workspace: WORKSPACE.into(),
                    conversation: conversation.clone(),
                    agent: agent.into(),
                    request_id: request_id.clone(),
                };
                cx.write(
                    &format!("agent-{agent}"),
                    Request::Claim { conversation, agent: agent.into(), request_id, race },
                    || cx.client.claim(request.clone()),
                    |r| (r.log_index, r.effects.clone()),
                )
                .await
            }
        };
        tokio::join!(claim(PICK_AGENTS[0]), claim(PICK_AGENTS[1]));
        close_through(&cx, &gateway, process, &conversation).await;
    }
}

/// A supervisor assigns waiting conversations of the manual team and transfers them.
async fn supervisor(cx: Context, seed: u64) {
    let process = "supervisor";
    let Ok(gateway) = Gateway::connect(&cx.nats_url).await else { return };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut n = 0u64;
    while !cx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        n += 1;
        let conversation = format!("s{n}");
        if !open_for_pick(&cx, &gateway, process, &conversation).await {
            continue;
        }
        let (first, second) = if rng.random_bool(0.5) { PICK_AGENTS.into() } else { (PICK_AGENTS[1], PICK_AGENTS[0]) };
        let request_id = format!("assign-{conversation}");
        let request = pb::AssignRequest {
            workspace: WORKSPACE.into(),
            conversation: conversation.clone(),
            agent: first.into(),
            request_id: request_id.clone(),
        };
        let assigned = cx
            .write(
                process,
                Request::Assign { conversation: conversation.clone(), agent: first.into(), request_id },
                || cx.client.assign(request.clone()),
                |r| (r.log_index, r.effects.clone()),
            )
            .await;
        if matches!(assigned, Outcome::Ok { .. }) {
            let request_id = format!("transfer-{conversation}");
            let request = pb::TransferRequest {
                workspace: WORKSPACE.into(),
                conversation: conversation.clone(),
                target: Some(pb::transfer_request::Target::Agent(second.into())),
                request_id: request_id.clone(),
            };
            cx.write(
                process,
                Request::Transfer { conversation: conversation.clone(), agent: second.into(), request_id },
                || cx.client.transfer(request.clone()),
                |r| (r.log_index, r.effects.clone()),
            )
            .await;
        }
        close_through(&cx, &gateway, process, &conversation).await;
    }
}

/// The admin: changes agents' max_open, the automatic team's strategy, and removes and adds
/// back one agent, while traffic flows.
async fn admin(cx: Context, seed: u64) {
    let process = "admin";
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut removable_present = true;
    let mut strategy = pb::Strategy::LeastOpen;
    let mut n = 0u64;
    let strategies = [pb::Strategy::RoundRobin, pb::Strategy::LeastOpen, pb::Strategy::Ordered, pb::Strategy::Weighted];
    while !cx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..4000))).await;
        n += 1;
        let request_id = format!("admin-{n}");
        let members = |present: bool| -> Vec<String> {
            AUTO_AGENTS.iter().filter(|a| present || **a != REMOVABLE_AGENT).map(|a| (*a).to_owned()).collect()
        };
        match rng.random_range(0..10) {
            0..5 => {
                let agent = AUTO_AGENTS[rng.random_range(0..AUTO_AGENTS.len() - 1)];
                upsert_agent(&cx, process, agent, rng.random_range(1..=4), &request_id).await;
            }
            5..8 => {
                strategy = strategies[rng.random_range(0..strategies.len())];
                upsert_team(&cx, process, auto_team(strategy, members(removable_present)), &request_id).await;
            }
            _ if removable_present => {
                let request = pb::RemoveAgentRequest {
                    workspace: WORKSPACE.into(),
                    agent: REMOVABLE_AGENT.into(),
                    request_id: request_id.clone(),
                };
                let outcome = cx
                    .write(
                        process,
                        Request::RemoveAgent { agent: REMOVABLE_AGENT.into(), request_id },
                        || cx.client.remove_agent(request.clone()),
                        |r| (r.log_index, Vec::new()),
                    )
                    .await;
                if matches!(outcome, Outcome::Ok { .. }) {
                    removable_present = false;
                }
            }
            _ => {
                let outcome = upsert_agent(&cx, process, REMOVABLE_AGENT, 2, &request_id).await;
                if matches!(outcome, Outcome::Ok { .. }) {
                    let team_request = format!("{request_id}-team");
                    upsert_team(&cx, process, auto_team(strategy, members(true)), &team_request).await;
                    removable_present = true;
                    set_status(&cx, process, REMOVABLE_AGENT, pb::AgentStatus::Online, format!("{request_id}-online"))
                        .await;
                }
            }
        }
    }
}

/// Starts every workload task.
pub fn start(cx: &Context, seed: u64, gateways: usize) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for n in 0..gateways {
        tasks.spawn(gateway(cx.clone(), n, seed.wrapping_add(100 + n as u64)));
    }
    for (i, agent) in AUTO_AGENTS.iter().enumerate() {
        tasks.spawn(agent_app(cx.clone(), agent, seed.wrapping_add(200 + i as u64)));
    }
    tasks.spawn(racer(cx.clone(), seed.wrapping_add(300)));
    tasks.spawn(supervisor(cx.clone(), seed.wrapping_add(400)));
    tasks.spawn(admin(cx.clone(), seed.wrapping_add(500)));
    tasks
}
