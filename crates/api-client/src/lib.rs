//! A typed client of the portal's HTTP API, usually through the gateway: every answer is one of
//! the contract's types ([`contract::api`], [`contract::UserSnapshot`]), every refusal an
//! [`Error::Refused`] carrying the API's own JSON error. `portal users`, the tests, the benchmark
//! and the chaos load all talk to the API through it.

use contract::api::{
    Appointment, ApproveRegistrationRequest, AuditEntry, BulkCreateRequest, BulkCreateResponse,
    ChangePasswordRequest, ConfirmSecondFactorRequest, CreateUserRequest, CreateUserResponse,
    CreatedScimToken, DirectoryEntry, EnrolmentRequest, Erasure, ErasureRequest, ErrorBody,
    LoginRequest, LoginResponse, NewAppointment, Offboarding, OffboardingRequest, Page,
    Propagation, RecoveryCodes, RefreshRequest, RegisterRequest, Registration,
    RegistrationReceived, RoleRequest, ScimToken, ScimTokenRequest, SecondFactorChallenge,
    SecondFactorEnrolment, SecondFactorRequest, SecondFactorStatus, UpdateUserRequest,
};
use contract::sync_status::{
    DeadLetters, Discarded, ErasurePurge, Requeued, SyncStatus, VerifyRun,
};
use contract::UserSnapshot;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use uuid::Uuid;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer: the API is down, the address is wrong, or it timed out.
    #[error("cannot reach the API at {base}: {source}")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error status; `body` is its JSON error (or a stand-in when the
    /// answer was not one).
    #[error("{} (HTTP {})", body.message, status.as_u16())]
    Refused { status: StatusCode, body: ErrorBody },
    /// A success answer that is not what the contract says.
    #[error("unexpected answer to {what}: {detail}")]
    Unexpected { what: String, detail: String },
    /// A base URL or user reference that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The password was right and a second factor must follow: the challenge for
    /// [`ApiClient::login_second_factor`] (after [`ApiClient::enrol_at_login`] when
    /// `status` is `second_factor_enrolment_required`).
    #[error("this account signs in with a second factor ({})", .0.status)]
    SecondFactor(SecondFactorChallenge),
}

/// What `POST /api/v1/auth/login` answers: tokens, or (202) a second factor's challenge.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum LoginAnswer {
    Tokens(Box<LoginResponse>),
    Challenge(SecondFactorChallenge),
}

impl Error {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Filters of a user list (`role`, `isActive`, `q`, `limit`, `offset`); `None` means any.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub role: Option<String>,
    pub is_active: Option<bool>,
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl ListFilter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(role) = &self.role {
            pairs.push(("role", role.clone()));
        }
        if let Some(active) = self.is_active {
            pairs.push(("isActive", active.to_string()));
        }
        if let Some(q) = &self.q {
            pairs.push(("q", q.clone()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(offset) = self.offset {
            pairs.push(("offset", offset.to_string()));
        }
        pairs
    }
}

/// A client of one API base URL, optionally holding a bearer token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: Option<Bearer>,
    /// The address of the person this client acts for (a proxy such as the web portal), sent
    /// as `X-Forwarded-For`: the gateway, trusting the proxy, limits that address, not the
    /// proxy's own.
    on_behalf_of: Option<std::net::IpAddr>,
}

/// The bearer token a client sends: one given, or a session's, renewed with its refresh token
/// before it expires (clones share the session, so a pool of clients renews once).
#[derive(Debug, Clone)]
enum Bearer {
    Fixed(String),
    Session(Arc<Mutex<Session>>),
}

#[derive(Debug)]
struct Session {
    access: String,
    refresh: String,
    renew_at: Instant,
}

impl Session {
    fn of(answer: &LoginResponse) -> Self {
        // Renewed when four fifths of its life are gone, so a slow call still carries a live
        // token.
        let life = u64::try_from(answer.expires_in).unwrap_or(60);
        Self {
            access: answer.access_token.clone(),
            refresh: answer.refresh_token.clone(),
            renew_at: Instant::now() + Duration::from_secs(life * 4 / 5),
        }
    }
}

impl ApiClient {
    /// A client of `base` (e.g. `http://127.0.0.1:3000`) whose calls time out after 30 s.
    pub fn new(base: &str) -> Result<Self> {
        Self::with_timeout(base, Duration::from_secs(30))
    }

