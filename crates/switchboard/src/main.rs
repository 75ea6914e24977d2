//! # switchboard
//!
//! The one binary of Switchboard:
//! - `switchboard node --config node.toml`: run a cluster member (`node.rs`);
//! - `switchboard dev`: a local cluster in one command, with an optional demo (`dev.rs`);
//! - `switchboard ctl ...`: the admin and operator client (`ctl/`);
//! - `switchboard loadgen`: a contact-center workload through NATS, measured (`loadgen.rs`);
//! - `switchboard restore`: a data directory from a snapshot file, for a restored cluster
//!   (`restore.rs`).

mod ctl;
mod dev;
mod loadgen;
mod node;
mod replay;
mod restore;

use clap::{Parser, Subcommand};

/// Switchboard assigns customer conversations to contact-center agents, replicated with Raft.
#[derive(Parser, Debug)]
#[command(name = "switchboard", version, about, long_about = None)]
struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with the fields of the enclosing spans) for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWITCHBOARD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Commands,
}

/// The log line formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run one cluster node.
    Node(node::NodeArgs),
    /// Start a local cluster (3 nodes by default) for trying Switchboard out.
    Dev(dev::DevArgs),
    /// Administer and inspect a cluster: status, agents, queues, apply a workspace file, ...
    Ctl(ctl::CtlArgs),
    /// Publish a contact-center workload through NATS and report rate, latency, loss.
    Loadgen(loadgen::LoadgenArgs),
    /// Make an empty data directory start from a snapshot file (`ctl snapshot`): restores a
    /// cluster from a backup (deploy/README.md, "Back up and restore").
    Restore(restore::RestoreArgs),
    /// Write a time range of the events stream (`SWITCHBOARD`) to a file, for `replay`.
    ExportEvents(replay::ExportArgs),
    /// What if: replay recorded events offline against a workspace file (or two, compared),
    /// reporting waits, load and fairness as text, JSON and an HTML page with charts.
    Replay(replay::ReplayArgs),
}

fn init_logging(format: LogFormat) {
    // openraft logs every failed attempt to reach a down peer (replication, votes) at ERROR; that
    // is expected while a node is down or starting, so those two modules are silenced by default
    // (RUST_LOG overrides). Membership and storage errors still show.
    let default = "info,openraft=error,openraft::replication=off,openraft::core::raft_core=off,h2=warn,tower=warn,hyper=warn,async_nats=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        // Fields of every enclosing span (workspace, event id, log index, ...) on each line.
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(true).try_init(),
    };
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Node(args) => {
            init_logging(cli.log_format);
            node::run(args).await
        }
        Commands::Dev(args) => {
            init_logging(cli.log_format);
            dev::run(args).await
        }
        Commands::Ctl(args) => ctl::run(args).await,
        Commands::Restore(args) => restore::run(&args),
        Commands::ExportEvents(args) => replay::export(args).await,
        Commands::Replay(args) => replay::replay(args).await,
        Commands::Loadgen(args) => {
            init_logging(cli.log_format);
            loadgen::run(args).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
