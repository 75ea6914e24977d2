//! Mutual TLS on the peer port: a cluster whose nodes hold certificates naming `node-<id>`
//! replicates as before, and nothing without such a certificate, or claiming another node's
//! id, gets a Raft message through — the leader keeps its term and keeps committing.

mod support;

use openraft::Vote;
use openraft::raft::VoteRequest;
use std::sync::Arc;
use std::time::Duration;
use support::{Cluster, open, steady_tuning, workspace_setup, write_until_acknowledged};
use switchboard_proto::raft::v1::raft_peer_client::RaftPeerClient;
use switchboard_raft::network::{PEER_ID_METADATA_KEY, encode};
use switchboard_tls::pki::{Issued, Pki};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A vote for `candidate` in a term far beyond the cluster's, as a disruptive peer would send.
fn huge_vote(candidate: u64) -> switchboard_proto::raft::v1::RaftPayload {
    encode(&VoteRequest::<u64>::new(Vote::new(1_000_000_000_000, candidate), None)).expect("encode")
}

/// Sends `huge_vote(candidate)` to `addr`, claiming to be node `claimed`, over TLS that trusts
/// `ca` and presents `identity` (none: no client certificate); `Err` carries what failed.
async fn send_vote(
    addr: &str,
    answering: u64,
    ca: &str,
    identity: Option<&Issued>,
    claimed: u64,
    candidate: u64,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(switchboard_tls::node_name(answering));
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut request = tonic::Request::new(huge_vote(candidate));
    request.metadata_mut().insert(PEER_ID_METADATA_KEY, claimed.to_string().parse().expect("ascii"));
    request.set_timeout(Duration::from_secs(5));
    RaftPeerClient::new(channel)
        .vote(request)
        .await
        .map(|_| ())
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_peer_with_its_own_certificate_gets_a_raft_message_through() {
    support::init_tracing();
    let pki = Arc::new(Pki::new("test cluster CA").expect("CA"));
    let cluster = Cluster::start_with(3, steady_tuning(), None, Some(Arc::clone(&pki))).await;
    let nodes: Vec<_> = cluster.running.values().cloned().collect();
    let mut next = 0;
    for input in workspace_setup() {
        write_until_acknowledged(&nodes, &mut next, input).await;
    }
    let leader = cluster.leader().await;
    let term = cluster.node(leader).status().term;
    let addr = cluster.addrs[&leader].to_string();
    let ca = pki.ca_pem().to_owned();

    // Plain HTTP/2 to the peer port gets no answer.
    let plain = Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await;
    let plain_vote = match plain {
        Ok(channel) => RaftPeerClient::new(channel).vote(huge_vote(1)).await.map(|_| ()).map_err(|s| format!("{s:?}")),
        Err(error) => Err(format!("{error:?}")),
    };
    assert!(plain_vote.is_err(), "a plain-text vote was answered");

    let other_ca = Pki::new("another CA").expect("CA");
    let outsider = other_ca.node(9, &["127.0.0.1"]).expect("cert");
    let member_of_nothing = pki.node(9, &["127.0.0.1"]).expect("cert");
    let expired = pki.issue(&[switchboard_tls::node_name(2)], Some((2001, 1, 1))).expect("cert");
    let attempts = [
        ("no client certificate", send_vote(&addr, leader, &ca, None, 1, 1).await),
        ("a certificate of another CA", send_vote(&addr, leader, &ca, Some(&outsider), 9, 9).await),
        ("an expired certificate naming node 2", send_vote(&addr, leader, &ca, Some(&expired), 2, 2).await),
        ("node 9's certificate claiming node 1", send_vote(&addr, leader, &ca, Some(&member_of_nothing), 1, 1).await),
        ("node 9 voting for node 1", send_vote(&addr, leader, &ca, Some(&member_of_nothing), 9, 1).await),
    ];
    for (what, result) in &attempts {
        assert!(result.is_err(), "{what}: the vote got through");
    }
    let (_, claimed) = &attempts[3];
    assert!(claimed.as_ref().expect_err("refused").starts_with("PermissionDenied"), "{claimed:?}");
    let (_, on_behalf) = &attempts[4];
    assert!(on_behalf.as_ref().expect_err("refused").starts_with("PermissionDenied"), "{on_behalf:?}");

    // The leader kept its term and its place, and the cluster commits.
    assert_eq!(cluster.leader().await, leader);
    assert_eq!(cluster.node(leader).status().term, term, "a refused vote moved the term");
    for i in 0..20 {
        write_until_acknowledged(&nodes, &mut next, open(i)).await;
    }
    cluster.converged().await;
}
