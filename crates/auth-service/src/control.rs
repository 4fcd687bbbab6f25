//! The auth-service's control queue (`auth-service.control`): the consumers' receipts and the
//! appointment-service's replies to the offboarding saga. Each message is handled on its own and
//! acked after its transaction; what cannot be read, or comes from a broker user the registry
//! does not name for it, is rejected into `auth-service.control.dlq` with the reason logged.
//! While `auth_db` is unreachable the message waits (retried in place with backoff).

use crate::consumers::{self, Verdict};
use crate::offboarding::runner::Runner;
use crate::offboarding::store as sagas;
use contract::control::{DoctorResolved, Receipt, DOCTOR_RESOLVED_TYPE, RECEIPT_TYPE};
use contract::topology::{self, ConsumerQueues, ControlQueue};
use lapin::message::Delivery;
use platform::amqp;
use platform::control::{self, Disposition};
use platform::metrics::Metrics;
use prometheus::{HistogramVec, IntCounterVec};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Receipts and replies, for Prometheus.
#[derive(Clone)]
pub struct ControlMetrics {
    /// `portal_receipt_delay_seconds{consumer}`: from a change in `auth_db` to its commit in a
    /// consumer, per user whose version the receipt raised.
    delay: HistogramVec,
    /// `portal_control_rejected_total{reason}`: messages rejected into the dead-letter queue.
    rejected: IntCounterVec,
}

impl ControlMetrics {
    pub fn register(metrics: &Metrics) -> prometheus::Result<Self> {
        let rejected = metrics.counter_vec(
            "portal_control_rejected_total",
            "Control messages (receipts, replies) set aside: untrusted-publisher, unknown-consumer, invalid, unknown-type.",
            &["reason"],
        )?;
        for reason in [
            "untrusted-publisher",
            "unknown-consumer",
            "invalid",
            "unknown-type",
        ] {
            rejected.with_label_values(&[reason]);
        }
        Ok(Self {
            delay: metrics.histogram_vec(
                "portal_receipt_delay_seconds",
                "From a user's change in auth_db to its commit in a consumer, per consumer (from the receipts).",
                &["consumer"],
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
            )?,
            rejected,
        })
    }
}

pub struct Control {
    db: PgPool,
    amqp_url: String,
    declare_topology: bool,
    runner: Runner,
    metrics: Option<ControlMetrics>,
    /// Unregistered consumers already warned about.
    unknown: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Who each consumer's receipts are believed from.
    registry: consumers::RegistryCache,
}

impl Control {
    pub fn new(
        db: PgPool,
        amqp_url: String,
        declare_topology: bool,
        runner: Runner,
        metrics: Option<ControlMetrics>,
    ) -> Self {
        Self {
            db,
            amqp_url,
            declare_topology,
            runner,
            metrics,
            unknown: Default::default(),
            registry: Default::default(),
        }
    }

    /// Consumes until `shutdown`, reconnecting with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let declarations = match self.declare_topology {
            true => topology::declarations(&[ConsumerQueues::for_consumer(topology::USER_SERVICE)]),
            false => Vec::new(),
        };
        let queue = control::Queue {
            amqp_url: self.amqp_url.clone(),
            connection_name: "auth-service control",
            queue: ControlQueue::of(topology::AUTH_SERVICE).main,
            declarations,
            prefetch: 64,
            // Receipts come one per consumer batch, each a transaction here: several at once
            // keep up with consumers that commit small batches quickly.
            concurrency: 8,
        };
        control::run(queue, self, shutdown).await
    }
}

impl control::Handler for Control {
    async fn handle(&self, delivery: &Delivery) -> Result<Disposition, sqlx::Error> {
        self.dispatch(delivery).await
    }

    fn rejected(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.rejected.with_label_values(&[reason]).inc();
        }
    }
}

