//! `/api/v1/admin/sync` (an admin's bearer token, the account active and an admin in `auth_db`
//! now, not only when the token was issued) and health; the purge of an erased person's
//! messages from the queues (`/api/v1/admin/sync/erasures/{id}/purge`) too.

use crate::verify_job::VerifyJobs;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::sync_status::{
    ConsumerFigures, DeadLetters, Discarded, ErasurePurge, PurgedQueue, Requeued, SyncStatus,
    VerifyRun,
};
use contract::topology::{self, ConsumerQueues};
use contract::Timestamp;
use ops::OpsError;
use platform::http::{ActiveCaller, ApiError, ApiQuery, Authenticated, CallerCopy, UnknownCaller};
use platform::jwt::JwtVerifier;
use serde::Deserialize;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

#[derive(Clone)]
pub struct AppState {
    /// `auth_db` as the operator reads it.
    pub auth: PgPool,
    /// The broker as the operator reaches it.
    pub amqp_url: Arc<str>,
    /// `TRUSTED_PUBLISHERS`: a dead letter first published by anyone the consumers do not trust
    /// is never requeued.
    pub trusted_publishers: Arc<Vec<String>>,
    pub verifier: Arc<JwtVerifier>,
    pub verify: Arc<VerifyJobs>,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Callers are checked against `auth_db` itself, the source of truth: a user it does not hold
/// does not exist (401, as deactivated), and its being unreachable is named.
impl CallerCopy for AppState {
    const LOOKUP: &'static str = "SELECT is_active, role FROM users WHERE id = $1";
    const UNKNOWN: UnknownCaller = UnknownCaller::Deactivated;
    const UNREACHABLE: Option<&'static str> = Some("auth_db cannot be reached");

    fn copy_db(&self) -> &PgPool {
        &self.auth
    }
}

/// An admin, by their token and by `auth_db` now: a token outlives a deactivation or a role
/// change by up to its lifetime, and these endpoints move dead letters.
pub struct Admin {
    /// Who: named in the security log when dead letters are discarded or kept back.
    pub id: contract::UserId,
}

impl Admin {
    /// Who asked, as the security log names them.
    fn who(&self) -> String {
        format!("admin {} (sync admin API)", self.id)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        // The token's role first: a non-admin's request costs no query.
        caller.require_admin()?;
        let caller = ActiveCaller::check(caller.0, state).await?;
        if caller.is_admin() {
            Ok(Self { id: caller.id })
        } else {
            Err(ApiError::forbidden("this action needs the admin role"))
        }
    }
}

/// How long each figure of `GET /api/v1/admin/sync` may take before it is reported unreadable.
const FIGURES_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router(state: AppState) -> Router {
    let bounded = Router::new()
        .route("/api/v1/admin/sync", get(status))
        .route("/api/v1/admin/sync/verify", post(start_verify))
        .route("/api/v1/admin/sync/dead-letters/{queue}", get(dead_letters))
        .merge(platform::http::health_routes(ready))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(15),
        ));
    // A requeue, a discard or an erasure's purge is not cut short: a large dead-letter queue
    // takes as long as it takes, and an answer cut off midway would hide how many moved (each is
    // confirmed before it is removed) or were removed.
    Router::new()
        .route(
            "/api/v1/admin/sync/dead-letters/{queue}/requeue",
            post(requeue),
        )
        .route(
            "/api/v1/admin/sync/dead-letters/{queue}/discard",
            post(discard),
        )
        .route(
            "/api/v1/admin/sync/erasures/{id}/purge",
            post(purge_erasure),
        )
        .merge(bounded)
        .fallback(platform::http::fallback_not_found)
        .with_state(state)
}

/// Ready when `auth_db` answers (the broker's state is a figure the page shows, not a reason
/// to stop showing the page).
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    platform::http::readiness(&state.auth, "auth_db", None, None).await
}

/// The registered consumers, each with its queues and whether it is required.
async fn registered(state: &AppState) -> Result<Vec<(ConsumerQueues, bool)>, OpsError> {
    ops::status::registered(&state.auth).await
}

