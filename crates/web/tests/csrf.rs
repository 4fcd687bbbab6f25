//! CSRF on every state-changing form of the portal, from one table: each form is submitted by
//! the role that may use it without a token, with an empty one, a made-up one and another
//! session's real one; each must answer the 403 page and change nothing (`auth_db`'s users and
//! sessions, the appointments, the dead letters, the verify run, the browser's own session),
//! and the same form with the right token must change something (so the 403 is the token's
//! doing, not a form that would have failed anyway). The router cannot be asked for its routes,
//! so the table is checked against every `post(` route of the portal's source: a new form
//! without a row fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Browser, Portal, ADMIN_EMAIL, ADMIN_PASSWORD, STAFF_PASSWORD};
use contract::Role;
use sandbox::users;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::path::Path;
use uuid::Uuid;

/// Who submits a form: a visitor (a login page's session, not signed in) or a seeded user.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Visitor,
    Admin,
    Signed(Role),
    /// The user [`arrange`] gives a second factor being enrolled, with a known key.
    Enrolling,
}

/// One state-changing form: the route as the router declares it, the path it is posted to,
/// who may post it, and a body that is valid but for the token. `<name>` in the path and the
/// values is what [`arrange`] provides.
struct Form {
    route: &'static str,
    path: &'static str,
    who: Who,
    fields: &'static [(&'static str, &'static str)],
}

const NEW_PASSWORD: &str = "quiet night on ward seven";
/// The user enrolling a second factor (sorted after the seeded users).
const ENROLLING: &str = "zz.enrolling@clinic.test";

/// Every form of the portal that changes something.
const FORMS: &[Form] = &[
    Form {
        route: "/login",
        path: "/login",
        who: Who::Visitor,
        fields: &[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("next", "/"),
        ],
    },
    Form {
        route: "/login/second-factor",
        path: "/login/second-factor",
        who: Who::Visitor,
        fields: &[
            ("challenge", "<challenge>"),
            ("code", "<code>"),
            ("next", "/"),
        ],
    },
    Form {
        route: "/admin/registrations/{id}/approve",
        path: "/admin/registrations/<approved>/approve",
        who: Who::Admin,
        fields: &[("role", "nurse")],
    },
    Form {
        route: "/admin/registrations/{id}/decline",
        path: "/admin/registrations/<declined>/decline",
        who: Who::Admin,
        fields: &[],
    },
    Form {
        route: "/logout",
        path: "/logout",
        who: Who::Signed(Role::Consultant),
        fields: &[],
    },
    Form {
        route: "/appointments/new",
        path: "/appointments/new",
        who: Who::Signed(Role::Nurse),
        fields: &[
            ("patientName", "Rudo Mhlanga"),
            ("doctorId", "<booked>"),
            ("date", "<date>"),
            ("time", "09:30"),
            ("durationMinutes", "30"),
            ("reason", "Review"),
        ],
    },
    Form {
        route: "/account/password",
        path: "/account/password",
        who: Who::Signed(Role::Pharmacist),
        fields: &[
            ("currentPassword", STAFF_PASSWORD),
            ("newPassword", NEW_PASSWORD),
            ("confirmPassword", NEW_PASSWORD),
        ],
    },
    Form {
        route: "/account/second-factor",
        path: "/account/second-factor",
        who: Who::Signed(Role::Doctor),
        fields: &[],
    },
    Form {
        route: "/account/second-factor/confirm",
        path: "/account/second-factor/confirm",
        who: Who::Enrolling,
        fields: &[("code", "<enrolment-code>")],
    },
    Form {
        route: "/admin/users",
        path: "/admin/users",
        who: Who::Admin,
        fields: &[
            ("email", "new.starter@clinic.co.zw"),
            ("firstName", "New"),
            ("lastName", "Starter"),
            ("role", "nurse"),
            ("phoneNumber", ""),
        ],
    },
    Form {
        route: "/admin/users/{id}/edit",
        path: "/admin/users/<edited>/edit",
        who: Who::Admin,
        fields: &[
            ("email", "<edited-email>"),
            ("firstName", "Edited"),
            ("lastName", "Name"),
            ("phoneNumber", ""),
        ],
    },
    Form {
        route: "/admin/users/{id}/role",
        path: "/admin/users/<demoted>/role",
        who: Who::Admin,
        fields: &[("role", "consultant")],
    },
    Form {
        route: "/admin/users/{id}/{action}",
        path: "/admin/users/<deactivated>/deactivate",
        who: Who::Admin,
        fields: &[],
    },
    Form {
        route: "/admin/users/{id}/{action}",
        path: "/admin/users/<activated>/activate",
        who: Who::Admin,
        fields: &[],
    },
    Form {
        route: "/admin/users/{id}/{action}",
        path: "/admin/users/<reset>/reset-password",
        who: Who::Admin,
        fields: &[],
    },
    Form {
        route: "/admin/users/{id}/offboard",
        path: "/admin/users/<offboarded>/offboard",
        who: Who::Admin,
        fields: &[
            ("reason", "Left the clinic"),
            ("policy", "cancel"),
            ("confirm", "yes"),
        ],
    },
    Form {
        route: "/admin/users/{id}/erasure",
        path: "/admin/users/<erased>/erasure",
        who: Who::Admin,
        fields: &[
            ("reason", "Erasure request, ticket 4711"),
            ("confirm", "yes"),
        ],
    },
    Form {
        route: "/admin/offboarding/{id}/cancel",
        path: "/admin/offboarding/<saga>/cancel",
        who: Who::Admin,
        fields: &[("confirm", "yes")],
    },
    Form {
        route: "/admin/scim",
        path: "/admin/scim",
        who: Who::Admin,
        fields: &[("name", "csrf-directory")],
    },
    Form {
        route: "/admin/scim/{id}/revoke",
        path: "/admin/scim/<scim-token>/revoke",
        who: Who::Admin,
        fields: &[("confirm", "yes")],
    },
    Form {
        route: "/admin/sync/verify",
        path: "/admin/sync/verify",
        who: Who::Admin,
        fields: &[],
    },
    Form {
        route: "/admin/sync/requeue/{queue}",
        path: "/admin/sync/requeue/<dlq>",
        who: Who::Admin,
        fields: &[],
    },
    Form {
        route: "/admin/sync/discard/{queue}",
        path: "/admin/sync/discard/<dlq>",
        who: Who::Admin,
        fields: &[],
    },
];

