//! # switchboard-tls
//!
//! Transport security of a node. A node has one certificate and key (PEM files named in its
//! configuration) and trusts one cluster CA:
//!
//! - the public API serves TLS with the certificate ([`NodeTls::api_server_config`]);
//! - the Raft peer port requires mutual TLS ([`NodeTls::peer_server_config`]): a peer presents
//!   a certificate signed by the cluster CA, and the certificate names the node it belongs to
//!   with the DNS name `node-<id>` ([`node_name`]), so that a node cannot speak for another id
//!   ([`certificate_names_node`]); the calling side checks the answering node the same way;
//! - clients of either port trust the CA ([`NodeTls::client_tls`]).
//!
//! The certificate and key are read again on [`NodeTls::reload`] (the binary calls it on SIGHUP
//! and when the files change): new connections get the new certificate, a bad pair is refused
//! and the old one stays. The CA is read once, at start-up.

#[cfg(feature = "pki")]
pub mod pki;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes under way at once on one listener; more connections wait to be accepted.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Largest certificate, key or CA file read, in bytes.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The DNS name in a node's certificate that says which node it is: `node-<id>`.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// Where a node's certificate, key and cluster CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (PEM), leaf first. For the peer port it must name
    /// `node-<id>`; for the public API, the names clients use.
    pub cert_file: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The cluster CA (PEM), which signed every node's certificate.
    pub ca_file: PathBuf,
}

/// A certificate, key or CA that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is larger than [`PEM_FILE_BYTES_MAX`].
    #[error("{path} is {bytes} bytes; the limit is {PEM_FILE_BYTES_MAX} (pem_file_bytes_max)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A file holds no usable PEM item of the kind wanted.
    #[error("{path} holds no {what}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for (`certificate`, `private key`).
        what: &'static str,
        /// Why none was found.
        reason: String,
    },
    /// rustls refused the key, the certificate or the CA.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being built.
        what: &'static str,
        /// The cause.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA.
    #[error("the cluster CA cannot verify peers: {0}")]
    Verifier(String),
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::metadata(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?.len();
    if bytes > PEM_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge { path: path.to_owned(), bytes });
    }
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_owned(), what: "certificate", reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
            reason: "no `BEGIN CERTIFICATE` block".to_owned(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The node's certificate and key as last loaded.
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let modified = (modified(&files.cert_file), modified(&files.key_file));
    let cert_pem = read_pem(&files.cert_file)?;
    let key_pem = read_pem(&files.key_file)?;
    let chain = certificates(&files.cert_file, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: files.key_file.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Rustls { what: "the private key", source })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|source| TlsError::Rustls { what: "the certificate and key", source })?;
    Ok(Loaded { key: Arc::new(certified), cert_pem, key_pem, modified })
}

/// A node's TLS material: the reloadable certificate and key, and the cluster CA.
pub struct NodeTls {
    files: TlsFiles,
    loaded: RwLock<Loaded>,
    ca_pem: Vec<u8>,
    roots: Arc<RootCertStore>,
    /// Bumped at every reload that changed the certificate, so that cached client channels
    /// are rebuilt with the new identity.
    generation: AtomicU64,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Reads the certificate, key and CA, and checks that they fit together.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let loaded = load(&files)?;
        let ca_pem = read_pem(&files.ca_file)?;
        let mut roots = RootCertStore::empty();
        for ca in certificates(&files.ca_file, &ca_pem)? {
            roots.add(ca).map_err(|source| TlsError::Rustls { what: "the cluster CA", source })?;
        }
        Ok(Arc::new(Self {
            files,
            loaded: RwLock::new(loaded),
            ca_pem,
            roots: Arc::new(roots),
            generation: AtomicU64::new(0),
        }))
    }

    /// The files this node's TLS comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the certificate and key again. On error the old pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.files)?;
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the certificate or key file changed since they were last loaded.
    pub fn files_changed(&self) -> bool {
        let now = (modified(&self.files.cert_file), modified(&self.files.key_file));
        self.loaded.read().unwrap_or_else(PoisonError::into_inner).modified != now
    }

    /// How many times the certificate was reloaded.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Reloads the certificate and key whenever their files change, checking every
    /// `interval`, until `shutdown` resolves.
    pub async fn reload_on_change(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {
                    if self.files_changed() {
                        self.reload_logged("the certificate files changed");
                    }
                }
            }
        }
    }

    /// Reloads and logs the outcome, naming `why`.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(cert = %self.files.cert_file.display(), "{why}: TLS certificate reloaded"),
            Err(error) => tracing::error!(%error, "{why}: TLS certificate not reloaded; the old one stays in use"),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.loaded.read().unwrap_or_else(PoisonError::into_inner).key)
    }

    fn server_builder(&self) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, TlsError> {
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls { what: "the TLS versions", source })
    }

    /// TLS for the public API: the node's (reloadable) certificate, HTTP/2 only. A client may
    /// present a certificate of the cluster CA (verified here; `[[auth.certificates]]` maps it
    /// to a role); one of another CA is refused; none is fine (the caller then needs a token).
    pub fn api_server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.server_config(false)
    }

    /// Mutual TLS for the Raft peer port: a client must present a certificate the cluster CA
    /// signed. Which node it is is checked per call ([`certificate_names_node`]).
    pub fn peer_server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.server_config(true)
    }

    /// The node's (reloadable) certificate, HTTP/2 only, client certificates verified against
    /// the cluster CA: required, or only checked when presented.
    fn server_config(self: &Arc<Self>, client_required: bool) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), provider());
        if !client_required {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = self
            .server_builder()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// TLS for a client of a node: trusts the cluster CA and presents this node's certificate
    /// (as read now; rebuild after [`NodeTls::generation`] changes).
    pub fn client_tls(&self) -> tonic::transport::ClientTlsConfig {
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&loaded.cert_pem, &loaded.key_pem))
    }

    /// The cluster CA, PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }
}

