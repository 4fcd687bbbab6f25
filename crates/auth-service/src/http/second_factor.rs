//! The second factor's routes ([`crate::mfa`]): the login's second step and enrolment at
//! sign-in (no token yet, a challenge instead), enrolment and status for a signed-in user, and
//! an admin's reset of another admin's factor.

use super::auth::{current_user, tokens};
use super::AppState;
use crate::mfa::{self, Checked, EnrolError};
use crate::password;
use crate::sessions;
use crate::store;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::api::{
    ConfirmSecondFactorRequest, EnrolmentRequest, LoginResponse, RecoveryCodes,
    SecondFactorEnrolment, SecondFactorRequest, SecondFactorStatus,
};
use contract::{Role, ValidationError};
use platform::client_addr::ClientAddr;
use platform::http::{ApiError, ApiJson, Authenticated};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    let small = DefaultBodyLimit::max(4 * 1024);
    Router::new()
        .route("/login/second-factor", post(second_step).layer(small))
        .route(
            "/login/second-factor/enrol",
            post(enrol_at_login).layer(small),
        )
        .route("/second-factor", get(status).post(enrol))
        .route("/second-factor/confirm", post(confirm).layer(small))
        .route(
            "/admin/users/{id}/second-factor/reset",
            post(reset_by_admin),
        )
}

impl From<EnrolError> for ApiError {
    fn from(e: EnrolError) -> Self {
        match e {
            e @ EnrolError::AlreadyEnrolled => ApiError::conflict(e.to_string()),
            EnrolError::Db(e) => e.into(),
            EnrolError::Other(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

fn enrolment(e: mfa::Enrolment) -> Json<SecondFactorEnrolment> {
    Json(SecondFactorEnrolment {
        secret: e.secret,
        otpauth_uri: e.otpauth_uri,
    })
}

fn expired() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "challenge_expired",
        "this sign-in has expired or had too many wrong codes; sign in again",
    )
}

fn locked(left: std::time::Duration) -> ApiError {
    ApiError::too_many_requests(
        "too many wrong codes for this account; try again later",
        left,
    )
}

/// `POST /login/second-factor`: the challenge of a right password and a code (from the app,
/// or a recovery code) start the session. Wrong codes count against the challenge and the
/// user; a temporary password is spent here, not at the first step.
async fn second_step(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<SecondFactorRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let challenge = mfa::find_challenge(&state.db, &req.challenge)
        .await?
        .ok_or_else(expired)?;
    if let Some(left) = mfa::user_locked(&state.db, challenge.user_id).await? {
        return Err(locked(left));
    }
    let user = current_user(&state, challenge.user_id).await?;
    let mut tx = state.db.begin().await?;
    let checked = mfa::check(&mut tx, user.id, &user.email, &req.code)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    if checked == Checked::Refused {
        drop(tx);
        tracing::warn!(target: "security", event = "second_factor_failed", user_id = %user.id, %client, "sign-in refused: wrong or used second-factor code");
        if let Some(left) = mfa::failed(&state.db, &challenge).await? {
            tracing::warn!(target: "security", event = "second_factor_locked", user_id = %user.id, %client, lock_s = left.as_secs(), "second step locked after repeated wrong codes");
            return Err(locked(left));
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "second_factor_refused",
            "the code is wrong or was used already",
        ));
    }
    // The password the first step checked must still be the account's: a reset or a change
    // since then ends this sign-in; a temporary password is spent now, once.
    let password_stands = if password::temporary::is_temporary(&challenge.password_seen) {
        store::spend_temporary_password(&mut *tx, user.id, &challenge.password_seen).await?
    } else {
        user.password_hash == challenge.password_seen
    };
    if !password_stands || !mfa::spend_challenge(&mut tx, &challenge).await? {
        return Err(expired());
    }
    let session = sessions::start(&mut *tx, user.id, state.security.session_ttl).await?;
    tx.commit().await?;
    let mut answer = tokens(&state, &user, session)?;
    match checked {
        Checked::Totp {
            recovery_codes: Some(codes),
        } => {
            tracing::info!(target: "security", event = "second_factor_enrolled", user_id = %user.id, %client, "second factor enrolled at sign-in");
            answer.recovery_codes = Some(codes);
        }
        Checked::Recovery { left } => {
            tracing::warn!(target: "security", event = "recovery_code_used", user_id = %user.id, %client, left, "signed in with a recovery code");
        }
        _ => {}
    }
    tracing::info!(target: "security", event = "login", user_id = %user.id, %client, second_factor = true, "login succeeded");
    Ok(Json(answer))
}

/// `POST /login/second-factor/enrol`: the secret for a sign-in that must enrol first (an admin
/// under ADMIN_MFA=required without a factor); a code made with it then completes the sign-in.
async fn enrol_at_login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrolmentRequest>,
) -> Result<Json<SecondFactorEnrolment>, ApiError> {
    let challenge = mfa::find_challenge(&state.db, &req.challenge)
        .await?
        .ok_or_else(expired)?;
    let user = current_user(&state, challenge.user_id).await?;
    Ok(enrolment(
        mfa::begin_enrolment(&state.db, user.id, &user.email).await?,
    ))
}

