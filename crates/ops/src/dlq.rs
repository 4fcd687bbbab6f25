//! Dead-letter queues (and `user.events.unrouted`): look at what waits there, send it back, or
//! discard an untrusted publisher's messages, for `portal dlq` and the sync admin API alike.
//!
//! Messages are read with `basic.get` without acking; closing the channel puts back every
//! message not explicitly acked, so looking at a queue never loses what stays in it. A quorum
//! queue (every queue here) appends what comes back at its end, so to keep the order a look
//! takes every message the queue held, however few it shows: all come back, in order.
//! A requeue publishes a copy with confirms and only then acks the original: a message is never
//! in neither place.
//!
//! Trust: a requeued copy carries the operator's `user_id`, a publisher every consumer trusts,
//! so sending back whatever waits here would apply a forged event with one click. A message
//! that a consumer set aside as `untrusted-publisher`, or whose first publisher is not trusted
//! now ([`Opened::untrusted`]), is therefore never sent back: a requeue keeps it where it is and
//! says so, and it can only be discarded ([`discard`]), which is logged (`target: "security"`).
//! The copy of anything sent back names its first publisher in `x-original-user-id`, so a
//! consumer judges it again by that name too ([`contract::wire::TrustedPublishers`]).
//!
//! Who may write the headers read here: a dead-letter queue is written by its consumer (through
//! its set-aside exchange) and the operator; under the least-privilege setup no one else may, so
//! its `x-original-user-id` is taken as the consumer recorded it. A message in the unrouted queue
//! came straight from its publisher, whose header is believed only if it is itself trusted.

use crate::OpsError;
use anyhow::anyhow;
use contract::event::UNTRUSTED_PUBLISHER;
use contract::sync_status::{DeadLetter, DeadLetters};
use contract::topology;
use contract::wire::{header, TrustedPublishers, Untrusted};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use platform::amqp::{self, Outgoing, PublishError};
use platform::secret::redact_url;

/// Where a requeued message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A consumer's main queue, through the default exchange.
    Queue(String),
    /// The `user.events` exchange with the message's own routing key.
    Exchange,
}

/// Where the messages of `queue` go back to: a `*.dlq` to its consumer's main queue, the
/// unrouted queue to the exchange; anything else is not a queue this module empties.
pub fn target_for(queue: &str) -> anyhow::Result<Target> {
    if queue == topology::UNROUTED_QUEUE {
        return Ok(Target::Exchange);
    }
    queue
        .strip_suffix(".dlq")
        .map(|main| Target::Queue(main.to_owned()))
        .ok_or_else(|| {
            anyhow!(
                "{queue} is neither a dead-letter queue (*.dlq) nor {}",
                topology::UNROUTED_QUEUE
            )
        })
}

/// Why a message may never go back to its consumer: it is an untrusted publisher's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptBack {
    /// A consumer set it aside as `untrusted-publisher`: never sent back, whomever it names
    /// now (trusting that user later does not vouch for what was sent before).
    SetAsideAsUntrusted { publisher: Option<String> },
    /// Its first publisher is not trusted now.
    NotTrustedNow(Untrusted),
}

impl KeptBack {
    /// The broker user that first published it, when it named one.
    pub fn publisher(&self) -> Option<&str> {
        match self {
            Self::SetAsideAsUntrusted { publisher } => publisher.as_deref(),
            Self::NotTrustedNow(why) => why.publisher(),
        }
    }
}

impl std::fmt::Display for KeptBack {
    /// What `portal dlq list` and `/admin/sync` say about it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.publisher() {
            Some(p) => write!(f, "untrusted publisher {p:?}: can only be discarded"),
            None => write!(f, "untrusted publisher (no user_id): can only be discarded"),
        }
    }
}

/// A dead-letter queue opened for work: the connection, a confirming channel, and the number
/// of messages ready in it when it was opened.
pub struct Opened {
    pub connection: Connection,
    pub channel: Channel,
    pub count: u32,
    /// The queue.
    pub queue: String,
    /// The broker user of the connection: the `user_id` a requeued copy carries.
    pub publisher: String,
    /// Whom the consumers trust: a message first published by anyone else is never sent back.
    pub trusted: TrustedPublishers,
}

