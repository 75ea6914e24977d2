//! `switchboard loadgen`: a contact-center workload through NATS, measured end to end.
//!
//! It configures `--workspaces` workspaces over gRPC (teams, agents, one routing rule per
//! channel group), then publishes conversations through NATS as gateways do: each is opened on
//! one of `--channels` channels, gets `--conversation-length - 1` customer messages, and is
//! closed; meanwhile `--churn` agents per second go away and come back. It consumes the effects
//! stream and reports the achieved rate, the latency from publish to the conversation's first
//! decision effect (assigned, queued or outside hours), and decisions lost (no decision within
//! the drain time) or doubled (an effect delivered twice, a conversation assigned twice).
//! `--raw` measures plain JetStream publish→consume on the same server, as the ceiling.

use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use clap::Args;
use futures::StreamExt;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use switchboard_client::gateway::{BatcherConfig, Gateway, PendingAck, events};
use switchboard_client::{Client, pb};

const CHANNELS: [pb::Channel; 8] = [
    pb::Channel::Whatsapp,
    pb::Channel::Messenger,
    pb::Channel::Instagram,
    pb::Channel::Telegram,
    pb::Channel::Line,
    pb::Channel::Email,
    pb::Channel::WebChat,
    pb::Channel::Sms,
];

#[derive(Args, Debug)]
pub(crate) struct LoadgenArgs {
    /// NATS server URL.
    #[arg(long, env = "SWITCHBOARD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Cluster API addresses (for setting up workspaces and presence churn), comma separated.
    #[arg(long, env = "SWITCHBOARD_NODES", default_value = crate::ctl::DEV_NODES, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Events per second offered (all kinds); 0 = as fast as JetStream acknowledges.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Workspaces (contact centers).
    #[arg(long, default_value_t = 2)]
    workspaces: usize,
    /// Teams per workspace.
    #[arg(long, default_value_t = 4)]
    teams: usize,
    /// Agents per team.
    #[arg(long, default_value_t = 25)]
    agents: usize,
    /// Channels conversations arrive on (1 to 8).
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Events per conversation: opened, then customer messages, then closed (at least 2).
    #[arg(long, default_value_t = 4)]
    conversation_length: usize,
    /// Agents per second going away and coming back (gRPC).
    #[arg(long, default_value_t = 1)]
    churn: u64,
    /// Publishes in flight awaiting JetStream's ack (one at a time; not with `--batch`).
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Publish events through a `Batcher`, as a high-rate gateway does: events queue while
    /// earlier ones are being stored and go out together, up to this many at once (1 to 1,000;
    /// up to 8 as separate publishes, more as one JetStream atomic batch; `--window` does not
    /// apply); 0 publishes one event at a time.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    batch: u16,
    /// Seconds to wait for outstanding effects after publishing.
    #[arg(long, default_value_t = 15)]
    drain: u64,
    /// Measure raw JetStream publish→consume (no Switchboard) with this many messages instead.
    #[arg(long)]
    raw: Option<usize>,
    /// Also report recovery from a fault caused during the run (by `benches/e2e.sh`), labelled
    /// with this kind (`leader_kill`, `nats_restart`): the time from the fault to the first
    /// decision after it, and the longest time without any decision.
    #[arg(long)]
    recovery: Option<String>,
    /// With `--recovery`: a file where the fault's moment is written (UTC milliseconds) during
    /// the run: the leader's kill, or NATS being back.
    #[arg(long)]
    fault_file: Option<std::path::PathBuf>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

pub(crate) async fn run(args: LoadgenArgs) -> Result<()> {
    if let Some(count) = args.raw {
        return raw(&args.nats, count, args.window).await;
    }
    if !(1..=8).contains(&args.channels) || args.conversation_length < 2 || args.workspaces == 0 || args.teams == 0 {
        bail!("need 1 to 8 channels, conversation length >= 2, at least one workspace and team");
    }
    let client = Client::connect(args.nodes.clone()).await.context("bad --nodes")?;
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let workspaces: Vec<String> = (0..args.workspaces).map(|w| format!("lg{run}w{w}")).collect();
    for ws in &workspaces {
        setup(&client, ws, &args).await.with_context(|| format!("setting up workspace {ws}"))?;
    }
    let gateway = Gateway::connect(&args.nats).await?;
    // An ephemeral consumer of this run's workspaces, from now on.
    let mut effects = gateway
        .effects_with(async_nats::jetstream::consumer::pull::Config {
            filter_subjects: workspaces.iter().map(|ws| format!("switchboard.effects.{ws}.>")).collect(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 50_000,
            ..Default::default()
        })
        .await?;

    // Effects side: first decision per conversation. A delivery of an effect already seen (same
    // index and sequence) is a redelivery by this consumer (its ack was lost), not a doubled
    // effect; a second assignment of one conversation is a doubled decision.
    let (decided_tx, mut decided_rx) = tokio::sync::mpsc::unbounded_channel::<Decided>();
    let doubled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let redelivered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = tokio::spawn({
        let doubled = doubled.clone();
        let redelivered = redelivered.clone();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            let mut assigned: BTreeMap<String, u32> = BTreeMap::new();
            while let Some(delivery) = effects.next().await {
                let Ok(delivery) = delivery else { continue };
                let received = Instant::now();
                let received_ms = wall_ms();
                let effect = &delivery.effect;
                if !seen.insert((effect.log_index, effect.sequence)) {
                    redelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    use pb::effect::Kind;
                    let decision = match &effect.kind {
                        Some(Kind::Assigned(a)) => {
                            let count = assigned.entry(a.conversation.clone()).or_default();
                            *count += 1;
                            // With room for everyone, a second assignment is a doubled decision.
                            if *count > 1 {
                                doubled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Some(a.conversation.clone())
                        }
                        // The loadgen pipelines and re-publishes an event whose ack was lost (a
                        // NATS restart) after later events of its conversation: a message that
                        // lands after the close reopens the conversation, and its assignment is
                        // not a doubled one.
                        Some(Kind::Reopened(r)) => {
                            assigned.remove(&r.conversation);
                            None
                        }
                        Some(Kind::Queued(q)) => Some(q.conversation.clone()),
                        Some(Kind::OutsideHours(o)) => Some(o.conversation.clone()),
                        _ => None,
                    };
                    let stored_ms = delivery
                        .message()
                        .info()
                        .map_or(received_ms, |info| info.published.unix_timestamp_nanos() as f64 / 1e6);
                    if let Some(conversation) = decision
                        && decided_tx
                            .send(Decided { conversation, received, received_ms, stored_ms, proposed_ms: effect.at_ms })
                            .is_err()
                    {
                        break;
                    }
                }
                let _ = delivery.ack().await;
            }
        }
    });

    // Presence churn over gRPC.
    let churn = (args.churn > 0).then(|| {
        let client = client.clone();
        let workspaces = workspaces.clone();
        let agents = args.agents * args.teams;
        let per_second = args.churn;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second as f64));
            let mut n = 0usize;
            loop {
                tick.tick().await;
                let ws = &workspaces[n % workspaces.len()];
                let agent = format!("a{}", (n / workspaces.len()) % agents);
                for status in [pb::AgentStatus::Away, pb::AgentStatus::Online] {
                    let _ = client
                        .set_status(pb::SetStatusRequest {
                            workspace: ws.clone(),
                            agent: agent.clone(),
                            status: status.into(),
                            ..Default::default()
                        })
                        .await;
                }
                n += 1;
            }
        })
    });

    // Publishing side: conversations interleaved so that each advances one event at a time.
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    let mut opened_at: BTreeMap<String, (Instant, i64)> = BTreeMap::new();
    let mut decided: BTreeMap<String, Split> = BTreeMap::new();
    let mut stall = Stall::default();
    let mut acks = VecDeque::new();
    let batcher = match args.batch {
        0 => None,
        n => Some(gateway.batcher(BatcherConfig { batch_events_max: usize::from(n), ..BatcherConfig::default() })?),
    };
    let mut stored = VecDeque::new();
    let mut active: VecDeque<(String, String, usize)> = VecDeque::new();
    let mut published = 0u64;
    let mut next_conversation = 0u64;
    let concurrent = 64usize;
    while Instant::now() < end {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(published as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        if active.len() < concurrent {
            let ws = workspaces[next_conversation as usize % workspaces.len()].clone();
            active.push_back((ws, format!("r{run}c{next_conversation}"), 0));
            next_conversation += 1;
        }
        let Some((ws, conversation, step)) = active.pop_front() else { continue };
        let event_id = format!("{conversation}-{step}");
        let event = if step == 0 {
            let channel = CHANNELS[(next_conversation as usize) % args.channels];
            let opened =
                events::opened(&event_id, &ws, &conversation, &format!("+{}", next_conversation % 100_000), channel);
            opened_at.insert(conversation.clone(), (Instant::now(), opened.occurred_at_ms));
            opened
        } else if step + 1 < args.conversation_length {
            events::message_received(&event_id, &ws, &conversation)
        } else {
            events::closed(&event_id, &ws, &conversation)
        };
        if let Some(batcher) = &batcher {
            // The batcher's queue is the flow control; the answers are checked as they come.
            stored.push_back((batcher.publish(event.clone()).await?, event));
            while let Some((answer, _)) = stored.front_mut() {
                let Some(answer) = futures::FutureExt::now_or_never(answer) else { break };
                if let Some((_, event)) = stored.pop_front()
                    && answer.is_err()
                {
                    republish(&gateway, &event).await?;
                }
            }
        } else {
            let ack = gateway.publish_pipelined(&event).await?;
            acks.push_back((ack, event));
            while acks.len() >= args.window {
                if let Some((ack, event)) = acks.pop_front() {
                    confirm(&gateway, ack, &event).await?;
                }
            }
        }
        published += 1;
        if step + 1 < args.conversation_length {
            active.push_back((ws, conversation, step + 1));
        }
        while let Ok(decision) = decided_rx.try_recv() {
            record(&opened_at, &mut decided, &mut stall, decision);
        }
    }
    for (ack, event) in acks {
        confirm(&gateway, ack, &event).await?;
    }
    for (answer, event) in stored {
        if answer.await.is_err() {
            republish(&gateway, &event).await?;
        }
    }
    if let Some(batcher) = batcher {
        let stats = batcher.stats();
        eprintln!(
            "loadgen: batcher sent {} atomic batches ({:.1} events each), {} events separately, {} again",
            stats.atomic_batches,
            stats.events_in_batches as f64 / stats.atomic_batches.max(1) as f64,
            stats.separate_events,
            stats.republished_events
        );
        batcher.close().await;
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let drain_until = Instant::now() + Duration::from_secs(args.drain);
    while decided.len() < opened_at.len() && Instant::now() < drain_until {
        if let Ok(Some(decision)) = tokio::time::timeout(Duration::from_millis(200), decided_rx.recv()).await {
            record(&opened_at, &mut decided, &mut stall, decision);
        }
    }
    let effects_seconds = started.elapsed().as_secs_f64();
    if let Some(churn) = churn {
        churn.abort();
    }
    // A last look for late duplicates before counting them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(decided_rx);
    counter.abort();
    let doubled_effects = doubled.load(std::sync::atomic::Ordering::Relaxed);
    let redelivered_effects = redelivered.load(std::sync::atomic::Ordering::Relaxed);
    let mut latencies: Vec<Duration> = decided.values().map(|split| split.total).collect();
    latencies.sort();
    let lost = opened_at.len() - decided.len();
    let achieved = (published as f64 / publish_seconds).min(published as f64 / effects_seconds.max(publish_seconds));
    let offered = if args.rate == 0 { "max".to_owned() } else { args.rate.to_string() };
    println!(
        "e2e: gateway_batch={} offered_per_s={offered} achieved_per_s={achieved:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} lost={lost} doubled={doubled_effects} redelivered={redelivered_effects}",
        args.batch,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
    );
    // Where the time went, by the clocks of this host: the gateway's `occurred_at_ms` to the
    // leader's stamp on the entry (NATS store, the ingest's pull, the batcher), that stamp to
    // the effect stored in JetStream (commit, apply, egress), and the store to this reader.
    let segment = |part: fn(&Split) -> f64| {
        let mut values: Vec<Duration> =
            decided.values().map(|split| Duration::from_secs_f64(part(split).max(0.0) / 1000.0)).collect();
        values.sort();
        format!("{:.1}/{:.1}", percentile(&values, 50.0), percentile(&values, 99.0))
    };
    println!(
        "e2e split (p50/p99 ms): gateway_to_proposal={} proposal_to_effect_stored={} stored_to_reader={}",
        segment(|split| split.to_proposal_ms),
        segment(|split| split.to_stored_ms),
        segment(|split| split.to_reader_ms),
    );
    if let Some(kind) = &args.recovery {
        let fault_ms = args
            .fault_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse::<i64>().ok());
        let first_after = fault_ms
            .and_then(|fault| stall.decided_wall_ms.iter().filter(|at| **at >= fault).min().map(|first| first - fault));
        let ended_s = stall.ended.map_or(0.0, |at| at.saturating_duration_since(started).as_secs_f64());
        println!(
            "recovery: kind={kind} first_effect_after_ms={} longest_stall_ms={:.0} (ended {ended_s:.1} s into the run) lost={lost} doubled={doubled_effects} redelivered={redelivered_effects}",
            first_after.map_or_else(|| "unknown".to_owned(), |ms| ms.to_string()),
            stall.longest.as_secs_f64() * 1000.0
        );
    }
    eprintln!(
        "loadgen: {published} events ({} conversations) in {publish_seconds:.1} s; last decision after {effects_seconds:.1} s",
        opened_at.len()
    );
    Ok(())
}

