//! Row 1, the raw broker ceiling: what RabbitMQ and the AMQP client move on this machine with no
//! database at all. It uses the relay's publishing pattern (batches of `batch` messages, every
//! publish sent before any confirm is awaited, persistent, `mandatory`, through a topic exchange)
//! and the consumer's (prefetch window, one multiple-ack per drained window) on a quorum queue,
//! with bodies the size of a real event, so the sync rows can be read as a fraction of it.

use super::env::BenchEnv;
use super::report::Throughput;
use super::sync::Setting;
use anyhow::{bail, Context};
use contract::{Email, Envelope, EventType, PersonName, Role, Timestamp, UserId, UserSnapshot};
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, ExchangeKind};
use std::time::Instant;

const EXCHANGE: &str = "bench.ceiling";
const QUEUE: &str = "bench.ceiling";

/// A realistic event body (a `user.created` snapshot), so message sizes match the pipeline's.
pub fn sample_body() -> anyhow::Result<Vec<u8>> {
    let snapshot = UserSnapshot {
        user_id: UserId::new(),
        email: Email::parse("tendai.moyo.000001@bench.example")?,
        first_name: PersonName::parse("firstName", "Tendai")?
            .as_str()
            .to_owned(),
        last_name: PersonName::parse("lastName", "Moyo")?.as_str().to_owned(),
        role: Role::Doctor,
        phone_number: Some("+263 77 201 0001".into()),
        is_active: true,
        must_change_password: false,
        created_at: Timestamp::now(),
        updated_at: Some(Timestamp::now()),
        user_version: Some(1),
        previous_role: None,
        changed_fields: None,
    };
    Ok(serde_json::to_vec(&Envelope::new(
        EventType::Created,
        snapshot,
    ))?)
}

pub async fn ceiling(env: &BenchEnv, events: u64, setting: Setting) -> anyhow::Result<Throughput> {
    let (batch, prefetch) = (setting.relay_batch_size, setting.prefetch);
    let bar = super::bar(events, "row 1: broker ceiling");
    let body = sample_body()?;
    let publisher = platform::amqp::connect(&env.amqp_url, "bench ceiling publisher").await?;
    let pch = publisher.create_channel().await?;
    pch.exchange_declare(
        EXCHANGE,
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    platform::amqp::declare_quorum_queue(&pch, QUEUE).await?;
    pch.queue_bind(
        QUEUE,
        EXCHANGE,
        "#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;

    let consumer_conn = platform::amqp::connect(&env.amqp_url, "bench ceiling consumer").await?;
    let cch = consumer_conn.create_channel().await?;
    cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = cch
        .basic_consume(
            QUEUE,
            "bench-ceiling",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let consume_bar = bar.clone();
    let consume = async move {
        let mut received = 0u64;
        while received < events {
            let first = deliveries.next().await.context("delivery stream ended")??;
            let mut last = first;
            received += 1;
            // Like the consumer: take what the window holds now, ack it with one frame.
            while received < events {
                match deliveries.next().now_or_never() {
                    Some(Some(d)) => {
                        last = d?;
                        received += 1;
                    }
                    Some(None) => bail!("delivery stream ended"),
                    None => break,
                }
            }
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
            consume_bar.set_position(received);
        }
        anyhow::Ok(Instant::now())
    };

    let started = Instant::now();
    let publish = async {
        let mut sent = 0u64;
        while sent < events {
            let n = (events - sent).min(batch.max(1) as u64);
            let mut confirms = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_type(ShortString::from("user.created"));
                confirms.push(
                    pch.basic_publish(
                        EXCHANGE,
                        "user.created",
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        properties,
                    )
                    .await?,
                );
            }
            for confirm in confirms {
                match confirm.await? {
                    Confirmation::Ack(None) => {}
                    other => bail!("broker did not accept a ceiling message: {other:?}"),
                }
            }
            sent += n;
        }
        anyhow::Ok(())
    };
    let (published, consumed) = tokio::join!(publish, consume);
    published?;
    let finished = consumed?;
    let seconds = (finished - started).as_secs_f64();
    bar.finish_with_message(format!(
        "row 1: broker ceiling {:.0} msg/s",
        events as f64 / seconds
    ));
    // The consumer goes first: deleting a queue under it makes the broker cancel it.
    consumer_conn.close(200, "done").await.ok();
    pch.queue_delete(QUEUE, QueueDeleteOptions::default())
        .await
        .ok();
    publisher.close(200, "done").await.ok();
    Ok(Throughput::new(events, seconds))
}
