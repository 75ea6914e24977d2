//! Criterion benchmark of `State::apply` on the workload of `support/workload.rs`, for every
//! strategy, 1,000 / 10,000 / 100,000 agents, with an empty queue and with 100,000 queued.
//! `make bench` runs it; `make bench-core` prints one line per configuration instead.

#![allow(missing_docs)]

#[path = "support/workload.rs"]
mod workload;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use workload::{STRATEGIES, Workload};

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_apply");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for strategy in STRATEGIES {
        for agents in [1_000usize, 10_000, 100_000] {
            for queued in [0usize, 100_000] {
                // Built on first use, so that a filtered run builds only what it measures.
                let mut workload: Option<Workload> = None;
                let name = format!("{}/agents={agents}/queued={queued}", strategy.label());
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    let workload = workload.get_or_insert_with(|| Workload::new(strategy, agents, queued));
                    b.iter_custom(|iterations| {
                        let inputs = workload.batch(iterations as usize);
                        let start = Instant::now();
                        let failed = workload.apply_all(&inputs);
                        let elapsed = start.elapsed();
                        assert_eq!(failed, 0, "the workload produced failing events");
                        elapsed
                    });
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
