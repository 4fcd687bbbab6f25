//! The portal's sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, and, on the
//! server, what the id stands for — the CSRF token every form carries and the signed-in user's
//! API tokens. Tokens never reach the browser. Served over https (WEB_SECURE_COOKIES), the
//! cookie is `Secure` and named `__Host-portal_session`: browsers then take it only from this
//! very host over https with `Path=/` and no `Domain`, so neither a sibling subdomain nor a
//! plain-http page can plant or overwrite it (a planted id could otherwise fix a session).
//! Sessions live in this process's memory: a restart signs everyone out (they log in again;
//! nothing else is lost).
//!
//! Only signed-in users are stored. A visitor (the login form) gets a cookie the portal signed
//! instead — `v1.<issued>.<nonce>.<tag>`, the tag an HMAC of the rest under a key of this
//! process — and the login form's CSRF token is another HMAC of the same value: a signed
//! double-submit token, bound to that browser's cookie, that costs no memory. So a flood of
//! anonymous requests stores nothing and cannot push out anyone's session, half-finished logins
//! included; a forged or altered cookie is a new visitor, and another visitor's token does not
//! match this one's cookie.

use contract::UserSnapshot;
use rand::RngCore;
use ring::hmac;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name over plain http (development, loopback).
pub const COOKIE: &str = "portal_session";
/// The session cookie's name over https: the `__Host-` prefix binds it to this host, `Secure`,
/// `Path=/`, no `Domain`.
pub const SECURE_COOKIE: &str = "__Host-portal_session";

/// The cookie's name when the portal is (`secure`) or is not served over https. Only the name
/// in use is read back: over https a `portal_session` cookie, which anyone able to set a cookie
/// for the domain could plant, is not a session.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE
    } else {
        COOKIE
    }
}

/// How long a visitor's cookie (the login form's) is good for, from when it was given.
const VISITOR_LIFE: Duration = Duration::from_secs(2 * 3600);
/// How long a signed-in session lasts without a request.
const IDLE_SIGNED: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; beyond, the least recently used go first.
const MAX_SESSIONS: usize = 100_000;
/// What a visitor's cookie value starts with (the format's version).
const VISITOR: &str = "v1";

/// A signed-in user's side of a session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub access: String,
    pub refresh: String,
    /// When the access token is renewed (four fifths of its life).
    pub renew_at: Instant,
    pub user: UserSnapshot,
}

impl SignedIn {
    pub fn of(answer: &contract::api::LoginResponse) -> Self {
        let life = u64::try_from(answer.expires_in).unwrap_or(60);
        Self {
            access: answer.access_token.clone(),
            refresh: answer.refresh_token.clone(),
            renew_at: Instant::now() + Duration::from_secs(life * 4 / 5),
            user: answer.user.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    csrf: String,
    signed: Option<SignedIn>,
    last_seen: Instant,
    /// Held while the access token is renewed: one renewal at a time per session (a refresh
    /// token is good once; a second use would end the session as a theft).
    renewal: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    fn new(csrf: String, signed: Option<SignedIn>) -> Self {
        Self {
            csrf,
            signed,
            last_seen: Instant::now(),
            renewal: Arc::default(),
        }
    }

    fn alive(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) < IDLE_SIGNED
    }
}

/// What a request's session is.
#[derive(Debug, Clone)]
pub struct Current {
    pub id: String,
    pub csrf: String,
    pub signed: Option<SignedIn>,
    /// True when this request created it (its cookie must be set).
    pub new: bool,
}

#[derive(Debug)]
pub struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
    /// Signs visitors' cookies and derives their CSRF tokens. Random per process, as the
    /// sessions are: after a restart an open login form says it has expired and offers a new
    /// one.
    visitor_key: hmac::Key,
}

impl Default for Sessions {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self {
            entries: Mutex::default(),
            visitor_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// 32 random bytes, URL-safe base64: a session id or a CSRF token.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64(&bytes)
}

/// Seconds since the Unix epoch (a visitor cookie's time of issue).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Equal without telling, by its timing, how much of a guess was right.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half written (each is replaced
        // whole), so a poisoned map is still sound.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session of cookie value `id`, if any (nothing is created: a page for signed-in
    /// users costs an anonymous request no memory).
    pub fn find(&self, id: &str) -> Option<Current> {
        let mut map = self.lock();
        let now = Instant::now();
        let entry = map.get_mut(id)?;
        if !entry.alive(now) {
            map.remove(id);
            return None;
        }
        entry.last_seen = now;
        Some(Current {
            id: id.to_owned(),
            csrf: entry.csrf.clone(),
            signed: entry.signed.clone(),
            new: false,
        })
    }

