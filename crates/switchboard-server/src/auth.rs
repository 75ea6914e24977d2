//! Who may call what: bearer tokens, roles and workspace scopes.
//!
//! A caller presents `authorization: Bearer <id>.<secret>`. The node keeps, per token id, the
//! role, the workspaces it is for (or every workspace), the agent it acts as (role `agent`) and
//! the SHA-256 of the secret, never the secret: `switchboard ctl token create` prints a new
//! token and the entry for the node configuration. The secret's hash is compared in constant
//! time. Health and reflection stay open; every `switchboard.v1` RPC asks [`Caller::may`] (or
//! a narrower check) before it touches the state. Unknown or malformed credentials are
//! `UNAUTHENTICATED`; a known one used beyond its role or workspaces is `PERMISSION_DENIED`.
//!
//! Without an [`Authenticator`] (no `[auth]` table in the node configuration) the API is open
//! to anyone who can reach it, as it was before; the node says so at start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use switchboard_core::{AgentId, WorkspaceId};
use tonic::Status;

/// Metadata key of the credential.
pub const AUTHORIZATION_METADATA_KEY: &str = "authorization";
/// Longest token id, in bytes.
pub const TOKEN_ID_BYTES_MAX: usize = 64;
/// Bytes of randomness in a secret (hex-encoded in the token: 64 characters).
pub const SECRET_BYTES: usize = 32;
/// Most workspaces one token may name.
pub const TOKEN_WORKSPACES_MAX: usize = 1_000;
/// Most tokens a node configuration may hold.
pub const TOKENS_MAX: usize = 100_000;
/// Most certificate identities a node configuration may hold (each call without a token is
/// checked against them in turn).
pub const CERTIFICATE_IDENTITIES_MAX: usize = 1_000;
/// Longest DNS name of a certificate identity, in bytes.
pub const CERTIFICATE_NAME_BYTES_MAX: usize = 253;
/// Longest `authorization` value read, in bytes; longer ones are refused unread.
pub const AUTHORIZATION_BYTES_MAX: usize = 512;

/// What a credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Publishes events and watches the effects of its workspaces.
    Gateway,
    /// One agent: its own presence, claims, conversations and its teams' queues.
    Agent,
    /// Assigns, transfers and closes conversations; reads agents, queues and conversations;
    /// sets agents' status; watches.
    Supervisor,
    /// Everything a supervisor does, plus the configuration of its workspaces.
    Admin,
    /// Cluster membership; no workspace data.
    Operator,
}

impl Role {
    /// Every role, by name.
    pub const ALL: [(&'static str, Role); 5] = [
        ("gateway", Role::Gateway),
        ("agent", Role::Agent),
        ("supervisor", Role::Supervisor),
        ("admin", Role::Admin),
        ("operator", Role::Operator),
    ];

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, role)| *role)
    }

    /// Its name in configuration and messages.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, role)| *role == self).map_or("?", |(name, _)| name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which workspaces a credential is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every workspace, present and future (`workspaces = ["*"]`).
    All,
    /// These workspaces.
    Only(BTreeSet<WorkspaceId>),
}

impl Scope {
    fn contains(&self, workspace: &WorkspaceId) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(set) => set.contains(workspace),
        }
    }
}

/// One token the node accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The token's public part, named in logs and audit records.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// Where. Operators have no workspaces.
    pub scope: Scope,
    /// The agent a token of role `agent` acts as.
    pub agent: Option<AgentId>,
    /// How the holder proves it holds this credential.
    pub proof: Proof,
}

/// What proves a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// A bearer token whose secret has this SHA-256.
    Secret([u8; 32]),
    /// A client certificate (signed by the cluster CA, checked by TLS) that carries this DNS
    /// name.
    Certificate(String),
}

/// A token entry as written in the node configuration, before it is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialSpec {
    /// `id`.
    pub id: String,
    /// `role`.
    pub role: String,
    /// `workspaces`; `["*"]` for all.
    pub workspaces: Vec<String>,
    /// `agent`, for role `agent`.
    pub agent: Option<String>,
    /// `sha256`: 64 hex digits. Empty for a certificate identity.
    pub sha256: String,
    /// For a certificate identity (`[[auth.certificates]]`): the DNS name the client
    /// certificate carries.
    pub certificate_name: Option<String>,
}

/// A credential entry that cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct CredentialError {
    /// The key at fault, as a path into the configuration (`auth.tokens[2].role`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn refuse(field: String, reason: impl Into<String>) -> CredentialError {
    CredentialError { field, reason: reason.into() }
}