impl Opened {
    /// Closes the channel, then the connection (unacked messages go back to the queue).
    pub async fn close(self) {
        self.channel.close(200, "done").await.ok();
        self.connection.close(200, "done").await.ok();
    }

    /// Who first published `m` (`None`: it named no one). In the unrouted queue, its
    /// `user_id`, or `x-original-user-id` when that user is trusted. In a dead-letter queue, as
    /// its consumer recorded it in `x-original-user-id`: a consumer records it whenever the
    /// publisher named itself, so a letter it set aside without one named no one (its own
    /// `user_id` is the consumer's). A letter without a reason was put there by hand (an
    /// operator, a test), under its own `user_id`.
    pub fn first_publisher(&self, m: &BasicGetMessage) -> Option<String> {
        let headers = amqp::headers_of(&m.delivery.properties);
        let user_id = amqp::publisher_of(&m.delivery.properties);
        let recorded = amqp::header_text(&headers, header::ORIGINAL_USER_ID);
        if self.queue == topology::UNROUTED_QUEUE {
            self.trusted
                .first_publisher(user_id.as_deref(), recorded.as_deref())
                .map(str::to_owned)
        } else if amqp::header_text(&headers, header::ERROR_REASON).is_some() {
            recorded
        } else {
            recorded.or(user_id)
        }
    }

    /// Why `m` may never be sent back, or `None` when it may.
    pub fn untrusted(&self, m: &BasicGetMessage) -> Option<KeptBack> {
        let first = self.first_publisher(m);
        if header(m, header::ERROR_REASON) == UNTRUSTED_PUBLISHER {
            return Some(KeptBack::SetAsideAsUntrusted { publisher: first });
        }
        // Judged as the copy a requeue would send: the operator's user_id, naming `first`.
        let why = match &first {
            Some(first) => self.trusted.check(Some(&self.publisher), Some(first)).err(),
            None => Some(Untrusted::Unnamed),
        };
        why.map(KeptBack::NotTrustedNow)
    }

    /// The summary of the message at `position`.
    pub fn summary(&self, position: usize, m: &BasicGetMessage) -> DeadLetter {
        DeadLetter {
            position,
            reason: header(m, header::ERROR_REASON),
            detail: header(m, header::ERROR_DETAIL),
            routing_key: routing_key(m),
            first_failure: header(m, header::FIRST_FAILURE_TIME),
            bytes: m.delivery.data.len(),
            cannot_requeue: self.untrusted(m).map(|why| why.to_string()),
        }
    }

    /// The next message of the queue, unacked (`None` when it holds no more).
    async fn next(&self) -> Result<Option<BasicGetMessage>, lapin::Error> {
        self.channel
            .basic_get(&self.queue, BasicGetOptions { no_ack: false })
            .await
    }
}

/// Connects as `amqp_url`'s user and opens `queue` (an error naming it when it does not exist).
/// `trusted_publishers` are the names of `TRUSTED_PUBLISHERS`; the URL must name its broker
/// user, the `user_id` of whatever is sent back.
pub async fn open(
    amqp_url: &str,
    queue: &str,
    connection_name: &str,
    trusted_publishers: &[String],
) -> Result<Opened, OpsError> {
    let publisher = amqp::broker_user_of(amqp_url).map_err(anyhow::Error::from)?;
    let connection = amqp::connect(amqp_url, connection_name)
        .await
        .map_err(|e| OpsError::Unreachable(format!("RabbitMQ at {}: {e}", redact_url(amqp_url))))?;
    let opened = async {
        let ch = connection.create_channel().await?;
        let count = amqp::queue_depth(&ch, queue)
            .await
            .map_err(|e| anyhow!("no queue {queue}: {e}"))?;
        // The passive declare failing closes the channel; a fresh one for the work.
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        anyhow::Ok((channel, count))
    }
    .await;
    match opened {
        Ok((channel, count)) => Ok(Opened {
            connection,
            channel,
            count,
            queue: queue.to_owned(),
            // As the consumers trust: the system's own publishers, TRUSTED_PUBLISHERS, and the
            // operator's own broker user (which they trust too: `portal-operator` under the
            // least-privilege setup, their own user on a machine where everything is `guest`).
            trusted: TrustedPublishers::new(&publisher, trusted_publishers),
            publisher,
        }),
        Err(e) => {
            connection.close(200, "done").await.ok();
            Err(OpsError::Failed(e))
        }
    }
}