async fn status(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<SecondFactorStatus>, ApiError> {
    Ok(Json(SecondFactorStatus {
        enrolled: mfa::is_enrolled(&state.db, caller.0.sub).await?,
        required: caller.0.role == Role::Admin && state.security.mfa == mfa::MfaPolicy::Required,
        recovery_codes_left: mfa::recovery_codes_left(&state.db, caller.0.sub).await?,
    }))
}

/// `POST /second-factor`: a signed-in user starts enrolling (ADMIN_MFA=optional lets anyone).
async fn enrol(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<SecondFactorEnrolment>, ApiError> {
    if state.security.mfa == mfa::MfaPolicy::Off {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "second_factor_off",
            "second factors are turned off here (ADMIN_MFA=off)",
        ));
    }
    let user = current_user(&state, caller.0.sub).await?;
    Ok(enrolment(
        mfa::begin_enrolment(&state.db, user.id, &user.email).await?,
    ))
}

/// `POST /second-factor/confirm`: a code made with the secret being enrolled confirms it; the
/// answer holds the recovery codes, shown only here.
async fn confirm(
    State(state): State<AppState>,
    client: ClientAddr,
    caller: Authenticated,
    ApiJson(req): ApiJson<ConfirmSecondFactorRequest>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let user = current_user(&state, caller.0.sub).await?;
    if mfa::is_enrolled(&state.db, user.id).await? {
        return Err(EnrolError::AlreadyEnrolled.into());
    }
    let mut tx = state.db.begin().await?;
    match mfa::check(&mut tx, user.id, &user.email, &req.code)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?
    {
        Checked::Totp {
            recovery_codes: Some(codes),
        } => {
            tx.commit().await?;
            tracing::info!(target: "security", event = "second_factor_enrolled", user_id = %user.id, %client, "second factor enrolled");
            Ok(Json(RecoveryCodes {
                recovery_codes: codes,
            }))
        }
        _ => Err(ValidationError::new(
            "code",
            "is not the current code of the secret being enrolled (start the enrolment first)",
        )
        .into()),
    }
}

/// `POST /admin/users/{id}/second-factor/reset`: another admin's (or any user's) factor and
/// recovery codes go, their sessions end, and the act is recorded; they enrol again at their
/// next sign-in. Nobody resets their own: that would let a stolen session drop the factor.
async fn reset_by_admin(
    State(state): State<AppState>,
    caller: Authenticated,
    client: ClientAddr,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::admin::require_current_admin(&state, &caller).await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::from(ValidationError::new("id", "must be a UUID")))?;
    if id == caller.0.sub {
        return Err(ApiError::conflict(
            "an admin cannot reset their own second factor; ask another admin",
        ));
    }
    store::find_by_id(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let mut tx = state.db.begin().await?;
    let had = mfa::reset(&mut tx, id).await?;
    let sessions_ended = sessions::revoke_user(&mut tx, id).await?;
    mfa::record(&mut *tx, "second_factor_reset", id, Some(caller.0.sub)).await?;
    tx.commit().await?;
    tracing::warn!(target: "security", event = "second_factor_reset", user_id = %id, by = %caller.0.sub, %client, had_factor = had, sessions_ended, "second factor reset by an admin");
    Ok(StatusCode::NO_CONTENT)
}