/// `GET /api/v1/admin/sync`: every figure that can be read now; what cannot is named. Each
/// consumer also carries its last receipt ([`attach_receipts`]).
async fn status(_: Admin, State(state): State<AppState>) -> Json<SyncStatus> {
    // Bounded: a broker that accepts connections and never answers must not hold the page.
    let (outbox, consumers, receipts) = tokio::join!(
        tokio::time::timeout(FIGURES_TIMEOUT, ops::status::outbox(&state.auth)),
        tokio::time::timeout(FIGURES_TIMEOUT, async {
            let registered = registered(&state).await?;
            ops::status::consumers(&state.amqp_url, &registered).await
        }),
        tokio::time::timeout(FIGURES_TIMEOUT, ops::status::last_receipts(&state.auth)),
    );
    let late = |what: &str| OpsError::Unreachable(format!("{what} did not answer in time"));
    let outbox = outbox.unwrap_or_else(|_| Err(late("auth_db")));
    let consumers = consumers.unwrap_or_else(|_| Err(late("RabbitMQ")));
    let receipts = receipts.unwrap_or_else(|_| Err(late("auth_db")));
    let mut unavailable = Vec::new();
    let outbox = outbox
        .map_err(|e| unavailable.push(format!("outbox: {e}")))
        .ok();
    let mut consumers = consumers
        .map_err(|e| unavailable.push(format!("queues: {e}")))
        .ok();
    let receipts = receipts
        .map_err(|e| unavailable.push(format!("receipts: {e}")))
        .unwrap_or_default();
    if let Some(consumers) = consumers.as_mut() {
        attach_receipts(consumers, &receipts);
    }
    Json(SyncStatus {
        at: Timestamp::now(),
        outbox,
        consumers,
        verify: state.verify.snapshot(),
        unavailable,
    })
}

/// Each consumer's figures with its last receipt, when it sent one.
pub fn attach_receipts(consumers: &mut [ConsumerFigures], receipts: &[ops::status::LastReceipt]) {
    for figures in consumers {
        if let Some(last) = receipts.iter().find(|r| r.consumer == figures.consumer) {
            figures.last_receipt_at = Some(Timestamp::from(last.applied_at));
            figures.last_receipt_lag_ms = Some(last.lag_ms);
        }
    }
}

/// `POST /api/v1/admin/sync/verify`: 202 with the run started, or with the run already going.
async fn start_verify(_: Admin, State(state): State<AppState>) -> (StatusCode, Json<VerifyRun>) {
    let (run, _) = state.verify.start();
    (StatusCode::ACCEPTED, Json(run))
}