/// How many messages a look takes to keep the queue's order: every one it held when opened,
/// and at least `n`.
fn held(opened: &Opened, n: usize) -> usize {
    usize::try_from(opened.count).unwrap_or(usize::MAX).max(n)
}

/// The first `n` messages of the queue, unacked (they return when the channel closes). Every
/// other message the queue held when it was opened is taken too, unacked and not kept: had
/// only the first `n` been taken, they would come back behind the rest and a look would
/// reorder the queue (found by the sync admin API's tests: listing 1 of 3 turned [1, 2, 3]
/// into [2, 3, 1]).
pub async fn peek(opened: &Opened, n: usize) -> anyhow::Result<Vec<BasicGetMessage>> {
    let mut out = Vec::new();
    for _ in 0..held(opened, n) {
        match opened.next().await? {
            Some(m) if out.len() < n => out.push(m),
            // Dropped here, still unacked: it goes back, in its place, when the channel closes.
            Some(_) => {}
            None => break,
        }
    }
    Ok(out)
}

/// A text header of `m`, or `-`.
pub fn header(m: &BasicGetMessage, key: &str) -> String {
    amqp::header_text(&amqp::headers_of(&m.delivery.properties), key)
        .unwrap_or_else(|| "-".to_owned())
}

/// The routing key the message was first published with.
pub fn routing_key(m: &BasicGetMessage) -> String {
    match header(m, header::ORIGINAL_ROUTING_KEY).as_str() {
        "-" => m.delivery.routing_key.to_string(),
        key => key.to_owned(),
    }
}

/// The first `limit` messages of `queue`, how many it holds and how many of them are an
/// untrusted publisher's, leaving every one in place.
pub async fn list(
    amqp_url: &str,
    queue: &str,
    limit: usize,
    trusted_publishers: &[String],
) -> Result<DeadLetters, OpsError> {
    let opened = open(amqp_url, queue, "portal dead letters", trusted_publishers).await?;
    let listed = async {
        let (mut first, mut untrusted) = (Vec::new(), 0);
        for position in 1..=held(&opened, limit) {
            let Some(m) = opened.next().await? else {
                break;
            };
            untrusted += u32::from(opened.untrusted(&m).is_some());
            if first.len() < limit {
                first.push(opened.summary(position, &m));
            }
            // Every message stays unacked: all come back, in order, when the channel closes.
        }
        anyhow::Ok((first, untrusted))
    }
    .await;
    let messages = opened.count;
    opened.close().await;
    let (first, untrusted) = listed?;
    Ok(DeadLetters {
        queue: queue.to_owned(),
        messages,
        untrusted,
        first,
    })
}

