//! End to end over real gRPC: a 3-node cluster on 127.0.0.1, driven by `switchboard ctl` and by
//! the Rust client.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::{TestCluster, assigned_agent, ctl, opened, setup_workspace};
use switchboard_client::pb;
use switchboard_server::{ANONYMOUS_REQUEST_MAX_BYTES, ServerConfig};
use tonic::Code;

const WORKSPACE_FILE: &str = r#"
workspace: acme
settings:
  default_team: support
agents:
  - {id: mary, name: Mary, max_open: 2}
  - {id: john, name: John, max_open: 2}
  - {id: ana, name: Ana, max_open: 2, languages: [es]}
teams:
  - id: support
    strategy: round_robin
    members: [mary, john]
    templates: {overcapacity: "Everyone is busy"}
  - id: soporte
    strategy: least_open
    members: [ana]
    timezone: America/Sao_Paulo
rules:
  - id: spanish
    when: {languages: [es]}
    team: soporte
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_route_and_watch_on_every_node() {
    let cluster = TestCluster::start(3).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("acme.yaml");
    std::fs::write(&path, WORKSPACE_FILE).expect("write");
    let path_arg = path.to_str().expect("utf-8 path");

    // First apply creates everything; the diff says so.
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok, "{out}");
    for expected in
        ["+ workspace (new)", "+ agent mary (Mary)", "+ team support (round_robin", "~ routing rules", "applied"]
    {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // Applying the same file again changes nothing.
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok && out.contains("workspace acme: no changes"), "{out}");
    // A change shows field by field, and a dry run applies nothing.
    std::fs::write(
        &path,
        WORKSPACE_FILE.replace("{id: john, name: John, max_open: 2}", "{id: john, name: John, max_open: 3}"),
    )
    .expect("write");
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg, "--dry-run"]);
    assert!(ok && out.contains("~ agent john") && out.contains("max_open: 2 -> 3") && out.contains("dry run"), "{out}");
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok && out.contains("1 change(s)"), "{out}");
    let (ok, out) = ctl(&cluster, &["apply", "-f", path_arg]);
    assert!(ok && out.contains("no changes"), "{out}");

    // Agents online, through different nodes.
    for agent in ["mary", "john", "ana"] {
        let (ok, out) = ctl(&cluster, &["--workspace", "acme", "set-status", agent, "online"]);
        assert!(ok, "{out}");
    }

    // A Watch on every node, filtered by workspace, from what is applied now: nothing published
    // below can be missed, however late a stream subscribes.
    let from_index = cluster.applied_index().await;
    let mut watches = Vec::new();
    for i in 0..3 {
        let client = cluster.client_of(i).await;
        watches.push(client.watch(pb::WatchRequest { workspace: "acme".into(), from_index, ..Default::default() }));
    }

    // Conversations published through a follower.
    let follower = cluster.follower().await;
    let client = cluster.client_of(follower).await;
    let mut expected = BTreeMap::new();
    for n in 0..5 {
        let conversation = format!("c{n}");
        let published =
            client.publish(pb::PublishRequest { event: Some(opened("acme", &conversation)) }).await.expect("publish");
        let agent = assigned_agent(&published.effects).expect("assigned at once");
        expected.insert(conversation, agent);
    }
    // Round robin over mary and john, until mary (max_open 2) is full; john now takes 3.
    let mut counts = BTreeMap::new();
    for agent in expected.values() {
        *counts.entry(agent.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([("john".to_owned(), 3), ("mary".to_owned(), 2)]));
    // A Spanish conversation goes to soporte by rule.
    let mut spanish = opened("acme", "es-1");
    if let Some(pb::gateway_event::Kind::ConversationOpened(open)) = &mut spanish.kind {
        open.language = "es".into();
    }
    let published = client.publish(pb::PublishRequest { event: Some(spanish) }).await.expect("publish");
    assert_eq!(assigned_agent(&published.effects).as_deref(), Some("ana"));
    expected.insert("es-1".to_owned(), "ana".to_owned());
    // Full house: the next one queues with its position.
    let published =
        client.publish(pb::PublishRequest { event: Some(opened("acme", "c-wait")) }).await.expect("publish");
    let queued = published.effects.iter().find_map(|e| match &e.kind {
        Some(pb::effect::Kind::Queued(q)) => Some(q.clone()),
        _ => None,
    });
    let queued = queued.expect("queued");
    assert_eq!((queued.position, queued.message.as_str()), (1, "Everyone is busy"));

    // Every node's Watch sees every assignment, in log order.
    for (i, watch) in watches.iter_mut().enumerate() {
        let mut seen = BTreeMap::new();
        while seen.len() < expected.len() {
            let effect = tokio::time::timeout(Duration::from_secs(10), watch.next_effect())
                .await
                .unwrap_or_else(|_| panic!("node {i}'s watch saw only {seen:?}"))
                .expect("stream open")
                .expect("no error");
            if let Some(pb::effect::Kind::Assigned(a)) = effect.kind {
                seen.insert(a.conversation, a.agent);
            }
        }
        assert_eq!(seen, expected, "node {i}'s watch");
    }
    // Linearizable reads on every node agree; the queued one has its position.
    for i in 0..3 {
        let client = cluster.client_of(i).await;
        for (conversation, agent) in &expected {
            let info = client
                .get_conversation(pb::GetConversationRequest {
                    workspace: "acme".into(),
                    conversation: conversation.clone(),
                    ..Default::default()
                })
                .await
                .expect("read");
            assert_eq!(&info.assignee, agent, "node {i}, {conversation}");
            assert_eq!(info.state, pb::ConversationState::Assigned as i32);
        }
        let waiting = client
            .get_conversation(pb::GetConversationRequest {
                workspace: "acme".into(),
                conversation: "c-wait".into(),
                ..Default::default()
            })
            .await
            .expect("read");
        assert_eq!(waiting.queue.map(|q| q.position), Some(1), "node {i}");
        let queue = client
            .list_queue(pb::ListQueueRequest { workspace: "acme".into(), team: "support".into(), ..Default::default() })
            .await
            .expect("queue");
        assert_eq!(queue.depth, 1);
        assert_eq!(queue.entries[0].conversation, "c-wait");
    }
    // Closing frees an agent who takes the waiting conversation in the same entry.
    let closed = client
        .close(pb::CloseRequest { workspace: "acme".into(), conversation: "c0".into(), ..Default::default() })
        .await
        .expect("close");
    assert_eq!(assigned_agent(&closed.effects).as_deref(), Some(expected["c0"].as_str()));

    // ctl reads work from the command line too.
    let (ok, out) = ctl(&cluster, &["--workspace", "acme", "agents"]);
    assert!(ok && out.contains("mary") && out.contains("online") && out.contains("3/3"), "{out}");
    let (ok, out) = ctl(&cluster, &["status"]);
    assert!(ok && out.contains("leader") && out.matches("follower").count() == 2, "{out}");
    let (ok, out) = ctl(&cluster, &["--workspace", "acme", "conversation", "c-wait"]);
    assert!(ok && out.contains("assigned"), "{out}");

    // Health and state digests: every node serving, replicas identical once caught up.
    for addr in &cluster.api_addrs {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: "switchboard.v1.Assignments".into() })
            .await
            .expect("health");
        assert_eq!(
            response.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    cluster.assert_replicas_agree().await;
    for i in 0..3 {
        let status = cluster.client_of(i).await.status(pb::StatusRequest {}).await.expect("status");
        assert_eq!(status.members.len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_race_has_exactly_one_winner() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    setup_workspace(&client, "race", pb::Strategy::Manual, 2, 50).await;
    let first = cluster.client_of(0).await;
    let second = cluster.client_of(2).await;
    for n in 0..10 {
        let conversation = format!("pick-{n}");
        let published =
            client.publish(pb::PublishRequest { event: Some(opened("race", &conversation)) }).await.expect("publish");
        assert!(assigned_agent(&published.effects).is_none(), "manual teams never assign");
        let claim = |client: switchboard_client::Client, agent: &'static str, conversation: String| async move {
            client
                .claim(pb::ClaimRequest {
                    workspace: "race".into(),
                    conversation,
                    agent: agent.into(),
                    ..Default::default()
                })
                .await
        };
        let (a, b) = tokio::join!(
            claim(first.clone(), "a1", conversation.clone()),
            claim(second.clone(), "a2", conversation.clone())
        );
        let (winner, loser) = match (a, b) {
            (Ok(won), Err(lost)) => (("a1", won), lost),
            (Err(lost), Ok(won)) => (("a2", won), lost),
            other => panic!("expected exactly one winner, got {other:?}"),
        };
        assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
        assert!(
            loser.message().contains(&conversation) && loser.message().contains("not waiting"),
            "{}",
            loser.message()
        );
        assert_eq!(assigned_agent(&winner.1.effects).as_deref(), Some(winner.0));
        let info = client
            .get_conversation(pb::GetConversationRequest {
                workspace: "race".into(),
                conversation,
                ..Default::default()
            })
            .await
            .expect("read");
        assert_eq!(info.assignee, winner.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_survive_a_killed_leader() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client().await;
    setup_workspace(&client, "ha", pb::Strategy::LeastOpen, 4, 10_000).await;
    // The watch and the writer start on the leader, the node about to die.
    let leader = cluster.leader().await;
    let mut order: Vec<String> = vec![cluster.api_addrs[leader].clone()];
    order.extend(cluster.api_addrs.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, a)| a.clone()));
    let client = switchboard_client::Client::connect(order).await.expect("client");
    let from_index = cluster.applied_index().await;
    let mut watch = client.watch(pb::WatchRequest { workspace: "ha".into(), from_index, ..Default::default() });

    let total = 200;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0;
            for n in 0..total {
                match client.publish(pb::PublishRequest { event: Some(opened("ha", &format!("k{n}"))) }).await {
                    Ok(_) => acknowledged += 1,
                    // The first attempt was applied but its answer was lost in the failover.
                    Err(status) if status.code() == Code::AlreadyExists => acknowledged += 1,
                    Err(status) => panic!("conversation k{n} failed: {status:?}"),
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.kill(leader).await;
    let acknowledged = writer.await.expect("writer");
    assert_eq!(acknowledged, total);

    // The watch resumed elsewhere: every conversation assigned exactly once, none missing.
    let mut assigned: BTreeMap<String, u32> = BTreeMap::new();
    while assigned.len() < total {
        let effect = tokio::time::timeout(Duration::from_secs(20), watch.next_effect())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {} assignments", assigned.len()))
            .expect("stream open")
            .expect("no error");
        if let Some(pb::effect::Kind::Assigned(a)) = effect.kind {
            *assigned.entry(a.conversation).or_default() += 1;
        }
    }
    assert!(assigned.values().all(|n| *n == 1), "some conversation was streamed twice");
    // Survivors agree.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in survivors {
        let c = cluster.client_of(i).await;
        let agents = c
            .list_agents(pb::ListAgentsRequest { workspace: "ha".into(), ..Default::default() })
            .await
            .expect("agents");
        let open: u32 = agents.agents.iter().map(|a| a.open_count).sum();
        assert_eq!(open as usize, total, "node {i}");
    }
    cluster.assert_replicas_agree().await;
}

/// A gRPC codec for raw message bytes, so that a test can send a message of any size to any
/// method without building it field by field.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let length = prost::bytes::Buf::remaining(src);
        Ok(Some(prost::bytes::Buf::copy_to_bytes(src, length).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A message of exactly `size` bytes: field 1 as a string (or an embedded message) of `x`s.
fn message_of(size: usize) -> Vec<u8> {
    let mut message = vec![0x0a];
    // Field tag (1 byte) + varint length + payload = size.
    let mut payload = size - 2;
    while 1 + prost::encoding::encoded_len_varint(payload as u64) + payload > size {
        payload -= 1;
    }
    prost::encoding::encode_varint(payload as u64, &mut message);
    message.resize(size, b'x');
    message
}

/// Calls `path` with raw `message` and returns the call's status (`Ok` status when it answered).
async fn raw_call(channel: &tonic::transport::Channel, path: &str, message: Vec<u8>, streaming: bool) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().expect("path");
    let result = if streaming {
        match grpc.server_streaming(tonic::Request::new(message), path, RawCodec).await {
            Ok(response) => response.into_inner().message().await.map(|_| ()),
            Err(status) => Err(status),
        }
    } else {
        grpc.unary(tonic::Request::new(message), path, RawCodec).await.map(|_| ())
    };
    result.err().unwrap_or_else(|| tonic::Status::ok("answered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_over_the_size_limit_are_refused_by_every_service() {
    // Smaller than tonic's own default (4 MiB), so that a service left without the configured
    // limit would accept the requests below.
    const LIMIT: usize = 256 * 1024;
    let config = ServerConfig { max_request_bytes: LIMIT, ..support::unsupervised() };
    let cluster = TestCluster::start_with(1, config).await;
    let client = cluster.client().await;
    setup_workspace(&client, "big", pb::Strategy::RoundRobin, 1, 10).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.api_addrs[0]))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // One method of each public service, with a request one byte over the limit.
    let methods = [
        ("/switchboard.v1.Events/Publish", false),
        ("/switchboard.v1.Presence/GetAgent", false),
        ("/switchboard.v1.Assignments/GetConversation", false),
        ("/switchboard.v1.Assignments/Watch", true),
        ("/switchboard.v1.Admin/UpsertAgent", false),
        ("/switchboard.v1.Cluster/Status", false),
    ];
    for (path, streaming) in methods {
        let status = raw_call(&channel, path, message_of(LIMIT + 1), streaming).await;
        assert_eq!(status.code(), Code::OutOfRange, "{path}: {status:?}");
        assert!(status.message().contains("too large"), "{path}: {status:?}");
        assert!(status.message().contains(&LIMIT.to_string()), "{path} names the limit: {status:?}");
    }
    // Under the limit the request reaches the service, whose own checks answer (the client adds a
    // request id, hence the margin).
    let mut agent = pb::Agent { id: "a9".into(), max_open: 1, ..Default::default() };
    let overhead = prost::Message::encoded_len(&pb::UpsertAgentRequest {
        workspace: "big".into(),
        agent: Some(agent.clone()),
        ..Default::default()
    });
    agent.display_name = "n".repeat(LIMIT - overhead - 200);
    let request = pb::UpsertAgentRequest { workspace: "big".into(), agent: Some(agent), ..Default::default() };
    assert!(prost::Message::encoded_len(&request) <= LIMIT);
    let status = client.upsert_agent(request).await.expect_err("a 256 KiB display name is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("agent.display_name"), "{status:?}");

    // The anonymous services take much less.
    let status =
        raw_call(&channel, "/grpc.health.v1.Health/Check", message_of(ANONYMOUS_REQUEST_MAX_BYTES + 1), false).await;
    assert_eq!(status.code(), Code::OutOfRange, "health: {status:?}");
    // Reflection is a bidirectional stream whose library ends it, unanswered, on a message it
    // cannot read; one byte under the limit the same message is read and answered.
    let reflect = |size: usize| {
        let channel = channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".parse().expect("path");
            let requests = futures::stream::iter([message_of(size)]);
            let mut answers = grpc.streaming(tonic::Request::new(requests), path, RawCodec).await?.into_inner();
            answers.message().await
        }
    };
    let answer = reflect(ANONYMOUS_REQUEST_MAX_BYTES + 1).await;
    assert!(matches!(answer, Ok(None)), "an oversized reflection request is dropped unread: {answer:?}");
    let answer = reflect(ANONYMOUS_REQUEST_MAX_BYTES).await;
    assert!(!matches!(answer, Ok(None)), "a reflection request at the limit is read: {answer:?}");

    // Nothing of it stopped the node.
    client.status(pb::StatusRequest {}).await.expect("still serving");
    let agents = client
        .list_agents(pb::ListAgentsRequest { workspace: "big".into(), ..Default::default() })
        .await
        .expect("agents");
    assert_eq!(agents.agents.len(), 1);
}