/// Whether `id` can name a token: 1 to [`TOKEN_ID_BYTES_MAX`] bytes of ASCII letters, digits,
/// `-` and `_` (it is written in logs and before the `.` of the token).
pub fn is_token_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= TOKEN_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl CredentialSpec {
    /// Checks the entry at `field` (for example `auth.tokens[0]`).
    pub fn check(&self, field: &str) -> Result<Credential, CredentialError> {
        if !is_token_id(&self.id) {
            return Err(refuse(
                format!("{field}.id"),
                format!("{:?} must be 1 to {TOKEN_ID_BYTES_MAX} letters, digits, '-' or '_'", self.id),
            ));
        }
        let role = Role::parse(&self.role).ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|(n, _)| *n).collect();
            refuse(format!("{field}.role"), format!("{:?} is not one of {}", self.role, names.join(", ")))
        })?;
        if self.workspaces.len() > TOKEN_WORKSPACES_MAX {
            return Err(refuse(
                format!("{field}.workspaces"),
                format!("{} workspaces exceed the limit of {TOKEN_WORKSPACES_MAX}", self.workspaces.len()),
            ));
        }
        let scope = if self.workspaces.iter().any(|w| w == "*") {
            if self.workspaces.len() > 1 {
                return Err(refuse(format!("{field}.workspaces"), "\"*\" (every workspace) must stand alone"));
            }
            Scope::All
        } else {
            let mut set = BTreeSet::new();
            for (i, workspace) in self.workspaces.iter().enumerate() {
                if !switchboard_core::is_subject_token(workspace) {
                    return Err(refuse(
                        format!("{field}.workspaces[{i}]"),
                        format!("{workspace:?} is not a workspace id"),
                    ));
                }
                set.insert(WorkspaceId::new(workspace));
            }
            Scope::Only(set)
        };
        match (role, &scope) {
            (Role::Operator, Scope::Only(set)) if set.is_empty() => {}
            (Role::Operator, _) => {
                return Err(refuse(format!("{field}.workspaces"), "an operator token names no workspaces"));
            }
            (_, Scope::Only(set)) if set.is_empty() => {
                return Err(refuse(
                    format!("{field}.workspaces"),
                    format!("a {role} token names at least one workspace, or [\"*\"]"),
                ));
            }
            _ => {}
        }
        let agent = match (role, &self.agent) {
            (Role::Agent, Some(agent))
                if !agent.is_empty() && agent.len() <= switchboard_core::limits::ID_BYTES_MAX =>
            {
                Some(AgentId::new(agent))
            }
            (Role::Agent, _) => {
                return Err(refuse(format!("{field}.agent"), "an agent token names the agent it acts as"));
            }
            (_, Some(_)) => {
                return Err(refuse(format!("{field}.agent"), format!("only agent tokens name an agent, not {role}")));
            }
            (_, None) => None,
        };
        let proof = match &self.certificate_name {
            Some(name) => {
                let valid = !name.is_empty()
                    && name.len() <= CERTIFICATE_NAME_BYTES_MAX
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !valid {
                    return Err(refuse(
                        format!("{field}.certificate_name"),
                        format!("{name:?} must be a DNS name of 1 to {CERTIFICATE_NAME_BYTES_MAX} bytes"),
                    ));
                }
                Proof::Certificate(name.clone())
            }
            None => Proof::Secret(parse_hex32(&self.sha256).ok_or_else(|| {
                refuse(format!("{field}.sha256"), "must be 64 hex digits (the SHA-256 of the token's secret)")
            })?),
        };
        Ok(Credential { id: self.id.clone(), role, scope, agent, proof })
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a token's secret, as the node configuration stores it (hex).
pub fn secret_sha256_hex(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

/// A new token for `id`: `(token, sha256 of its secret)`. The token is shown once; the node
/// keeps only the hash.
pub fn new_token(id: &str) -> Result<(String, String), CredentialError> {
    if !is_token_id(id) {
        return Err(refuse(
            "id".to_owned(),
            format!("{id:?} must be 1 to {TOKEN_ID_BYTES_MAX} letters, digits, '-' or '_'"),
        ));
    }
    let mut secret = [0u8; SECRET_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| refuse("secret".to_owned(), "the system's random source failed"))?;
    let secret = hex(&secret);
    let hash = secret_sha256_hex(&secret);
    Ok((format!("{id}.{secret}"), hash))
}

/// Whether two byte strings are equal, in time that depends only on their length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The accepted credentials, by id.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// Tokens and certificate identities, by id.
    by_id: BTreeMap<String, Arc<Credential>>,
    /// The certificate identities, in configuration order.
    certificates: Vec<Arc<Credential>>,
}

