//! A gateway's publisher for high event rates: events queue while earlier ones are being
//! stored, and go out together.
//!
//! nats-server stores a stream's atomic batches one after another, and with
//! `sync_interval: always` each commit costs about 2.3 ms whatever its size (1 event or 100:
//! 2.3–3.7 ms; measured, benches/README.md). A publisher that sends a batch every few
//! milliseconds with many in flight therefore queues its small batches at the server: 16 in
//! flight of 15 events each waited 33 ms for their acks. The [`Batcher`] instead sends only when
//! one of a few slots is free, everything that queued meanwhile (up to
//! [`BatcherConfig::batch_events_max`]) as one batch: alone under light load (a few events go
//! as separate publishes, which the server stores sooner than a batch), hundreds at a time
//! under heavy load. Below saturation an event waits about one commit in the queue and one for
//! its own; at saturation the queue (and `publish`) waits for the server. There is no linger
//! to tune.

use super::{BATCH_EVENTS_MAX, Gateway, GatewayError, PendingAck, addressed};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use switchboard_proto::switchboard::v1 as pb;
use tokio::sync::{mpsc, oneshot};

/// Most batches a [`Batcher`] may have awaiting JetStream's ack (nats-server allows 50 per
/// stream; more than a few only queue at the server).
pub const BATCHES_IN_FLIGHT_MAX: usize = 16;
/// Most events a [`Batcher`] may queue unsent before [`Batcher::publish`] waits.
pub const QUEUE_EVENTS_MAX: usize = 1_000_000;
/// Up to this many events are sent as separate publishes (about 0.4 ms each to store) rather
/// than as one atomic batch (about 2.3 ms).
const SEPARATE_EVENTS_MAX: usize = 8;

/// Settings of a [`Batcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most events sent at once: 1 to [`BATCH_EVENTS_MAX`] (default 500). Up to 8 go as separate
    /// publishes, more as one atomic batch.
    pub batch_events_max: usize,
    /// Batches (or runs of up to 8 separate publishes) awaiting JetStream's ack at once: 1 to
    /// [`BATCHES_IN_FLIGHT_MAX`] (default 2: one being stored while the next is sent).
    pub batches_in_flight: usize,
    /// Events queued and not yet sent; beyond this [`Batcher::publish`] waits, which is the
    /// flow control: 1 to [`QUEUE_EVENTS_MAX`] (default 10,000).
    pub queue_events_max: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self { batch_events_max: 500, batches_in_flight: 2, queue_events_max: 10_000 }
    }
}

impl BatcherConfig {
    fn check(&self) -> Result<(), GatewayError> {
        let ranges = [
            ("batch_events_max", self.batch_events_max, BATCH_EVENTS_MAX),
            ("batches_in_flight", self.batches_in_flight, BATCHES_IN_FLIGHT_MAX),
            ("queue_events_max", self.queue_events_max, QUEUE_EVENTS_MAX),
        ];
        for (name, value, max) in ranges {
            if !(1..=max).contains(&value) {
                return Err(GatewayError::InvalidConfig(format!("{name} = {value} is out of range: 1 to {max}")));
            }
        }
        Ok(())
    }
}

/// What a [`Batcher`] has sent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Atomic batches sent.
    pub atomic_batches: u64,
    /// Events sent in them.
    pub events_in_batches: u64,
    /// Events sent as separate publishes (few queued at once).
    pub separate_events: u64,
    /// Events published again on their own because their batch was not stored (refused, or
    /// its ack lost).
    pub republished_events: u64,
}

#[derive(Debug, Default)]
struct Counters {
    atomic_batches: AtomicU64,
    events_in_batches: AtomicU64,
    separate_events: AtomicU64,
    republished_events: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// Publishes events in atomic batches that grow with the load; see the module documentation
/// and [`Gateway::batcher`]. Cheap to share behind an `Arc`: [`Batcher::publish`] takes
/// `&self`. Dropping it stops taking events; those already queued are still sent.
#[derive(Debug)]
pub struct Batcher {
    queue: mpsc::Sender<Queued>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

/// An event's way to JetStream: await it to know the event is stored. An error means the
/// event may not be stored: publish it again (same event id; JetStream and the state machine
/// both deduplicate).
#[derive(Debug)]
#[must_use = "an unawaited `Stored` does not tell whether the event was stored"]
pub struct Stored(oneshot::Receiver<Result<(), GatewayError>>);

impl Future for Stored {
    type Output = Result<(), GatewayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(GatewayError::JetStream("the batcher stopped before the event was stored".to_owned()))
            })
        })
    }
}

struct Queued {
    event: pb::GatewayEvent,
    stored: oneshot::Sender<Result<(), GatewayError>>,
}

impl Gateway {
    /// A [`Batcher`] publishing through this gateway's connection, its task spawned on the
    /// current tokio runtime (outside one: an error). Its settings are checked here; an error
    /// names the one out of range.
    pub fn batcher(&self, config: BatcherConfig) -> Result<Batcher, GatewayError> {
        config.check()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| GatewayError::InvalidConfig(format!("a batcher runs on a tokio runtime: {e}")))?;
        let (queue, queued) = mpsc::channel(config.queue_events_max);
        let counters = Arc::new(Counters::default());
        let task = runtime.spawn(run(self.clone(), config, queued, Arc::clone(&counters)));
        Ok(Batcher { queue, task, counters })
    }
}

