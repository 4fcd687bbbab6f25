//! The HTTP API as an OpenAPI 3.1 document, as the gateway serves it
//! (`/api-docs/openapi.json`). Bodies are the [`crate::api`] types the services answer with and
//! the clients read, their schemas generated from those types (JSON Schema 2020-12, which
//! OpenAPI 3.1 uses); the operations — paths, parameters, every status each may answer — are
//! declared here, next to the types. The checked-in `contracts/openapi.json` is compared with
//! [`document`] by `tests/contracts_are_current.rs`; schemathesis fuzzes the running system
//! against it (`crates/portal/tests/api_fuzz`), which fails on any answer the document does not allow.

use crate::api::{
    Appointment, AppointmentStatus, ApproveRegistrationRequest, AuditEntry, BulkCreateRequest,
    BulkCreateResponse, ChangePasswordRequest, ConfirmSecondFactorRequest, CreateUserRequest,
    CreateUserResponse, CreatedScimToken, DirectoryEntry, EnrolmentRequest, Erasure,
    ErasureRequest, ErrorBody, LoginRequest, LoginResponse, NewAppointment, Offboarding,
    OffboardingRequest, Page, Propagation, ReassignRequest, RecoveryCodes, RefreshRequest,
    RegisterRequest, Registration, RegistrationReceived, RoleRequest, ScimToken, ScimTokenRequest,
    SecondFactorChallenge, SecondFactorEnrolment, SecondFactorRequest, SecondFactorStatus,
    UpdateUserRequest,
};
use crate::domain::Role;
use crate::event::UserSnapshot;
use crate::sync_status::{DeadLetters, Discarded, ErasurePurge, Requeued, SyncStatus, VerifyRun};
use schemars::gen::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

/// The dead-letter queues of the standard consumers, and the unrouted queue: those the sync
/// admin API opens.
const DEAD_LETTER_QUEUES: [&str; 3] = [
    "user-service.user-events.dlq",
    "appointment-service.user-events.dlq",
    crate::topology::UNROUTED_QUEUE,
];

/// Where the gateway serves the document.
pub const PATH: &str = "/api-docs/openapi.json";

/// What one operation answers with, besides its errors.
enum Success {
    /// A JSON body of this schema.
    Json(u16, &'static str, Value),
    /// 201 with a JSON body of this schema and a `Location` header naming the new resource.
    Created(&'static str, Value),
    /// No body.
    Empty(u16, &'static str),
}

/// One operation of the API.
struct Operation {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    bearer: bool,
    params: Vec<Value>,
    body: Option<Value>,
    success: Success,
    /// A second success answer (the login's 202 when a second factor must follow).
    also: Option<Success>,
    /// The error statuses it may answer (each with an [`ErrorBody`]).
    errors: &'static [u16],
}

fn error_words(status: u16) -> &'static str {
    match status {
        400 => {
            "Malformed request: the body is not JSON, a query string cannot be read, or the \
                path holds dot segments or encoded dots or slashes (refused by the gateway)."
        }
        401 => "No valid bearer token, or a refused login or refresh.",
        403 => {
            "The caller's role may not do this (a doctor acts on their own appointments only; \
                a pharmacist or consultant sees none unless APPOINTMENTS_VISIBLE_TO says; an \
                admin may not offboard themselves), the action is turned off, or the account \
                must change its password first (`password_change_required`: only `me` and \
                `change-password` accept its token)."
        }
        404 => {
            "No such user, offboarding, appointment, dead-letter queue or erasure (or not visible \
                to the caller)."
        }
        409 => {
            "Conflicts with the current state: a taken email, the last active admin, an \
                appointment overlapping another of the doctor's, an appointment already \
                cancelled or already started, an offboarding too far along to cancel (or \
                changed meanwhile: try again)."
        }
        413 => "The request body is too large.",
        415 => "The body is not sent as application/json.",
        422 => "A field is invalid; `field` names it.",
        429 => {
            "Too many attempts: an account locked after failed logins, or too many \
                authentication requests from one address. `Retry-After` says when to retry."
        }
        503 => {
            "A dependency is unavailable (database, broker, password hashing queue), or the \
                appointment-service has not received the whole user history yet; retry shortly \
                (`Retry-After` says when, if present)."
        }
        _ => "An error.",
    }
}

/// The `{id}` path parameter, `description` saying whose id it is.
fn id_param(description: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": description,
           "schema": {"type": "string", "format": "uuid"}})
}