/// Hands out the node's current certificate to every new connection.
#[derive(Debug)]
struct Resolver(Arc<NodeTls>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Whether `certificate` (already verified against the cluster CA) names node `id`.
pub fn certificate_names_node(certificate: &CertificateDer<'_>, id: u64) -> bool {
    certificate_names(certificate, &node_name(id))
}

/// Whether `certificate` (already verified against the cluster CA) carries the DNS name `name`.
pub fn certificate_names(certificate: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = ServerName::try_from(name.to_owned()) else { return false };
    webpki::EndEntityCert::try_from(certificate).is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The plain TCP connections of `listener`, each with `TCP_NODELAY` set, for a server without
/// TLS. tonic's own `tcp_nodelay` setting applies only to listeners it binds itself, not to a
/// stream of connections handed to `serve_with_incoming`; without it a small reply (an
/// `AppendEntries` answer) can wait for the acknowledgement of the previous one, which the
/// other side delays by up to 40 ms: every write in flight stalled that long about once a
/// second under load.
pub fn plain_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The TLS connections of `listener`: each accepted TCP connection is handshaken in its own
/// task (at most [`HANDSHAKE_TIMEOUT`], at most [`HANDSHAKES_IN_FLIGHT_MAX`] at once), and
/// yielded once it is secured; failed handshakes are logged at debug level and dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(HANDSHAKES_IN_FLIGHT_MAX);
    let acceptor = TlsAcceptor::from(config);
    let limit = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { return };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if sender.is_closed() {
                return;
            }
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plain_connection_is_accepted_with_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut incoming = plain_incoming(listener);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let accepted = futures::StreamExt::next(&mut incoming).await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().expect("read TCP_NODELAY"), "replies would wait for delayed acks");
    }

    struct Ca {
        key: rcgen::KeyPair,
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    fn ca() -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("ca");
        let issuer = rcgen::Issuer::new(params, rcgen::KeyPair::from_pem(&key.serialize_pem()).expect("copy"));
        Ca { key, cert, issuer }
    }

    fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &ca.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path, ca: &Ca, names: &[&str]) -> TlsFiles {
        let (cert, key) = leaf(ca, names);
        let files =
            TlsFiles { cert_file: dir.join("node.crt"), key_file: dir.join("node.key"), ca_file: dir.join("ca.crt") };
        std::fs::write(&files.cert_file, cert).expect("write");
        std::fs::write(&files.key_file, key).expect("write");
        std::fs::write(&files.ca_file, ca.cert.pem()).expect("write");
        let _ = &ca.key;
        files
    }

    #[test]
    fn a_certificate_names_its_node_and_no_other() {
        let ca = ca();
        let (cert, _) = leaf(&ca, &["node-2", "localhost"]);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("pem");
        assert!(certificate_names_node(&der, 2));
        assert!(!certificate_names_node(&der, 1));
        assert!(!certificate_names_node(&der, 22));
    }

    #[test]
    fn a_bad_pair_is_refused_naming_the_file_and_the_old_one_stays() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = ca();
        let files = files(dir.path(), &ca, &["node-1"]);
        let tls = NodeTls::load(files.clone()).expect("loads");
        let before = tls.current().cert[0].clone();
        // A key that is not the certificate's.
        let (_, other_key) = leaf(&ca, &["node-1"]);
        std::fs::write(&files.key_file, other_key).expect("write");
        let error = tls.reload().expect_err("mismatched").to_string();
        assert!(error.contains("the certificate and key"), "{error}");
        assert_eq!(tls.current().cert[0], before, "the old pair stays");
        std::fs::write(&files.cert_file, "not pem").expect("write");
        let error = tls.reload().expect_err("garbage").to_string();
        assert!(error.contains("node.crt holds no certificate"), "{error}");
        // A good new pair is taken.
        let (cert, key) = leaf(&ca, &["node-1"]);
        std::fs::write(&files.cert_file, cert).expect("write");
        std::fs::write(&files.key_file, key).expect("write");
        assert!(tls.files_changed());
        tls.reload().expect("reloads");
        assert_ne!(tls.current().cert[0], before);
        assert_eq!(tls.generation(), 1);
        let missing = TlsFiles { ca_file: dir.path().join("nope.crt"), ..files };
        let error = NodeTls::load(missing).expect_err("no CA").to_string();
        assert!(error.starts_with("cannot read") && error.contains("nope.crt"), "{error}");
    }
}