impl Batcher {
    /// Queues `event` (waiting while [`BatcherConfig::queue_events_max`] events are queued)
    /// and returns what to await for it to be stored. An event that cannot be published (no
    /// event id, a workspace that is not one subject token) is refused here, naming why.
    /// Events are stored in the order published, except that an event of a batch JetStream did
    /// not store is published again on its own, after batches sent since, and that an event
    /// whose [`Stored`] answers an error is stored (if at all) only when published again.
    pub async fn publish(&self, event: pb::GatewayEvent) -> Result<Stored, GatewayError> {
        addressed(&event)?;
        let (stored, answer) = oneshot::channel();
        self.queue
            .send(Queued { event, stored })
            .await
            .map_err(|_| GatewayError::JetStream("the batcher has stopped".to_owned()))?;
        Ok(Stored(answer))
    }

    /// What has been sent so far.
    pub fn stats(&self) -> BatcherStats {
        let c = &self.counters;
        BatcherStats {
            atomic_batches: c.atomic_batches.load(Ordering::Relaxed),
            events_in_batches: c.events_in_batches.load(Ordering::Relaxed),
            separate_events: c.separate_events.load(Ordering::Relaxed),
            republished_events: c.republished_events.load(Ordering::Relaxed),
        }
    }

    /// Stops taking events and waits until every queued one has been sent and answered.
    pub async fn close(self) {
        let Batcher { queue, task, .. } = self;
        drop(queue);
        // The task only ends by running out of events; a panic in it is already reported.
        let _ = task.await;
    }
}

type InFlight = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn run(gateway: Gateway, config: BatcherConfig, mut queued: mpsc::Receiver<Queued>, counters: Arc<Counters>) {
    // Unordered: a batch answered before an earlier one frees its slot at once (each answers
    // its own events; the order of storing is the order of sending).
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut open = true;
    loop {
        let mut batch = Vec::new();
        if open && in_flight.len() < config.batches_in_flight {
            // A slot is free: send the first event that comes, with all that queued behind it.
            // An ack that comes first frees another slot while this one waits.
            tokio::select! {
                biased;
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                next = queued.recv() => match next {
                    Some(first) => batch.push(first),
                    None => open = false,
                },
            }
        } else if in_flight.next().await.is_none() && !open {
            return;
        } else {
            continue;
        }
        while batch.len() < config.batch_events_max {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let sent = send(&gateway, batch, &counters).await;
            in_flight.push(sent);
        }
    }
}

/// Sends `batch` (separately when it is small, else as one atomic batch) and returns what
/// answers each event once JetStream has stored it, publishing an event again on its own if
/// its batch was not stored.
async fn send(gateway: &Gateway, batch: Vec<Queued>, counters: &Arc<Counters>) -> InFlight {
    let (events, answers): (Vec<pb::GatewayEvent>, Vec<_>) = batch.into_iter().map(|q| (q.event, q.stored)).unzip();
    if events.len() <= SEPARATE_EVENTS_MAX {
        add(&counters.separate_events, events.len());
        let acks = send_each(gateway, &events).await;
        return Box::pin(answer_each(acks, answers));
    }
    add(&counters.atomic_batches, 1);
    add(&counters.events_in_batches, events.len());
    let sent = gateway.publish_batch_pipelined(&events).await;
    let gateway = gateway.clone();
    let counters = Arc::clone(counters);
    Box::pin(async move {
        let stored = match sent {
            Ok(Some(ack)) => ack.await.is_ok(),
            Ok(None) => true,
            Err(_) => false,
        };
        if stored {
            for answer in answers {
                let _ = answer.send(Ok(()));
            }
            return;
        }
        // Refused whole (an event id already stored within the duplicate window refuses the
        // batch) or unanswered: each event again on its own, pipelined; its `Nats-Msg-Id`
        // keeps what was stored after all from being stored twice.
        add(&counters.republished_events, events.len());
        let acks = send_each(&gateway, &events).await;
        answer_each(acks, answers).await;
    })
}

/// Sends each event as its own publish, pipelined.
async fn send_each(gateway: &Gateway, events: &[pb::GatewayEvent]) -> Vec<Result<PendingAck, GatewayError>> {
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        acks.push(gateway.publish_pipelined(event).await);
    }
    acks
}

/// Tells each event whether JetStream stored it.
async fn answer_each(
    acks: Vec<Result<PendingAck, GatewayError>>,
    answers: Vec<oneshot::Sender<Result<(), GatewayError>>>,
) {
    for (ack, answer) in acks.into_iter().zip(answers) {
        let stored = match ack {
            Ok(ack) => ack.await.map(drop),
            Err(error) => Err(error),
        };
        // The publisher may have stopped waiting; the event is stored all the same.
        let _ = answer.send(stored);
    }
}
