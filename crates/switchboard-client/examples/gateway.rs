//! The small gateway of the README ("Writing a gateway"): publish a conversation through NATS,
//! then act on the effects. Run it against `make run`:
//! `cargo run -p switchboard-client --example gateway`.

use switchboard_client::gateway::{Gateway, events};
use switchboard_client::pb::{self, effect::Kind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Gateway::connect("nats://127.0.0.1:4222").await?;

    // A WhatsApp message started a conversation: tell Switchboard.
    let mut opened =
        events::opened("wamid.HBgM1", "demo", "wa-5511999990000-1", "+5511999990000", pb::Channel::Whatsapp);
    if let Some(pb::gateway_event::Kind::ConversationOpened(o)) = &mut opened.kind {
        o.language = "es".into();
        o.first_message = "Hola, ¿cuánto cuesta el plan pro?".into();
    }
    gateway.publish(&opened).await?; // stored by JetStream: it will take effect exactly once

    // Act on what Switchboard decided, in order, and ack each effect once done.
    let mut effects = gateway.effects("whatsapp-gateway", "demo").await?;
    while let Some(delivery) = effects.next().await {
        let delivery = delivery?;
        match &delivery.effect.kind {
            Some(Kind::Assigned(a)) => println!("{}: {} will answer you shortly", a.conversation, a.agent_name),
            Some(Kind::Queued(q)) => println!("{}: you are number {} in the queue", q.conversation, q.position),
            Some(Kind::OutsideHours(o)) => {
                println!("{}: we are closed; we open at {:?}", o.conversation, o.opens_at_ms)
            }
            Some(Kind::Welcome(w)) => println!("{}: {}", w.conversation, w.message),
            _ => {}
        }
        delivery.ack().await?;
    }
    Ok(())
}
