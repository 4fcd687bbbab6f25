//! Self-service endpoints: register, login, refresh and logout (sessions), who-am-I, change
//! password, and the public keys (JWKS) other services verify tokens with.

use super::AppState;
use crate::mfa;
use crate::password;
use crate::registrations;
use crate::sessions::{self, Refreshed};
use crate::store::{self, UserChange};
use crate::throttle::{self, Attempt, Scope};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::api::{
    ChangePasswordRequest, LoginRequest, LoginResponse, NewProfile, RefreshRequest,
    RegisterRequest, RegistrationReceived, SecondFactorChallenge,
};
use contract::{Email, PersonName, PhoneNumber, Role, UserSnapshot, ValidationError};
use platform::client_addr::ClientAddr;
use platform::http::{ApiError, ApiJson, PendingPasswordChange};

pub fn router() -> Router<AppState> {
    // Bodies on these routes are a few fields; anything larger is refused before it is read.
    let small = DefaultBodyLimit::max(4 * 1024);
    Router::new()
        .route("/register", post(register).layer(small))
        .route("/login", post(login).layer(small))
        .route("/refresh", post(refresh).layer(small))
        .route("/logout", post(logout).layer(small))
        .route("/me", get(me))
        .route("/change-password", post(change_password).layer(small))
        .route("/.well-known/jwks.json", get(jwks))
}

/// The validated parts shared by self-registration and admin creation.
pub(super) struct Profile {
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub role: Role,
    pub phone_number: Option<PhoneNumber>,
}

impl Profile {
    pub fn parse(p: &NewProfile) -> Result<Self, ApiError> {
        Ok(Self {
            email: Email::parse(&p.email)?,
            first_name: PersonName::parse("firstName", &p.first_name)?,
            last_name: PersonName::parse("lastName", &p.last_name)?,
            role: p.role.parse()?,
            phone_number: p
                .phone_number
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(PhoneNumber::parse)
                .transpose()?,
        })
    }

    pub fn into_new_user(
        self,
        password_hash: String,
        is_active: bool,
        must_change_password: bool,
    ) -> store::NewUser {
        store::NewUser {
            email: self.email,
            password_hash,
            first_name: self.first_name,
            last_name: self.last_name,
            role: self.role,
            phone_number: self.phone_number,
            is_active,
            must_change_password,
        }
    }
}

/// Stores a request for an account; an admin approves it with a role and a temporary password
/// ([`crate::registrations`]). The answer is the same whether the email has an account or a
/// request already, or too many wait (each logged), so the endpoint does not tell who works
/// here.
async fn register(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegistrationReceived>), ApiError> {
    if !state.security.registration_enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "registration_disabled",
            "self-registration is turned off; ask an administrator for an account",
        ));
    }
    let request = registrations::NewRequest::parse(&req)?;
    match registrations::store(&state.db, &request).await? {
        registrations::Stored::Received(id) => {
            tracing::info!(target: "security", event = "registration_requested", registration_id = %id, %client, "request for an account received");
        }
        registrations::Stored::AlreadyKnown => {
            tracing::warn!(target: "security", event = "registration_for_known_email", %client, "request for an account whose email has an account or a request");
        }
        registrations::Stored::Full => {
            tracing::warn!(target: "security", event = "registration_dropped", %client, pending = registrations::MAX_PENDING, "request for an account dropped: too many wait for an admin");
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RegistrationReceived {
            status: "received".to_owned(),
            message: "request received; an administrator approves new accounts and gives you a \
                      temporary password"
                .to_owned(),
        }),
    ))
}