    /// The session of cookie value `id`: a signed-in user's, a visitor's whose cookie this
    /// process signed less than [`VISITOR_LIFE`] ago, or else a new visitor's (the login form's;
    /// its cookie must be set). Nothing is stored for a visitor.
    pub fn current(&self, id: Option<&str>) -> Current {
        if let Some(found) = id.and_then(|id| self.find(id).or_else(|| self.visitor(id))) {
            return found;
        }
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let body = format!("{VISITOR}.{}.{}", unix_now(), base64(&nonce));
        let tag = hmac::sign(&self.visitor_key, &Self::signed_part("cookie", &body));
        let id = format!("{body}.{}", base64(tag.as_ref()));
        Current {
            csrf: self.visitor_csrf(&body),
            id,
            signed: None,
            new: true,
        }
    }

    /// What the key signs for `purpose` (`cookie`, `csrf`): the purposes never share a tag,
    /// so the cookie's tag (never shown to a page) and the form's token are unrelated.
    fn signed_part(purpose: &str, body: &str) -> Vec<u8> {
        format!("{purpose}\0{body}").into_bytes()
    }

    /// The login form's CSRF token of a visitor's cookie (its part before the tag).
    fn visitor_csrf(&self, body: &str) -> String {
        base64(hmac::sign(&self.visitor_key, &Self::signed_part("csrf", body)).as_ref())
    }