/// Publishes a copy of `m` to `target` as `publisher`, naming `first` (who first published
/// it) in `x-original-user-id` whatever the message said, so the consumer judges the copy by
/// the same name this module did.
async fn republish(
    ch: &Channel,
    m: &BasicGetMessage,
    target: &Target,
    publisher: &str,
    first: &str,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    for (k, v) in amqp::headers_of(&m.delivery.properties).inner() {
        if !header::CLEARED_ON_REQUEUE.contains(&k.as_str()) {
            headers.insert(k.clone(), v.clone());
        }
    }
    // The operator vouches for what it sends back: the copy carries the operator's own
    // user_id (the broker allows no other); who first published it stays in a header.
    headers.insert(header::ORIGINAL_USER_ID.into(), amqp::text(first));
    let properties = m
        .delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(contract::wire::PERSISTENT)
        .with_user_id(publisher.into());
    let key = match target {
        Target::Queue(q) => q.clone(),
        Target::Exchange => routing_key(m),
    };
    let message = Outgoing {
        exchange: match target {
            Target::Queue(_) => "",
            Target::Exchange => topology::EXCHANGE,
        },
        routing_key: &key,
        body: &m.delivery.data,
        properties,
    };
    match amqp::publish_confirmed(ch, vec![message])
        .await
        .require_all()
    {
        Ok(_) => Ok(()),
        Err(PublishError::Unroutable(_)) => {
            Err(anyhow!("no queue took the message (routing key {key})"))
        }
        Err(e) => Err(e.into()),
    }
}

/// A message a requeue did not send back, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its place in the queue when the requeue started (1 = oldest).
    pub position: usize,
    pub why: KeptBack,
}

/// Sends `m` back to where it came from (a copy published with confirms, then the original
/// acked), unless it is an untrusted publisher's: then it is left unacked (it returns to the
/// queue when the channel closes) and the error says why.
pub async fn requeue(opened: &Opened, m: &BasicGetMessage) -> Result<(), RequeueError> {
    if let Some(why) = opened.untrusted(m) {
        return Err(RequeueError::Untrusted(why));
    }
    let target = target_for(&opened.queue)?;
    // Trusted, so it named a first publisher (one that named no one is never trusted).
    let first = opened
        .first_publisher(m)
        .ok_or_else(|| RequeueError::Untrusted(KeptBack::NotTrustedNow(Untrusted::Unnamed)))?;
    republish(&opened.channel, m, &target, &opened.publisher, &first).await?;
    m.delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Why one message was not requeued.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// It is an untrusted publisher's: it stays, and can only be discarded.
    #[error("{0}")]
    Untrusted(KeptBack),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<lapin::Error> for RequeueError {
    fn from(e: lapin::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// What [`requeue_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Messages sent back.
    pub requeued: u32,
    /// Messages left in the queue: untrusted publishers'.
    pub kept_back: Vec<Kept>,
}

/// Requeues every message the queue held when it was opened, except an untrusted publisher's,
/// which stay in the queue, in their order. Bounded by that count, so a message that comes
/// straight back (still invalid) is not requeued again and again. `by` says who asked (the
/// `target: "security"` line when something was kept back).
pub async fn requeue_all(opened: &Opened, by: &str) -> anyhow::Result<Requeued> {
    let mut done = Requeued::default();
    for position in 1..=held(opened, 0) {
        let Some(m) = opened.next().await? else {
            break;
        };
        match requeue(opened, &m).await {
            Ok(()) => done.requeued += 1,
            Err(RequeueError::Untrusted(why)) => done.kept_back.push(Kept { position, why }),
            Err(RequeueError::Failed(e)) => return Err(e),
        }
    }
    if !done.kept_back.is_empty() {
        let publishers = publishers(done.kept_back.iter().map(|k| &k.why));
        tracing::warn!(
            target: "security",
            event = "untrusted_dead_letters_kept_back",
            by,
            queue = %opened.queue,
            kept_back = done.kept_back.len(),
            requeued = done.requeued,
            publishers = %publishers,
            "an untrusted publisher's dead letters were not requeued: they can only be discarded"
        );
    }
    Ok(done)
}

/// The distinct publishers of `why`, for a log line (`-` for one that named no one).
fn publishers<'a>(why: impl Iterator<Item = &'a KeptBack>) -> String {
    let names: std::collections::BTreeSet<&str> =
        why.map(|w| w.publisher().unwrap_or("-")).collect();
    names.into_iter().collect::<Vec<_>>().join(",")
}

/// Which messages a discard removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// The one at this place (1 = oldest), whatever it is.
    Position(usize),
    /// Every untrusted publisher's (those a requeue keeps back).
    Untrusted,
}

