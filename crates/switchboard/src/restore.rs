//! `switchboard restore --snapshot FILE --data-dir DIR`: prepares the data directory of one
//! node of a restored cluster from a snapshot file written by `switchboard ctl snapshot`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Where the snapshot comes from and which data directory it fills.
#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The snapshot file (`switchboard ctl snapshot --out FILE`).
    #[arg(long, value_name = "FILE")]
    snapshot: PathBuf,
    /// The node's `data_dir`: absent or empty (a node's existing data is never overwritten).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

/// Checks the snapshot (it must load whole) and writes it as the node's state, with an empty
/// log. Run it for every voter the snapshot's membership names, each with its own data
/// directory, then start the nodes with their usual configuration.
pub(crate) fn run(args: &RestoreArgs) -> Result<()> {
    let bytes = std::fs::read(&args.snapshot)
        .with_context(|| format!("--snapshot: cannot read {}", args.snapshot.display()))?;
    let restored = switchboard_raft::restore_snapshot(&args.data_dir, &bytes)
        .with_context(|| format!("cannot restore {} into {}", args.snapshot.display(), args.data_dir.display()))?;
    let voters: Vec<String> = restored.voters.iter().map(u64::to_string).collect();
    println!(
        "restored {} at log index {} into {}; the snapshot's voters are nodes {}: restore each of them, then start them",
        args.snapshot.display(),
        restored.last_log_index,
        args.data_dir.display(),
        voters.join(", ")
    );
    Ok(())
}