    /// The visitor of cookie value `value`, when this process signed it less than
    /// [`VISITOR_LIFE`] ago.
    fn visitor(&self, value: &str) -> Option<Current> {
        use base64::Engine;
        let (body, tag) = value.rsplit_once('.')?;
        let mut parts = body.split('.');
        let (Some(VISITOR), Some(issued), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .ok()?;
        hmac::verify(&self.visitor_key, &Self::signed_part("cookie", body), &tag).ok()?;
        let issued: u64 = issued.parse().ok()?;
        let age = unix_now().checked_sub(issued)?;
        if age >= VISITOR_LIFE.as_secs() {
            return None;
        }
        Some(Current {
            id: value.to_owned(),
            csrf: self.visitor_csrf(body),
            signed: None,
            new: false,
        })
    }

    /// Whether `value` is a visitor's cookie that is still good (not a session that ended).
    pub fn is_visitor(&self, value: &str) -> bool {
        self.visitor(value).is_some()
    }

    /// Sessions held: signed-in users only (visitors are never stored).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lock a renewal of session `id`'s tokens holds.
    pub fn renewal_lock(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.lock().get(id).map(|e| e.renewal.clone())
    }

    /// Drops expired sessions; if still full, the least recently used tenth. Only logins
    /// (which pass the gateway's per-address limit and need a password) create sessions, so
    /// anonymous requests cannot fill the store.
    fn evict(map: &mut HashMap<String, Entry>) {
        let now = Instant::now();
        map.retain(|_, e| e.alive(now));
        if map.len() >= MAX_SESSIONS {
            let mut seen: Vec<(Instant, String)> =
                map.iter().map(|(k, e)| (e.last_seen, k.clone())).collect();
            seen.sort();
            for (_, id) in seen.into_iter().take(MAX_SESSIONS / 10) {
                map.remove(&id);
            }
        }
    }

    /// Signs in: the old session ends and a new one, with a new id and CSRF token, holds the
    /// user (an id an attacker planted before the login is worth nothing after it).
    pub fn sign_in(&self, old: &str, signed: SignedIn) -> Current {
        let mut map = self.lock();
        map.remove(old);
        if map.len() >= MAX_SESSIONS {
            Self::evict(&mut map);
        }
        let (id, csrf) = (random_token(), random_token());
        map.insert(id.clone(), Entry::new(csrf.clone(), Some(signed.clone())));
        Current {
            id,
            csrf,
            signed: Some(signed),
            new: true,
        }
    }

    /// Replaces the tokens of a signed-in session (after a renewal).
    pub fn renew(&self, id: &str, signed: SignedIn) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.signed = Some(signed);
        }
    }

    /// Ends a session; returns who was signed in.
    pub fn end(&self, id: &str) -> Option<SignedIn> {
        self.lock().remove(id).and_then(|e| e.signed)
    }

    /// The `Set-Cookie` value carrying `id` (`secure`: served over https).
    pub fn cookie(id: &str, secure: bool) -> String {
        let name = cookie_name(secure);
        let secure = if secure { "; Secure" } else { "" };
        format!("{name}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
    }

    /// The `Set-Cookie` value that removes the cookie (under the name in use).
    pub fn cleared(secure: bool) -> String {
        let name = cookie_name(secure);
        let secure = if secure { "; Secure" } else { "" };
        format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

/// `response` with `Set-Cookie: cookie` (a value of [`Sessions::cookie`] or
/// [`Sessions::cleared`], which are always valid header values).
pub fn with_cookie(
    mut response: axum::response::Response,
    cookie: &str,
) -> axum::response::Response {
    if let Ok(v) = cookie.parse() {
        response
            .headers_mut()
            .insert(axum::http::header::SET_COOKIE, v);
    }
    response
}

/// The session id in a `Cookie` header, under the name in use ([`cookie_name`]).
pub fn cookie_id(headers: &axum::http::HeaderMap, secure: bool) -> Option<String> {
    let wanted = cookie_name(secure);
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> SignedIn {
        SignedIn {
            access: "a".into(),
            refresh: "r".into(),
            renew_at: Instant::now(),
            user: serde_json::from_value(serde_json::json!({
                "userId": "01a23c83-9cba-702c-9d34-aba14a814aea", "email": "a@clinic.test",
                "firstName": "A", "lastName": "B", "role": "nurse", "phoneNumber": null,
                "isActive": true, "mustChangePassword": false,
                "createdAt": "2026-02-07T10:00:00.000Z"
            }))
            .unwrap(),
        }
    }

    #[test]
    fn a_visitor_is_not_stored_and_its_token_is_bound_to_its_own_cookie() {
        let sessions = Sessions::default();
        let visitor = sessions.current(None);
        assert!(visitor.new && visitor.signed.is_none());
        assert!(sessions.is_empty(), "a visitor is not stored");
        let again = sessions.current(Some(&visitor.id));
        assert!(!again.new, "the cookie it was given is recognised");
        assert!(same_token(&visitor.csrf, &again.csrf));
        assert!(sessions.is_visitor(&visitor.id));

        let other = sessions.current(None);
        assert_ne!(
            other.csrf, visitor.csrf,
            "each visitor has a token of its own"
        );
        // A cookie altered in any part, or signed by another process, is a new visitor.
        let (body, tag) = visitor.id.rsplit_once('.').unwrap();
        let (_, nonce) = body.rsplit_once('.').unwrap();
        let (other_body, _) = other.id.rsplit_once('.').unwrap();
        for forged in [
            format!("{other_body}.{tag}"),
            format!("v1.{}.{nonce}.{tag}", unix_now() + 1),
            format!("{body}.{tag}A"),
            format!("{body}.x"),
            "v1.1.a.b".to_owned(),
            "forged".to_owned(),
        ] {
            let current = sessions.current(Some(&forged));
            assert!(current.new, "{forged}");
            assert!(!same_token(&current.csrf, &visitor.csrf), "{forged}");
        }
        assert!(Sessions::default().current(Some(&visitor.id)).new);
        // One given more than VISITOR_LIFE ago has expired, even with a valid tag.
        let old = format!("v1.{}.{nonce}", unix_now() - VISITOR_LIFE.as_secs());
        let tag = hmac::sign(
            &sessions.visitor_key,
            &Sessions::signed_part("cookie", &old),
        );
        let old = format!("{old}.{}", base64(tag.as_ref()));
        assert!(sessions.current(Some(&old)).new);
        assert!(sessions.is_empty(), "nothing was stored meanwhile");
    }

    #[test]
    fn a_login_replaces_the_session_id_and_its_csrf_token() {
        let sessions = Sessions::default();
        let visitor = sessions.current(None);
        assert!(!same_token(&visitor.csrf, "x"));
        assert!(sessions.find("forged").is_none(), "find creates nothing");

        let user = sessions.sign_in(&visitor.id, signed());
        assert_ne!(user.id, visitor.id);
        assert_ne!(user.csrf, visitor.csrf);
        assert!(
            sessions.find(&visitor.id).is_none(),
            "the id planted before the login is worth nothing after it"
        );
        assert!(sessions.find(&user.id).and_then(|c| c.signed).is_some());
        assert_eq!(sessions.len(), 1);
        assert!(!sessions.is_visitor(&user.id));
        assert!(sessions.end(&user.id).is_some());
        assert!(sessions.find(&user.id).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = Sessions::cookie("abc", false);
        assert_eq!(c, "portal_session=abc; Path=/; HttpOnly; SameSite=Strict");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "other=1; portal_session=abc".parse().unwrap(),
        );
        assert_eq!(cookie_id(&headers, false).as_deref(), Some("abc"));
        assert_eq!(
            cookie_id(&headers, true),
            None,
            "not the name in use over https"
        );
    }

    #[test]
    fn over_https_the_cookie_is_secure_and_bound_to_this_host() {
        let c = Sessions::cookie("abc", true);
        assert_eq!(
            c,
            "__Host-portal_session=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!c.to_lowercase().contains("domain"));
        assert_eq!(
            Sessions::cleared(true),
            "__Host-portal_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "portal_session=planted; __Host-portal_session=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie_id(&headers, true).as_deref(), Some("abc"));
    }
}
