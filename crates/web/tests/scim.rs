//! `/admin/scim` over HTTP, as a browser without JavaScript uses it: an admin creates a SCIM
//! token and sees its secret once (the one stored, by its hash) with the tenant URL; the list
//! shows the token without the secret; a live name is refused with the API's words and the
//! name kept; revoking asks first, then marks it revoked; forged forms and non-admins get 403.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Browser, Page, Portal, ADMIN_EMAIL, ADMIN_PASSWORD, STAFF_PASSWORD};

/// The value of the read-only field `id` on `page`.
fn field_value(page: &Page, id: &str) -> String {
    let at = page
        .body
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("a field {id}: {}", page.body));
    let rest = &page.body[at..];
    let start = rest.find(r#"value=""#).expect("a value") + r#"value=""#.len();
    let end = rest[start..].find('"').expect("end of the value") + start;
    rest[start..end].to_owned()
}

/// The id in the first `/admin/scim/{id}/revoke` form of `page`.
fn revoke_id(page: &Page) -> uuid::Uuid {
    let start = page
        .body
        .find(r#"action="/admin/scim/"#)
        .unwrap_or_else(|| panic!("a revoke form: {}", page.body))
        + r#"action="/admin/scim/"#.len();
    let end = page.body[start..].find("/revoke").expect("/revoke") + start;
    page.body[start..end].parse().expect("a token id")
}

async fn revoked_at_is_set(portal: &Portal, name: &str) -> Vec<bool> {
    sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM scim_tokens WHERE name = $1")
        .bind(name)
        .fetch_all(&portal.auth_db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_creates_a_token_sees_the_secret_once_and_revokes_it_after_confirming() {
    let portal = Portal::start().await;
    let mut admin = Browser::new();
    admin.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    let users = admin.get(&portal.url("/admin/users")).await;
    assert!(
        users
            .body
            .contains(r#"<a href="/admin/scim">SCIM tokens</a>"#),
        "{}",
        users.body
    );
    let empty = admin.get(&portal.url("/admin/scim")).await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    for needle in [
        "<h1>SCIM tokens</h1>",
        "No SCIM token yet",
        r#"<h2 id="new-token">New SCIM token</h2>"#,
        r#"<label for="scimName">Name</label>"#,
        r#"<button type="submit">Create SCIM token</button>"#,
    ] {
        assert!(empty.body.contains(needle), "{needle}: {}", empty.body);
    }
    let csrf = empty.csrf();

    // A forged form creates nothing.
    let forged = admin
        .post(
            &portal.url("/admin/scim"),
            &[("csrf", "forged"), ("name", "entra-production")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(revoked_at_is_set(&portal, "entra-production")
        .await
        .is_empty());

    let created = admin
        .post(
            &portal.url("/admin/scim"),
            &[("csrf", &csrf), ("name", " entra-production ")],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let secret = field_value(&created, "scimSecret");
    assert!(secret.starts_with("scim_"), "{secret}");
    let tenant = field_value(&created, "scimTenantUrl");
    assert_eq!(
        tenant,
        format!("{}/scim/v2", portal.gateway().url().trim_end_matches('/'))
    );
    for needle in [
        "<h1>SCIM token created</h1>",
        "<strong>entra-production</strong>",
        "it will not be shown again",
        r#"<label for="scimSecret">Secret token</label>"#,
        r#"<label for="scimTenantUrl">Tenant URL</label>"#,
        r#"aria-label="Copy the secret token" hidden>Copy</button>"#,
        r#"<script src="/static/copy.js"></script>"#,
    ] {
        assert!(created.body.contains(needle), "{needle}: {}", created.body);
    }
    assert!(
        created.body.contains(r#"readonly"#),
        "a read-only field: {}",
        created.body
    );
    // The secret shown is the one the auth-service checks (it keeps only its SHA-256).
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scim_tokens WHERE name = 'entra-production' \
         AND secret_hash = sha256(convert_to($1, 'UTF8')) AND revoked_at IS NULL",
    )
    .bind(&secret)
    .fetch_one(&portal.auth_db)
    .await
    .unwrap();
    assert_eq!(stored, 1);

    // The list shows it, live, by whom; never the secret.
    let list = admin.get(&portal.url("/admin/scim")).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(!list.body.contains(&secret), "{}", list.body);
    assert!(!list.body.contains("scim_"), "{}", list.body);
    for needle in [
        "<td>entra-production</td>",
        r#"<span class="badge ok">Live</span>"#,
        "<td>never</td>",
        r#"aria-label="Revoke entra-production">Revoke</button>"#,
        "1 in all, 1 live.",
    ] {
        assert!(list.body.contains(needle), "{needle}: {}", list.body);
    }
    let admin_name: (String, String) =
        sqlx::query_as("SELECT first_name, last_name FROM users WHERE email = $1")
            .bind(ADMIN_EMAIL)
            .fetch_one(&portal.auth_db)
            .await
            .unwrap();
    assert!(
        list.body
            .contains(&format!("<td>{} {}</td>", admin_name.0, admin_name.1)),
        "created by the admin: {}",
        list.body
    );

    // A second live token of that name: refused by the field, the name kept, nothing created.
    let taken = admin
        .post(
            &portal.url("/admin/scim"),
            &[("csrf", &csrf), ("name", "entra-production")],
        )
        .await;
    assert_eq!(taken.status, 422, "{}", taken.body);
    for needle in [
        "exists already",
        r#"aria-invalid="true""#,
        r#"value="entra-production""#,
        r#"role="alert""#,
    ] {
        assert!(taken.body.contains(needle), "{needle}: {}", taken.body);
    }
    let nameless = admin
        .post(
            &portal.url("/admin/scim"),
            &[("csrf", &csrf), ("name", " ")],
        )
        .await;
    assert_eq!(nameless.status, 422, "{}", nameless.body);
    assert!(
        nameless.body.contains("1 to 100 characters"),
        "{}",
        nameless.body
    );
    assert_eq!(
        revoked_at_is_set(&portal, "entra-production").await,
        [false]
    );

    // Revoke: a confirmation page first, which changes nothing.
    let id = revoke_id(&list);
    let revoke = portal.url(&format!("/admin/scim/{id}/revoke"));
    let forged = admin.post(&revoke, &[("csrf", "forged")]).await;
    assert_eq!(forged.status, 403);
    let confirm = admin.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    for needle in [
        "<h1>Revoke the SCIM token entra-production?</h1>",
        "This cannot be undone.",
        r#"<input type="hidden" name="confirm" value="yes">"#,
        r#"<button type="submit">Yes, revoke entra-production</button>"#,
        r#"<a href="/admin/scim">No, back to the SCIM tokens</a>"#,
    ] {
        assert!(confirm.body.contains(needle), "{needle}: {}", confirm.body);
    }
    assert_eq!(
        revoked_at_is_set(&portal, "entra-production").await,
        [false]
    );

    let done = admin
        .post(&revoke, &[("csrf", &csrf), ("confirm", "yes")])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = done.location.expect("back to the list");
    assert_eq!(back, format!("/admin/scim?revoked={id}"));
    assert_eq!(revoked_at_is_set(&portal, "entra-production").await, [true]);
    let list = admin.get(&portal.url(&back)).await;
    assert_eq!(list.status, 200, "{}", list.body);
    for needle in [
        "The SCIM token <strong>entra-production</strong> is revoked",
        r#"<span class="badge bad">Revoked</span>"#,
        "1 in all, 0 live.",
    ] {
        assert!(list.body.contains(needle), "{needle}: {}", list.body);
    }
    assert!(
        !list.body.contains("Revoke entra-production"),
        "no button for a revoked token: {}",
        list.body
    );
    // Asking again goes back to the list; the name is free for a new token.
    let again = admin.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(again.status, 303, "{}", again.body);
    let unknown = admin
        .post(
            &portal.url(&format!("/admin/scim/{}/revoke", uuid::Uuid::new_v4())),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let renewed = admin
        .post(
            &portal.url("/admin/scim"),
            &[("csrf", &csrf), ("name", "entra-production")],
        )
        .await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_ne!(field_value(&renewed, "scimSecret"), secret);
}

#[tokio::test]
async fn only_admins_see_or_use_the_scim_page() {
    let portal = Portal::start().await;
    let doctor: String =
        sqlx::query_scalar("SELECT email FROM users WHERE role = 'doctor' ORDER BY email LIMIT 1")
            .fetch_one(&portal.auth_db)
            .await
            .unwrap();
    let mut browser = Browser::new();
    browser.log_in(&portal, &doctor, STAFF_PASSWORD).await;
    let page = browser.get(&portal.url("/admin/scim")).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.body.contains("This page is for admins."),
        "{}",
        page.body
    );
    // Their own session's CSRF token does not make them an admin.
    let home = browser.get(&portal.url("/")).await;
    let csrf = home.csrf();
    let created = browser
        .post(
            &portal.url("/admin/scim"),
            &[("csrf", &csrf), ("name", "sneaky")],
        )
        .await;
    assert_eq!(created.status, 403, "{}", created.body);
    let revoke = browser
        .post(
            &portal.url(&format!("/admin/scim/{}/revoke", uuid::Uuid::new_v4())),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(revoke.status, 403, "{}", revoke.body);
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM scim_tokens")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
    // A visitor is sent to the login, and back here after it.
    let visitor = Browser::new().get(&portal.url("/admin/scim")).await;
    assert_eq!(visitor.status, 303);
    assert_eq!(visitor.location.as_deref(), Some("/login?next=/admin/scim"));
}
