//! The bounded nemesis run of `make test`: three real `switchboard node` processes and a real
//! nats-server under a seeded schedule of every kind of fault for `NEMESIS_SECONDS` (default
//! 100), judged by the checker of `tests/nemesis` from the effects alone. `make nemesis` runs
//! the same for ten minutes or more, optimised.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bounded_nemesis_run_loses_doubles_and_breaks_nothing() {
    let seconds = std::env::var("NEMESIS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let seed = std::env::var("NEMESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    let binaries = switchboard_nemesis::cluster::Binaries {
        switchboard: env!("CARGO_BIN_EXE_switchboard").into(),
        nats_server: switchboard_nemesis::nats_server(),
    };
    let options = switchboard_nemesis::Options { binaries, nodes: 3, seconds, seed, gateways: 3, dir: None };
    let report = switchboard_nemesis::run(&options).await.unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    for line in report.recovery_lines() {
        eprintln!("{line}");
    }
    let line = report.line(seed);
    eprintln!("{line}");
    assert!(
        report.clean(),
        "{line}\n{}\ndigests: {:?}\nfiles: {}",
        report.verdict.findings.iter().take(30).cloned().collect::<Vec<_>>().join("\n"),
        report.digests,
        report.dir.display()
    );
    assert!(report.faults >= seconds as usize / 15, "only {} faults in {seconds} s", report.faults);
    assert!(report.verdict.races > 0 && report.verdict.effects > 0, "the workload did nothing: {line}");
}