/// `text` with each `<name>` of `values` filled in.
fn fill(text: &str, values: &[(&str, String)]) -> String {
    let mut text = text.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("<{name}>"), value);
    }
    assert!(!text.contains('<'), "nothing arranged for {text}");
    text
}

/// A user of `auth_db`: id, email, first and last name, role, phone, active, must change
/// password, version, password hash.
type UserRow = (
    Uuid,
    String,
    String,
    String,
    String,
    Option<String>,
    bool,
    bool,
    i64,
    String,
);

/// Everything a portal form can change, read without changing anything.
#[derive(Debug, PartialEq)]
struct World {
    /// `auth_db`'s users, every column a form writes.
    users: Vec<UserRow>,
    /// Refresh tokens: issued, revoked.
    sessions: (i64, i64),
    /// `appointment_db`'s appointments and their state.
    appointments: Vec<(Uuid, String)>,
    /// Messages in the user-service's dead-letter queue.
    dead_letters: u32,
    /// The sync admin API's last verify run.
    verify: Value,
    /// Requests for an account waiting.
    requests: i64,
    /// Second factors: all, confirmed.
    factors: (i64, i64),
    /// SCIM tokens: all, revoked.
    scim_tokens: (i64, i64),
}

async fn world(portal: &Portal, sync_token: &str) -> World {
    let users = sqlx::query_as(
        "SELECT id, email, first_name, last_name, role, phone_number, is_active, \
         must_change_password, user_version, password_hash FROM users ORDER BY id",
    )
    .fetch_all(&portal.auth_db)
    .await
    .unwrap();
    let sessions = sqlx::query_as("SELECT count(*), count(revoked_at) FROM refresh_tokens")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    let appointments = sqlx::query_as("SELECT id, status FROM appointments ORDER BY id")
        .fetch_all(portal.appointment_db())
        .await
        .unwrap();
    let dead_letters = users::depth(&portal.sb, &users::queues().dead_letter).await;
    let (status, body) = sandbox::http::get(
        &format!("{}/api/v1/admin/sync", portal.sync_admin().url()),
        Some(sync_token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let requests = sandbox::db::count(
        &portal.auth_db,
        "SELECT count(*) FROM registration_requests",
    )
    .await;
    World {
        users,
        sessions,
        appointments,
        dead_letters,
        verify: body["verify"].clone(),
        requests,
        factors: sqlx::query_as("SELECT count(*), count(confirmed_at) FROM second_factors")
            .fetch_one(&portal.auth_db)
            .await
            .unwrap(),
        scim_tokens: sqlx::query_as("SELECT count(*), count(revoked_at) FROM scim_tokens")
            .fetch_one(&portal.auth_db)
            .await
            .unwrap(),
    }
}

async fn id_of(auth_db: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(auth_db)
        .await
        .unwrap()
}

/// The seeded user with `role` (the first by email).
async fn seeded(auth_db: &PgPool, role: Role, nth: i64) -> String {
    sqlx::query_scalar("SELECT email FROM users WHERE role = $1 ORDER BY email OFFSET $2 LIMIT 1")
        .bind(role.as_str())
        .bind(nth)
        .fetch_one(auth_db)
        .await
        .unwrap()
}

/// What the forms need: a doctor to book with, users to edit, demote, deactivate, activate
/// (deactivated beforehand), reset, offboard and erase (deactivated beforehand), an offboarding
/// to cancel, a SCIM token to revoke, and in the user-service's dead-letter queue a valid
/// event (requeued, it is applied, so the queue shrinks: a requeue that happened cannot hide)
/// and an untrusted publisher's (kept back by the requeue; discarded, the queue shrinks).
/// Returns the values of the `<name>`s.
async fn arrange(portal: &Portal) -> Vec<(&'static str, String)> {
    let db = &portal.auth_db;
    let mut values = Vec::new();
    for (nth, name) in [
        "booked",
        "edited",
        "demoted",
        "deactivated",
        "activated",
        "reset",
    ]
    .into_iter()
    .enumerate()
    {
        let email = seeded(db, Role::Doctor, nth as i64).await;
        if name == "edited" {
            values.push(("edited-email", email.clone()));
        }
        values.push((name, id_of(db, &email).await.to_string()));
    }
    let admin = api_client::ApiClient::new(&portal.gateway().url())
        .unwrap()
        .logged_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap();
    let activated = fill("<activated>", &values).parse().unwrap();
    admin.deactivate(activated).await.unwrap();
    let dlq = users::queues().dead_letter;
    let event = sandbox::events::user_event(
        Uuid::new_v4(),
        Some(1),
        "requeued@clinic.test",
        "nurse",
        true,
    );
    sandbox::amqp::publish_to_queue(&portal.sb.amqp_url, &dlq, &[sandbox::events::body(&event)])
        .await
        .unwrap();
    let (stranger, stranger_url) = portal.sb.extra_broker_user("stranger").await.unwrap();
    let forged =
        sandbox::events::user_event(Uuid::new_v4(), Some(1), "forged@clinic.test", "admin", true);
    // Published to the consumer's queue, which sets it aside as `untrusted-publisher`.
    sandbox::amqp::publish_one(
        &stranger_url,
        &users::queues().main,
        &sandbox::events::body(&forged),
        platform::amqp::persistent(&stranger),
    )
    .await
    .unwrap();
    values.push(("dlq", dlq));
    // Two requests for an account (one to approve, one to decline). The emails sort after the
    // seeded users', which `seeded` picks by order.
    for (name, email) in [
        ("approved", "zz.asked.one@clinic.test"),
        ("declined", "zz.asked.two@clinic.test"),
    ] {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO registration_requests (id, email, first_name, last_name) \
             VALUES ($1, $2, 'Asked', 'Person')",
        )
        .bind(id)
        .bind(email)
        .execute(db)
        .await
        .unwrap();
        values.push((name, id.to_string()));
    }
    // A user with a second factor of a known key, and the challenge its right password got.
    let key = b"csrf-test-second-key".to_vec();
    let second =
        sandbox::auth::create_user(db, "zz.second.step@clinic.test", Role::Consultant).await;
    sqlx::query(
        "INSERT INTO second_factors (user_id, secret, confirmed_at) VALUES ($1, $2, now())",
    )
    .bind(second)
    .bind(&key)
    .execute(db)
    .await
    .unwrap();
    let (status, asked) = sandbox::http::post(
        &format!("{}/api/v1/auth/login", portal.gateway().url()),
        None,
        &serde_json::json!({"email": "zz.second.step@clinic.test", "password": sandbox::TEST_PASSWORD}),
    )
    .await;
    assert_eq!(status, 202, "{asked}");
    values.push(("challenge", asked["challenge"].as_str().unwrap().to_owned()));
    // The next step's code: accepted (one step of skew) for a minute at least, however long
    // the forms before it take.
    values.push(("code", sandbox::auth::totp_code_of_key(key, 1)));
    // A user enrolling a second factor (shown its key, no code given yet).
    let enrolling_key = b"csrf-test-enrol-key!".to_vec();
    let enrolling = sandbox::auth::create_user(db, ENROLLING, Role::Consultant).await;
    sqlx::query("INSERT INTO second_factors (user_id, secret) VALUES ($1, $2)")
        .bind(enrolling)
        .bind(&enrolling_key)
        .execute(db)
        .await
        .unwrap();
    values.push((
        "enrolment-code",
        sandbox::auth::totp_code_of_key(enrolling_key, 1),
    ));
    // A user to offboard, and an offboarding to cancel: one that waits for its receipts as long
    // as the test runs (a required consumer that never confirms is registered), as only a
    // waiting one can be cancelled. The emails sort after the seeded users'.
    auth_service::consumers::register(
        db,
        "never-confirms",
        true,
        &platform::amqp::broker_user(&portal.sb.amqp_url),
    )
    .await
    .unwrap();
    let offboarded = sandbox::auth::create_user(db, "zz.offboarded@clinic.test", Role::Nurse).await;
    values.push(("offboarded", offboarded.to_string()));
    let leaving = sandbox::auth::create_user(db, "zz.leaving@clinic.test", Role::Nurse).await;
    let saga = admin
        .offboard(
            leaving,
            &contract::api::OffboardingRequest {
                reason: "Left the clinic".into(),
                policy: contract::control::AppointmentPolicy::Cancel,
            },
        )
        .await
        .unwrap();
    values.push(("saga", saga.id.to_string()));
    // A deactivated user to erase (no offboarding: erasure needs none).
    let erased = sandbox::auth::create_user(db, "zz.erased@clinic.test", Role::Nurse).await;
    admin.deactivate(erased).await.unwrap();
    values.push(("erased", erased.to_string()));
    // A live SCIM token to revoke.
    let scim = admin.create_scim_token("csrf-revoked").await.unwrap();
    values.push(("scim-token", scim.token.id.to_string()));
    let date = chrono::Utc::now() + chrono::Duration::days(3);
    values.push(("date", date.format("%Y-%m-%d").to_string()));
    values
}

/// A browser as `who`, and the CSRF token of its session.
async fn browser(portal: &Portal, who: Who) -> (Browser, String) {
    let mut browser = Browser::new();
    let (email, password) = match who {
        Who::Visitor => {
            let csrf = browser.get(&portal.url("/login")).await.csrf();
            return (browser, csrf);
        }
        Who::Admin => (ADMIN_EMAIL.to_owned(), ADMIN_PASSWORD),
        Who::Signed(role) => (seeded(&portal.auth_db, role, 0).await, STAFF_PASSWORD),
        Who::Enrolling => (ENROLLING.to_owned(), sandbox::TEST_PASSWORD),
    };
    let signed = browser.log_in(portal, &email, password).await;
    assert_eq!(signed.status, 303, "{who:?} logs in: {}", signed.body);
    let csrf = browser.get(&portal.url("/")).await.csrf();
    (browser, csrf)
}

/// Whether `browser`'s session is signed in.
async fn signed_in(portal: &Portal, browser: &mut Browser) -> bool {
    browser.get(&portal.url("/")).await.status == 200
}

#[tokio::test]
async fn every_form_refuses_a_missing_or_wrong_csrf_token_and_changes_nothing() {
    let portal = Portal::start().await;
    let admin_id = id_of(&portal.auth_db, ADMIN_EMAIL).await;
    // Signed with the sandbox's key: reading the verify run creates no session.
    let sync_token = users::token_for(&portal.sb, admin_id, Role::Admin);
    let values = arrange(&portal).await;
    sandbox::poll_until(sandbox::SETTLE, "both dead letters in place", || async {
        (users::depth(&portal.sb, &users::queues().dead_letter).await == 2).then_some(())
    })
    .await;
    // A real token of a session of its own: what a forging site could get for itself.
    let theirs = Browser::new().get(&portal.url("/login")).await.csrf();

    let mut problems = Vec::new();
    for form in FORMS {
        let (mut browser, csrf) = browser(&portal, form.who).await;
        let path = fill(form.path, &values);
        let url = portal.url(&path);
        let filled: Vec<(&str, String)> = form
            .fields
            .iter()
            .map(|(k, v)| (*k, fill(v, &values)))
            .collect();
        let before = world(&portal, &sync_token).await;
        let was_signed_in = signed_in(&portal, &mut browser).await;
        assert_eq!(was_signed_in, form.who != Who::Visitor);
        for (what, token) in [
            ("no token", None),
            ("an empty token", Some("")),
            ("a made-up token", Some("forged-by-another-site")),
            ("another session's token", Some(theirs.as_str())),
        ] {
            let mut fields: Vec<(&str, &str)> =
                filled.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let Some(token) = token {
                fields.push(("csrf", token));
            }
            let page = browser.post(&url, &fields).await;
            let case = format!("POST {} ({:?}) with {what}", path, form.who);
            if page.status != 403 || !page.body.contains("did not come from this site") {
                problems.push(format!("{case}: answered {} {}", page.status, page.body));
            }
            if world(&portal, &sync_token).await != before {
                problems.push(format!("{case}: changed the system"));
            }
            if signed_in(&portal, &mut browser).await != was_signed_in {
                problems.push(format!("{case}: changed the browser's session"));
            }
        }

        // The right token: the same form goes through.
        let mut fields: Vec<(&str, &str)> = filled.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fields.push(("csrf", &csrf));
        let page = browser.post(&url, &fields).await;
        assert!(
            matches!(page.status, 200 | 303),
            "POST {} ({:?}) with its token: {} {}",
            path,
            form.who,
            page.status,
            page.body
        );
        sandbox::poll_until(
            sandbox::SETTLE,
            &format!("POST {} with its token to change something", path),
            || async { (world(&portal, &sync_token).await != before).then_some(()) },
        )
        .await;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The route of every `.route(…)` in `source` whose method router takes a POST (or any
/// method), as written.
fn state_changing_routes(source: &str) -> Vec<String> {
    let mut routes = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The whole call: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a closed .route( call");
        let call = &rest[..end];
        let path = call
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("a route path in .route({call})"));
        if ["post", "any", "on", "put", "patch", "delete"]
            .iter()
            .any(|method| calls(call, method))
        {
            routes.push(path.to_owned());
        }
    }
    routes
}

/// Whether `code` calls the function or method `name` (`name(`, `.name(`, `routing::name(`,
/// not `other_name(`).
fn calls(code: &str, name: &str) -> bool {
    code.match_indices(&format!("{name}(")).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

/// The table above names exactly the routes of the portal that change something: every
/// `post(` (or other non-GET) route declared in `crates/web/src`, and no route that is not.
#[test]
fn the_csrf_table_covers_every_state_changing_route_of_the_portal() {
    // The scan itself, on routes written the ways rustfmt writes them.
    let sample = r#"Router::new()
        .route("/a", get(a::form).post(a::save))
        .route(
            "/b/{id}",
            post(b::act),
        )
        .route("/c", get(c::show))
        .route("/c2", get(session(c::show)))
        .route("/d", axum::routing::any(d::all))"#;
    assert_eq!(state_changing_routes(sample), ["/a", "/b/{id}", "/d"]);

    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut declared = BTreeSet::new();
    for (file, text) in &files {
        // Routes added some other way would escape the scan below.
        for other in [".route_service(", ".nest(", ".nest_service(", ".merge("] {
            assert!(
                !text.contains(other),
                "{file} uses {other}: extend this scan to read its routes"
            );
        }
        declared.extend(state_changing_routes(text));
    }
    assert!(
        declared.contains("/login") && declared.contains("/admin/sync/verify"),
        "the scan found the router: {declared:?}"
    );

    let tabled: BTreeSet<String> = FORMS.iter().map(|f| f.route.to_owned()).collect();
    assert_eq!(
        tabled, declared,
        "every state-changing route needs a row in FORMS, and only those"
    );
    // Every row's path is of its route.
    for form in FORMS {
        let pattern: Vec<&str> = form.route.split('/').collect();
        let path: Vec<&str> = form.path.split('/').collect();
        assert_eq!(
            pattern.len(),
            path.len(),
            "{} for {}",
            form.path,
            form.route
        );
        for (p, s) in pattern.iter().zip(&path) {
            assert!(
                p.starts_with('{') || p == s,
                "{} for {}",
                form.path,
                form.route
            );
        }
    }
}