/// Waits for JetStream to store `event`; publishes it again (same `Nats-Msg-Id`) if the ack
/// did not come, as a gateway must.
async fn confirm(gateway: &Gateway, ack: PendingAck, event: &pb::GatewayEvent) -> Result<()> {
    if ack.await.is_ok() {
        return Ok(());
    }
    republish(gateway, event).await
}

/// Publishes `event` again (same `Nats-Msg-Id`) until JetStream stores it, as a gateway must.
async fn republish(gateway: &Gateway, event: &pb::GatewayEvent) -> Result<()> {
    for _ in 0..20 {
        if gateway.publish(event).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("JetStream did not store event {} after 20 attempts", event.event_id)
}

/// A conversation's first decision as the effects reader saw it.
struct Decided {
    conversation: String,
    received: Instant,
    /// When it was read (UTC ms, this host's clock).
    received_ms: f64,
    /// When JetStream stored the effect (UTC ms).
    stored_ms: f64,
    /// The leader's stamp on the entry that decided it (the effect's `at_ms`).
    proposed_ms: i64,
}

/// The time from publishing a conversation's opening to its first decision, and its parts.
struct Split {
    total: Duration,
    to_proposal_ms: f64,
    to_stored_ms: f64,
    to_reader_ms: f64,
}

fn wall_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn record(
    opened_at: &BTreeMap<String, (Instant, i64)>,
    decided: &mut BTreeMap<String, Split>,
    stall: &mut Stall,
    decision: Decided,
) {
    if let Some((opened, occurred_ms)) = opened_at.get(&decision.conversation) {
        decided.entry(decision.conversation).or_insert_with(|| Split {
            total: decision.received.saturating_duration_since(*opened),
            to_proposal_ms: (decision.proposed_ms - occurred_ms) as f64,
            to_stored_ms: decision.stored_ms - decision.proposed_ms as f64,
            to_reader_ms: decision.received_ms - decision.stored_ms,
        });
        stall.decided(decision.received);
    }
}

/// The longest time without a decision, when it ended, and when decisions came (UTC ms).
#[derive(Default)]
struct Stall {
    last: Option<Instant>,
    longest: Duration,
    ended: Option<Instant>,
    decided_wall_ms: Vec<i64>,
}

impl Stall {
    fn decided(&mut self, at: Instant) {
        let ago = at.elapsed();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.decided_wall_ms.push(now_ms - i64::try_from(ago.as_millis()).unwrap_or(0));
        if let Some(last) = self.last {
            let gap = at.saturating_duration_since(last);
            if gap > self.longest {
                self.longest = gap;
                self.ended = Some(at);
            }
        }
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }
}

/// Teams `t0..`, each with `agents` members (agent ids shared out in order), one routing rule
/// per team sending its share of the channels there; all agents online with room to spare.
async fn setup(client: &Client, ws: &str, args: &LoadgenArgs) -> Result<()> {
    client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: ws.into(),
            settings: Some(pb::WorkspaceSettings::default()),
            ..Default::default()
        })
        .await?;
    let total = args.teams * args.agents;
    for a in 0..total {
        client
            .upsert_agent(pb::UpsertAgentRequest {
                workspace: ws.into(),
                agent: Some(pb::Agent {
                    id: format!("a{a}"),
                    display_name: format!("Agent {a}"),
                    max_open: 10_000,
                    daily_limit: 1_000_000,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
    }
    let mut rules = Vec::new();
    for t in 0..args.teams {
        client
            .upsert_team(pb::UpsertTeamRequest {
                workspace: ws.into(),
                team: Some(pb::Team {
                    id: format!("t{t}"),
                    members: (t * args.agents..(t + 1) * args.agents).map(|a| format!("a{a}")).collect(),
                    strategy: if t % 2 == 0 { pb::Strategy::RoundRobin } else { pb::Strategy::LeastOpen }.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        let channels: Vec<i32> =
            (0..args.channels).filter(|c| c % args.teams == t).map(|c| CHANNELS[c] as i32).collect();
        if !channels.is_empty() {
            rules.push(pb::RoutingRule {
                id: format!("r{t}"),
                conditions: Some(pb::RuleConditions { channels, ..Default::default() }),
                target: Some(pb::RuleTarget {
                    target: Some(pb::rule_target::Target::Team(pb::TeamTarget {
                        team: format!("t{t}"),
                        ..Default::default()
                    })),
                }),
            });
        }
    }
    client.set_routing_rules(pb::SetRoutingRulesRequest { workspace: ws.into(), rules, ..Default::default() }).await?;
    client
        .configure_workspace(pb::ConfigureWorkspaceRequest {
            workspace: ws.into(),
            settings: Some(pb::WorkspaceSettings { default_team: "t0".into(), ..Default::default() }),
            ..Default::default()
        })
        .await?;
    for a in 0..total {
        client
            .set_status(pb::SetStatusRequest {
                workspace: ws.into(),
                agent: format!("a{a}"),
                status: pb::AgentStatus::Online.into(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Messages per atomic batch in the raw batched measurement (the server takes at most 1,000).
const RAW_BATCH: usize = 500;
/// Atomic batches in flight at once (the server allows 50 per stream).
const RAW_BATCHES_IN_FLIGHT: usize = 16;

/// Raw JetStream ceilings on this server, with the durability of SWITCHBOARD (a file stream;
/// `sync_interval` is the server's): `count` messages of an event's size, published one at a
/// time (pipelined, `window` acks outstanding, each with a `Nats-Msg-Id`) and in atomic batches
/// of [`RAW_BATCH`], each first alone, then with a pull consumer acking concurrently. One line
/// per mode: `jetstream raw: mode=<single|atomic_batch> consume=<no|yes> per_s=…`.
async fn raw(url: &str, count: usize, window: usize) -> Result<()> {
    let client = async_nats::connect(url).await.context("cannot connect to NATS")?;
    let js = jetstream::new(client.clone());
    let payload: bytes::Bytes = prost::Message::encode_to_vec(&events::opened(
        "c123456-0",
        "lg1234w0",
        "c123456",
        "+12345",
        pb::Channel::Whatsapp,
    ))
    .into();
    for batched in [false, true] {
        for consume in [false, true] {
            let per_s = raw_run(&client, &js, count, window, batched, consume, &payload).await?;
            println!(
                "jetstream raw: mode={} consume={} per_s={per_s:.0}",
                if batched { "atomic_batch" } else { "single" },
                if consume { "yes" } else { "no" }
            );
        }
    }
    Ok(())
}

async fn raw_run(
    client: &async_nats::Client,
    js: &jetstream::Context,
    count: usize,
    window: usize,
    batched: bool,
    consume: bool,
    payload: &bytes::Bytes,
) -> Result<f64> {
    let name = format!(
        "LOADGEN_RAW_{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    );
    let subject = format!("loadgen.raw.{name}");
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: jetstream::stream::StorageType::File,
            allow_atomic_publish: batched,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let consumer = if consume {
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await?;
        Some(tokio::spawn(async move {
            let mut messages = consumer.messages().await?;
            let mut received = 0usize;
            while received < count {
                let Some(message) = messages.next().await else { break };
                message.map_err(|e| anyhow::anyhow!("{e}"))?.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                received += 1;
            }
            anyhow::Ok(received)
        }))
    } else {
        None
    };
    let mut acks = VecDeque::new();
    if batched {
        let mut n = 0;
        let mut batch = 0usize;
        while n < count {
            let size = RAW_BATCH.min(count - n);
            let id = format!("{name}-{batch}");
            for k in 1..=size {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Batch-Id", id.as_str());
                headers.insert("Nats-Batch-Sequence", k.to_string().as_str());
                if k == size {
                    headers.insert("Nats-Batch-Commit", "1");
                    acks.push_back(js.publish_with_headers(subject.clone(), headers, payload.clone()).await?);
                } else {
                    client.publish_with_headers(subject.clone(), headers, payload.clone()).await?;
                }
            }
            n += size;
            batch += 1;
            while acks.len() >= RAW_BATCHES_IN_FLIGHT {
                if let Some(ack) = acks.pop_front() {
                    ack.await?;
                }
            }
        }
    } else {
        for n in 0..count {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("raw-{n}").as_str());
            acks.push_back(js.publish_with_headers(subject.clone(), headers, payload.clone()).await?);
            while acks.len() >= window {
                if let Some(ack) = acks.pop_front() {
                    ack.await?;
                }
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    let stored = stream.clone().info().await?.state.messages as usize;
    let received = match consumer {
        Some(task) => task.await??,
        None => stored,
    };
    let seconds = started.elapsed().as_secs_f64();
    js.delete_stream(&name).await?;
    if stored != count {
        bail!("the raw stream holds {stored} of {count} messages published");
    }
    eprintln!("loadgen: {received} of {count} raw messages (batched {batched}, consumed {consume}) in {seconds:.2} s");
    Ok(received as f64 / seconds)
}