impl Control {
    async fn dispatch(&self, delivery: &Delivery) -> Result<Disposition, sqlx::Error> {
        let publisher = amqp::publisher_of(&delivery.properties);
        match control::kind_of(delivery).as_str() {
            RECEIPT_TYPE => {
                let receipt: Receipt = match serde_json::from_slice(&delivery.data) {
                    Ok(r) => r,
                    Err(e) => return Ok(Disposition::Reject("invalid", format!("receipt: {e}"))),
                };
                self.receipt(receipt, publisher.as_deref()).await
            }
            DOCTOR_RESOLVED_TYPE => self.reply(delivery, publisher.as_deref()).await,
            other => Ok(Disposition::Reject(
                "unknown-type",
                format!("message type {other:?} is not a receipt or a reply"),
            )),
        }
    }

    async fn receipt(
        &self,
        receipt: Receipt,
        publisher: Option<&str>,
    ) -> Result<Disposition, sqlx::Error> {
        match consumers::record(&self.db, &self.registry, &receipt, publisher).await? {
            Verdict::Recorded { users, woken } => {
                if let Some(m) = &self.metrics {
                    let delay = m.delay.with_label_values(&[&receipt.consumer]);
                    let moved: std::collections::HashSet<_> = users.iter().collect();
                    for entry in receipt
                        .users
                        .iter()
                        .filter(|e| moved.contains(&e.user_id.0))
                    {
                        delay.observe(consumers::seconds_between(
                            entry.changed_at.as_datetime(),
                            receipt.applied_at.as_datetime(),
                        ));
                    }
                }
                if woken > 0 {
                    self.runner.wake();
                }
                Ok(Disposition::Ack)
            }
            // Acked, not set aside: an unregistered consumer sends one with every batch, and
            // its receipts would fill the dead-letter queue. Said once per name, and counted.
            Verdict::UnknownConsumer(name) => {
                if let Some(m) = &self.metrics {
                    m.rejected.with_label_values(&["unknown-consumer"]).inc();
                }
                let first = self
                    .unknown
                    .lock()
                    .map(|mut seen| seen.insert(name.clone()))
                    .unwrap_or(false);
                if first {
                    tracing::warn!(
                        consumer = %name,
                        "receipts from a consumer that is not registered are ignored: register \
                         it with `portal consumer add {name}` (said once)"
                    );
                }
                Ok(Disposition::Ack)
            }
            Verdict::WrongPublisher {
                consumer,
                expected,
                got,
            } => Ok(Disposition::Reject(
                "untrusted-publisher",
                format!(
                    "receipt for {consumer} published by broker user {}, not {expected}: ignored",
                    got.as_deref().unwrap_or("(none)")
                ),
            )),
        }
    }

    async fn reply(
        &self,
        delivery: &Delivery,
        publisher: Option<&str>,
    ) -> Result<Disposition, sqlx::Error> {
        // Replies are believed from the appointment-service's registered broker user only.
        let expected = self
            .registry
            .broker_user(&self.db, topology::APPOINTMENT_SERVICE)
            .await?;
        let expected = expected.as_deref();
        if expected.is_none() || publisher != expected {
            return Ok(Disposition::Reject(
                "untrusted-publisher",
                format!(
                    "reply published by broker user {}, not the appointment-service's ({})",
                    publisher.unwrap_or("(none)"),
                    expected.unwrap_or("not registered")
                ),
            ));
        }
        let Some(message_id) = control::message_id_of(delivery) else {
            return Ok(Disposition::Reject(
                "invalid",
                "reply without a UUID message-id".into(),
            ));
        };
        let reply: DoctorResolved = match serde_json::from_slice(&delivery.data) {
            Ok(r) => r,
            Err(e) => return Ok(Disposition::Reject("invalid", format!("reply: {e}"))),
        };
        match sagas::record_reply(&self.db, message_id, reply).await {
            Ok(_) => Ok(Disposition::Ack),
            Err(sagas::SagaError::Store(crate::store::StoreError::Db(e))) => Err(e),
            // The saga kept changing under it (its timer, a cancel): tried again, as for an
            // outage, never set aside.
            Err(sagas::SagaError::Conflict) => Err(sqlx::Error::Protocol(
                "the offboarding changed while its reply was recorded".into(),
            )),
            Err(e) => Ok(Disposition::Reject("invalid", e.to_string())),
        }
    }
}