    pub fn with_timeout(base: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        Self::with_http(http, base)
    }

    /// A client sharing `http`'s connection pool (load generators keep one pool).
    pub fn with_http(http: reqwest::Client, base: &str) -> Result<Self> {
        let base = Url::parse(base).map_err(|e| Error::Invalid(format!("bad URL {base}: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(Error::Invalid(format!("{base} cannot be a base URL")));
        }
        Ok(Self {
            http,
            base,
            token: None,
            on_behalf_of: None,
        })
    }

    /// The same client, acting for a person at `client` (sent as `X-Forwarded-For`).
    pub fn on_behalf_of(mut self, client: Option<std::net::IpAddr>) -> Self {
        self.on_behalf_of = client;
        self
    }

    /// The same client, sending `token` as its bearer token.
    pub fn authenticated(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Bearer::Fixed(token.into()));
        self
    }

    /// Logs in and returns a client that uses the session it got, renewing its access token
    /// with the refresh token as it nears expiry.
    pub async fn logged_in(mut self, email: &str, password: &str) -> Result<Self> {
        let answer = self.login(email, password).await?;
        self.token = Some(Bearer::Session(Arc::new(Mutex::new(Session::of(&answer)))));
        Ok(self)
    }

    /// The bearer token to send now, renewing a session's first when it is due.
    async fn bearer(&self) -> Result<Option<String>> {
        match &self.token {
            None => Ok(None),
            Some(Bearer::Fixed(token)) => Ok(Some(token.clone())),
            Some(Bearer::Session(session)) => {
                let mut session = session.lock().await;
                if Instant::now() >= session.renew_at {
                    let renewed = self.refresh(&session.refresh).await?;
                    *session = Session::of(&renewed);
                }
                Ok(Some(session.access.clone()))
            }
        }
    }

    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// The bearer token the next call sends (a session's renewed first when due).
    pub async fn token(&self) -> Result<Option<String>> {
        self.bearer().await
    }

    /// `<base>/<path segments…>?<query>`, each segment and value percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends one request and reads the answer as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let bearer = self.bearer().await?;
        self.call_as(bearer, method, segments, query, body).await
    }

    /// [`ApiClient::call`] with the given bearer token (or none).
    async fn call_as<T: DeserializeOwned>(
        &self,
        bearer: Option<String>,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let url = self.url(segments, query);
        let what = format!("{method} {}", url.path());
        let mut request = self.http.request(method, url);
        if let Some(ip) = self.on_behalf_of {
            request = request.header("x-forwarded-for", ip.to_string());
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|source| Error::Unreachable {
            base: self.base.to_string(),
            source,
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| Error::Unreachable {
                base: self.base.to_string(),
                source,
            })?;
        if !status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                error: "unexpected".into(),
                message: String::from_utf8_lossy(&bytes).trim().to_owned(),
                field: None,
            });
            return Err(Error::Refused { status, body });
        }
        // An answer without a body (204) reads as `null`, which `()` accepts.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| Error::Unexpected {
            what,
            detail: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T> {
        self.call(Method::GET, segments, query, None::<&()>).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        self.call(method, segments, &[], body).await
    }

    // --- auth ----------------------------------------------------------------------------

    pub async fn login(&self, email: &str, password: &str) -> Result<LoginResponse> {
        let body = LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        match self.send(Method::POST, &AUTH_LOGIN, Some(&body)).await? {
            LoginAnswer::Tokens(tokens) => Ok(*tokens),
            LoginAnswer::Challenge(challenge) => Err(Error::SecondFactor(challenge)),
        }
    }

