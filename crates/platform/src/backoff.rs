//! Capped exponential backoff with full jitter, for reconnect loops: many processes that lost
//! the same broker do not come back in lockstep.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The default for reconnecting to PostgreSQL or RabbitMQ: 100 ms doubling up to 10 s.
    pub fn reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// The delay before the next attempt: uniform in [ceiling/2, ceiling], ceiling doubling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// Number of failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

/// Logs one line when a dependency goes down and one when it comes back, however many retries
/// happen in between, so an outage reads as two lines in the log instead of a flood.
#[derive(Debug)]
pub struct OutageLog {
    what: std::borrow::Cow<'static, str>,
    down_since: Option<std::time::Instant>,
}

impl OutageLog {
    pub fn new(what: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            what: what.into(),
            down_since: None,
        }
    }

    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        if self.down_since.is_none() {
            self.down_since = Some(std::time::Instant::now());
            tracing::warn!("{} unavailable: {error}; retrying with backoff", self.what);
        } else {
            tracing::debug!("{} still unavailable: {error}", self.what);
        }
    }

    pub fn recovered(&mut self) {
        if let Some(since) = self.down_since.take() {
            tracing::info!(
                "{} recovered after {:.1}s",
                self.what,
                since.elapsed().as_secs_f64()
            );
        }
    }
}
