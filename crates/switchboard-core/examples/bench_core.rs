//! `make bench-core`: one line per configuration of the core benchmark, then the snapshot
//! figures for 100,000 agents and 1,000,000 open conversations.
//!
//! ```text
//! cargo run --release -p switchboard-core --example bench_core [-- --events N] [--quick] [--snapshot-only]
//! ```

#![allow(missing_docs)]

#[path = "../benches/support/workload.rs"]
mod workload;

use std::time::Instant;
use switchboard_core::{State, Strategy};
use workload::{STRATEGIES, Workload};

fn resident_bytes() -> u64 {
    // Second field of /proc/self/statm: resident pages. Linux only; 0 elsewhere.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let events = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(if quick { 50_000 } else { 500_000 });
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let mut agent_counts: Vec<usize> = if quick { vec![1_000, 100_000] } else { vec![1_000, 10_000, 100_000] };
    if let Some(agents) = value("--agents").and_then(|n| n.parse().ok()) {
        agent_counts = vec![agents];
    }
    let queue_sizes: Vec<usize> = match value("--queued").and_then(|n| n.parse().ok()) {
        Some(queued) => vec![queued],
        None => vec![0, 100_000],
    };
    let strategies: Vec<Strategy> = match value("--strategy") {
        Some(label) => STRATEGIES.into_iter().filter(|s| s.label() == label).collect(),
        None => STRATEGIES.to_vec(),
    };
    let skip_snapshot = args.iter().any(|a| a == "--skip-snapshot");

    // The snapshot section runs first: measuring resident memory after the apply runs would
    // see their freed-but-retained heap instead of this state's growth.
    // Snapshot of 100,000 agents with 1,000,000 open conversations (10 each).
    let conversations = if quick { 200_000 } else { 1_000_000 };
    if !skip_snapshot {
        snapshot_figures(conversations);
    }
    if args.iter().any(|a| a == "--snapshot-only") {
        return;
    }
    for &strategy in &strategies {
        for &agents in &agent_counts {
            for &queued in &queue_sizes {
                let mut workload = Workload::new(strategy, agents, queued);
                // Warm up past the retention horizon (steady state), then measure.
                let warm = workload.batch(events / 10 + workload::CLOSED_RETENTION_S as usize * 1000 * 2);
                workload.apply_all(&warm);
                let inputs = workload.batch(events);
                let start = Instant::now();
                let failed = workload.apply_all(&inputs);
                let seconds = start.elapsed().as_secs_f64();
                assert_eq!(failed, 0, "the workload produced failing events");
                println!(
                    "core apply: strategy={} agents={agents} queued={queued} events_per_s={:.0} queue_after={}",
                    strategy.label(),
                    events as f64 / seconds,
                    workload.queue_depth(),
                );
            }
        }
    }
}

/// Builds 100,000 agents with `conversations` open conversations and times the snapshot.
fn snapshot_figures(conversations: usize) {
    let before = resident_bytes();
    let state = build_large_state(100_000, conversations);
    let after = resident_bytes();
    let start = Instant::now();
    let bytes = state.snapshot();
    let serialize_ms = start.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now();
    let restored = State::restore(&bytes).expect("snapshot restores");
    let restore_ms = start.elapsed().as_secs_f64() * 1000.0;
    // A second restore into memory the allocator already holds: the cost without first-touch
    // page faults (a follower replacing its state, rather than a node starting cold).
    drop(restored);
    let start = Instant::now();
    let restored = State::restore(&bytes).expect("snapshot restores");
    let warm_restore_ms = start.elapsed().as_secs_f64() * 1000.0;
    // The digest of a restored state hashes every record (all of it is backlog); the digest of
    // the state that applied the log reads only what changed since it last settled.
    let start = Instant::now();
    let digest = restored.state_digest();
    let digest_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (kept_backlog, start) = (state.digest_backlog(), Instant::now());
    let kept = state.state_digest();
    let kept_digest_ms = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(digest, kept, "restored state differs");
    println!(
        "core snapshot: agents=100000 conversations={conversations} bytes={} serialize_ms={serialize_ms:.0} \
         restore_ms={restore_ms:.0} warm_restore_ms={warm_restore_ms:.0} digest_ms={digest_ms:.0} \
         kept_digest_ms={kept_digest_ms:.2} kept_digest_backlog={kept_backlog} rss_bytes_per_conversation={:.0}",
        bytes.len(),
        after.saturating_sub(before) as f64 / conversations as f64,
    );
    // An admin change at this scale: one agent (with its open conversations) leaves the
    // 100,000-member team, which re-indexes the team.
    use switchboard_core::{AgentId, Command, Event, Input, WorkspaceId};
    let mut state = restored;
    let input = Input::Event(Event {
        workspace: WorkspaceId::new("big"),
        event_id: None,
        command: Command::RemoveAgent { agent: AgentId::new("agent-000000") },
    });
    let start = Instant::now();
    assert_eq!(state.apply(1_795_428_000_000, &input).result, Ok(()));
    println!(
        "core admin: remove_agent team_members=100000 conversations={conversations} ms={:.0}",
        start.elapsed().as_secs_f64() * 1000.0
    );
}

fn build_large_state(agents: usize, conversations: usize) -> State {
    use switchboard_core::*;
    let workspace = WorkspaceId::new("big");
    let mut state = State::new();
    let now = 1_795_428_000_000;
    let apply = |state: &mut State, command: Command| {
        let input = Input::Event(Event { workspace: workspace.clone(), event_id: None, command });
        assert_eq!(state.apply(now, &input).result, Ok(()));
    };
    apply(&mut state, Command::ConfigureWorkspace(WorkspaceSettings::default()));
    let per_agent = conversations.div_ceil(agents) as u32;
    let mut ids = Vec::with_capacity(agents);
    for index in 0..agents {
        let id = format!("agent-{index:06}");
        let mut spec = AgentSpec::new(id.as_str(), format!("Agent {index}"));
        spec.max_open = per_agent;
        apply(&mut state, Command::UpsertAgent(spec));
        ids.push(id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let start = Instant::now();
    apply(&mut state, Command::UpsertTeam(TeamSpec::new("support", Strategy::LeastOpen, &refs)));
    println!("core admin: upsert_team members={agents} ms={:.0}", start.elapsed().as_secs_f64() * 1000.0);
    apply(
        &mut state,
        Command::ConfigureWorkspace(WorkspaceSettings {
            default_team: Some(TeamId::new("support")),
            ..WorkspaceSettings::default()
        }),
    );
    for id in &ids {
        apply(&mut state, Command::SetAgentStatus { agent: AgentId::new(id), status: AgentStatus::Online });
    }
    for n in 0..conversations {
        let mut open = OpenConversation::new(format!("conv-{n:010}"), format!("contact-{n:08}"), Channel::ALL[n % 8]);
        open.language = Some(Language::new("en"));
        apply(&mut state, Command::OpenConversation(open));
    }
    state
}
