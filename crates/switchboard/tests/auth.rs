//! Who may call what, on a live 3-node cluster with tokens: every RPC called with no
//! credential, with a token of each role for workspace `acme`, and with an admin token for
//! another workspace. Each answer is the expected success or code; the table below has one row
//! per call.

mod support;

use futures::future::BoxFuture;
use std::sync::Arc;
use support::TestCluster;
use switchboard_client::pb::admin_client::AdminClient;
use switchboard_client::pb::assignments_client::AssignmentsClient;
use switchboard_client::pb::cluster_client::ClusterClient;
use switchboard_client::pb::events_client::EventsClient;
use switchboard_client::pb::presence_client::PresenceClient;
use switchboard_client::{Client, ClientConfig, pb};
use switchboard_server::ServerConfig;
use switchboard_server::auth::{Authenticator, CredentialSpec, Credentials, new_token};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The callers, in the order of each row's expectations.
const CALLERS: [&str; 7] = ["nobody", "gateway", "agent mary", "supervisor", "admin", "operator", "admin of other"];

/// A caller: a channel to a follower (so that forwarded calls are forwarded) and a token.
#[derive(Clone)]
struct Caller {
    channel: Channel,
    token: Option<String>,
}

impl Caller {
    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(std::time::Duration::from_secs(10));
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
        }
        request
    }
}

type Call = Box<dyn Fn(Caller) -> BoxFuture<'static, Result<(), Status>>>;

/// A row: the call's name, the expected answer of each caller, and the call (`[v, ...]`:
/// values the call clones from the test for each caller).
macro_rules! row {
    ($name:expr, $expected:expr, $([$($owned:ident),*],)? |$c:ident| $body:expr) => {{
        $($(let $owned = $owned.clone();)*)?
        ($name, $expected, Box::new(move |$c: Caller| -> BoxFuture<'static, Result<(), Status>> {
            $($(let $owned = $owned.clone();)*)?
            Box::pin(async move { $body.await.map(|_| ()) })
        }) as Call)
    }};
}

fn token(id: &str, role: &str, workspaces: &[&str], agent: Option<&str>) -> (String, CredentialSpec) {
    let (token, sha256) = new_token(id).expect("token");
    let spec = CredentialSpec {
        id: id.to_owned(),
        role: role.to_owned(),
        workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
        agent: agent.map(str::to_owned),
        sha256,
        certificate_name: None,
    };
    (token, spec)
}

fn opened(id: &str, conversation: &str, topic: &str) -> pb::GatewayEvent {
    pb::GatewayEvent {
        event_id: id.into(),
        workspace: "acme".into(),
        occurred_at_ms: 0,
        kind: Some(pb::gateway_event::Kind::ConversationOpened(pb::ConversationOpened {
            conversation: conversation.into(),
            contact: format!("contact-{conversation}"),
            channel: pb::Channel::Whatsapp.into(),
            topic: topic.into(),
            ..Default::default()
        })),
    }
}

