//! TLS on the public API of real node processes: clients that trust the cluster CA get in, the
//! certificate is replaced without a restart (SIGHUP), and a bad replacement changes nothing.

mod support;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use support::processes::NodeProcesses;
use switchboard_client::{Client, ClientConfig, pb};
use switchboard_tls::pki::Pki;

/// The certificate the API at `addr` presents to a new connection that trusts `ca`.
async fn served_certificate(addr: &str, ca: &str) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA pem")).expect("CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().and_then(|certs| certs.first().cloned()).expect("a certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_tls_and_takes_a_new_certificate_on_sighup() {
    let certs = tempfile::tempdir().expect("dir");
    let pki = Pki::new("test CA").expect("CA");
    let files = pki.write_node(certs.path(), 1, &["127.0.0.1"]).expect("certificate");
    let tls = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n",
        files.cert_file.display().to_string(),
        files.key_file.display().to_string(),
        files.ca_file.display().to_string()
    );
    let mut nodes = NodeProcesses::start(1, &tls).await;
    let addr = nodes.api_addrs[0].clone();
    let config = ClientConfig {
        tls_ca_pem: Some(pki.ca_pem().as_bytes().to_vec()),
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let client = Client::with_config([addr.clone()], config).expect("client");
    let status = client.status(pb::StatusRequest {}).await.expect("a client trusting the CA gets in");
    assert_eq!(status.node_id, 1);
    let plain = Client::with_config(
        [addr.clone()],
        ClientConfig { retry_timeout: Duration::from_secs(1), ..Default::default() },
    )
    .expect("client");
    plain.status(pb::StatusRequest {}).await.expect_err("plain HTTP/2 to a TLS port");

    let first = served_certificate(&addr, pki.ca_pem()).await;
    // A renewed certificate: written over the old files, announced with SIGHUP.
    let renewed = pki.node(1, &["127.0.0.1"]).expect("certificate");
    std::fs::write(&files.cert_file, &renewed.cert_pem).expect("write");
    std::fs::write(&files.key_file, &renewed.key_pem).expect("write");
    nodes.signal(0, "HUP").await;
    let expected = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).expect("pem");
    // Sooner than the 10 s file check would: SIGHUP did it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while served_certificate(&addr, pki.ca_pem()).await != expected {
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate is not served:\n{}", nodes.log(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(first, expected);
    client.status(pb::StatusRequest {}).await.expect("clients keep working");

    // A key that does not match is refused; the renewed pair stays in use.
    let stray = pki.node(1, &["127.0.0.1"]).expect("certificate");
    std::fs::write(&files.key_file, &stray.key_pem).expect("write");
    nodes.signal(0, "HUP").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !nodes.log(0).contains("TLS certificate not reloaded") {
        assert!(tokio::time::Instant::now() < deadline, "the refusal is not logged:\n{}", nodes.log(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_certificate(&addr, pki.ca_pem()).await, expected);
    nodes.stop(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_can_stand_for_a_role_instead_of_a_token() {
    let certs = tempfile::tempdir().expect("dir");
    let pki = Pki::new("test CA").expect("CA");
    let files = pki.write_node(certs.path(), 1, &["127.0.0.1"]).expect("certificate");
    let config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n\
         [auth]\n[[auth.certificates]]\nid = \"console\"\ncertificate_name = \"console.ops.example\"\n\
         role = \"admin\"\nworkspaces = [\"acme\"]\n",
        files.cert_file.display().to_string(),
        files.key_file.display().to_string(),
        files.ca_file.display().to_string()
    );
    let mut nodes = NodeProcesses::start(1, &config).await;
    let addr = nodes.api_addrs[0].clone();
    let with = |identity: Option<&switchboard_tls::pki::Issued>| {
        let config = ClientConfig {
            tls_ca_pem: Some(pki.ca_pem().as_bytes().to_vec()),
            tls_identity_pem: identity.map(|id| (id.cert_pem.clone().into_bytes(), id.key_pem.clone().into_bytes())),
            retry_timeout: Duration::from_secs(20),
            ..Default::default()
        };
        Client::with_config([addr.clone()], config).expect("client")
    };
    let configure =
        |client: Client, workspace: &'static str| async move { support::configure_default(&client, workspace).await };
    let console = pki.issue(&["console.ops.example".to_owned()], None).expect("certificate");
    configure(with(Some(&console)), "acme").await.expect("the console's certificate is an admin of acme");
    let beta = configure(with(Some(&console)), "beta").await.expect_err("not of beta");
    assert_eq!(beta.code(), tonic::Code::PermissionDenied, "{beta:?}");
    let none = configure(with(None), "acme").await.expect_err("no token, no certificate");
    assert_eq!(none.code(), tonic::Code::Unauthenticated, "{none:?}");
    let intruder = pki.issue(&["intruder.example".to_owned()], None).expect("certificate");
    let unknown = configure(with(Some(&intruder)), "acme").await.expect_err("a name no entry has");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated, "{unknown:?}");
    let stranger = Pki::new("another CA").expect("CA").issue(&["console.ops.example".to_owned()], None).expect("cert");
    let foreign = Client::with_config(
        [addr.clone()],
        ClientConfig {
            tls_ca_pem: Some(pki.ca_pem().as_bytes().to_vec()),
            tls_identity_pem: Some((stranger.cert_pem.clone().into_bytes(), stranger.key_pem.clone().into_bytes())),
            retry_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .expect("client");
    configure(foreign, "acme").await.expect_err("a certificate of another CA");

    // ctl presents the certificate too, and the audit trail names the identity.
    let dir = certs.path();
    std::fs::write(dir.join("console.crt"), &console.cert_pem).expect("write");
    std::fs::write(dir.join("console.key"), &console.key_pem).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["ctl", "--nodes", &addr, "--workspace", "acme", "audit"])
        .arg("--ca")
        .arg(&files.ca_file)
        .arg("--cert")
        .arg(dir.join("console.crt"))
        .arg("--key")
        .arg(dir.join("console.key"))
        .env_remove("SWITCHBOARD_TOKEN")
        .output()
        .expect("ctl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("console (admin)") && stdout.contains("ConfigureWorkspace  ok"), "{stdout}");
    nodes.stop(0).await;
}