impl Credentials {
    /// Checks every token entry (`auth.tokens[i]`) and that ids are unique.
    pub fn from_specs(specs: &[CredentialSpec]) -> Result<Self, CredentialError> {
        Self::with_certificates(specs, &[])
    }

    /// Checks token entries (`auth.tokens[i]`) and certificate identities
    /// (`auth.certificates[i]`), and that ids are unique among all of them.
    pub fn with_certificates(
        specs: &[CredentialSpec],
        certificates: &[CredentialSpec],
    ) -> Result<Self, CredentialError> {
        if certificates.len() > CERTIFICATE_IDENTITIES_MAX {
            return Err(refuse(
                "auth.certificates".to_owned(),
                format!(
                    "{} certificate identities exceed the limit of {CERTIFICATE_IDENTITIES_MAX}",
                    certificates.len()
                ),
            ));
        }
        let mut credentials = Self::tokens(specs)?;
        for (i, spec) in certificates.iter().enumerate() {
            let field = format!("auth.certificates[{i}]");
            if spec.certificate_name.is_none() {
                return Err(refuse(format!("{field}.certificate_name"), "is required"));
            }
            let credential = Arc::new(spec.check(&field)?);
            if credentials.by_id.contains_key(&credential.id) {
                return Err(refuse(format!("{field}.id"), format!("{:?} is used by an earlier entry", credential.id)));
            }
            credentials.by_id.insert(credential.id.clone(), Arc::clone(&credential));
            credentials.certificates.push(credential);
        }
        Ok(credentials)
    }

    fn tokens(specs: &[CredentialSpec]) -> Result<Self, CredentialError> {
        if specs.len() > TOKENS_MAX {
            return Err(refuse(
                "auth.tokens".to_owned(),
                format!("{} tokens exceed the limit of {TOKENS_MAX}", specs.len()),
            ));
        }
        let mut by_id = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let credential = spec.check(&format!("auth.tokens[{i}]"))?;
            if by_id.contains_key(&credential.id) {
                return Err(refuse(
                    format!("auth.tokens[{i}].id"),
                    format!("{:?} is used by an earlier token", credential.id),
                ));
            }
            by_id.insert(credential.id.clone(), Arc::new(credential));
        }
        Ok(Self { by_id, certificates: Vec::new() })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn verify(&self, token: &str) -> Result<Arc<Credential>, Status> {
        let (id, secret) =
            token.split_once('.').ok_or_else(|| Status::unauthenticated("malformed token: expected <id>.<secret>"))?;
        let unknown = || Status::unauthenticated("unknown or revoked token");
        let credential = self.by_id.get(id).ok_or_else(unknown)?;
        let hash = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let Proof::Secret(expected) = &credential.proof else { return Err(unknown()) };
        if constant_time_eq(hash.as_ref(), expected) { Ok(Arc::clone(credential)) } else { Err(unknown()) }
    }
}

/// How many calls one token may make: a token bucket of `burst_calls` refilled at
/// `calls_per_s`, so that one client cannot starve the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained calls per second per token.
    pub calls_per_s: u32,
    /// Calls a token may make at once after being idle.
    pub burst_calls: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { calls_per_s: 1_000, burst_calls: 2_000 }
    }
}

/// One token's allowance.
#[derive(Debug)]
struct Bucket {
    available: f64,
    refilled: std::time::Instant,
}

/// The node's credentials, replaceable while it runs (SIGHUP re-reads them: a token removed
/// from the configuration is refused from then on), and each token's rate of calls.
#[derive(Debug)]
pub struct Authenticator {
    credentials: RwLock<Arc<Credentials>>,
    limit: RateLimit,
    /// By token id; at most one per token (bounded by [`TOKENS_MAX`]).
    buckets: std::sync::Mutex<BTreeMap<String, Bucket>>,
}

impl Authenticator {
    /// Accepts `credentials`, each at the default [`RateLimit`].
    pub fn new(credentials: Credentials) -> Self {
        Self::with_rate_limit(credentials, RateLimit::default())
    }

    /// Accepts `credentials`, each at most at `limit`.
    pub fn with_rate_limit(credentials: Credentials, limit: RateLimit) -> Self {
        Self { credentials: RwLock::new(Arc::new(credentials)), limit, buckets: std::sync::Mutex::default() }
    }

