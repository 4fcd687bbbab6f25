//! Messages a test puts on the broker itself: bodies published straight to a queue (through the
//! default exchange), to deliver events duplicated, reordered or malformed without a producer.

use anyhow::Context;
use platform::amqp::{self, Outgoing};

/// Publishes `bodies`, in this order, straight to `queue` (persistent, `mandatory`, confirmed).
/// The queue must exist: a body no queue takes is an error, not a silent loss.
pub async fn publish_to_queue(
    amqp_url: &str,
    queue: &str,
    bodies: &[Vec<u8>],
) -> anyhow::Result<()> {
    // As the broker user of the URL, named in `user_id` like every trusted publisher does.
    let properties = amqp::persistent(&amqp::broker_user(amqp_url));
    let messages = bodies
        .iter()
        .map(|body| (body.as_slice(), properties.clone()))
        .collect();
    publish(amqp_url, queue, messages).await
}

/// Publishes one `body` with `properties` (its `user_id`, headers…) straight to `queue`
/// (`mandatory`, confirmed) over `amqp_url`, e.g. as another broker user of the sandbox: the
/// broker refuses a `user_id` that is not the connection's.
pub async fn publish_one(
    amqp_url: &str,
    queue: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
) -> anyhow::Result<()> {
    publish(amqp_url, queue, vec![(body, properties)]).await
}

/// Publishes `messages` (body, properties), in order, to `queue` over a connection of their own,
/// every one confirmed.
async fn publish(
    amqp_url: &str,
    queue: &str,
    messages: Vec<(&[u8], lapin::BasicProperties)>,
) -> anyhow::Result<()> {
    let conn = amqp::connect(amqp_url, "test publisher").await?;
    let result = async {
        let ch = conn.create_channel().await?;
        ch.confirm_select(Default::default()).await?;
        let outgoing = messages
            .into_iter()
            .map(|(body, properties)| Outgoing {
                exchange: "",
                routing_key: queue,
                body,
                properties,
            })
            .collect();
        amqp::publish_confirmed(&ch, outgoing)
            .await
            .require_all()
            .with_context(|| format!("publishing to {queue}"))?;
        anyhow::Ok(())
    }
    .await;
    conn.close(200, "done").await.ok();
    result
}
