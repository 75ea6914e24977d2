//! A consistent read of a large in-memory state without holding its lock while reading.
//!
//! Serialising the whole assigner state (a snapshot, or the digest `Cluster.Status` reports)
//! takes about half a second at a million conversations. Done under the replica's read lock,
//! every apply waits that long. [`spawn`] instead calls `fork(2)` while the caller holds the
//! lock: the child gets a copy-on-write image of memory as it was at that instant, runs the
//! read there and sends the bytes back through a pipe, and the caller releases the lock as soon
//! as `fork` returns (page tables copied: milliseconds, not the whole read). Applies go on in
//! the parent meanwhile; the kernel copies a page only when the parent writes to it.
//!
//! This is the one crate of the workspace with `unsafe` code, kept to what `fork` needs. After
//! `fork` in a multi-threaded process the child has only the calling thread, and any lock
//! another thread held at that instant stays held forever in the child. So the work given to
//! [`spawn`] must only read plain data, allocate and make plain system calls (writing a file
//! with `std::fs` is fine: it takes no lock in the process; formatting an OS error's message
//! is not, glibc's `strerror` takes a locale lock): glibc's `malloc` is made safe across
//! `fork` by glibc itself, but nothing that takes another lock (logging, metrics, stdout, the
//! async runtime, a `Mutex`) may run in the child. The child ends with `_exit`, running no
//! destructors and no exit handlers; it dies with its parent (`PR_SET_PDEATHSIG`, and a child
//! whose parent died before that took effect leaves at once). If it nevertheless hangs (a
//! panic message waiting on the stderr lock), [`Child::wait`] kills it at its deadline and the
//! caller falls back to reading under its lock.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

/// Why a read in a child failed. The caller falls back to reading in-process.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// A system call failed (`pipe2`, `fork`: out of memory or processes; `poll`, `read`).
    #[error("{call}: {source}")]
    Sys {
        /// The call.
        call: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The child did not finish within its deadline and was killed.
    #[error("the child did not finish within {0:?} and was killed")]
    Timeout(Duration),
    /// The child ended without success (it panicked, was killed, or could not write).
    #[error("the child ended with wait status {0:#x}")]
    Failed(i32),
}

fn sys(call: &'static str) -> ForkError {
    ForkError::Sys { call, source: std::io::Error::last_os_error() }
}

/// A child running a read; [`Child::wait`] collects its bytes. Dropping it unwaited kills the
/// child.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    output: Option<std::fs::File>,
}

/// Forks a child that runs `work` over the memory image of this instant and sends back the
/// bytes it returns; returns at once in the parent. `work` runs only in the child, and must
/// only read, allocate and make plain system calls (see the crate documentation).
pub fn spawn<F: FnOnce() -> Vec<u8>>(work: F) -> Result<Child, ForkError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid takes nothing and cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork has no memory-safety preconditions of its own; what the child may do after
    // it (in a multi-threaded process) is restricted by `in_child`, which only runs `work`
    // (reading, allocating and plain system calls, as this function's contract requires)
    // and raw system calls of its own.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("fork"));
    }
    if pid == 0 {
        drop(read_end);
        in_child(work, write_end.as_raw_fd(), parent);
    }
    drop(write_end);
    Ok(Child { pid, output: Some(std::fs::File::from(read_end)) })
}

/// The niceness a child runs at: the lowest priority (see `in_child`).
const CHILD_NICE: libc::c_int = 19;

/// The child's side: runs `work`, writes its bytes to `fd`, and leaves with `_exit`.
fn in_child<F: FnOnce() -> Vec<u8>>(work: F, fd: libc::c_int, parent: libc::pid_t) -> ! {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // A parent that died between the fork and the line above sent no signal: leave, rather
    // than do (and write) work nobody will collect.
    // SAFETY: getppid takes nothing and cannot fail.
    if unsafe { libc::getppid() } != parent {
        // SAFETY: _exit ends the process at once; nothing of the parent's state is touched.
        unsafe { libc::_exit(4) }
    }
    // The read is background work: at the lowest CPU priority it runs on what the parent's
    // applies leave idle instead of taking a core from them (on a 2-core host, three nodes'
    // snapshots and digests at once would otherwise starve the replicas they copy).
    // SAFETY: setpriority takes plain integers; who = 0 is this (single-threaded) process.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, CHILD_NICE) };
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(bytes) => {
            if write_all(fd, &bytes) {
                0
            } else {
                2
            }
        }
        Err(_) => 3,
    };
    // SAFETY: _exit ends the process at once; nothing of the parent's state is touched.
    unsafe { libc::_exit(code) }
}