    /// The login's second step: the challenge of [`Error::SecondFactor`] and a code from the
    /// authenticator app (or a recovery code).
    pub async fn login_second_factor(&self, challenge: &str, code: &str) -> Result<LoginResponse> {
        let body = SecondFactorRequest {
            challenge: challenge.to_owned(),
            code: code.to_owned(),
        };
        self.send(
            Method::POST,
            &["api", "v1", "auth", "login", "second-factor"],
            Some(&body),
        )
        .await
    }

    /// The secret to enrol for a login whose challenge requires enrolment.
    pub async fn enrol_at_login(&self, challenge: &str) -> Result<SecondFactorEnrolment> {
        let body = EnrolmentRequest {
            challenge: challenge.to_owned(),
        };
        self.send(
            Method::POST,
            &["api", "v1", "auth", "login", "second-factor", "enrol"],
            Some(&body),
        )
        .await
    }

    /// The caller's second factor.
    pub async fn second_factor(&self) -> Result<SecondFactorStatus> {
        self.get(&["api", "v1", "auth", "second-factor"], &[]).await
    }

    /// Starts enrolling a second factor for the caller.
    pub async fn enrol_second_factor(&self) -> Result<SecondFactorEnrolment> {
        self.send(
            Method::POST,
            &["api", "v1", "auth", "second-factor"],
            None::<&()>,
        )
        .await
    }

    /// Confirms the caller's enrolment with a code: the recovery codes.
    pub async fn confirm_second_factor(&self, code: &str) -> Result<RecoveryCodes> {
        let body = ConfirmSecondFactorRequest {
            code: code.to_owned(),
        };
        self.send(
            Method::POST,
            &["api", "v1", "auth", "second-factor", "confirm"],
            Some(&body),
        )
        .await
    }

    /// Exchanges a refresh token for new tokens (the old one is then used up).
    pub async fn refresh(&self, refresh_token: &str) -> Result<LoginResponse> {
        let body = RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        // Sent without a bearer: a session renewing itself must not recurse.
        self.call_as(
            None,
            Method::POST,
            &["api", "v1", "auth", "refresh"],
            &[],
            Some(&body),
        )
        .await
    }

