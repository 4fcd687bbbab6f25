//! The portal's sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when
//! the portal is served over https), and, on the server, what the id stands for — the CSRF token
//! every form carries and, once signed in, the user's API tokens. Tokens never reach the
//! browser. Sessions live in this process's memory: a restart signs everyone out (they log in
//! again; nothing else is lost).

use contract::UserSnapshot;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "portal_session";

/// How long a session lasts without a request: a visitor's (the login form) or a user's.
const IDLE_VISITOR: Duration = Duration::from_secs(2 * 3600);
const IDLE_SIGNED: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most; beyond, the least recently used go first.
const MAX_SESSIONS: usize = 100_000;

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
        let idle = if self.signed.is_some() {
            IDLE_SIGNED
        } else {
            IDLE_VISITOR
        };
        now.duration_since(self.last_seen) < idle
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

#[derive(Debug, Default)]
pub struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
}

/// 32 random bytes, URL-safe base64: a session id or a CSRF token.
fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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

    /// The session of cookie value `id`, or a new visitor's session (the login form's).
    pub fn current(&self, id: Option<&str>) -> Current {
        if let Some(found) = id.and_then(|id| self.find(id)) {
            return found;
        }
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            Self::evict(&mut map);
        }
        let (id, csrf) = (random_token(), random_token());
        map.insert(id.clone(), Entry::new(csrf.clone(), None));
        Current {
            id,
            csrf,
            signed: None,
            new: true,
        }
    }

    /// The lock a renewal of session `id`'s tokens holds.
    pub fn renewal_lock(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.lock().get(id).map(|e| e.renewal.clone())
    }

    /// Drops expired sessions; if still full, visitors' least recently used first, then
    /// signed-in users' — a flood of anonymous requests cannot sign staff out.
    fn evict(map: &mut HashMap<String, Entry>) {
        let now = Instant::now();
        map.retain(|_, e| e.alive(now));
        if map.len() >= MAX_SESSIONS {
            let mut seen: Vec<(bool, Instant, String)> = map
                .iter()
                .map(|(k, e)| (e.signed.is_some(), e.last_seen, k.clone()))
                .collect();
            seen.sort();
            for (_, _, id) in seen.into_iter().take(MAX_SESSIONS / 10) {
                map.remove(&id);
            }
        }
    }

    /// Signs in: the old session ends and a new one, with a new id and CSRF token, holds the
    /// user (an id an attacker planted before the login is worth nothing after it).
    pub fn sign_in(&self, old: &str, signed: SignedIn) -> Current {
        let mut map = self.lock();
        map.remove(old);
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

    /// The `Set-Cookie` value carrying `id`.
    pub fn cookie(id: &str, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn cleared(secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
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

/// The session id in a `Cookie` header.
pub fn cookie_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
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
    fn a_login_replaces_the_session_id_and_its_csrf_token() {
        let sessions = Sessions::default();
        let visitor = sessions.current(None);
        assert!(visitor.new);
        let again = sessions.current(Some(&visitor.id));
        assert!(!again.new);
        assert!(same_token(&visitor.csrf, &again.csrf));
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
        assert!(sessions.end(&user.id).is_some());
        assert!(sessions.find(&user.id).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = Sessions::cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "other=1; portal_session=abc".parse().unwrap(),
        );
        assert_eq!(cookie_id(&headers).as_deref(), Some("abc"));
    }
}
