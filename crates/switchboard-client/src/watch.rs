//! A Watch stream that resumes on another node when its node fails.

use crate::{Client, pb};
use pb::assignments_client::AssignmentsClient;
use pb::watch_event::Event;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Code, Status};

/// Events buffered between the connection task and the reader.
const WATCH_BUFFER_EVENTS: usize = 1024;

/// Effects (and snapshot notices) of a workspace, in log order, across node failures. Dropping
/// it ends the watch.
#[derive(Debug)]
pub struct WatchStream {
    receiver: mpsc::Receiver<Result<pb::WatchEvent, Status>>,
}

impl WatchStream {
    /// The next event; `None` after the stream ended with an error that was already returned,
    /// or when the client gave up reconnecting.
    pub async fn next(&mut self) -> Option<Result<pb::WatchEvent, Status>> {
        self.receiver.recv().await
    }

    /// The next effect, skipping progress and snapshot notices; `Err` on a stream error and
    /// `None` when the stream ended.
    pub async fn next_effect(&mut self) -> Option<Result<pb::Effect, Status>> {
        loop {
            match self.next().await? {
                Ok(pb::WatchEvent { event: Some(Event::Effect(effect)) }) => return Some(Ok(effect)),
                Ok(_) => continue,
                Err(status) => return Some(Err(status)),
            }
        }
    }
}

/// Where the stream is: the index to resume from and the last effect delivered.
#[derive(Default)]
struct Position {
    resume_from: u64,
    last_effect: Option<(u64, u32)>,
}

impl Position {
    /// Records `event`; false if it was already delivered before a reconnection.
    fn advance(&mut self, event: &pb::WatchEvent) -> bool {
        match &event.event {
            Some(Event::Effect(effect)) => {
                let key = (effect.log_index, effect.sequence);
                if self.last_effect.is_some_and(|last| key <= last) {
                    return false;
                }
                self.last_effect = Some(key);
                // The entry may have more effects: resume from the entry itself.
                self.resume_from = self.resume_from.max(effect.log_index);
                true
            }
            Some(Event::Progress(index)) | Some(Event::SnapshotInstalled(index)) => {
                self.resume_from = self.resume_from.max(index + 1);
                true
            }
            None => true,
        }
    }
}

pub(crate) fn start(client: Client, request: pb::WatchRequest) -> WatchStream {
    let (sender, receiver) = mpsc::channel(WATCH_BUFFER_EVENTS);
    tokio::spawn(run(client, request, sender));
    WatchStream { receiver }
}

async fn run(client: Client, request: pb::WatchRequest, sender: mpsc::Sender<Result<pb::WatchEvent, Status>>) {
    let mut position = Position { resume_from: request.from_index, last_effect: None };
    let mut outage_started: Option<tokio::time::Instant> = None;
    let mut pause = Duration::from_millis(20);
    loop {
        let (index, channel) = client.current_channel();
        let mut attempt = request.clone();
        attempt.from_index = position.resume_from;
        let failure = match AssignmentsClient::new(channel).watch(client.request(attempt, None)).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            outage_started = None;
                            pause = Duration::from_millis(20);
                            if position.advance(&event) && sender.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break Status::unavailable("the node ended the watch"),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        if failure.code() != Code::Unavailable && failure.code() != Code::Unknown {
            let _ = sender.send(Err(failure)).await;
            return;
        }
        let started = *outage_started.get_or_insert_with(tokio::time::Instant::now);
        if started.elapsed() > client.inner.config.retry_timeout {
            let _ = sender.send(Err(failure)).await;
            return;
        }
        tracing::debug!(node = %client.inner.addresses[index], status = %failure, "watch interrupted; resuming elsewhere");
        client.next_node(index);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
