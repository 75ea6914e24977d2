//! Bad input for every RPC family gets the right gRPC code and a message naming what is wrong,
//! and the cluster keeps serving.

mod support;

use support::{TestCluster, opened, setup_workspace};
use switchboard_client::{Client, pb};
use tonic::{Code, Status};

#[track_caller]
fn expect_error<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, mentions: &[&str]) {
    let status = match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{status:?}");
    for word in mentions {
        assert!(status.message().contains(word), "{:?} does not mention {word:?}", status.message());
    }
}

fn team(id: &str, members: &[&str]) -> pb::Team {
    pb::Team {
        id: id.into(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        strategy: pb::Strategy::RoundRobin.into(),
        ..Default::default()
    }
}

async fn events(client: &Client) {
    expect_error(client.publish(pb::PublishRequest { event: None }).await, Code::InvalidArgument, &["event"]);
    let mut no_id = opened("bad", "c1");
    no_id.event_id.clear();
    expect_error(
        client.publish(pb::PublishRequest { event: Some(no_id) }).await,
        Code::InvalidArgument,
        &["event.event_id"],
    );
    let mut no_kind = opened("bad", "c1");
    no_kind.kind = None;
    expect_error(
        client.publish(pb::PublishRequest { event: Some(no_kind) }).await,
        Code::InvalidArgument,
        &["event.kind"],
    );
    let mut no_channel = opened("bad", "c1");
    if let Some(pb::gateway_event::Kind::ConversationOpened(open)) = &mut no_channel.kind {
        open.channel = 0;
    }
    expect_error(
        client.publish(pb::PublishRequest { event: Some(no_channel) }).await,
        Code::InvalidArgument,
        &["conversation_opened.channel"],
    );
    let mut long_id = opened("bad", "c1");
    long_id.event_id = "x".repeat(200);
    expect_error(
        client.publish(pb::PublishRequest { event: Some(long_id) }).await,
        Code::InvalidArgument,
        &["event_id", "128"],
    );
    expect_error(
        client.publish(pb::PublishRequest { event: Some(opened("nowhere", "c1")) }).await,
        Code::NotFound,
        &["unknown workspace nowhere"],
    );
    let message = pb::GatewayEvent {
        event_id: "m-1".into(),
        workspace: "bad".into(),
        occurred_at_ms: 0,
        kind: Some(pb::gateway_event::Kind::MessageReceived(pb::MessageReceived { conversation: "ghost".into() })),
    };
    expect_error(client.publish(pb::PublishRequest { event: Some(message) }).await, Code::NotFound, &["ghost"]);
    // A repeated event id is recognised.
    client.publish(pb::PublishRequest { event: Some(opened("bad", "once")) }).await.expect("first delivery");
    expect_error(
        client.publish(pb::PublishRequest { event: Some(opened("bad", "once")) }).await,
        Code::AlreadyExists,
        &["once-opened"],
    );
    // Batches: empty, oversize, one malformed event, and per-event refusals.
    expect_error(
        client.publish_batch(pb::PublishBatchRequest { events: vec![] }).await,
        Code::InvalidArgument,
        &["events"],
    );
    let oversize = (0..1025).map(|n| opened("bad", &format!("b{n}"))).collect();
    expect_error(
        client.publish_batch(pb::PublishBatchRequest { events: oversize }).await,
        Code::InvalidArgument,
        &["1025", "1024"],
    );
    let mut malformed = vec![opened("bad", "b1"), opened("bad", "b2")];
    malformed[1].workspace.clear();
    expect_error(
        client.publish_batch(pb::PublishBatchRequest { events: malformed }).await,
        Code::InvalidArgument,
        &["events[1].workspace"],
    );
    let mixed = vec![opened("bad", "b1"), opened("bad", "once"), opened("bad", "b2")];
    let results = client.publish_batch(pb::PublishBatchRequest { events: mixed }).await.expect("batch").results;
    let reasons: Vec<&str> = results.iter().map(|r| r.error_reason.as_str()).collect();
    assert_eq!(reasons, ["", "duplicate", ""]);
    assert_eq!(results[1].error_code, Code::AlreadyExists as i32);
    // A request over the size limit (4 MiB) is refused by the transport.
    let mut huge = opened("bad", "huge");
    if let Some(pb::gateway_event::Kind::ConversationOpened(open)) = &mut huge.kind {
        open.tags = vec!["t".repeat(1024); 5 * 1024];
    }
    let status = client.publish(pb::PublishRequest { event: Some(huge) }).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
}

async fn presence(client: &Client) {
    let get = |agent: &str| pb::GetAgentRequest { workspace: "bad".into(), agent: agent.into(), ..Default::default() };
    expect_error(client.get_agent(get("")).await, Code::InvalidArgument, &["agent"]);
    expect_error(client.get_agent(get("nobody")).await, Code::NotFound, &["nobody"]);
    expect_error(
        client.get_agent(pb::GetAgentRequest { workspace: "bad".into(), agent: "a1".into(), consistency: 7 }).await,
        Code::InvalidArgument,
        &["consistency"],
    );
    let set = |agent: &str, status: i32| pb::SetStatusRequest {
        workspace: "bad".into(),
        agent: agent.into(),
        status,
        ..Default::default()
    };
    expect_error(client.set_status(set("a1", 0)).await, Code::InvalidArgument, &["status"]);
    expect_error(client.set_status(set("a1", 42)).await, Code::InvalidArgument, &["status", "42"]);
    expect_error(client.set_status(set("nobody", pb::AgentStatus::Online as i32)).await, Code::NotFound, &["nobody"]);
    expect_error(
        client.heartbeat(pb::HeartbeatRequest { workspace: "bad".into(), agent: "nobody".into() }).await,
        Code::NotFound,
        &["nobody"],
    );
    expect_error(
        client
            .list_agents(pb::ListAgentsRequest { workspace: "bad".into(), page_size: 5000, ..Default::default() })
            .await,
        Code::InvalidArgument,
        &["page_size", "1000"],
    );
    expect_error(
        client
            .list_agents(pb::ListAgentsRequest { workspace: "bad".into(), team: "ghosts".into(), ..Default::default() })
            .await,
        Code::NotFound,
        &["ghosts"],
    );
}

async fn assignments(client: &Client) {
    expect_error(
        client.get_conversation(pb::GetConversationRequest { workspace: "bad".into(), ..Default::default() }).await,
        Code::InvalidArgument,
        &["conversation"],
    );
    expect_error(
        client
            .list_queue(pb::ListQueueRequest { workspace: "bad".into(), team: "ghosts".into(), ..Default::default() })
            .await,
        Code::NotFound,
        &["ghosts"],
    );
    expect_error(
        client
            .transfer(pb::TransferRequest {
                workspace: "bad".into(),
                conversation: "once".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["target"],
    );
    expect_error(
        client
            .transfer(pb::TransferRequest {
                workspace: "bad".into(),
                conversation: "once".into(),
                target: Some(pb::transfer_request::Target::Team("ghosts".into())),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &["ghosts"],
    );
    // "once" was assigned automatically: it cannot be claimed.
    expect_error(
        client
            .claim(pb::ClaimRequest {
                workspace: "bad".into(),
                conversation: "once".into(),
                agent: "a2".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        &["once", "assigned"],
    );
    expect_error(
        client
            .assign(pb::AssignRequest {
                workspace: "bad".into(),
                conversation: "once".into(),
                agent: "nobody".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &["nobody"],
    );
    client
        .close(pb::CloseRequest { workspace: "bad".into(), conversation: "once".into(), ..Default::default() })
        .await
        .expect("close");
    expect_error(
        client
            .close(pb::CloseRequest { workspace: "bad".into(), conversation: "once".into(), ..Default::default() })
            .await,
        Code::FailedPrecondition,
        &["closed"],
    );
    let mut watch = client.watch(pb::WatchRequest { workspace: "nowhere".into(), ..Default::default() });
    let status = watch.next().await.expect("an answer").expect_err("unknown workspace");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

async fn admin(client: &Client) {
    let upsert =
        |team: pb::Team| pb::UpsertTeamRequest { workspace: "bad".into(), team: Some(team), ..Default::default() };
    let mut mars = team("mars", &["a1"]);
    mars.timezone = "Mars/Olympus".into();
    expect_error(client.upsert_team(upsert(mars)).await, Code::InvalidArgument, &["timezone", "Mars/Olympus"]);
    let mut inverted = team("inverted", &["a1"]);
    inverted.business_hours = Some(pb::BusinessHours {
        weekly: vec![pb::OpeningInterval { weekday: 0, open_minute: 1080, close_minute: 540 }],
        holidays: vec![],
    });
    expect_error(client.upsert_team(upsert(inverted)).await, Code::InvalidArgument, &["business_hours"]);
    let mut day8 = team("day8", &["a1"]);
    day8.business_hours = Some(pb::BusinessHours {
        weekly: vec![pb::OpeningInterval { weekday: 8, open_minute: 540, close_minute: 1080 }],
        holidays: vec![],
    });
    expect_error(client.upsert_team(upsert(day8)).await, Code::InvalidArgument, &["weekday"]);
    let mut holiday = team("holiday", &["a1"]);
    holiday.business_hours = Some(pb::BusinessHours { weekly: vec![], holidays: vec!["25/12/2026".into()] });
    expect_error(client.upsert_team(upsert(holiday)).await, Code::InvalidArgument, &["25/12/2026"]);
    expect_error(client.upsert_team(upsert(team("ghosts", &["nobody"]))).await, Code::NotFound, &["nobody"]);
    let mut no_strategy = team("lazy", &["a1"]);
    no_strategy.strategy = 0;
    expect_error(client.upsert_team(upsert(no_strategy)).await, Code::InvalidArgument, &["team.strategy"]);
    expect_error(
        client
            .upsert_agent(pb::UpsertAgentRequest {
                workspace: "bad".into(),
                agent: Some(pb::Agent {
                    id: "x".into(),
                    display_name: "X".into(),
                    max_open: 1,
                    skills: [("refunds".to_owned(), 9)].into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["skills"],
    );
    // Conflicting rules: the same id twice, a rule without a target, a rule to a missing team.
    let rule = |id: &str, team: &str| pb::RoutingRule {
        id: id.into(),
        conditions: None,
        target: Some(pb::RuleTarget {
            target: Some(pb::rule_target::Target::Team(pb::TeamTarget { team: team.into(), ..Default::default() })),
        }),
    };
    let set = |rules: Vec<pb::RoutingRule>| pb::SetRoutingRulesRequest {
        workspace: "bad".into(),
        rules,
        ..Default::default()
    };
    expect_error(
        client.set_routing_rules(set(vec![rule("r", "support"), rule("r", "support")])).await,
        Code::InvalidArgument,
        &["twice"],
    );
    expect_error(
        client.set_routing_rules(set(vec![pb::RoutingRule { id: "r".into(), conditions: None, target: None }])).await,
        Code::InvalidArgument,
        &["rules[0].target"],
    );
    expect_error(client.set_routing_rules(set(vec![rule("r", "ghosts")])).await, Code::NotFound, &["ghosts"]);
    expect_error(
        client
            .configure_workspace(pb::ConfigureWorkspaceRequest {
                workspace: "bad".into(),
                settings: Some(pb::WorkspaceSettings { default_team: "ghosts".into(), ..Default::default() }),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &["ghosts"],
    );
    expect_error(
        client.configure_workspace(pb::ConfigureWorkspaceRequest { workspace: "".into(), ..Default::default() }).await,
        Code::InvalidArgument,
        &["workspace"],
    );
    expect_error(
        client
            .remove_team(pb::RemoveTeamRequest {
                workspace: "bad".into(),
                team: "support".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        &["support"],
    );
    expect_error(
        client
            .get_contact(pb::GetContactRequest {
                workspace: "bad".into(),
                contact: "nobody".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &["nobody"],
    );
}

async fn cluster_calls(client: &Client) {
    expect_error(
        client.change_membership(pb::ChangeMembershipRequest { voters: vec![], remove_learners: false }).await,
        Code::InvalidArgument,
        &["voters"],
    );
    expect_error(
        client
            .add_learner(pb::AddLearnerRequest { id: 0, raft_addr: "127.0.0.1:1".into(), ..Default::default() })
            .await,
        Code::InvalidArgument,
        &["id"],
    );
    expect_error(
        client.add_learner(pb::AddLearnerRequest { id: 9, raft_addr: String::new(), ..Default::default() }).await,
        Code::InvalidArgument,
        &["raft_addr"],
    );
    expect_error(
        client
            .add_learner(pb::AddLearnerRequest {
                id: 9,
                raft_addr: "127.0.0.1:1".into(),
                api_addr: "a".repeat(switchboard_raft::NODE_ADDR_BYTES_MAX + 1),
                wait_for_catch_up: false,
            })
            .await,
        Code::InvalidArgument,
        &["api_addr", "node_addr_bytes_max"],
    );
    expect_error(
        client.change_membership(pb::ChangeMembershipRequest { voters: vec![1, 2, 7], remove_learners: false }).await,
        Code::FailedPrecondition,
        &["7"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_family_refuses_bad_input_precisely_and_keeps_serving() {
    let cluster = TestCluster::start(3).await;
    // Through a follower, so that forwarded calls are covered too.
    let client = cluster.client_of(cluster.follower().await).await;
    setup_workspace(&client, "bad", pb::Strategy::RoundRobin, 2, 5).await;
    events(&client).await;
    presence(&client).await;
    assignments(&client).await;
    admin(&client).await;
    cluster_calls(&client).await;
    // Nothing accepted was lost and the cluster still takes writes and reads.
    let published =
        client.publish(pb::PublishRequest { event: Some(opened("bad", "after")) }).await.expect("still serving");
    assert!(support::assigned_agent(&published.effects).is_some());
    for conversation in ["b1", "b2", "after"] {
        client
            .get_conversation(pb::GetConversationRequest {
                workspace: "bad".into(),
                conversation: conversation.into(),
                ..Default::default()
            })
            .await
            .expect("accepted events are kept");
    }
}

#[test]
fn ctl_and_node_explain_bad_configuration() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).output().expect("runs");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let bad_yaml = dir.path().join("bad.yaml");
    std::fs::write(&bad_yaml, "workspace: w\nteams:\n  - id: t\n    strategy: fastest\n").expect("write");
    let (ok, err) =
        run(&["ctl", "--nodes", "127.0.0.1:1", "apply", "-f", bad_yaml.to_str().expect("path"), "--dry-run"]);
    // The file is checked before any node is contacted.
    assert!(!ok && err.contains("fastest") && err.contains("teams[0] (t).strategy"), "{err}");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "workspace: w\nagents:\n  - id: a\n    max_opn: 3\n").expect("write");
    let (ok, err) = run(&["ctl", "--nodes", "127.0.0.1:1", "apply", "-f", typo.to_str().expect("path")]);
    assert!(!ok && err.contains("max_opn"), "{err}");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "data_dir = \"x\"\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\n")
        .expect("write");
    let (ok, err) = run(&["node", "--config", config.to_str().expect("path")]);
    assert!(!ok && err.contains("node id is not set"), "{err}");
    // A value that once overflowed a Duration at start-up: refused with its range, no panic.
    std::fs::write(
        &config,
        "id = 1\ndata_dir = \"x\"\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\n\
         [nats]\nack_wait_s = 5000000000000000000\n",
    )
    .expect("write");
    let (ok, err) = run(&["node", "--config", config.to_str().expect("path")]);
    assert!(!ok && err.contains("nats.ack_wait_s = 5000000000000000000 is out of range: allowed 1 to 599"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::write(&config, "id = 1\nlisten = \"nowhere\"\n").expect("write");
    let (ok, err) = run(&["node", "--config", config.to_str().expect("path")]);
    assert!(!ok && err.contains("listen") && err.contains("node.toml"), "{err}");
    let (ok, err) = run(&["ctl", "--nodes", "127.0.0.1:1", "status"]);
    assert!(!ok && err.contains("no node answered"), "{err}");
    let (ok, err) = run(&["ctl", "--nodes", "127.0.0.1:1", "--timeout", "0.5", "agents"]);
    assert!(!ok && err.contains("Unavailable") && err.contains("is the cluster running?"), "{err}");
    let (ok, err) = run(&["ctl", "--timeout=0", "agents"]);
    assert!(!ok && err.contains("--timeout"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_and_event_ids_do_not_collide() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    setup_workspace(&client, "ids", pb::Strategy::RoundRobin, 1, 5).await;
    let request = |status: pb::AgentStatus| pb::SetStatusRequest {
        workspace: "ids".into(),
        agent: "a1".into(),
        status: status.into(),
        request_id: "shared-1".into(),
    };
    client.set_status(request(pb::AgentStatus::Online)).await.expect("first call");
    // The same id as a gateway's event id is a different key: the conversation is not lost.
    let mut event = opened("ids", "c1");
    event.event_id = "shared-1".into();
    let published = client.publish(pb::PublishRequest { event: Some(event) }).await.expect("not taken for a repeat");
    assert_eq!(support::assigned_agent(&published.effects).as_deref(), Some("a1"));
    // A repeated request id is recognised as a retry and changes nothing.
    expect_error(client.set_status(request(pb::AgentStatus::Away)).await, Code::AlreadyExists, &["already processed"]);
    let agent = client
        .get_agent(pb::GetAgentRequest { workspace: "ids".into(), agent: "a1".into(), ..Default::default() })
        .await
        .expect("agent");
    assert_eq!(agent.status(), pb::AgentStatus::Online);
    // Control characters are refused in ids, so no client id can reach the request namespace.
    let mut event = opened("ids", "c2");
    event.event_id = "\u{1}request\u{1}shared-1".into();
    expect_error(
        client.publish(pb::PublishRequest { event: Some(event) }).await,
        Code::InvalidArgument,
        &["control character"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_id_of_any_allowed_length_works_and_a_refused_one_creates_nothing() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client().await;
    let configure = |workspace: &str, request_id: String| pb::ConfigureWorkspaceRequest {
        workspace: workspace.into(),
        settings: Some(pb::WorkspaceSettings::default()),
        request_id,
    };
    // 120 to 128 bytes used to be refused for the server's own prefix, after the workspace
    // had been created anyway.
    for length in [120, 128] {
        let workspace = format!("ws-{length}");
        client.configure_workspace(configure(&workspace, "r".repeat(length))).await.expect("a 128-byte id is allowed");
    }
    expect_error(
        client.configure_workspace(configure("ws-129", "r".repeat(129))).await,
        Code::InvalidArgument,
        &["request_id", "128"],
    );
    let lookup =
        client.get_workspace(pb::GetWorkspaceRequest { workspace: "ws-129".into(), ..Default::default() }).await;
    expect_error(lookup, Code::NotFound, &["ws-129"]);
}
