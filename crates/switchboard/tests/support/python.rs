//! The Python of `tests/python` (a venv with grpcio-tools, nats-py and nats-server), for the
//! tests that drive the cluster from scripts written against the .proto files alone.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The venv's interpreter: `$SWITCHBOARD_PYTHON` (set by `make test`), else what
/// `tests/python/setup_env.sh` prepares.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHBOARD_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(python);
    }
    let script = repo_root().join("tests/python/setup_env.sh");
    let output = Command::new("bash").arg(&script).output().expect("bash runs");
    assert!(
        output.status.success(),
        "the Python environment could not be prepared by {}:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("setup_env.sh prints the interpreter's path last");
    PathBuf::from(last.trim())
}