    /// Ends the session of `refresh_token` on the server.
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        let body = RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        self.send(Method::POST, &["api", "v1", "auth", "logout"], Some(&body))
            .await
    }

    /// A request for an account: the answer is the same whether or not the email has an
    /// account; an admin approves it with a role.
    pub async fn register(&self, request: &RegisterRequest) -> Result<RegistrationReceived> {
        self.send(
            Method::POST,
            &["api", "v1", "auth", "register"],
            Some(request),
        )
        .await
    }

    pub async fn change_password(&self, current: &str, new: &str) -> Result<UserSnapshot> {
        let body = ChangePasswordRequest {
            current_password: current.to_owned(),
            new_password: new.to_owned(),
        };
        self.send(
            Method::POST,
            &["api", "v1", "auth", "change-password"],
            Some(&body),
        )
        .await
    }

    // --- admin ---------------------------------------------------------------------------

    pub async fn list_users(&self, filter: &ListFilter) -> Result<Page<UserSnapshot>> {
        self.get(&ADMIN_USERS, &filter.pairs()).await
    }

    pub async fn user(&self, id: Uuid) -> Result<UserSnapshot> {
        self.get(&admin_user(&id.to_string()), &[]).await
    }

    pub async fn create_user(&self, request: &CreateUserRequest) -> Result<CreateUserResponse> {
        self.send(Method::POST, &ADMIN_USERS, Some(request)).await
    }

    /// Up to [`contract::api::BULK_MAX_USERS`] accounts in one request; an answer per item.
    pub async fn bulk_create_users(
        &self,
        request: &BulkCreateRequest,
    ) -> Result<BulkCreateResponse> {
        let mut path = ADMIN_USERS.to_vec();
        path.push("bulk");
        self.send(Method::POST, &path, Some(request)).await
    }

    pub async fn update_user(&self, id: Uuid, request: &UpdateUserRequest) -> Result<UserSnapshot> {
        self.send(Method::PATCH, &admin_user(&id.to_string()), Some(request))
            .await
    }

    /// A new temporary password for the user (shown only in this answer); they must change it
    /// at their next login.
    pub async fn reset_password(&self, id: Uuid) -> Result<CreateUserResponse> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("reset-password");
        self.send(Method::POST, &path, None::<&()>).await
    }

    /// Removes another user's second factor (they enrol again at their next sign-in).
    pub async fn reset_second_factor(&self, id: Uuid) -> Result<()> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.extend(["second-factor", "reset"]);
        self.send(Method::POST, &path, None::<&()>).await
    }

    /// Pending requests for an account.
    pub async fn registrations(&self) -> Result<Vec<Registration>> {
        self.get(&["api", "v1", "auth", "admin", "registrations"], &[])
            .await
    }

    /// Approves a request for an account with `role`: the account and its temporary password.
    pub async fn approve_registration(&self, id: Uuid, role: &str) -> Result<CreateUserResponse> {
        let id = id.to_string();
        let body = ApproveRegistrationRequest {
            role: role.to_owned(),
        };
        self.send(
            Method::POST,
            &[
                "api",
                "v1",
                "auth",
                "admin",
                "registrations",
                id.as_str(),
                "approve",
            ],
            Some(&body),
        )
        .await
    }

    /// Declines a request for an account.
    pub async fn decline_registration(&self, id: Uuid) -> Result<()> {
        let id = id.to_string();
        self.send(
            Method::DELETE,
            &["api", "v1", "auth", "admin", "registrations", id.as_str()],
            None::<&()>,
        )
        .await
    }

    pub async fn activate(&self, id: Uuid) -> Result<UserSnapshot> {
        self.user_action(id, "activate").await
    }

    pub async fn deactivate(&self, id: Uuid) -> Result<UserSnapshot> {
        self.user_action(id, "deactivate").await
    }

    async fn user_action(&self, id: Uuid, action: &str) -> Result<UserSnapshot> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push(action);
        self.send(Method::POST, &path, None::<&()>).await
    }

    /// The role by name: the API validates it (422 naming `role` when unknown).
    pub async fn set_role(&self, id: Uuid, role: &str) -> Result<UserSnapshot> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("role");
        let body = RoleRequest {
            role: role.to_owned(),
        };
        self.send(Method::PUT, &path, Some(&body)).await
    }

    /// A user's audit trail, oldest first; `since` is an ISO-8601 time, `event_type` e.g.
    /// `user.role.changed`.
    pub async fn user_events(
        &self,
        id: Uuid,
        since: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Page<AuditEntry>> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("events");
        let mut query = Vec::new();
        if let Some(since) = since {
            query.push(("since", since.to_owned()));
        }
        if let Some(t) = event_type {
            query.push(("type", t.to_owned()));
        }
        self.get(&path, &query).await
    }

    /// How far the user's current version has reached: each registered consumer's receipt.
    pub async fn propagation(&self, id: Uuid) -> Result<Propagation> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("propagation");
        self.get(&path, &[]).await
    }

    /// Starts the user's offboarding, or answers the one running.
    pub async fn offboard(&self, id: Uuid, request: &OffboardingRequest) -> Result<Offboarding> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("offboarding");
        self.send(Method::POST, &path, Some(request)).await
    }

    /// Erases a deactivated person's personal data (answers the earlier erasure when there is
    /// one).
    pub async fn erase(&self, id: Uuid, request: &ErasureRequest) -> Result<Erasure> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("erasure");
        self.send(Method::POST, &path, Some(request)).await
    }

    /// The person's erasure record.
    pub async fn erasure_of(&self, id: Uuid) -> Result<Erasure> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("erasure");
        self.get(&path, &[]).await
    }

    /// The user's latest offboarding.
    pub async fn offboarding_of(&self, id: Uuid) -> Result<Offboarding> {
        let id = id.to_string();
        let mut path = admin_user(&id).to_vec();
        path.push("offboarding");
        self.get(&path, &[]).await
    }

    /// Offboardings, newest first: `status` `running`, `stalled`, or every recent one.
    pub async fn offboardings(&self, status: Option<&str>) -> Result<Page<Offboarding>> {
        let query: Vec<(&str, String)> = status
            .map(|s| ("status", s.to_owned()))
            .into_iter()
            .collect();
        self.get(&OFFBOARDINGS, &query).await
    }

    /// One offboarding with its steps and receipts.
    pub async fn offboarding(&self, id: Uuid) -> Result<Offboarding> {
        let id = id.to_string();
        let mut path = OFFBOARDINGS.to_vec();
        path.push(&id);
        self.get(&path, &[]).await
    }

    /// Cancels an offboarding whose command has not been sent: the person is reactivated.
    pub async fn cancel_offboarding(&self, id: Uuid) -> Result<Offboarding> {
        let id = id.to_string();
        let mut path = OFFBOARDINGS.to_vec();
        path.push(&id);
        path.push("cancel");
        self.send(Method::POST, &path, None::<&()>).await
    }

    /// A new bearer token for a SCIM client (a directory such as Microsoft Entra ID or Okta)
    /// named `name`: its record and the secret, which this answer alone carries (409 when a
    /// token not revoked has that name).
    pub async fn create_scim_token(&self, name: &str) -> Result<CreatedScimToken> {
        let body = ScimTokenRequest {
            name: name.to_owned(),
        };
        self.send(Method::POST, &SCIM_TOKENS, Some(&body)).await
    }

    /// Every SCIM token, newest first, revoked ones included (never their secrets).
    pub async fn scim_tokens(&self) -> Result<Vec<ScimToken>> {
        self.get(&SCIM_TOKENS, &[]).await
    }

    /// Revokes a SCIM token: the directory holding it is refused from then on (revoking one
    /// already revoked answers it as it was; 404 for an unknown id).
    pub async fn revoke_scim_token(&self, id: Uuid) -> Result<ScimToken> {
        let id = id.to_string();
        self.send(Method::POST, &scim_token_revoke(&id), None::<&()>)
            .await
    }

    /// The id of a user named by id or by email (looked up in the admin list).
    pub async fn resolve(&self, user: &str) -> Result<Uuid> {
        if let Ok(id) = Uuid::parse_str(user) {
            return Ok(id);
        }
        let wanted = user.trim().to_lowercase();
        let page = self
            .list_users(&ListFilter {
                q: Some(wanted.clone()),
                limit: Some(500),
                ..ListFilter::default()
            })
            .await?;
        page.items
            .iter()
            .find(|u| u.email.as_str() == wanted)
            .map(|u| u.user_id.0)
            .ok_or_else(|| Error::Invalid(format!("no user with id or email {user:?}")))
    }

    // --- directory (user-service) --------------------------------------------------------

    /// The directory as a colleague sees it (an admin's answer carries more fields, which this
    /// leaves out; the admin list has them all).
    pub async fn directory(&self, filter: &ListFilter) -> Result<Page<DirectoryEntry>> {
        self.get(&["api", "v1", "users"], &filter.pairs()).await
    }

    /// The directory as an admin sees it: every user with every field (the user-service's copy,
    /// `userVersion` included), to compare with the admin list of `auth_db`.
    pub async fn directory_as_admin(&self, filter: &ListFilter) -> Result<Page<UserSnapshot>> {
        self.get(&["api", "v1", "users"], &filter.pairs()).await
    }

    // --- sync admin API (admins) ----------------------------------------------------------

    /// The state of the synchronisation: outbox, queues, dead letters, the last verify.
    pub async fn sync_status(&self) -> Result<SyncStatus> {
        self.get(&SYNC, &[]).await
    }

    /// Starts a verify in the background (or answers the one running).
    pub async fn start_verify(&self) -> Result<VerifyRun> {
        let mut path = SYNC.to_vec();
        path.push("verify");
        self.send(Method::POST, &path, None::<&()>).await
    }

    /// The first `limit` messages of a dead-letter queue, left in place.
    pub async fn dead_letters(&self, queue: &str, limit: usize) -> Result<DeadLetters> {
        let mut path = SYNC.to_vec();
        path.extend(["dead-letters", queue]);
        self.get(&path, &[("limit", limit.to_string())]).await
    }

    /// Sends every message of a dead-letter queue back to its consumer, except an untrusted
    /// publisher's (kept back, and counted).
    pub async fn requeue_dead_letters(&self, queue: &str) -> Result<Requeued> {
        let mut path = SYNC.to_vec();
        path.extend(["dead-letters", queue, "requeue"]);
        self.send(Method::POST, &path, None::<&()>).await
    }

    /// Removes every untrusted publisher's message from a dead-letter queue for good.
    pub async fn discard_untrusted_dead_letters(&self, queue: &str) -> Result<Discarded> {
        let mut path = SYNC.to_vec();
        path.extend(["dead-letters", queue, "discard"]);
        self.send(Method::POST, &path, None::<&()>).await
    }

    /// Removes an erased person's messages from every registered consumer's retry and
    /// dead-letter queues and from the unrouted queue (the sync admin API's purge, run right
    /// after the erasure).
    pub async fn purge_erasure(&self, user_id: Uuid) -> Result<ErasurePurge> {
        let id = user_id.to_string();
        let mut path = SYNC.to_vec();
        path.extend(["erasures", id.as_str(), "purge"]);
        self.send(Method::POST, &path, None::<&()>).await
    }

    // --- appointments (appointment-service) ----------------------------------------------

    pub async fn book(&self, request: &NewAppointment) -> Result<Appointment> {
        self.send(Method::POST, &APPOINTMENTS, Some(request)).await
    }

    /// Appointments matching `query` (`doctorId`, `from`, `to`, `status`, `limit`, `offset`).
    pub async fn appointments(&self, query: &[(&str, String)]) -> Result<Page<Appointment>> {
        self.get(&APPOINTMENTS, query).await
    }

    pub async fn appointment(&self, id: Uuid) -> Result<Appointment> {
        let id = id.to_string();
        self.get(&["api", "v1", "appointments", &id], &[]).await
    }
}

