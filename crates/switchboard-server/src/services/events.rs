//! `switchboard.v1.Events`: publishing gateway events over gRPC.

use crate::api::{Api, outcome_effects};
use crate::auth::Permission;
use crate::convert::effects::EffectOrigin;
use crate::convert::events::event_from_pb;
use crate::convert::invalid;
use crate::{metrics, status};
use std::sync::Arc;
use switchboard_core::Input;
use switchboard_proto::switchboard::v1 as pb;
use switchboard_proto::switchboard::v1::events_server::Events;
use tonic::{Request, Response, Status};

/// Most events in one `PublishBatch`.
pub const PUBLISH_BATCH_MAX_EVENTS: usize = 1024;

pub(crate) struct EventsService {
    pub(crate) api: Arc<Api>,
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, request: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let event = crate::convert::required(request.into_inner().event, "event")?;
        let occurred_at_ms = event.occurred_at_ms;
        let event = event_from_pb(event, "event").inspect_err(|_| metrics::event_rejected("malformed"))?;
        caller.may(Permission::PublishEvents, Some(&event.workspace))?;
        let committed = self.api.node.propose(vec![Input::Event(event)]).await.map_err(status::propose)?;
        let outcome = committed.outcomes.first().ok_or_else(|| Status::internal("the write returned no outcome"))?;
        if let Some(rejection) = &outcome.rejection {
            metrics::event_refused("grpc", rejection);
            return Err(status::rejection(rejection));
        }
        metrics::event_took_effect("grpc", occurred_at_ms);
        let origin = EffectOrigin { log_index: committed.index, at_ms: committed.at_ms };
        Ok(Response::new(pb::PublishResponse {
            log_index: committed.index,
            effects: outcome_effects(outcome, origin, committed.first_effect_sequence),
        }))
    }

    async fn publish_batch(
        &self,
        request: Request<pb::PublishBatchRequest>,
    ) -> Result<Response<pb::PublishBatchResponse>, Status> {
        let caller = self.api.caller(&request)?;
        let events = request.into_inner().events;
        if events.is_empty() {
            return Err(invalid("events", "must contain at least one event").into());
        }
        if events.len() > PUBLISH_BATCH_MAX_EVENTS {
            return Err(invalid(
                "events",
                format!("{} events exceed the limit of {PUBLISH_BATCH_MAX_EVENTS} per batch", events.len()),
            )
            .into());
        }
        // A malformed event fails the whole call before anything is written, so that a caller
        // never has to work out which half of a batch was applied.
        let mut inputs = Vec::with_capacity(events.len());
        let mut ids = Vec::with_capacity(events.len());
        let mut occurred = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            ids.push(event.event_id.clone());
            occurred.push(event.occurred_at_ms);
            let event =
                event_from_pb(event, &format!("events[{i}]")).inspect_err(|_| metrics::event_rejected("malformed"))?;
            caller.may(Permission::PublishEvents, Some(&event.workspace))?;
            inputs.push(Input::Event(event));
        }
        let committed = self.api.node.propose(inputs).await.map_err(status::propose)?;
        for (outcome, occurred_at_ms) in committed.outcomes.iter().zip(occurred) {
            match &outcome.rejection {
                None => metrics::event_took_effect("grpc", occurred_at_ms),
                Some(rejection) => metrics::event_refused("grpc", rejection),
            }
        }
        let origin = EffectOrigin { log_index: committed.index, at_ms: committed.at_ms };
        let mut sequence = committed.first_effect_sequence;
        let results = ids
            .into_iter()
            .zip(&committed.outcomes)
            .map(|(event_id, outcome)| {
                let effects = outcome_effects(outcome, origin, sequence);
                sequence += outcome.effects.len() as u32;
                match &outcome.rejection {
                    None => pb::EventResult { event_id, effects, ..Default::default() },
                    Some(rejection) => pb::EventResult {
                        event_id,
                        error_reason: rejection.reason.clone(),
                        error_message: rejection.message.clone(),
                        error_code: status::rejection_code(rejection) as i32,
                        effects,
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::PublishBatchResponse { log_index: committed.index, results }))
    }
}