fn ws() -> String {
    "acme".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_answers_each_role_as_the_table_says() {
    let tokens = [
        token("gw", "gateway", &["acme"], None),
        token("mary", "agent", &["acme"], Some("mary")),
        token("sup", "supervisor", &["acme"], None),
        token("adm", "admin", &["acme"], None),
        token("ops", "operator", &[], None),
        token("adm-other", "admin", &["other"], None),
        token("root", "admin", &["*"], None),
        token("root-gw", "gateway", &["*"], None),
    ];
    let specs: Vec<CredentialSpec> = tokens.iter().map(|(_, spec)| spec.clone()).collect();
    let auth = Arc::new(Authenticator::new(Credentials::from_specs(&specs).expect("valid tokens")));
    let mut cluster = TestCluster::start_with(3, ServerConfig { auth: Some(auth), ..support::unsupervised() }).await;
    let secret = |id: &str| tokens.iter().find(|(_, spec)| spec.id == id).map(|(token, _)| token.clone());
    cluster.token = secret("ops");

    // acme: mary in support (the default team), tom in sales (topic "sales"); both online, each
    // with a conversation; another workspace `other`.
    let root =
        Client::with_config(cluster.api_addrs.clone(), ClientConfig { token: secret("root"), ..Default::default() })
            .expect("client");
    for workspace in ["acme", "other"] {
        support::setup_workspace_of(
            &root,
            workspace,
            pb::Strategy::RoundRobin,
            vec![pb::Agent { id: "mary".into(), display_name: "Mary".into(), max_open: 5, ..Default::default() }],
        )
        .await;
    }
    root.upsert_agent(pb::UpsertAgentRequest {
        workspace: ws(),
        agent: Some(pb::Agent { id: "tom".into(), display_name: "Tom".into(), max_open: 5, ..Default::default() }),
        ..Default::default()
    })
    .await
    .expect("tom");
    root.upsert_team(pb::UpsertTeamRequest {
        workspace: ws(),
        team: Some(pb::Team {
            id: "sales".into(),
            members: vec!["tom".into()],
            strategy: pb::Strategy::RoundRobin.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("sales");
    let rule = pb::RoutingRule {
        id: "sales".into(),
        conditions: Some(pb::RuleConditions { topics: vec!["sales".into()], ..Default::default() }),
        target: Some(pb::RuleTarget {
            target: Some(pb::rule_target::Target::Team(pb::TeamTarget { team: "sales".into(), ..Default::default() })),
        }),
    };
    root.set_routing_rules(pb::SetRoutingRulesRequest {
        workspace: ws(),
        rules: vec![rule.clone()],
        ..Default::default()
    })
    .await
    .expect("rules");
    root.set_status(pb::SetStatusRequest {
        workspace: ws(),
        agent: "tom".into(),
        status: pb::AgentStatus::Online.into(),
        ..Default::default()
    })
    .await
    .expect("tom online");
    let gateway =
        Client::with_config(cluster.api_addrs.clone(), ClientConfig { token: secret("root-gw"), ..Default::default() })
            .expect("client");
    for (event, conversation, topic) in [("e-mary", "c-mary", ""), ("e-tom", "c-tom", "sales")] {
        let published = gateway
            .publish(pb::PublishRequest { event: Some(opened(event, conversation, topic)) })
            .await
            .expect("open");
        assert!(support::assigned_agent(&published.effects).is_some(), "{conversation} assigned: {published:?}");
    }
    let settings = root
        .get_workspace(pb::GetWorkspaceRequest { workspace: ws(), ..Default::default() })
        .await
        .expect("get")
        .settings;

    // U: UNAUTHENTICATED, D: PERMISSION_DENIED, A: allowed (any other answer: the call got past
    // authorization; most succeed, some are refused by the state, as the row's comment says).
    let rows: Vec<(&str, &str, Call)> = vec![
        row!("Events.Publish", "UADDDDD", |c| EventsClient::new(c.channel.clone())
            .publish(c.req(pb::PublishRequest { event: Some(opened(&format!("e-{}", rand_id()), "c-new", "")) }))),
        row!("Events.PublishBatch", "UADDDDD", |c| EventsClient::new(c.channel.clone()).publish_batch(
            c.req(pb::PublishBatchRequest { events: vec![opened(&format!("e-{}", rand_id()), "c-batch", "")] })
        )),
        row!("Presence.SetStatus (mary)", "UDAAADD", |c| PresenceClient::new(c.channel.clone()).set_status(c.req(
            pb::SetStatusRequest {
                workspace: ws(),
                agent: "mary".into(),
                status: pb::AgentStatus::Online.into(),
                ..Default::default()
            }
        ))),
        row!("Presence.SetStatus (tom)", "UDDAADD", |c| PresenceClient::new(c.channel.clone()).set_status(c.req(
            pb::SetStatusRequest {
                workspace: ws(),
                agent: "tom".into(),
                status: pb::AgentStatus::Online.into(),
                ..Default::default()
            }
        ))),
        row!("Presence.Heartbeat (mary, forwarded)", "UDAAADD", |c| PresenceClient::new(c.channel.clone())
            .heartbeat(c.req(pb::HeartbeatRequest { workspace: ws(), agent: "mary".into() }))),
        row!("Presence.GetAgent (mary)", "UDAAADD", |c| PresenceClient::new(c.channel.clone())
            .get_agent(c.req(pb::GetAgentRequest { workspace: ws(), agent: "mary".into(), ..Default::default() }))),
        row!("Presence.GetAgent (tom)", "UDDAADD", |c| PresenceClient::new(c.channel.clone())
            .get_agent(c.req(pb::GetAgentRequest { workspace: ws(), agent: "tom".into(), ..Default::default() }))),
        row!("Presence.ListAgents", "UDDAADD", |c| PresenceClient::new(c.channel.clone())
            .list_agents(c.req(pb::ListAgentsRequest { workspace: ws(), ..Default::default() }))),
        row!("Assignments.GetConversation (mary's)", "UDAAADD", |c| AssignmentsClient::new(c.channel.clone())
            .get_conversation(c.req(pb::GetConversationRequest {
                workspace: ws(),
                conversation: "c-mary".into(),
                ..Default::default()
            }))),
        row!("Assignments.GetConversation (tom's)", "UDDAADD", |c| AssignmentsClient::new(c.channel.clone())
            .get_conversation(c.req(pb::GetConversationRequest {
                workspace: ws(),
                conversation: "c-tom".into(),
                ..Default::default()
            }))),
        row!("Assignments.ListQueue (support, mary's team)", "UDAAADD", |c| AssignmentsClient::new(c.channel.clone())
            .list_queue(c.req(pb::ListQueueRequest { workspace: ws(), team: "support".into(), ..Default::default() }))),
        row!("Assignments.ListQueue (sales)", "UDDAADD", |c| AssignmentsClient::new(c.channel.clone())
            .list_queue(c.req(pb::ListQueueRequest { workspace: ws(), team: "sales".into(), ..Default::default() }))),
        // Nothing waits: an allowed claim is refused by the state (NOT_FOUND).
        row!("Assignments.Claim (as mary)", "UDAAADD", |c| AssignmentsClient::new(c.channel.clone()).claim(c.req(
            pb::ClaimRequest {
                workspace: ws(),
                conversation: "nothing".into(),
                agent: "mary".into(),
                ..Default::default()
            }
        ))),
        row!("Assignments.Claim (as tom)", "UDDAADD", |c| AssignmentsClient::new(c.channel.clone()).claim(c.req(
            pb::ClaimRequest {
                workspace: ws(),
                conversation: "nothing".into(),
                agent: "tom".into(),
                ..Default::default()
            }
        ))),
        row!("Assignments.Assign", "UDDAADD", |c| AssignmentsClient::new(c.channel.clone()).assign(c.req(
            pb::AssignRequest {
                workspace: ws(),
                conversation: "nothing".into(),
                agent: "mary".into(),
                ..Default::default()
            }
        ))),
        row!("Assignments.Transfer", "UDDAADD", |c| AssignmentsClient::new(c.channel.clone()).transfer(c.req(
            pb::TransferRequest {
                workspace: ws(),
                conversation: "nothing".into(),
                target: Some(pb::transfer_request::Target::Team("sales".into())),
                ..Default::default()
            }
        ))),
        row!("Assignments.Close", "UDDAADD", |c| AssignmentsClient::new(c.channel.clone())
            .close(c.req(pb::CloseRequest { workspace: ws(), conversation: "nothing".into(), ..Default::default() }))),
        row!("Assignments.Watch (workspace)", "UADAADD", |c| AssignmentsClient::new(c.channel.clone())
            .watch(c.req(pb::WatchRequest { workspace: ws(), ..Default::default() }))),
        row!("Assignments.Watch (agent mary)", "UAAAADD", |c| AssignmentsClient::new(c.channel.clone())
            .watch(c.req(pb::WatchRequest { workspace: ws(), agent: "mary".into(), ..Default::default() }))),
        row!("Admin.ConfigureWorkspace", "UDDDADD", [settings], |c| AdminClient::new(c.channel.clone())
            .configure_workspace(c.req(pb::ConfigureWorkspaceRequest {
                workspace: ws(),
                settings,
                ..Default::default()
            }))),
        row!("Admin.GetWorkspace", "UDDDADD", |c| AdminClient::new(c.channel.clone())
            .get_workspace(c.req(pb::GetWorkspaceRequest { workspace: ws(), ..Default::default() }))),
        row!("Admin.UpsertAgent", "UDDDADD", |c| AdminClient::new(c.channel.clone()).upsert_agent(c.req(
            pb::UpsertAgentRequest {
                workspace: ws(),
                agent: Some(pb::Agent { id: "extra".into(), display_name: "Extra".into(), ..Default::default() }),
                ..Default::default()
            }
        ))),
        row!("Admin.RemoveAgent", "UDDDADD", |c| AdminClient::new(c.channel.clone()).remove_agent(
            c.req(pb::RemoveAgentRequest { workspace: ws(), agent: "extra".into(), ..Default::default() })
        )),
        row!("Admin.UpsertTeam", "UDDDADD", |c| AdminClient::new(c.channel.clone()).upsert_team(c.req(
            pb::UpsertTeamRequest {
                workspace: ws(),
                team: Some(pb::Team {
                    id: "extra".into(),
                    strategy: pb::Strategy::RoundRobin.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        ))),
        row!("Admin.RemoveTeam", "UDDDADD", |c| AdminClient::new(c.channel.clone())
            .remove_team(c.req(pb::RemoveTeamRequest { workspace: ws(), team: "extra".into(), ..Default::default() }))),
        row!("Admin.SetRoutingRules", "UDDDADD", [rule], |c| AdminClient::new(c.channel.clone()).set_routing_rules(
            c.req(pb::SetRoutingRulesRequest { workspace: ws(), rules: vec![rule], ..Default::default() })
        )),
        row!("Admin.UpsertContact", "UDDDADD", |c| AdminClient::new(c.channel.clone()).upsert_contact(c.req(
            pb::UpsertContactRequest {
                workspace: ws(),
                contact: Some(pb::Contact { id: "contact-c-mary".into(), tier: "vip".into(), ..Default::default() }),
                ..Default::default()
            }
        ))),
        row!("Admin.GetContact", "UDDDADD", |c| AdminClient::new(c.channel.clone()).get_contact(
            c.req(pb::GetContactRequest { workspace: ws(), contact: "contact-c-mary".into(), ..Default::default() })
        )),
        row!("Admin.ListAudit (acme)", "UDDDADD", |c| AdminClient::new(c.channel.clone())
            .list_audit(c.req(pb::ListAuditRequest { workspace: ws(), ..Default::default() }))),
        row!("Admin.ListAudit (cluster)", "UDDDDAD", |c| AdminClient::new(c.channel.clone())
            .list_audit(c.req(pb::ListAuditRequest::default()))),
        row!("Cluster.Status", "UAAAAAA", |c| ClusterClient::new(c.channel.clone())
            .status(c.req(pb::StatusRequest {}))),
        // id 0 is refused (INVALID_ARGUMENT) once past authorization: no learner is added.
        row!("Cluster.AddLearner (forwarded)", "UDDDDAD", |c| ClusterClient::new(c.channel.clone())
            .add_learner(c.req(pb::AddLearnerRequest { id: 0, ..Default::default() }))),
        row!("Cluster.ChangeMembership (forwarded)", "UDDDDAD", |c| ClusterClient::new(c.channel.clone())
            .change_membership(c.req(pb::ChangeMembershipRequest { voters: vec![1, 2, 3], remove_learners: false }))),
        row!("Cluster.ExportSnapshot", "UDDDDAD", |c| ClusterClient::new(c.channel.clone())
            .export_snapshot(c.req(pb::ExportSnapshotRequest {}))),
    ];

    let follower = cluster.follower().await;
    let channel = Channel::from_shared(format!("http://{}", cluster.api_addrs[follower])).expect("uri").connect_lazy();
    let callers: Vec<Caller> =
        [None, Some("gw"), Some("mary"), Some("sup"), Some("adm"), Some("ops"), Some("adm-other")]
            .into_iter()
            .map(|id| Caller { channel: channel.clone(), token: id.and_then(&secret) })
            .collect();
    let mut wrong = Vec::new();
    for (name, expected, call) in &rows {
        assert_eq!(expected.len(), CALLERS.len(), "{name}");
        for ((caller, who), want) in callers.iter().zip(CALLERS).zip(expected.chars()) {
            let result = call(caller.clone()).await;
            let got = match &result {
                Err(status) if status.code() == Code::Unauthenticated => 'U',
                Err(status) if status.code() == Code::PermissionDenied => 'D',
                _ => 'A',
            };
            if got != want {
                wrong.push(format!("{name} as {who}: expected {want}, got {got} ({result:?})"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} answers differ from the table:\n{}", wrong.len(), wrong.join("\n"));

    // Every configuration change and membership change is in the audit trail, with the token
    // that made it; refused ones with their reason. The table's admin calls came from `adm`.
    let operator =
        Client::with_config(cluster.api_addrs.clone(), ClientConfig { token: secret("ops"), ..Default::default() })
            .expect("client");
    let admin =
        Client::with_config(cluster.api_addrs.clone(), ClientConfig { token: secret("adm"), ..Default::default() })
            .expect("client");
    let trail = admin
        .list_audit(pb::ListAuditRequest { workspace: ws(), limit: 1000, ..Default::default() })
        .await
        .expect("audit");
    let line = |r: &pb::AuditRecord| format!("{} {} {} {}", r.credential, r.role, r.action, r.outcome);
    let lines: Vec<String> = trail.records.iter().map(line).collect();
    for expected in [
        "root admin UpsertTeam sales ok",
        "root admin SetRoutingRules (1 rules) ok",
        "adm admin ConfigureWorkspace ok",
        "adm admin UpsertAgent extra ok",
        "adm admin RemoveAgent extra ok",
        "adm admin UpsertContact contact-c-mary ok",
    ] {
        assert!(lines.iter().any(|l| l == expected), "no {expected:?} in the audit trail:\n{}", lines.join("\n"));
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("adm-other") || l.starts_with("sup")),
        "refused callers left no record"
    );
    assert!(trail.records.windows(2).all(|w| w[0].log_index <= w[1].log_index), "in log order");
    let membership = operator.list_audit(pb::ListAuditRequest::default()).await.expect("cluster audit");
    let lines: Vec<String> = membership.records.iter().map(line).collect();
    assert_eq!(lines.len(), 2, "the cluster's trail: {lines:?}");
    assert_eq!(lines[0], "ops operator ChangeMembership voters 1,2,3 ok", "the cluster's trail");
    assert_eq!(lines[1], "ops operator ExportSnapshot ok", "the cluster's trail");
    // Every replica holds the same trail.
    for node in 0..3 {
        let single = Client::with_config(
            [cluster.api_addrs[node].clone()],
            ClientConfig { token: secret("adm"), ..Default::default() },
        )
        .expect("client");
        cluster.assert_replicas_agree().await;
        let mine = single
            .list_audit(pb::ListAuditRequest { workspace: ws(), limit: 1000, ..Default::default() })
            .await
            .expect("audit");
        assert_eq!(mine.records, trail.records, "node {} has another trail", node + 1);
    }

    // A wrong secret for a known id, and a malformed header, are UNAUTHENTICATED too.
    let forged = secret("adm").map(|token| format!("{}x", &token[..token.len() - 1]));
    for token in [forged, Some("adm".to_owned()), Some("nobody.secret".to_owned())] {
        let caller = Caller { channel: channel.clone(), token };
        let status = AdminClient::new(channel.clone())
            .get_workspace(caller.req(pb::GetWorkspaceRequest { workspace: ws(), ..Default::default() }))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // Health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health is open");
    cluster.assert_replicas_agree().await;
}

/// A fresh suffix for event ids, so that each allowed publish is a new event.
fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `switchboard ctl token create ARGS`: (the token, the `[[auth.tokens]]` entry).
fn ctl_token(args: &[&str]) -> (String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["ctl", "token", "create"])
        .args(args)
        .output()
        .expect("ctl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "ctl token create {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let token = stdout.lines().find_map(|line| line.strip_prefix("token: ")).expect("a token line").to_owned();
    let entry = &stdout[stdout.find("[[auth.tokens]]").expect("an entry")..];
    assert!(!entry.contains(token.split_once('.').expect("id.secret").1), "the entry must not hold the secret");
    (token, entry.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_by_ctl_work_on_a_real_node_and_sighup_revokes_one() {
    let (admin, admin_entry) = ctl_token(&["--id", "adm", "--role", "admin", "--workspaces", "*"]);
    let (operator, operator_entry) = ctl_token(&["--id", "ops", "--role", "operator"]);
    let nodes = support::processes::NodeProcesses::start(1, &format!("[auth]\n{admin_entry}\n{operator_entry}")).await;
    let as_token = |token: &str| {
        Client::with_config(
            nodes.api_addrs.clone(),
            ClientConfig {
                token: Some(token.to_owned()),
                retry_timeout: std::time::Duration::from_secs(30),
                ..Default::default()
            },
        )
        .expect("client")
    };
    let configure = |client: Client| async move { support::configure_default(&client, "acme").await };
    configure(as_token(&admin)).await.expect("the admin token configures");
    let anonymous = configure(nodes.client()).await.expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let log = nodes.log(0);
    assert!(!log.contains(admin.split_once('.').expect("id.secret").1), "a secret reached the log");

    // The admin token is removed from the file; SIGHUP; it is refused, the operator's is not.
    let path = nodes.config_path(0).to_owned();
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replace(&admin_entry, "")).expect("rewrite");
    nodes.signal(0, "HUP").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match configure(as_token(&admin)).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still accepted after SIGHUP: {other:?}\n{}",
                    nodes.log(0)
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    as_token(&operator).status(pb::StatusRequest {}).await.expect("the operator token still works");

    // A file that no longer parses changes nothing.
    std::fs::write(&path, "this is not TOML [").expect("rewrite");
    nodes.signal(0, "HUP").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !nodes.log(0).contains("tokens not reloaded") {
        assert!(tokio::time::Instant::now() < deadline, "the refusal is not logged:\n{}", nodes.log(0));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    as_token(&operator).status(pb::StatusRequest {}).await.expect("the old tokens stay");
}