/// Writes all of `bytes` to `fd` with raw `write` calls; false on an error.
fn write_all(fd: libc::c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe the live slice `bytes`.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        bytes = bytes.get(written.unsigned_abs()..).unwrap_or_default();
    }
    true
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Blocks until the child has sent its bytes and exited, or `timeout` passes (then the
    /// child is killed). Call it off the async runtime's worker threads.
    pub fn wait(mut self, timeout: Duration) -> Result<Vec<u8>, ForkError> {
        let deadline = Instant::now() + timeout;
        let mut output = self.output.take().ok_or(ForkError::Failed(-1))?;
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ForkError::Timeout(timeout)); // dropped: killed and reaped
            }
            let mut poll = libc::pollfd { fd: output.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let millis = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `poll` points to one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, millis) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(sys("poll"));
            }
            if ready == 0 {
                continue;
            }
            match output.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ForkError::Sys { call: "read", source }),
            }
        }
        let status = self.reap();
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(bytes)
        } else {
            Err(ForkError::Failed(status))
        }
    }

    /// Waits for the child to exit (it has closed its pipe: it is leaving) and returns its
    /// wait status; -1 if it cannot be waited for.
    fn reap(&mut self) -> libc::c_int {
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: `status` is a valid int for waitpid to fill; `pid` is our child.
            let waited = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if waited == self.pid {
                self.pid = 0;
                return status;
            }
            if waited < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            self.pid = 0;
            return -1;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: kill takes a pid and a signal; `pid` is our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, RwLock};

    #[test]
    fn the_child_reads_memory_as_it_was_at_the_fork() {
        let state = Arc::new(RwLock::new(vec![7u8; 3 << 20]));
        let child = {
            let guard = state.read().expect("lock");
            spawn(|| {
                // Slow enough that the parent's write below happens first.
                std::thread::sleep(Duration::from_millis(200));
                guard.clone()
            })
            .expect("fork")
        };
        // The parent changes the state while the child reads.
        state.write().expect("lock").fill(9);
        let bytes = child.wait(Duration::from_secs(30)).expect("child");
        assert_eq!(bytes.len(), 3 << 20);
        assert!(bytes.iter().all(|b| *b == 7), "the child saw a write made after the fork");
        assert!(state.read().expect("lock").iter().all(|b| *b == 9));
    }

    /// This thread's niceness.
    fn niceness() -> libc::c_int {
        // SAFETY: getpriority takes plain integers; who = 0 is the calling thread (Linux).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn the_child_reads_at_the_lowest_cpu_priority_and_the_parent_keeps_its_own() {
        let parent_before = niceness();
        let child = spawn(|| niceness().to_le_bytes().to_vec()).expect("fork");
        let bytes = child.wait(Duration::from_secs(30)).expect("child");
        let in_child = libc::c_int::from_le_bytes(bytes.try_into().expect("four bytes"));
        assert_eq!(in_child, CHILD_NICE, "the child's read competes with the parent for the CPU");
        assert_eq!(niceness(), parent_before, "the parent's priority changed");
    }

    #[test]
    fn a_panicking_child_is_an_error() {
        let child = spawn(|| -> Vec<u8> { panic!("boom") }).expect("fork");
        match child.wait(Duration::from_secs(30)) {
            Err(ForkError::Failed(_)) | Err(ForkError::Timeout(_)) => {}
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_child_past_its_deadline_is_killed() {
        let child = spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            Vec::new()
        })
        .expect("fork");
        let pid = child.pid();
        let started = Instant::now();
        assert!(matches!(child.wait(Duration::from_millis(200)), Err(ForkError::Timeout(_))));
        assert!(started.elapsed() < Duration::from_secs(10));
        // Reaped: no such process any more.
        // SAFETY: signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the timed-out child is still there");
    }
}