    /// Accepts `credentials` from now on, instead of the earlier ones.
    pub fn replace(&self, credentials: Credentials) {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).retain(|id, _| credentials.by_id.contains_key(id));
        *self.credentials.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(credentials);
    }

    /// Takes one call from `id`'s allowance: `RESOURCE_EXHAUSTED` when it has none left.
    fn admit(&self, id: &str) -> Result<(), Status> {
        let now = std::time::Instant::now();
        let rate = f64::from(self.limit.calls_per_s.max(1));
        let burst = f64::from(self.limit.burst_calls.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(id.to_owned()).or_insert(Bucket { available: burst, refilled: now });
        let refill = now.saturating_duration_since(bucket.refilled).as_secs_f64() * rate;
        bucket.available = (bucket.available + refill).min(burst);
        bucket.refilled = now;
        if bucket.available < 1.0 {
            let wait_ms = ((1.0 - bucket.available) / rate * 1000.0).ceil();
            return Err(Status::resource_exhausted(format!(
                "token {id} made more than {} calls per second (burst {}); retry in {wait_ms} ms",
                self.limit.calls_per_s, self.limit.burst_calls
            )));
        }
        bucket.available -= 1.0;
        Ok(())
    }

    /// The caller of a request: its bearer token if it sends one, else its client certificate
    /// (`peer_certificate`, already verified against the cluster CA by TLS);
    /// `UNAUTHENTICATED` unless this node accepts one of them.
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer_certificate: Option<&rustls::pki_types::CertificateDer<'_>>,
    ) -> Result<Caller, Status> {
        let Some(value) = metadata.get(AUTHORIZATION_METADATA_KEY) else {
            let credentials = Arc::clone(&self.credentials.read().unwrap_or_else(PoisonError::into_inner));
            let credential = match peer_certificate {
                Some(certificate) => credentials
                    .certificates
                    .iter()
                    .find(|credential| {
                        matches!(&credential.proof, Proof::Certificate(name)
                            if switchboard_tls::certificate_names(certificate, name))
                    })
                    .cloned()
                    .ok_or_else(|| {
                        Status::unauthenticated("the client certificate names no identity this cluster knows")
                    })?,
                None => {
                    return Err(Status::unauthenticated(
                        "this cluster requires a token (`authorization: Bearer <token>`) or a client certificate",
                    ));
                }
            };
            self.admit(&credential.id)?;
            return Ok(Caller::Token(credential));
        };
        if value.len() > AUTHORIZATION_BYTES_MAX {
            return Err(Status::unauthenticated(format!(
                "the authorization value is longer than {AUTHORIZATION_BYTES_MAX} bytes"
            )));
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("malformed authorization: expected `Bearer <token>`"))?;
        let credentials = Arc::clone(&self.credentials.read().unwrap_or_else(PoisonError::into_inner));
        let credential = credentials.verify(token.trim())?;
        self.admit(&credential.id)?;
        Ok(Caller::Token(credential))
    }
}

/// Who made a call.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Anyone: the node runs without authentication.
    Anyone,
    /// The holder of this token.
    Token(Arc<Credential>),
}

/// What a call does, for [`Caller::may`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// `Events.Publish`, `Events.PublishBatch`.
    PublishEvents,
    /// `Assignments.Watch` of a whole workspace or team.
    Watch,
    /// `GetConversation`, `ListQueue`, `GetAgent`, `ListAgents`.
    ReadRouting,
    /// `Assign`, `Transfer`, `Close`, and any agent's `SetStatus`.
    Supervise,
    /// `Admin.Get*`.
    ReadConfiguration,
    /// `Admin.ConfigureWorkspace`, `Upsert*`, `Remove*`, `SetRoutingRules`.
    Configure,
    /// `Cluster.AddLearner`, `Cluster.ChangeMembership`.
    ChangeMembership,
    /// `Admin.ListAudit` of the cluster (membership changes).
    ReadClusterAudit,
    /// `Cluster.ExportSnapshot`: every workspace's data.
    ExportSnapshot,
}

