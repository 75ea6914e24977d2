//! Network partitions without touching the host: every node's Raft address, as the other nodes
//! dial it, is a TCP proxy in front of the node's real Raft port. A proxy knows which node
//! dialled it — the connecting socket belongs to one of the node processes, found through
//! `/proc/net/tcp` and `/proc/<pid>/fd` — so a partition can cut any pair of nodes.
//!
//! A cut pair's connections are not closed: bytes stop flowing both ways (a black hole, as a
//! dropped link looks), new connections are accepted and stall, and whatever was in flight is
//! delivered late when the cut heals.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Unordered pairs of node positions (0-based) that cannot talk.
pub type Cuts = BTreeSet<(usize, usize)>;

/// The partition state shared by every proxy, and the process ids that identify the nodes.
#[derive(Clone)]
pub struct Network {
    cuts: Arc<watch::Sender<Cuts>>,
    pids: Arc<Mutex<Vec<Option<u32>>>>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Network {
    /// A network of `nodes` nodes, nothing cut.
    pub fn new(nodes: usize) -> Self {
        let (cuts, _) = watch::channel(Cuts::new());
        Self { cuts: Arc::new(cuts), pids: Arc::new(Mutex::new(vec![None; nodes])) }
    }

    /// Records node `node`'s process id (`None` while it is not running).
    pub fn set_pid(&self, node: usize, pid: Option<u32>) {
        if let Ok(mut pids) = self.pids.lock()
            && let Some(slot) = pids.get_mut(node)
        {
            *slot = pid;
        }
    }

    /// Cuts every pair listed and heals every other.
    pub fn set_cuts(&self, cuts: Cuts) {
        self.cuts.send_replace(cuts.into_iter().map(|(a, b)| pair(a, b)).collect());
    }

    /// Heals every cut.
    pub fn heal(&self) {
        self.cuts.send_replace(Cuts::new());
    }

    /// Starts the proxy of node `target` on a free port of 127.0.0.1, forwarding to `upstream`
    /// (the node's real Raft port). Returns the proxy's address.
    pub async fn proxy(&self, target: usize, upstream: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let network = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else { continue };
                let network = network.clone();
                tokio::spawn(async move {
                    let source = network.identify(peer, local);
                    let Ok(outbound) = TcpStream::connect(upstream).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (inbound_read, inbound_write) = inbound.into_split();
                    let (outbound_read, outbound_write) = outbound.into_split();
                    let cuts = network.cuts.subscribe();
                    let forward = pump(inbound_read, outbound_write, cuts.clone(), source, target);
                    let back = pump(outbound_read, inbound_write, cuts, source, target);
                    tokio::select! {
                        () = forward => {}
                        () = back => {}
                    }
                });
            }
        });
        Ok(local)
    }

    /// The node whose process holds the client end of a connection from `peer` to `proxy`.
    fn identify(&self, peer: SocketAddr, proxy: SocketAddr) -> Option<usize> {
        let inode = socket_inode(peer.port(), proxy.port())?;
        let link = format!("socket:[{inode}]");
        let pids = self.pids.lock().ok()?.clone();
        pids.iter().position(|pid| {
            pid.is_some_and(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                    fds.flatten()
                        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == link.as_str()))
                })
            })
        })
    }
}

/// The inode of the IPv4 socket whose local port is `local` and remote port `remote`.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| address.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local_address, remote_address, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (port(local_address)? == local && port(remote_address)? == remote).then(|| inode.parse().ok()).flatten()
    })
}

/// Copies bytes from `from` to `to` while the pair (source, target) is not cut; stalls while it
/// is. Returns when either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cuts: watch::Receiver<Cuts>,
    source: Option<usize>,
    target: usize,
) {
    let Some(source) = source else {
        // Not a node (a tool dialling the Raft port): never cut.
        let _ = tokio::io::copy(&mut from, &mut to).await;
        return;
    };
    let key = pair(source, target);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if cuts.wait_for(|cuts| !cuts.contains(&key)).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read during a cut: held until it heals, as a link that drops packets delivers them
        // after retransmission.
        if cuts.wait_for(|cuts| !cuts.contains(&key)).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection from this process is identified as this process's, and a cut stops it.
    #[tokio::test]
    async fn identifies_the_dialler_and_cuts_its_pair() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_addr = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 16];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let network = Network::new(2);
        network.set_pid(0, Some(std::process::id()));
        let proxy = network.proxy(1, upstream_addr).await.expect("proxy");
        let mut client = TcpStream::connect(proxy).await.expect("connect");
        let mut echo = [0u8; 4];
        client.write_all(b"ping").await.expect("write");
        client.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");

        network.set_cuts(Cuts::from([(1, 0)]));
        client.write_all(b"lost").await.expect("write");
        let stalled = tokio::time::timeout(Duration::from_millis(300), client.read_exact(&mut echo)).await;
        assert!(stalled.is_err(), "bytes crossed a cut");
        network.heal();
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut echo))
            .await
            .expect("delivered after the heal")
            .expect("read");
        assert_eq!(&echo, b"lost");
    }
}