/// Wrong password, unknown email and inactive account get the same answer, so the endpoint does
/// not tell an attacker which accounts exist or are disabled. Every attempt is counted by the
/// throttle first: a locked account is refused (429) without checking the password at all.
async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if req.password.chars().count() > password::MAX_LENGTH {
        return Err(ValidationError::new(
            "password",
            format!("must be at most {} characters", password::MAX_LENGTH),
        )
        .into());
    }
    let account = throttle::account_key(&req.email);
    let source = throttle::source_key(client.0);
    let decision = throttle::attempt(&state.db, &account, &source, &state.security.login).await?;
    state
        .login_decisions
        .with_label_values(&[decision.decision()])
        .inc();
    let n = match decision {
        Attempt::Locked {
            scope,
            left,
            just_now,
        } => {
            // A lock is logged once, when it is set; the refusals during it are counted in the
            // metric and the debug log only (a flood would otherwise write a line per guess).
            // The account is named by a reference, never by the input as typed.
            let account_ref = throttle::account_ref(&account);
            if just_now {
                tracing::warn!(target: "security", event = "lockout", decision = scope.as_str(), account_ref, %client, lock_s = left.as_secs(), "login locked for this address after repeated failures");
            } else {
                tracing::debug!(target: "security", event = "login_locked", decision = scope.as_str(), account_ref, %client, retry_after_s = left.as_secs(), "login refused: locked for this address");
            }
            return Err(ApiError::too_many_requests(
                match scope {
                    Scope::Pair => {
                        "too many failed logins for this account from your address; try again later"
                    }
                    Scope::Source => "too many failed logins from your address; try again later",
                },
                left,
            ));
        }
        Attempt::Allowed { n, slowed, known } => {
            if !slowed.is_zero() {
                // Distributed guessing at this account: an address it never signed in from
                // waits before its password is checked; one it did sign in from does not.
                tracing::debug!(target: "security", event = "login_slowed", account_ref = throttle::account_ref(&account), %client, known, delay_ms = slowed.as_millis() as u64, "login slowed: many failures at this account");
                tokio::time::sleep(slowed).await;
            }
            n
        }
    };
    // A full hashing queue answers 503 and gives the attempt back: a flood at other accounts
    // must not lock out whoever tries to log in meanwhile. A locked attempt (above) needs no
    // place in the queue at all.
    let slot = match password::Slot::reserve() {
        Ok(slot) => slot,
        Err(busy) => {
            throttle::refund(&state.db, &account, &source).await?;
            return Err(busy.into());
        }
    };
    let user = match Email::parse(&req.email) {
        Ok(email) => store::find_by_email(&state.db, &email).await?,
        Err(_) => None,
    };
    let stored_hash = user.as_ref().map_or_else(
        || state.dummy_hash.as_str().to_owned(),
        |u| u.password_hash.clone(),
    );
    // A hash made with older parameters is re-hashed once the password is known to be right.
    let outdated = user
        .as_ref()
        .filter(|u| password::is_outdated(&u.password_hash))
        .map(|_| req.password.clone());
    let verdict = password::verify_in(slot, req.password, stored_hash).await?;
    let used = |u: &store::UserRow| {
        tracing::warn!(target: "security", event = "login_spent_temporary", user_id = %u.id, %client, "login refused: temporary password already used");
        ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "temporary_password_used",
            "this temporary password has been used already; ask an administrator to reset it",
        )
    };
    let user = match user {
        Some(u) if verdict.matches() && u.is_active => u,
        // Only the right password learns that it has expired or been used.
        Some(u) if verdict == password::Verdict::Expired && u.is_active => {
            tracing::warn!(target: "security", event = "login_expired_temporary", user_id = %u.id, %client, "login refused: temporary password expired");
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "temporary_password_expired",
                "this temporary password has expired; ask an administrator to reset it",
            ));
        }
        Some(u) if verdict == password::Verdict::Spent && u.is_active => return Err(used(&u)),
        user => {
            tracing::warn!(target: "security", event = "login_failed", user_id = ?user.map(|u| u.id), %client, attempt = n, "login failed");
            tokio::time::sleep(state.security.login.delay_after(n)).await;
            return Err(ApiError::unauthorized("invalid email or password"));
        }
    };
    // Hashed before the transaction, so no connection is held while it waits for argon2; a
    // busy hashing queue only postpones the re-hash to a later login.
    let rehashed = match outdated {
        Some(plain) => match password::hash(plain).await {
            Ok(hash) => Some(hash),
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "password not re-hashed this time");
                None
            }
        },
        None => None,
    };
    let second = mfa::needed(
        &state.db,
        state.security.mfa,
        user.id,
        user.role()? == Role::Admin,
    )
    .await?;
    if second != mfa::Needed::Nothing {
        // The password was right: the address is known to the account, and the sign-in waits
        // for its second factor. A temporary password is spent only by the second step.
        let mut seen = user.password_hash.clone();
        if let Some(hash) = rehashed {
            if store::replace_password_hash(&state.db, user.id, &user.password_hash, &hash).await? {
                seen = hash;
            }
        }
        throttle::succeeded(&state.db, &account, &source).await?;
        let challenge = mfa::issue_challenge(&state.db, user.id, &seen)
            .await
            .map_err(ApiError::internal)?;
        tracing::info!(target: "security", event = "login_second_factor_asked", user_id = %user.id, %client, status = second.status(), "password right; waiting for the second factor");
        return Ok((
            StatusCode::ACCEPTED,
            Json(SecondFactorChallenge {
                status: second.status().to_owned(),
                challenge,
                expires_in: mfa::CHALLENGE_TTL.as_secs() as i64,
            }),
        )
            .into_response());
    }
    // A temporary password logs in once: this login spends it in the transaction that starts
    // its session (a failure in between leaves it unspent), and of two logins at once only one
    // can.
    let mut tx = state.db.begin().await?;
    if password::temporary::is_temporary(&user.password_hash)
        && !store::spend_temporary_password(&mut *tx, user.id, &user.password_hash).await?
    {
        return Err(used(&user));
    }
    if let Some(hash) = rehashed {
        // False when the password changed meanwhile: the newer one stays.
        if store::replace_password_hash(&mut *tx, user.id, &user.password_hash, &hash).await? {
            tracing::info!(target: "security", event = "password_rehashed", user_id = %user.id, "password re-hashed with the current parameters");
        }
    }
    let session = sessions::start(&mut *tx, user.id, state.security.session_ttl).await?;
    tx.commit().await?;
    throttle::succeeded(&state.db, &account, &source).await?;
    tracing::info!(target: "security", event = "login", user_id = %user.id, %client, "login succeeded");
    Ok(Json(tokens(&state, &user, session)?).into_response())
}