impl Permission {
    fn granted_to(self, role: Role) -> bool {
        use Permission::*;
        match role {
            Role::Gateway => matches!(self, PublishEvents | Watch),
            Role::Agent => false,
            Role::Supervisor => matches!(self, Watch | ReadRouting | Supervise),
            Role::Admin => matches!(self, Watch | ReadRouting | Supervise | ReadConfiguration | Configure),
            Role::Operator => matches!(self, ChangeMembership | ReadClusterAudit | ExportSnapshot),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Permission::PublishEvents => "publish events",
            Permission::Watch => "watch effects",
            Permission::ReadRouting => "read conversations, queues and agents",
            Permission::Supervise => "assign, transfer and close conversations or set agents' status",
            Permission::ReadConfiguration => "read the configuration",
            Permission::Configure => "change the configuration",
            Permission::ChangeMembership => "change the cluster's membership",
            Permission::ReadClusterAudit => "read the cluster's audit trail",
            Permission::ExportSnapshot => "export a snapshot of every workspace",
        }
    }
}

impl Caller {
    /// `PERMISSION_DENIED` unless the caller may do `what` in `workspace` (`None`: a
    /// cluster-wide action).
    pub fn may(&self, what: Permission, workspace: Option<&WorkspaceId>) -> Result<(), Status> {
        let Caller::Token(credential) = self else { return Ok(()) };
        if !what.granted_to(credential.role) {
            return Err(Status::permission_denied(format!(
                "token {} (role {}) may not {}",
                credential.id,
                credential.role,
                what.describe()
            )));
        }
        self.in_scope(workspace)
    }

    /// `PERMISSION_DENIED` unless `workspace` is one of the caller's.
    fn in_scope(&self, workspace: Option<&WorkspaceId>) -> Result<(), Status> {
        let Caller::Token(credential) = self else { return Ok(()) };
        match workspace {
            Some(workspace) if !credential.scope.contains(workspace) => {
                Err(Status::permission_denied(format!("token {} is not for workspace {workspace}", credential.id)))
            }
            _ => Ok(()),
        }
    }

