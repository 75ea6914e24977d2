//! Watch streams under pressure, over real gRPC: a client that stops reading is cut off with
//! `RESOURCE_EXHAUSTED` (the node buffers nothing for it) while writes commit and a reading
//! client gets everything; a node serves at most `watch_streams_max` streams and a closed stream
//! frees its place; a Watch sent to a follower from the index of a write just acknowledged by the
//! leader waits for that index instead of answering "unknown workspace".

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::TestCluster;
use switchboard_client::pb;
use switchboard_client::pb::assignments_client::AssignmentsClient;
use switchboard_server::ServerConfig;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

/// A channel of its own to one node, with HTTP/2 receive windows of the protocol's minimum
/// (64 KiB), so that a stream nobody reads stops taking data from the server early.
async fn small_window_channel(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connects")
}

async fn channel(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}")).expect("endpoint").connect().await.expect("connects")
}

fn watch_request(workspace: &str, from_index: u64) -> pb::WatchRequest {
    pb::WatchRequest { workspace: workspace.into(), from_index, ..Default::default() }
}

/// The conversation an `Assigned` effect is about.
fn assigned(event: &pb::WatchEvent) -> Option<String> {
    match &event.event {
        Some(pb::watch_event::Event::Effect(pb::Effect { kind: Some(pb::effect::Kind::Assigned(a)), .. })) => {
            Some(a.conversation.clone())
        }
        _ => None,
    }
}

/// A workspace whose agents have long display names, so that every `Assigned` effect (which
/// carries the name) is about 3 KiB and a few hundred of them fill the transport's buffers.
async fn setup_wide_workspace(client: &switchboard_client::Client, workspace: &str) {
    let agents = (1..=4)
        .map(|i| format!("a{i}"))
        .map(|id| pb::Agent {
            display_name: format!("{id} {}", "n".repeat(3000)),
            id,
            max_open: 10_000,
            daily_limit: 10_000,
            ..Default::default()
        })
        .collect();
    support::setup_workspace_of(client, workspace, pb::Strategy::LeastOpen, agents).await;
}

/// Reads `stream` until it ends with an error; returns the conversations assigned on the way and
/// the error. Fails if the stream delivers `total` assignments without ending.
async fn read_until_error(stream: &mut Streaming<pb::WatchEvent>, total: usize) -> (Vec<String>, tonic::Status) {
    let mut conversations = Vec::new();
    while conversations.len() < total {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Err(_) => panic!("the stream neither delivered nor ended: {} assigned so far", conversations.len()),
            Ok(Ok(Some(event))) => conversations.extend(assigned(&event)),
            Ok(Ok(None)) => panic!("the stream ended without a status after {} assigned", conversations.len()),
            Ok(Err(status)) => return (conversations, status),
        }
    }
    panic!("the stream was never cut off: it delivered all {total} assignments");
}

