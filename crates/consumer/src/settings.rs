//! The settings every consumer service shares, as a `clap` group its command flattens.

use crate::ConsumerConfig;
use clap::Args;

/// How a consumer takes its events: the broker's window, the batch per transaction, and whom
/// it trusts besides the system's own publishers.
#[derive(Args, Debug, Clone)]
pub struct ConsumerArgs {
    #[command(flatten)]
    pub tuning: ConsumerTuningArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Whom consumers trust besides the system's own publishers: read by every consumer service,
/// and by what sends dead letters back to them (`portal dlq`, the sync admin API), which must
/// keep back what a consumer would not apply.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Broker users whose events consumers apply besides the system's own publishers
    /// (portal-relay, portal-operator), comma-separated: e.g. a legacy producer during a
    /// migration, which must then set the AMQP user_id property.
    #[arg(long, env = "TRUSTED_PUBLISHERS", value_delimiter = ',')]
    pub trusted_publishers: Vec<String>,
}

/// How a consumer batches: also what the chaos run gives the consumers it starts.
#[derive(Args, Debug, Clone)]
pub struct ConsumerTuningArgs {
    /// Messages the broker may have delivered to a consumer unacked; above
    /// CONSUMER_BATCH_SIZE, the next batch arrives while one commits (1 = naive: one message per
    /// transaction).
    #[arg(long, env = "CONSUMER_PREFETCH", default_value_t = ConsumerConfig::DEFAULT_PREFETCH, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_prefetch: u16,
    /// The most messages a consumer applies in one transaction (at most CONSUMER_PREFETCH).
    #[arg(long, env = "CONSUMER_BATCH_SIZE", default_value_t = ConsumerConfig::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_batch_size: u16,
}

impl ConsumerTuningArgs {
    /// The variables a consumer service is started with to run this way.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("CONSUMER_PREFETCH", self.consumer_prefetch.to_string()),
            ("CONSUMER_BATCH_SIZE", self.consumer_batch_size.to_string()),
        ]
    }
}

impl ConsumerArgs {
    /// The consumer's configuration (the standard name and retry delays; the service sets its
    /// own name, and whether it declares its queues).
    pub fn into_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            prefetch: self.tuning.consumer_prefetch,
            batch_size: self.tuning.consumer_batch_size,
            trusted_publishers: self.trust.trusted_publishers.clone(),
            ..ConsumerConfig::default()
        }
    }
}