    /// The agent an agent token acts as, if the caller holds one.
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            Caller::Token(credential) if credential.role == Role::Agent => credential.agent.as_ref(),
            _ => None,
        }
    }

    /// `PERMISSION_DENIED` unless the caller may act as `agent` in `workspace`: an agent token
    /// as itself, or a caller with `fallback` (a supervisor acting for an agent).
    pub fn may_act_as(&self, agent: &AgentId, workspace: &WorkspaceId, fallback: Permission) -> Result<(), Status> {
        match self.agent() {
            Some(own) if own == agent => self.in_scope(Some(workspace)),
            Some(own) => Err(Status::permission_denied(format!(
                "token {} acts as agent {own}, not {agent}",
                self.id().unwrap_or_default()
            ))),
            None => self.may(fallback, Some(workspace)),
        }
    }

    /// Who this is, for the audit trail: the token's role and id (`anonymous` without
    /// authentication); never the secret.
    pub fn actor(&self) -> switchboard_raft::audit::Actor {
        match self {
            Caller::Token(credential) => switchboard_raft::audit::Actor {
                role: credential.role.name().to_owned(),
                credential: credential.id.clone(),
            },
            Caller::Anyone => {
                switchboard_raft::audit::Actor { role: "anonymous".to_owned(), credential: String::new() }
            }
        }
    }

    /// The token id, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            Caller::Token(credential) => Some(&credential.id),
            Caller::Anyone => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, role: &str, workspaces: &[&str], agent: Option<&str>, secret: &str) -> CredentialSpec {
        CredentialSpec {
            id: id.to_owned(),
            role: role.to_owned(),
            workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
            agent: agent.map(str::to_owned),
            sha256: secret_sha256_hex(secret),
            certificate_name: None,
        }
    }

    fn metadata(token: &str) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(AUTHORIZATION_METADATA_KEY, format!("Bearer {token}").parse().expect("ascii"));
        metadata
    }

    #[test]
    fn a_token_is_accepted_by_its_secret_only_and_a_replaced_set_revokes_it() {
        let (token, hash) = new_token("gw-acme").expect("token");
        let mut entry = spec("gw-acme", "gateway", &["acme"], None, "unused");
        entry.sha256 = hash;
        let auth = Authenticator::new(Credentials::from_specs(&[entry]).expect("valid"));
        let caller = auth.authenticate(&metadata(&token), None).expect("accepted");
        assert_eq!(caller.id(), Some("gw-acme"));
        let wrong = format!("{}0", &token[..token.len() - 1]);
        let wrong = if wrong == token { format!("{}1", &token[..token.len() - 1]) } else { wrong };
        assert_eq!(
            auth.authenticate(&metadata(&wrong), None).expect_err("wrong secret").code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(&tonic::metadata::MetadataMap::new(), None).expect_err("none").code(),
            tonic::Code::Unauthenticated
        );
        auth.replace(Credentials::default());
        assert_eq!(
            auth.authenticate(&metadata(&token), None).expect_err("revoked").code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_token_over_its_rate_is_refused_and_others_are_not() {
        let (fast, fast_hash) = new_token("fast").expect("token");
        let (calm, calm_hash) = new_token("calm").expect("token");
        let mut specs = [spec("fast", "gateway", &["acme"], None, "x"), spec("calm", "gateway", &["acme"], None, "x")];
        specs[0].sha256 = fast_hash;
        specs[1].sha256 = calm_hash;
        let limit = RateLimit { calls_per_s: 20, burst_calls: 5 };
        let auth = Authenticator::with_rate_limit(Credentials::from_specs(&specs).expect("valid"), limit);
        for _ in 0..5 {
            auth.authenticate(&metadata(&fast), None).expect("within the burst");
        }
        let refused = auth.authenticate(&metadata(&fast), None).expect_err("over the burst");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("token fast"), "{refused:?}");
        auth.authenticate(&metadata(&calm), None).expect("another token has its own allowance");
        // 20 calls/s: one call's worth comes back within 50 ms.
        std::thread::sleep(std::time::Duration::from_millis(60));
        auth.authenticate(&metadata(&fast), None).expect("refilled");
    }

    #[test]
    fn roles_and_scopes_allow_what_the_table_says() {
        let acme = WorkspaceId::new("acme");
        let other = WorkspaceId::new("other");
        let caller = |role: &str, workspaces: &[&str], agent: Option<&str>| {
            Caller::Token(Arc::new(spec("t", role, workspaces, agent, "s").check("t").expect("valid")))
        };
        let gateway = caller("gateway", &["acme"], None);
        assert!(gateway.may(Permission::PublishEvents, Some(&acme)).is_ok());
        assert!(gateway.may(Permission::PublishEvents, Some(&other)).is_err());
        assert!(gateway.may(Permission::Configure, Some(&acme)).is_err());
        let admin = caller("admin", &["*"], None);
        assert!(admin.may(Permission::Configure, Some(&other)).is_ok());
        assert!(admin.may(Permission::ChangeMembership, None).is_err());
        let operator = caller("operator", &[], None);
        assert!(operator.may(Permission::ChangeMembership, None).is_ok());
        assert!(operator.may(Permission::ReadRouting, Some(&acme)).is_err());
        let mary = caller("agent", &["acme"], Some("mary"));
        assert!(mary.may_act_as(&AgentId::new("mary"), &acme, Permission::Supervise).is_ok());
        assert!(mary.may_act_as(&AgentId::new("tom"), &acme, Permission::Supervise).is_err());
        assert!(mary.may_act_as(&AgentId::new("mary"), &other, Permission::Supervise).is_err());
        assert!(mary.may(Permission::ReadRouting, Some(&acme)).is_err());
        assert!(Caller::Anyone.may(Permission::ChangeMembership, None).is_ok());
    }

    #[test]
    fn bad_entries_name_their_field() {
        let check = |entry: CredentialSpec| Credentials::from_specs(&[entry]).expect_err("refused").to_string();
        assert!(check(spec("a b", "admin", &["acme"], None, "s")).starts_with("auth.tokens[0].id:"));
        assert!(
            check(spec("a", "root", &["acme"], None, "s")).starts_with("auth.tokens[0].role: \"root\" is not one of")
        );
        assert!(check(spec("a", "admin", &[], None, "s")).starts_with("auth.tokens[0].workspaces:"));
        assert!(check(spec("a", "operator", &["acme"], None, "s")).starts_with("auth.tokens[0].workspaces:"));
        assert!(check(spec("a", "agent", &["acme"], None, "s")).starts_with("auth.tokens[0].agent:"));
        assert!(check(spec("a", "admin", &["acme"], Some("mary"), "s")).starts_with("auth.tokens[0].agent:"));
        assert!(check(spec("a", "admin", &["acme.eu"], None, "s")).starts_with("auth.tokens[0].workspaces[0]:"));
        let mut short = spec("a", "admin", &["acme"], None, "s");
        short.sha256.truncate(10);
        assert!(check(short).starts_with("auth.tokens[0].sha256:"));
        let twice = [spec("a", "admin", &["acme"], None, "s"), spec("a", "gateway", &["acme"], None, "t")];
        assert_eq!(
            Credentials::from_specs(&twice).expect_err("refused").to_string(),
            "auth.tokens[1].id: \"a\" is used by an earlier token"
        );
    }
}