/// The number following `from_index ` in a status message.
fn resume_index(message: &str) -> u64 {
    let tail = message.split("from_index ").nth(1).unwrap_or_else(|| panic!("no from_index in {message:?}"));
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no index after from_index in {message:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_that_never_reads_is_cut_off_while_writes_commit_and_a_reading_watch_gets_everything() {
    const BACKLOG_MAX_EFFECTS: usize = 500;
    const BATCHES: usize = 30;
    const PER_BATCH: usize = 50;
    let config = ServerConfig { watch_backlog_max_effects: BACKLOG_MAX_EFFECTS, ..support::unsupervised() };
    let cluster = TestCluster::start_with(1, config).await;
    let client = cluster.client().await;
    setup_wide_workspace(&client, "wb").await;

    // The stalled client opens its stream and never reads it until the end.
    let mut stalled = AssignmentsClient::new(small_window_channel(&cluster.api_addrs[0]).await)
        .watch(watch_request("wb", 0))
        .await
        .expect("the stalled watch opens")
        .into_inner();
    // From what is applied now, so that it misses no batch however late it subscribes.
    let mut reading = client.watch(watch_request("wb", cluster.applied_index().await));

    // 1,500 assignments of about 3 KiB each: several times what the transport buffers for the
    // stalled stream (64 KiB client window, 400 KiB server send buffer), and three times the
    // backlog limit beyond that. The reading watch must see each batch before the next is sent,
    // so it is never more than one batch behind.
    let mut all = BTreeSet::new();
    let mut seen_by_reader = BTreeSet::new();
    for batch in 0..BATCHES {
        let events: Vec<pb::GatewayEvent> =
            (0..PER_BATCH).map(|n| support::opened("wb", &format!("c{batch}-{n}"))).collect();
        let results = client.publish_batch(pb::PublishBatchRequest { events }).await.expect("the write commits");
        assert!(results.results.iter().all(|r| r.error_code == 0), "batch {batch}: {:?}", results.results);
        all.extend((0..PER_BATCH).map(|n| format!("c{batch}-{n}")));
        while seen_by_reader.len() < all.len() {
            let effect = tokio::time::timeout(Duration::from_secs(30), reading.next_effect())
                .await
                .unwrap_or_else(|_| panic!("the reading watch stalled at {} of {}", seen_by_reader.len(), all.len()))
                .expect("the reading watch is open")
                .expect("the reading watch is never cut off");
            if let Some(pb::effect::Kind::Assigned(a)) = effect.kind {
                assert!(seen_by_reader.insert(a.conversation.clone()), "{} delivered twice", a.conversation);
            }
        }
    }
    assert_eq!(seen_by_reader, all, "the reading watch got every assignment");

    // The stalled client finally reads: what the transport held, then RESOURCE_EXHAUSTED saying
    // where to resume.
    let (before_cut, status) = read_until_error(&mut stalled, all.len()).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("watch_backlog_max_effects"), "{status:?}");
    assert!(before_cut.len() < all.len() - BACKLOG_MAX_EFFECTS, "cut off only after {} effects", before_cut.len());
    // Resuming from the index it names delivers the rest: nothing lost, nothing twice.
    let resume_from = resume_index(status.message());
    let mut resumed = AssignmentsClient::new(channel(&cluster.api_addrs[0]).await)
        .watch(watch_request("wb", resume_from))
        .await
        .expect("resumes")
        .into_inner();
    let mut union: BTreeSet<String> = before_cut.iter().cloned().collect();
    assert_eq!(union.len(), before_cut.len(), "the stalled stream repeated an effect");
    while union.len() < all.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), resumed.message())
            .await
            .unwrap_or_else(|_| panic!("the resumed watch stalled at {} of {}", union.len(), all.len()))
            .expect("the resumed watch is not cut off")
            .expect("open");
        if let Some(conversation) = assigned(&event) {
            assert!(union.insert(conversation.clone()), "{conversation} delivered before the cut and after it");
        }
    }
    assert_eq!(union, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_streams_beyond_the_limit_are_refused_and_a_closed_stream_frees_its_place() {
    let config = ServerConfig { watch_streams_max: 2, ..support::unsupervised() };
    let cluster = TestCluster::start_with(1, config).await;
    let client = cluster.client().await;
    support::setup_workspace(&client, "wl", pb::Strategy::RoundRobin, 1, 10).await;
    let mut assignments = AssignmentsClient::new(channel(&cluster.api_addrs[0]).await);

    let first = assignments.watch(watch_request("wl", 0)).await.expect("first stream").into_inner();
    let _second = assignments.watch(watch_request("wl", 0)).await.expect("second stream").into_inner();
    let refused = assignments.watch(watch_request("wl", 0)).await.expect_err("a third stream is one too many");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("watch_streams_max"), "{refused:?}");
    // Other calls are not affected.
    client.status(pb::StatusRequest {}).await.expect("the node keeps serving");

    // The client closes one stream: its place is free again once the node hears of it.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut third = loop {
        match assignments.watch(watch_request("wl", 0)).await {
            Ok(stream) => break stream.into_inner(),
            Err(status) if status.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the closed stream's place was never freed: {status:?}"),
        }
    };
    // And the new stream works.
    client
        .set_status(pb::SetStatusRequest {
            workspace: "wl".into(),
            agent: "a1".into(),
            status: pb::AgentStatus::Away.into(),
            ..Default::default()
        })
        .await
        .expect("status");
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), third.message())
            .await
            .expect("the new stream delivers")
            .expect("open")
            .expect("not ended");
        if let Some(pb::watch_event::Event::Effect(pb::Effect {
            kind: Some(pb::effect::Kind::AgentStatus(_)), ..
        })) = event.event
        {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_through_a_follower_from_a_write_just_acknowledged_waits_for_that_write() {
    const TRIES: usize = 40;
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let writer = cluster.client_of(leader).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut watchers = Vec::new();
    for follower in &followers {
        watchers.push(AssignmentsClient::new(channel(&cluster.api_addrs[*follower]).await));
    }

    // Each try creates a workspace through the leader and at once watches it, from the index the
    // leader returned, through a follower that may not have applied that index yet.
    let mut refused = Vec::new();
    for n in 0..TRIES {
        let workspace = format!("fresh{n}");
        let written = writer
            .configure_workspace(pb::ConfigureWorkspaceRequest {
                workspace: workspace.clone(),
                settings: Some(pb::WorkspaceSettings::default()),
                ..Default::default()
            })
            .await
            .expect("workspace");
        let count = watchers.len();
        let watcher = &mut watchers[n % count];
        match watcher.watch(watch_request(&workspace, written.log_index)).await {
            Ok(_stream) => {}
            Err(status) => refused.push(format!("{workspace} from {}: {status:?}", written.log_index)),
        }
    }
    assert!(refused.is_empty(), "{} of {TRIES} watches were refused: {refused:#?}", refused.len());

    // A workspace that does not exist is still refused, by every node.
    for watcher in &mut watchers {
        let status = watcher.watch(watch_request("never-made", 0)).await.expect_err("unknown workspace");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
}