const APPOINTMENTS: [&str; 3] = ["api", "v1", "appointments"];
const SYNC: [&str; 4] = ["api", "v1", "admin", "sync"];

const OFFBOARDINGS: [&str; 5] = ["api", "v1", "auth", "admin", "offboardings"];
const SCIM_TOKENS: [&str; 5] = ["api", "v1", "auth", "admin", "scim-tokens"];
const AUTH_LOGIN: [&str; 4] = ["api", "v1", "auth", "login"];
const ADMIN_USERS: [&str; 5] = ["api", "v1", "auth", "admin", "users"];

fn admin_user(id: &str) -> [&str; 6] {
    ["api", "v1", "auth", "admin", "users", id]
}

fn scim_token_revoke(id: &str) -> [&str; 7] {
    ["api", "v1", "auth", "admin", "scim-tokens", id, "revoke"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_percent_encoded() {
        let client = ApiClient::new("http://127.0.0.1:3000/").unwrap();
        let filter = ListFilter {
            q: Some("a b&c=d".into()),
            role: Some("doctor".into()),
            ..ListFilter::default()
        };
        let url = client.url(&ADMIN_USERS, &filter.pairs());
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:3000/api/v1/auth/admin/users?role=doctor&q=a+b%26c%3Dd"
        );
        let url = client.url(&["api", "v1", "users", "x/y"], &[]);
        assert_eq!(url.as_str(), "http://127.0.0.1:3000/api/v1/users/x%2Fy");
    }

    #[test]
    fn scim_token_paths_are_the_admin_apis() {
        let client = ApiClient::new("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            client.url(&SCIM_TOKENS, &[]).as_str(),
            "http://127.0.0.1:3000/api/v1/auth/admin/scim-tokens"
        );
        let id = Uuid::nil().to_string();
        assert_eq!(
            client.url(&scim_token_revoke(&id), &[]).as_str(),
            format!("http://127.0.0.1:3000/api/v1/auth/admin/scim-tokens/{id}/revoke")
        );
    }
}
