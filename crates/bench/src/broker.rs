//! Row 1, the raw broker ceiling: what RabbitMQ and the AMQP client move on this machine with no
//! database at all. It uses the relay's publishing pattern (batches of `batch` messages, every
//! publish sent before any confirm is awaited, persistent, `mandatory`, through a topic exchange)
//! and the consumer's (prefetch window, one multiple-ack per drained window) on a quorum queue,
//! with bodies the size of a real event, so the sync rows can be read as a fraction of it.

use super::env::BenchEnv;
use super::profile::{self, CpuProfile};
use super::report::Setting;
use super::report::{Percentiles, Throughput};
use anyhow::{bail, Context};
use contract::topology::{Declaration, ExchangeKind};
use contract::{Email, Envelope, EventType, PersonName, Role, Timestamp, UserId, UserSnapshot};
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use platform::amqp::{self, Outgoing};
use std::time::Instant;

const EXCHANGE: &str = "bench.ceiling";
const QUEUE: &str = "bench.ceiling";
/// Single publish-and-confirm round trips timed after the ceiling.
const CONFIRM_SAMPLES: usize = 200;

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
        erased_at: None,
    };
    Ok(serde_json::to_vec(&Envelope::new(
        EventType::Created,
        snapshot,
    ))?)
}

pub async fn ceiling(
    env: &BenchEnv,
    events: u64,
    setting: Setting,
) -> anyhow::Result<(Throughput, Percentiles, CpuProfile)> {
    let (batch, prefetch) = (setting.relay_batch_size, setting.prefetch);
    let bar = super::bar(events, "row 1: broker ceiling");
    let body = sample_body()?;
    let publisher = amqp::connect(&env.sandbox.amqp_url, "bench ceiling publisher").await?;
    let pch = publisher.create_channel().await?;
    amqp::declare(
        &pch,
        &[
            Declaration::exchange(EXCHANGE, ExchangeKind::Topic),
            Declaration::quorum_queue(QUEUE),
            Declaration::binding(QUEUE, EXCHANGE, "#"),
        ],
    )
    .await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;

    let consumer_conn = amqp::connect(&env.sandbox.amqp_url, "bench ceiling consumer").await?;
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

    // The consumer reports the instant it has every ceiling message, then keeps consuming the
    // round-trip samples that follow.
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let consume_bar = bar.clone();
    let expected = events + CONFIRM_SAMPLES as u64;
    let consumer = tokio::spawn(async move {
        let mut reached = Some(reached_tx);
        let mut received = 0u64;
        while received < expected {
            let mut last = deliveries.next().await.context("delivery stream ended")??;
            received += 1;
            // Like the consumer: take what the window holds now, ack it with one frame.
            while received < expected {
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
            consume_bar.set_position(received.min(events));
            if received >= events {
                if let Some(tx) = reached.take() {
                    let _ = tx.send(Instant::now());
                }
            }
        }
        anyhow::Ok(())
    });

    let cpu_before = profile::snapshot(&[]);
    let started = Instant::now();
    let properties = amqp::event_properties(
        &uuid::Uuid::nil().to_string(),
        "user.created",
        &amqp::broker_user(&env.sandbox.amqp_url),
    );
    let message = || Outgoing {
        exchange: EXCHANGE,
        routing_key: "user.created",
        body: &body,
        properties: properties.clone(),
    };
    let mut sent = 0u64;
    while sent < events {
        let n = (events - sent).min(batch.max(1) as u64);
        amqp::publish_confirmed(&pch, (0..n).map(|_| message()).collect())
            .await
            .require_all()
            .context("broker did not accept a ceiling message")?;
        sent += n;
    }
    let finished = match reached_rx.await {
        Ok(at) => at,
        Err(_) => {
            consumer.await.context("ceiling consumer panicked")??;
            bail!("the ceiling consumer stopped early");
        }
    };
    let seconds = (finished - started).as_secs_f64();
    let cpu = profile::since(&cpu_before, &[]);

    // The floor under every end-to-end latency: one persistent message published and its
    // confirm awaited, one at a time, on the now empty (and still consumed) queue.
    let mut round_trips = Vec::with_capacity(CONFIRM_SAMPLES);
    for _ in 0..CONFIRM_SAMPLES {
        let sent = Instant::now();
        amqp::publish_confirmed(&pch, vec![message()])
            .await
            .require_all()
            .context("broker did not accept a ceiling message")?;
        round_trips.push(sent.elapsed().as_micros() as i64);
    }
    consumer.await.context("ceiling consumer panicked")??;
    let confirm_ms = Percentiles::of(round_trips);
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
    Ok((Throughput::new(events, seconds), confirm_ms, cpu))
}