/// An access token for `user` and the session's next refresh token.
pub(super) fn tokens(
    state: &AppState,
    user: &store::UserRow,
    session: sessions::Issued,
) -> Result<LoginResponse, ApiError> {
    let access_token = state
        .keys
        .sign_for(
            user.id,
            &user.email,
            user.role()?,
            user.must_change_password,
        )
        .map_err(ApiError::internal)?;
    Ok(LoginResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.keys.ttl_seconds(),
        refresh_token: session.token,
        session_expires_at: session
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        user: user.snapshot()?,
        recovery_codes: None,
    })
}

/// Exchanges a refresh token for a new access token and the next refresh token. A token used
/// before ends its whole session: someone else holds a copy.
async fn refresh(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let refused = || ApiError::unauthorized("invalid, expired or revoked refresh token");
    match sessions::refresh(&state.db, &req.refresh_token).await? {
        Refreshed::Rotated { user_id, next } => {
            // Deactivation revokes sessions in its transaction; checked again all the same.
            let user = current_user(&state, user_id).await?;
            Ok(Json(tokens(&state, &user, next)?))
        }
        Refreshed::Reused { user_id, family_id } => {
            tracing::warn!(target: "security", event = "refresh_token_reuse", %user_id, %family_id, %client, "a used refresh token was presented again: the session is revoked");
            Err(refused())
        }
        Refreshed::Refused => Err(refused()),
    }
}

/// Ends the session of the refresh token (idempotent: an unknown token is not an error, so
/// the answer tells nothing about tokens).
async fn logout(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    if let Some(user_id) = sessions::logout(&state.db, &req.refresh_token).await? {
        tracing::info!(target: "security", event = "logout", %user_id, %client, "session ended");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/auth/.well-known/jwks.json`: the public keys tokens are signed with, the
/// current one first; cacheable for a minute (a rotation is picked up by verifiers that meet an
/// unknown key id anyway).
async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(platform::jwt::jwks(&state.keys.published())),
    )
        .into_response()
}

async fn me(
    State(state): State<AppState>,
    PendingPasswordChange(claims): PendingPasswordChange,
) -> Result<Json<UserSnapshot>, ApiError> {
    let user = current_user(&state, claims.sub).await?;
    Ok(Json(user.snapshot()?))
}

/// The caller's account as `auth_db` holds it now: a token outlives a deactivation by up to its
/// lifetime, so an account that no longer exists or is inactive is refused here.
pub(super) async fn current_user(
    state: &AppState,
    id: uuid::Uuid,
) -> Result<store::UserRow, ApiError> {
    match store::find_by_id(&state.db, id).await? {
        None => Err(ApiError::unauthorized(
            "the account of this token no longer exists",
        )),
        Some(user) if !user.is_active => Err(ApiError::unauthorized("this account is deactivated")),
        Some(user) => Ok(user),
    }
}

/// The caller changes their own password; this clears `mustChangePassword` and, like every
/// write of a user, bumps its version and emits `user.updated`.
async fn change_password(
    State(state): State<AppState>,
    PendingPasswordChange(claims): PendingPasswordChange,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<Json<UserSnapshot>, ApiError> {
    if req.new_password == req.current_password {
        return Err(
            ValidationError::new("newPassword", "must differ from the current password").into(),
        );
    }
    let user = current_user(&state, claims.sub).await?;
    password::check_policy(
        "newPassword",
        &req.new_password,
        password::Owner {
            email: &user.email,
            first_name: &user.first_name,
            last_name: &user.last_name,
        },
    )?;
    let verdict = if req.current_password.chars().count() > password::MAX_LENGTH {
        password::Verdict::Wrong
    } else {
        password::verify(req.current_password, user.password_hash.clone()).await?
    };
    match verdict {
        // Spent by the login that started this session: it may still set the new password.
        password::Verdict::Matches | password::Verdict::Spent => {}
        password::Verdict::Expired => {
            return Err(ValidationError::new(
                "currentPassword",
                "is a temporary password that has expired; ask an administrator for a new one",
            )
            .into())
        }
        password::Verdict::Wrong => {
            tracing::warn!(target: "security", event = "change_password_failed", user_id = %user.id, "change-password with a wrong current password");
            return Err(
                ValidationError::new("currentPassword", "is not the current password").into(),
            );
        }
    }
    let hash = password::hash(req.new_password).await?;
    let change = UserChange::Password {
        hash,
        must_change_password: false,
    };
    let mut tx = state.db.begin().await?;
    let outcome = store::change_user(&mut tx, claims.sub, change).await?;
    tx.commit().await?;
    Ok(Json(outcome.user().snapshot()?))
}
