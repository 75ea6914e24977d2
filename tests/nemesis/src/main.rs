//! `nemesis`: runs the nemesis test and prints its verdict. `make nemesis` builds the binaries
//! optimised and runs it; see the crate documentation.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;

/// Real processes, real faults, and a verdict computed from the effects alone.
#[derive(Parser, Debug)]
#[command(name = "nemesis")]
struct Args {
    /// How long to inject faults, in seconds.
    #[arg(long, env = "NEMESIS_SECONDS", default_value_t = 600)]
    seconds: u64,
    /// Seed of the fault schedule and the workload; the clock when not given.
    #[arg(long, env = "NEMESIS_SEED")]
    seed: Option<u64>,
    /// Nodes in the cluster (3 or 5).
    #[arg(long, env = "NEMESIS_NODES", default_value_t = 3)]
    nodes: usize,
    /// Gateways publishing conversations at once.
    #[arg(long, default_value_t = 4)]
    gateways: usize,
    /// Keep the run's files (node logs, data, NATS store) here.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.nodes == 3 || args.nodes == 5, "--nodes must be 3 or 5, not {}", args.nodes);
    anyhow::ensure!((1..=86_400).contains(&args.seconds), "--seconds must be within [1, 86400], not {}", args.seconds);
    anyhow::ensure!((1..=64).contains(&args.gateways), "--gateways must be within [1, 64], not {}", args.gateways);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    eprintln!("nemesis: seed={seed} (NEMESIS_SEED={seed} repeats the schedule)");
    let options = switchboard_nemesis::Options {
        binaries: switchboard_nemesis::find_binaries()?,
        nodes: args.nodes,
        seconds: args.seconds,
        seed,
        gateways: args.gateways,
        dir: args.dir,
    };
    let report = switchboard_nemesis::run(&options).await?;
    for line in report.recovery_lines() {
        println!("{line}");
    }
    for finding in report.verdict.findings.iter().take(40) {
        println!("{finding}");
    }
    if report.verdict.findings.len() > 40 {
        println!("... and {} more findings", report.verdict.findings.len() - 40);
    }
    if !report.digests_equal {
        println!("digests: {:?}", report.digests);
    }
    println!("effects={} races={} files={}", report.verdict.effects, report.verdict.races, report.dir.display());
    println!("{}", report.line(seed));
    if !report.clean() {
        std::process::exit(1);
    }
    Ok(())
}