/// A message removed by [`discard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub position: usize,
    /// Its `x-error-reason`, `-` when not said.
    pub reason: String,
    /// Its AMQP `message-id` (the event id, for the relay's events), `-` when not said.
    pub message_id: String,
    /// Why it could not have been requeued, if it could not.
    pub untrusted: Option<KeptBack>,
}

/// Removes the messages `which` names for good (acked without a copy anywhere); every other
/// message stays, in its order. Logged with `by` (who asked: an operator's OS and broker
/// user, an admin's id) as a `target: "security"` line naming the queue, how many, the
/// positions, message ids and first publishers: discarding is the one way an untrusted
/// publisher's message leaves a dead-letter queue, so it leaves a trace.
pub async fn discard(opened: &Opened, which: Discard, by: &str) -> anyhow::Result<Vec<Discarded>> {
    match which {
        Discard::Position(0) => return Err(anyhow!("positions start at 1")),
        Discard::Position(n) if n > held(opened, 0) => {
            return Err(anyhow!(
                "no message {n}: {} holds {}",
                opened.queue,
                opened.count
            ))
        }
        _ => {}
    }
    let mut gone = Vec::new();
    for position in 1..=held(opened, 0) {
        let Some(m) = opened.next().await? else {
            break;
        };
        // Every message is taken, to keep the order: those not chosen come back, in their
        // place, when the channel closes.
        let untrusted = opened.untrusted(&m);
        let chosen = match which {
            Discard::Position(n) => position == n,
            Discard::Untrusted => untrusted.is_some(),
        };
        if chosen {
            m.delivery.acker.ack(BasicAckOptions::default()).await?;
            gone.push(Discarded {
                position,
                reason: header(&m, header::ERROR_REASON),
                message_id: m
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                untrusted,
            });
        }
    }
    if let (Discard::Position(n), true) = (which, gone.is_empty()) {
        return Err(anyhow!("no message {n}: {} holds fewer", opened.queue));
    }
    let joined =
        |f: &dyn Fn(&Discarded) -> String| gone.iter().map(f).collect::<Vec<_>>().join(",");
    tracing::warn!(
        target: "security",
        event = "dead_letters_discarded",
        by,
        queue = %opened.queue,
        discarded = gone.len(),
        of = opened.count,
        untrusted = gone.iter().filter(|d| d.untrusted.is_some()).count(),
        positions = %joined(&|d| d.position.to_string()),
        message_ids = %joined(&|d| d.message_id.clone()),
        publishers = %publishers(gone.iter().filter_map(|d| d.untrusted.as_ref())),
        "dead letters discarded"
    );
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_back_letter_says_whose_it_is_and_that_it_can_only_be_discarded() {
        let set_aside = KeptBack::SetAsideAsUntrusted {
            publisher: Some("mallory".into()),
        };
        assert_eq!(
            set_aside.to_string(),
            "untrusted publisher \"mallory\": can only be discarded"
        );
        let unnamed = KeptBack::NotTrustedNow(Untrusted::Unnamed);
        assert_eq!(unnamed.publisher(), None);
        assert_eq!(
            unnamed.to_string(),
            "untrusted publisher (no user_id): can only be discarded"
        );
        let not_now = KeptBack::NotTrustedNow(Untrusted::FirstPublisher {
            by: "portal-operator".into(),
            first: "legacy".into(),
        });
        assert_eq!(not_now.publisher(), Some("legacy"));
        assert_eq!(
            publishers([&set_aside, &unnamed, &not_now, &set_aside].into_iter()),
            "-,legacy,mallory"
        );
    }

    #[test]
    fn dead_letters_go_back_to_their_consumer_and_unrouted_events_to_the_exchange() {
        assert_eq!(
            target_for("user-service.user-events.dlq").ok(),
            Some(Target::Queue("user-service.user-events".into()))
        );
        assert_eq!(
            target_for(topology::UNROUTED_QUEUE).ok(),
            Some(Target::Exchange)
        );
        assert!(target_for("user-service.user-events").is_err());
    }
}
