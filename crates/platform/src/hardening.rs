//! What every HTTP answer of every service carries, and what every refusal leaves in the log:
//! security headers (no sniffing, no referrer, no framing, a strict content security policy,
//! and `Cache-Control: no-store` unless the handler chose otherwise — the API's answers carry
//! personal data, tokens and temporary passwords that no cache may keep), and one `security`
//! log line per 401 or 403 with the client's address.

use crate::client_addr::ClientAddr;
use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The policy for answers that are not HTML: nothing may load or frame them.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// The policy for HTML pages: only this origin's own styles, scripts, images and forms.
const HTML_CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
                        form-action 'self'; frame-ancestors 'none'";

/// Adds the headers to, and logs a refusal of, every answer: the router's and the serving
/// limits' own (503 when overloaded, 408). [`crate::http::serve`] puts it outermost.
pub(crate) async fn harden(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let client = ClientAddr::of(&parts);
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let status = response.status().as_u16();
    if status == 401 || status == 403 {
        tracing::warn!(
            target: "security",
            event = if status == 401 { "unauthenticated" } else { "forbidden" },
            status,
            %method,
            path,
            %client,
            "request refused"
        );
    }
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::CACHE_CONTROL, "no-store");
    set(
        header::CONTENT_SECURITY_POLICY,
        if html { HTML_CSP } else { API_CSP },
    );
    response
}