fn user_id_param() -> Value {
    id_param("The user's id.")
}

fn appointment_id_param() -> Value {
    id_param("The appointment's id.")
}

fn offboarding_id_param() -> Value {
    id_param("The offboarding's id.")
}

/// The filter and size of `GET /api/v1/auth/admin/offboardings`.
fn offboarding_list_params() -> Vec<Value> {
    vec![
        json!({"name": "status", "in": "query", "required": false,
               "description": "`running`: those not finished; `stalled`: those waiting longer \
                               than they should. Absent: the most recent, finished or not.",
               "schema": {"type": "string", "enum": ["running", "stalled"]}}),
        json!({"name": "limit", "in": "query", "required": false,
               "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}}),
    ]
}

/// The filters and paging of `GET /api/v1/appointments`.
fn appointment_list_params() -> Vec<Value> {
    let statuses: Vec<&str> = AppointmentStatus::ALL.iter().map(|s| s.as_str()).collect();
    vec![
        json!({"name": "doctorId", "in": "query", "required": false,
               "description": "Only this doctor's (a doctor may ask for their own only).",
               "schema": {"type": "string", "format": "uuid"}}),
        json!({"name": "from", "in": "query", "required": false,
               "description": "Only those starting at or after this time (RFC 3339).",
               "schema": {"type": "string", "format": "date-time"}}),
        json!({"name": "to", "in": "query", "required": false,
               "description": "Only those starting before this time (RFC 3339).",
               "schema": {"type": "string", "format": "date-time"}}),
        json!({"name": "status", "in": "query", "required": false, "schema": {"type": "string", "enum": statuses}}),
        json!({"name": "limit", "in": "query", "required": false,
               "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}),
        json!({"name": "offset", "in": "query", "required": false,
               "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000, "default": 0}}),
    ]
}

fn list_params() -> Vec<Value> {
    let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    vec![
        json!({"name": "role", "in": "query", "required": false, "schema": {"type": "string", "enum": roles}}),
        json!({"name": "isActive", "in": "query", "required": false, "schema": {"type": "boolean"}}),
        json!({"name": "q", "in": "query", "required": false,
               "description": "Case-insensitive part of a name (admins: or an email).",
               "schema": {"type": "string"}}),
        json!({"name": "limit", "in": "query", "required": false,
               "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}),
        json!({"name": "offset", "in": "query", "required": false,
               "schema": {"type": "integer", "minimum": 0, "maximum": 2147483647, "default": 0}}),
    ]
}

/// The JWKS document's schema (a standard format, not one of our types).
fn jwks_schema() -> Value {
    json!({
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {
            "type": "object",
            "required": ["kty", "crv", "x", "kid"],
            "properties": {
                "kty": {"const": "OKP"}, "crv": {"const": "Ed25519"},
                "x": {"type": "string"}, "kid": {"type": "string"},
                "alg": {"const": "EdDSA"}, "use": {"const": "sig"}
            }
        }}}
    })
}

fn operations(g: &mut SchemaGenerator) -> Vec<Operation> {
    let mut schema = |f: fn(&mut SchemaGenerator) -> schemars::schema::Schema| {
        serde_json::to_value(f(g)).unwrap_or(Value::Null)
    };
    let user = schema(|g| g.subschema_for::<UserSnapshot>());
    let login = schema(|g| g.subschema_for::<LoginResponse>());
    let refresh = schema(|g| g.subschema_for::<RefreshRequest>());
    let either_user =
        json!({"anyOf": [user.clone(), schema(|g| g.subschema_for::<DirectoryEntry>())]});
    // Registers the error body among the components every error answer refers to.
    schema(|g| g.subschema_for::<ErrorBody>());
    let either_page = json!({"anyOf": [
        schema(|g| g.subschema_for::<Page<UserSnapshot>>()),
        schema(|g| g.subschema_for::<Page<DirectoryEntry>>()),
    ]});
    let ok = |schema: &Value| Success::Json(200, "OK", schema.clone());
    let op =
        |method, path, id, tag, summary, bearer, body: Option<Value>, success, errors| Operation {
            method,
            path,
            id,
            tag,
            summary,
            bearer,
            params: Vec::new(),
            body,
            success,
            also: None,
            errors,
        };
    let with_id = |mut o: Operation| {
        o.params.push(user_id_param());
        o
    };
    let with_appointment_id = |mut o: Operation| {
        o.params.push(appointment_id_param());
        o
    };
    let with_offboarding_id = |mut o: Operation| {
        o.params.push(offboarding_id_param());
        o
    };
    let with_scim_token_id = |mut o: Operation| {
        o.params.push(id_param("The SCIM token's id."));
        o
    };
    let offboarding = schema(|g| g.subschema_for::<Offboarding>());
    let erasure = schema(|g| g.subschema_for::<Erasure>());
    let mut offboardings = op(
        "get",
        "/api/v1/auth/admin/offboardings",
        "listOffboardings",
        "admin",
        "Offboardings, newest first: the running ones, the stalled ones, or (no status) the \
         most recent, finished or not; `steps` and `receipts` are left empty here (`GET \
         /api/v1/auth/admin/offboardings/{id}` has them).",
        true,
        None,
        ok(&schema(|g| g.subschema_for::<Page<Offboarding>>())),
        &[400, 401, 403, 422],
    );
    offboardings.params = offboarding_list_params();
    let mut list = op(
        "get",
        "/api/v1/auth/admin/users",
        "listUsersAdmin",
        "admin",
        "Every user of auth_db, filtered and paged.",
        true,
        None,
        ok(&schema(|g| g.subschema_for::<Page<UserSnapshot>>())),
        &[400, 401, 403, 422],
    );
    list.params = list_params();
    let mut events = op(
        "get",
        "/api/v1/auth/admin/users/{id}/events",
        "userEvents",
        "admin",
        "A user's audit trail (its stored events), oldest first.",
        true,
        None,
        ok(&schema(|g| g.subschema_for::<Page<AuditEntry>>())),
        &[400, 401, 403, 404, 422],
    );
    events.params = vec![
        user_id_param(),
        json!({"name": "since", "in": "query", "required": false, "schema": {"type": "string", "format": "date-time"}}),
        json!({"name": "type", "in": "query", "required": false, "schema": {"type": "string"},
               "description": "An event type such as user.updated."}),
    ];
    let mut directory = op(
        "get",
        "/api/v1/users",
        "listUsers",
        "directory",
        "The directory: admins see every user with every field, anyone else active clinical \
         staff only as directory entries.",
        true,
        None,
        ok(&either_page),
        &[400, 401, 403, 422],
    );
    directory.params = list_params();
    let verify_run = schema(|g| g.subschema_for::<VerifyRun>());
    let with_queue = |mut o: Operation| {
        o.params
            .push(json!({"name": "queue", "in": "path", "required": true,
            "description": "A dead-letter queue: a consumer's, or the unrouted queue.",
            "schema": {"type": "string", "enum": DEAD_LETTER_QUEUES}}));
        o
    };
    let mut dead_letters = with_queue(op(
        "get",
        "/api/v1/admin/sync/dead-letters/{queue}",
        "deadLetters",
        "sync",
        "How many messages a dead-letter queue holds and the first of them, with their \
         reasons (admins); every message stays in place.",
        true,
        None,
        ok(&schema(|g| g.subschema_for::<DeadLetters>())),
        &[400, 401, 403, 404, 503],
    ));
    dead_letters
        .params
        .push(json!({"name": "limit", "in": "query", "required": false,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}}));
    let appointment = schema(|g| g.subschema_for::<Appointment>());
    let mut appointments = op(
        "get",
        "/api/v1/appointments",
        "listAppointments",
        "appointments",
        "Appointments, filtered and paged, earliest first: a doctor sees their own, nurses and \
         admins every one; pharmacists and consultants none (403) unless the clinic's \
         APPOINTMENTS_VISIBLE_TO names their role, and then every one.",
        true,
        None,
        ok(&schema(|g| g.subschema_for::<Page<Appointment>>())),
        &[400, 401, 403, 422, 503],
    );
    appointments.params = appointment_list_params();
    vec![
        op(
            "post",
            "/api/v1/auth/register",
            "register",
            "auth",
            "A request for an account (when REGISTRATION_ENABLED): no account, password or role \
             until an admin approves it with a role and a temporary password. Answers the same \
             whether or not the email has an account; 403 `registration_disabled` when off.",
            false,
            Some(schema(|g| g.subschema_for::<RegisterRequest>())),
            Success::Json(
                202,
                "Received",
                schema(|g| g.subschema_for::<RegistrationReceived>()),
            ),
            &[400, 403, 413, 415, 422, 429],
        ),
        Operation {
            also: Some(Success::Json(
                202,
                "The password is right and a second factor must follow: a challenge for \
                 `POST /api/v1/auth/login/second-factor` (after \
                 `/api/v1/auth/login/second-factor/enrol` when enrolment is required).",
                schema(|g| g.subschema_for::<SecondFactorChallenge>()),
            )),
            ..op(
                "post",
                "/api/v1/auth/login",
                "login",
                "auth",
                "Log in: an access token and a refresh token, or (202) a challenge for the \
                 second factor.",
                false,
                Some(schema(|g| g.subschema_for::<LoginRequest>())),
                ok(&login),
                &[400, 401, 413, 415, 422, 429],
            )
        },
        op(
            "post",
            "/api/v1/auth/login/second-factor",
            "loginSecondFactor",
            "auth",
            "The login's second step: the challenge and a code from the authenticator app (or a \
             recovery code). A code is good once; five wrong codes spend the challenge, ten for \
             one user lock the step for 15 minutes (429).",
            false,
            Some(schema(|g| g.subschema_for::<SecondFactorRequest>())),
            ok(&login),
            &[400, 401, 413, 415, 422, 429],
        ),
        op(
            "post",
            "/api/v1/auth/login/second-factor/enrol",
            "loginEnrolSecondFactor",
            "auth",
            "For a challenge whose status is second_factor_enrolment_required: the secret to \
             put in the authenticator app; a code made with it then completes the login (and \
             its answer carries the recovery codes, once).",
            false,
            Some(schema(|g| g.subschema_for::<EnrolmentRequest>())),
            ok(&schema(|g| g.subschema_for::<SecondFactorEnrolment>())),
            &[400, 401, 409, 413, 415, 422],
        ),
        op(
            "get",
            "/api/v1/auth/second-factor",
            "secondFactorStatus",
            "auth",
            "The caller's second factor: enrolled, required, recovery codes left.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<SecondFactorStatus>())),
            &[401, 403],
        ),
        op(
            "post",
            "/api/v1/auth/second-factor",
            "enrolSecondFactor",
            "auth",
            "Starts enrolling a second factor (a new secret until a code confirms it).",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<SecondFactorEnrolment>())),
            &[401, 403, 409],
        ),
        op(
            "post",
            "/api/v1/auth/second-factor/confirm",
            "confirmSecondFactor",
            "auth",
            "Confirms the enrolment with a code made with its secret: the recovery codes, shown \
             only here.",
            true,
            Some(schema(|g| g.subschema_for::<ConfirmSecondFactorRequest>())),
            ok(&schema(|g| g.subschema_for::<RecoveryCodes>())),
            &[400, 401, 403, 409, 413, 415, 422],
        ),
        with_id(op(
            "post",
            "/api/v1/auth/admin/users/{id}/second-factor/reset",
            "resetSecondFactor",
            "admin",
            "Removes another user's second factor and recovery codes and ends their sessions \
             (recorded); they enrol again at their next sign-in. Not one's own (409).",
            true,
            None,
            Success::Empty(204, "The factor is reset."),
            &[401, 403, 404, 409, 422],
        )),
        op(
            "post",
            "/api/v1/auth/refresh",
            "refresh",
            "auth",
            "Exchange a refresh token (once) for a new access token and the next refresh token.",
            false,
            Some(refresh.clone()),
            ok(&login),
            &[400, 401, 413, 415, 422, 429],
        ),
        op(
            "post",
            "/api/v1/auth/logout",
            "logout",
            "auth",
            "End the session of a refresh token.",
            false,
            Some(refresh),
            Success::Empty(204, "The session is ended (or was unknown)."),
            &[400, 413, 415, 422],
        ),
        op(
            "get",
            "/api/v1/auth/me",
            "me",
            "auth",
            "The caller's account.",
            true,
            None,
            ok(&user),
            &[401],
        ),
        op(
            "post",
            "/api/v1/auth/change-password",
            "changePassword",
            "auth",
            "Change the caller's password; ends every session of the caller.",
            true,
            Some(schema(|g| g.subschema_for::<ChangePasswordRequest>())),
            ok(&user),
            &[400, 401, 413, 415, 422, 429],
        ),
        op(
            "get",
            "/api/v1/auth/.well-known/jwks.json",
            "jwks",
            "auth",
            "The public keys access tokens are signed with (JWKS), the current one first.",
            false,
            None,
            ok(&jwks_schema()),
            &[],
        ),
        op(
            "post",
            "/api/v1/auth/admin/users",
            "createUser",
            "admin",
            "Create an active account with a temporary password, shown only in this answer.",
            true,
            Some(schema(|g| g.subschema_for::<CreateUserRequest>())),
            Success::Json(
                201,
                "Created",
                schema(|g| g.subschema_for::<CreateUserResponse>()),
            ),
            &[400, 401, 403, 409, 415, 422],
        ),
        op(
            "post",
            "/api/v1/auth/admin/users/bulk",
            "bulkCreateUsers",
            "admin",
            "Create up to 1,000 active accounts in one transaction, each with a temporary password \
             shown only in this answer (it expires, 72 hours by default, and must be changed at \
             first login). Every item is answered in request order: `created`, `exists` (an \
             account with this email exists; nothing changed, so sending the same list again is \
             harmless) or `invalid` with its error.",
            true,
            Some(schema(|g| g.subschema_for::<BulkCreateRequest>())),
            ok(&schema(|g| g.subschema_for::<BulkCreateResponse>())),
            &[400, 401, 403, 413, 415, 422],
        ),
        list,
        with_id(op(
            "get",
            "/api/v1/auth/admin/users/{id}",
            "showUser",
            "admin",
            "One user as auth_db holds it.",
            true,
            None,
            ok(&user),
            &[401, 403, 404, 422],
        )),
        with_id(op(
            "patch",
            "/api/v1/auth/admin/users/{id}",
            "updateUser",
            "admin",
            "Change profile fields; `phoneNumber: null` clears it.",
            true,
            Some(schema(|g| g.subschema_for::<UpdateUserRequest>())),
            ok(&user),
            &[400, 401, 403, 404, 409, 415, 422],
        )),
        with_id(op(
            "post",
            "/api/v1/auth/admin/users/{id}/activate",
            "activateUser",
            "admin",
            "Activate a user.",
            true,
            None,
            ok(&user),
            &[401, 403, 404, 409, 422],
        )),
        with_id(op(
            "post",
            "/api/v1/auth/admin/users/{id}/deactivate",
            "deactivateUser",
            "admin",
            "Deactivate a user (never the last active admin); ends the user's sessions.",
            true,
            None,
            ok(&user),
            &[401, 403, 404, 409, 422],
        )),
        with_id(op(
            "put",
            "/api/v1/auth/admin/users/{id}/role",
            "setRole",
            "admin",
            "Change a user's role; ends the user's sessions.",
            true,
            Some(schema(|g| g.subschema_for::<RoleRequest>())),
            ok(&user),
            &[400, 401, 403, 404, 409, 415, 422],
        )),
        with_id(op(
            "post",
            "/api/v1/auth/admin/users/{id}/reset-password",
            "resetPassword",
            "admin",
            "A new temporary password, shown only in this answer, to be changed at the next \
             login; ends the user's sessions.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<CreateUserResponse>())),
            &[401, 403, 404, 422],
        )),
        with_id(op(
            "get",
            "/api/v1/auth/admin/users/{id}/propagation",
            "userPropagation",
            "admin",
            "How far the user's current version has reached: each registered consumer's last \
             receipt for the user (the version its copy holds, when it committed it, how long \
             after the change), and whether it is current.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<Propagation>())),
            &[401, 403, 404, 422],
        )),
        with_id(Operation {
            also: Some(Success::Json(
                200,
                "An offboarding of this user was running already: that one, unchanged (the \
                 request's reason and policy are not applied).",
                offboarding.clone(),
            )),
            ..op(
                "post",
                "/api/v1/auth/admin/users/{id}/offboarding",
                "startOffboarding",
                "admin",
                "Start taking a leaving person out of every system: deactivates them (ending \
                 their sessions) and starts the offboarding saga, which waits for every \
                 required consumer's receipt of that version, then has the appointment-service \
                 reassign or cancel their future appointments as `policy` says. `reason`: 1 to \
                 500 characters. Never the caller, nor the last active admin.",
                true,
                Some(schema(|g| g.subschema_for::<OffboardingRequest>())),
                Success::Json(
                    202,
                    "Started: the person is deactivated and the saga runs.",
                    offboarding.clone(),
                ),
                &[400, 401, 403, 404, 409, 413, 415, 422],
            )
        }),
        with_id(op(
            "get",
            "/api/v1/auth/admin/users/{id}/offboarding",
            "userOffboarding",
            "admin",
            "The user's latest offboarding, running or finished, with its steps.",
            true,
            None,
            ok(&offboarding),
            &[401, 403, 404, 422],
        )),
        with_id(op(
            "post",
            "/api/v1/auth/admin/users/{id}/erasure",
            "eraseUser",
            "admin",
            "Erase a deactivated person's personal data (UK GDPR art. 17): the record keeps its \
             id with placeholders for the name, email and phone, every stored event of theirs is \
             rewritten without them, texts naming them are rewritten, their sessions and second \
             factor go, and `user.erased` tells every copy to forget them. `reason`: 1 to 500 \
             characters, kept with the erasure (write no personal data in it). Asked again: the \
             earlier erasure, nothing done twice. 409 while the person is active or their \
             offboarding runs. Nothing changes an erased person afterwards (409).",
            true,
            Some(schema(|g| g.subschema_for::<ErasureRequest>())),
            ok(&erasure),
            &[400, 401, 403, 404, 409, 413, 415, 422],
        )),
        with_id(op(
            "get",
            "/api/v1/auth/admin/users/{id}/erasure",
            "userErasure",
            "admin",
            "The person's erasure: who erased, why, when, the version of its `user.erased`, and \
             when their messages left the queues; 404 when they were not erased.",
            true,
            None,
            ok(&erasure),
            &[401, 403, 404, 422],
        )),
        offboardings,
        with_offboarding_id(op(
            "get",
            "/api/v1/auth/admin/offboardings/{id}",
            "showOffboarding",
            "admin",
            "One offboarding with its steps, each consumer's receipt and what became of each \
             future appointment.",
            true,
            None,
            ok(&offboarding),
            &[401, 403, 404, 422],
        )),
        with_offboarding_id(op(
            "post",
            "/api/v1/auth/admin/offboardings/{id}/cancel",
            "cancelOffboarding",
            "admin",
            "Cancel an offboarding and reactivate the person: possible only while it waits for \
             the consumers' receipts, before any appointment changes (409 once the \
             appointment-service has been told, or when it has finished).",
            true,
            None,
            ok(&offboarding),
            &[401, 403, 404, 409, 422],
        )),
        op(
            "post",
            "/api/v1/auth/admin/scim-tokens",
            "createScimToken",
            "admin",
            "Creates a bearer token for one SCIM client (a directory provisioning staff through \
             `/scim/v2`); the secret is in this answer only. The token is good for SCIM and \
             nothing else; every use is logged under its name.",
            true,
            Some(schema(|g| g.subschema_for::<ScimTokenRequest>())),
            Success::Json(
                201,
                "Created",
                schema(|g| g.subschema_for::<CreatedScimToken>()),
            ),
            &[400, 401, 403, 409, 413, 415, 422],
        ),
        op(
            "get",
            "/api/v1/auth/admin/scim-tokens",
            "listScimTokens",
            "admin",
            "Every SCIM token, newest first, revoked ones included (never the secrets).",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<Vec<ScimToken>>())),
            &[401, 403],
        ),
        with_scim_token_id(op(
            "post",
            "/api/v1/auth/admin/scim-tokens/{id}/revoke",
            "revokeScimToken",
            "admin",
            "Revokes a SCIM token: refused from the next request on. Revoking a revoked token \
             answers it unchanged.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<ScimToken>())),
            &[401, 403, 404, 422],
        )),
        op(
            "get",
            "/api/v1/auth/admin/registrations",
            "listRegistrations",
            "admin",
            "Pending requests for an account, oldest first (kept 30 days).",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<Vec<Registration>>())),
            &[401, 403],
        ),
        with_id(op(
            "post",
            "/api/v1/auth/admin/registrations/{id}/approve",
            "approveRegistration",
            "admin",
            "Creates the requested account, active, with the role the admin chooses and a \
             temporary password shown only in this answer; the request is removed.",
            true,
            Some(schema(|g| g.subschema_for::<ApproveRegistrationRequest>())),
            Success::Json(
                201,
                "Created",
                schema(|g| g.subschema_for::<CreateUserResponse>()),
            ),
            &[400, 401, 403, 404, 409, 415, 422],
        )),
        with_id(op(
            "delete",
            "/api/v1/auth/admin/registrations/{id}",
            "declineRegistration",
            "admin",
            "Declines (removes) a pending request for an account.",
            true,
            None,
            Success::Empty(204, "The request is removed (or was unknown)."),
            &[401, 403, 422],
        )),
        events,
        directory,
        with_id(op(
            "get",
            "/api/v1/users/{id}",
            "showDirectoryUser",
            "directory",
            "One user: every field for admins, a directory entry for anyone else.",
            true,
            None,
            ok(&either_user),
            &[401, 403, 404, 422],
        )),
        op(
            "post",
            "/api/v1/appointments",
            "bookAppointment",
            "appointments",
            "Book a patient with an active doctor (nurses and admins for any doctor, a doctor \
             with themselves). Refused with 503 until the appointment-service holds the whole \
             user history.",
            true,
            Some(schema(|g| g.subschema_for::<NewAppointment>())),
            Success::Created("Booked", appointment.clone()),
            &[400, 401, 403, 409, 413, 415, 422, 503],
        ),
        appointments,
        with_appointment_id(op(
            "get",
            "/api/v1/appointments/{id}",
            "showAppointment",
            "appointments",
            "One appointment (a doctor sees their own only; pharmacists and consultants as in \
             the list).",
            true,
            None,
            ok(&appointment),
            &[401, 403, 404, 422, 503],
        )),
        with_appointment_id(op(
            "post",
            "/api/v1/appointments/{id}/cancel",
            "cancelAppointment",
            "appointments",
            "Cancel an appointment (nurses and admins any, a doctor their own).",
            true,
            None,
            ok(&appointment),
            &[401, 403, 404, 409, 422, 503],
        )),
        with_appointment_id(op(
            "post",
            "/api/v1/appointments/{id}/reassign",
            "reassignAppointment",
            "appointments",
            "Move an appointment that has not started to another active doctor (nurses and \
             admins).",
            true,
            Some(schema(|g| g.subschema_for::<ReassignRequest>())),
            ok(&appointment),
            &[400, 401, 403, 404, 409, 413, 415, 422, 503],
        )),
        op(
            "get",
            "/api/v1/admin/sync",
            "syncStatus",
            "sync",
            "The state of the synchronisation (admins): the outbox backlog and the age of its \
             oldest event, each consumer's queue, retries and dead letters, and the last verify \
             run. A part that cannot be read is null and named in `unavailable`.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<SyncStatus>())),
            &[401, 403, 503],
        ),
        op(
            "post",
            "/api/v1/admin/sync/verify",
            "startVerify",
            "sync",
            "Start comparing auth_db with every consumer's copy in the background (admins); \
             answers the run started, or the one already running. Its progress and result are \
             in syncStatus.",
            true,
            None,
            Success::Json(202, "Started, or already running", verify_run),
            &[401, 403, 503],
        ),
        dead_letters,
        with_queue(op(
            "post",
            "/api/v1/admin/sync/dead-letters/{queue}/requeue",
            "requeueDeadLetters",
            "sync",
            "Send every message of a dead-letter queue back to its consumer (admins): each is \
             published with confirms before it is removed. An untrusted publisher's message \
             (set aside as untrusted-publisher, or first published by a broker user the \
             consumers do not trust) is never sent back: it stays, counted in keptBack.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<Requeued>())),
            &[401, 403, 404, 503],
        )),
        with_queue(op(
            "post",
            "/api/v1/admin/sync/dead-letters/{queue}/discard",
            "discardUntrustedDeadLetters",
            "sync",
            "Remove every untrusted publisher's message from a dead-letter queue for good \
             (admins; logged with who asked): the one way they leave it. The other messages \
             stay, in their order.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<Discarded>())),
            &[401, 403, 404, 503],
        )),
        with_id(op(
            "post",
            "/api/v1/admin/sync/erasures/{id}/purge",
            "purgeErasure",
            "sync",
            "Remove an erased person's messages from every registered consumer's retry and \
             dead-letter queues and from the unrouted queue (admins; one security log line per \
             queue, naming who asked); every other message stays, in its order, and so does a \
             tombstone that holds none of their data. Records when every queue was purged \
             (queuesPurgedAt); a queue that could not be purged is named in failed. 404 when the \
             person is not erased.",
            true,
            None,
            ok(&schema(|g| g.subschema_for::<ErasurePurge>())),
            &[401, 403, 404, 422, 503],
        )),
        op(
            "get",
            "/health/live",
            "live",
            "health",
            "The gateway is up.",
            false,
            None,
            ok(
                &json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}),
            ),
            &[],
        ),
    ]
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2019_09()
        .with(|s| {
            s.definitions_path = "#/components/schemas/".to_owned();
            s.meta_schema = None;
        })
        .into_generator();
    let ops = operations(&mut generator);
    let schemas = serde_json::to_value(generator.take_definitions()).unwrap_or(Value::Null);
    let mut paths = Map::new();
    for op in ops {
        let mut responses = Map::new();
        for success in std::iter::once(&op.success).chain(op.also.as_ref()) {
            match success {
                Success::Json(status, words, schema) => {
                    responses.insert(
                    status.to_string(),
                    json!({"description": words, "content": {"application/json": {"schema": schema}}}),
                );
                }
                Success::Created(words, schema) => {
                    responses.insert(
                        "201".to_owned(),
                        json!({"description": words,
                           "headers": {"Location": {"description": "The path of the new resource.",
                                                    "required": true,
                                                    "schema": {"type": "string"}}},
                           "content": {"application/json": {"schema": schema}}}),
                    );
                }
                Success::Empty(status, words) => {
                    responses.insert(status.to_string(), json!({"description": words}));
                }
            }
        }
        // A path parameter the gateway finds unsafe (dots, encoded slashes) is refused there.
        let path_param = op.params.iter().any(|p| p["in"] == "path");
        let statuses = op
            .errors
            .iter()
            .copied()
            .chain(path_param.then_some(400))
            .collect::<std::collections::BTreeSet<u16>>();
        for status in &statuses {
            responses.insert(
                status.to_string(),
                json!({"description": error_words(*status),
                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}),
            );
        }
        let mut operation = json!({
            "operationId": op.id,
            "tags": [op.tag],
            "summary": op.summary,
            "responses": responses,
        });
        if !op.params.is_empty() {
            operation["parameters"] = json!(op.params);
        }
        if let Some(body) = op.body {
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        if op.bearer {
            operation["security"] = json!([{"bearer": []}]);
        }
        let item = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        item[op.method] = operation;
    }
    crate::schema::sorted(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Clinical portal API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The portal's HTTP API through the gateway. Errors are JSON \
                            `{error, message, field?}`. Access tokens are EdDSA JWTs from \
                            login or refresh, sent as `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "http://127.0.0.1:3000"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ConsumerQueues, APPOINTMENT_SERVICE, USER_SERVICE};

    #[test]
    fn the_documented_dead_letter_queues_are_the_consumers() {
        assert_eq!(
            DEAD_LETTER_QUEUES[..2],
            [
                ConsumerQueues::for_consumer(USER_SERVICE).dead_letter,
                ConsumerQueues::for_consumer(APPOINTMENT_SERVICE).dead_letter
            ]
        );
    }
}