/// The dead-letter queues these endpoints open: each registered consumer's, and the unrouted
/// queue.
async fn known_queue(state: &AppState, queue: &str) -> Result<(), ApiError> {
    let consumers = registered(state).await.map_err(broker_error)?;
    let known =
        queue == topology::UNROUTED_QUEUE || consumers.iter().any(|(c, _)| c.dead_letter == queue);
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no dead-letter queue {queue}: one of {}",
            consumers
                .iter()
                .map(|(c, _)| c.dead_letter.as_str())
                .chain([topology::UNROUTED_QUEUE])
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn broker_error(e: OpsError) -> ApiError {
    match e {
        OpsError::Unreachable(what) => ApiError::unavailable(format!("cannot reach {what}")),
        OpsError::Failed(e) => ApiError::internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/admin/sync/dead-letters/{queue}?limit=`: the first messages (1 to 100, 10 by
/// default), left in place.
async fn dead_letters(
    _: Admin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetters>, ApiError> {
    known_queue(&state, &queue).await?;
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 100"));
    }
    let listed = ops::dlq::list(&state.amqp_url, &queue, limit, &state.trusted_publishers)
        .await
        .map_err(broker_error)?;
    Ok(Json(listed))
}

/// The dead-letter queue `queue`, opened for a requeue or a discard.
async fn open(state: &AppState, queue: &str, what: &str) -> Result<ops::dlq::Opened, ApiError> {
    known_queue(state, queue).await?;
    ops::dlq::open(
        &state.amqp_url,
        queue,
        &format!("portal sync admin {what}"),
        &state.trusted_publishers,
    )
    .await
    .map_err(broker_error)
}

/// `POST /api/v1/admin/sync/dead-letters/{queue}/requeue`: every message it holds back to its
/// consumer (each published with confirms before it is removed), except an untrusted
/// publisher's, which stay and are counted as kept back.
async fn requeue(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<Requeued>, ApiError> {
    let opened = open(&state, &queue, "requeue").await?;
    let of = opened.count;
    let moved = ops::dlq::requeue_all(&opened, &admin.who()).await;
    opened.close().await;
    let done = moved.map_err(ApiError::internal)?;
    let kept_back = u32::try_from(done.kept_back.len()).unwrap_or(u32::MAX);
    tracing::info!(
        queue,
        requeued = done.requeued,
        kept_back,
        of,
        "dead letters requeued from the sync admin API"
    );
    Ok(Json(Requeued {
        queue,
        requeued: done.requeued,
        of,
        kept_back,
    }))
}

/// `POST /api/v1/admin/sync/dead-letters/{queue}/discard`: every untrusted publisher's message
/// removed for good (the one way they leave; logged with the admin's id), the others left in
/// their order.
async fn discard(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<Discarded>, ApiError> {
    let opened = open(&state, &queue, "discard").await?;
    let of = opened.count;
    let gone = ops::dlq::discard(&opened, ops::dlq::Discard::Untrusted, &admin.who()).await;
    opened.close().await;
    let gone = gone.map_err(ApiError::internal)?;
    Ok(Json(Discarded {
        queue,
        discarded: u32::try_from(gone.len()).unwrap_or(u32::MAX),
        of,
    }))
}

/// `POST /api/v1/admin/sync/erasures/{id}/purge`: the erased person's messages removed from
/// every registered consumer's retry and dead-letter queues and the unrouted queue
/// (`ops::erasure::purge`: one security log line per queue, naming the admin), the others left
/// in their order. 404 when `auth_db` holds no erasure of them; the web portal's erase button
/// calls it right after the erasure.
async fn purge_erasure(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ErasurePurge>, ApiError> {
    let user: uuid::Uuid = id
        .parse()
        .map_err(|_| contract::ValidationError::new("id", "must be a UUID"))?;
    let done = ops::erasure::purge(&state.auth, &state.amqp_url, user, &admin.who())
        .await
        .map_err(|e| match e {
            ops::erasure::ErasureError::NotErased(_) => ApiError::not_found(e.to_string()),
            ops::erasure::ErasureError::Unreachable(what) => {
                ApiError::unavailable(format!("cannot reach {what}"))
            }
            ops::erasure::ErasureError::Failed(e) => ApiError::internal(e),
        })?;
    Ok(Json(ErasurePurge {
        user_id: contract::UserId(user),
        removed: done.removed(),
        queues: done
            .queues
            .into_iter()
            .map(|q| PurgedQueue {
                queue: q.queue,
                removed: q.removed,
                of: q.of,
            })
            .collect(),
        failed: done.failed,
        queues_purged_at: done.queues_purged_at.map(Timestamp::from),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::sync_status::QueueCounts;

    fn figures(consumer: &str) -> ConsumerFigures {
        let queue = |name: String| QueueCounts {
            name,
            messages: Some(0),
            consumers: Some(1),
            problem: None,
        };
        ConsumerFigures {
            consumer: consumer.into(),
            queue: queue(format!("{consumer}.user-events")),
            retrying: 0,
            dead_letter: queue(format!("{consumer}.user-events.dlq")),
            required: Some(true),
            last_receipt_at: None,
            last_receipt_lag_ms: None,
        }
    }

    /// Each consumer carries its last receipt; one that sent none yet carries none.
    #[test]
    fn each_consumer_carries_its_last_receipt() {
        let mut consumers = vec![figures("pharmacy"), figures("user-service")];
        let applied_at = chrono::Utc::now();
        let receipts = [ops::status::LastReceipt {
            consumer: "pharmacy".into(),
            applied_at,
            lag_ms: 42,
        }];
        attach_receipts(&mut consumers, &receipts);
        assert_eq!(consumers[0].last_receipt_lag_ms, Some(42));
        assert_eq!(
            consumers[0].last_receipt_at,
            Some(Timestamp::from(applied_at))
        );
        assert_eq!(consumers[1].last_receipt_lag_ms, None);
        let body = serde_json::to_value(&consumers).unwrap();
        assert_eq!(body[0]["lastReceiptLagMs"], 42);
        assert!(body[1].get("lastReceiptLagMs").is_none());
    }
}
