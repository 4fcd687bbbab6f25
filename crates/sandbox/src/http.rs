//! JSON over HTTP as tests read it: the status and the body as JSON (`null` when there is none
//! or it is not JSON), so an assertion can look at any field of any answer, errors included.
//! A test that wants typed answers uses [`crate::ApiClient`] instead.
//!
//! Each call uses a client of its own: a client's pooled connections belong to the runtime that
//! opened them, and every test has its own runtime.

pub use reqwest::Method;
use serde_json::Value;

/// Sends `method url` with an optional bearer token and JSON body; panics when no answer comes.
pub async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method.clone(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: no answer: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `GET url`, with a bearer token when given.
pub async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    send(Method::GET, url, token, None).await
}

/// `POST url` with a JSON body, with a bearer token when given.
pub async fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    send(Method::POST, url, token, Some(body)).await
}

/// Asserts an error answer of the API: `expected` status and a JSON body with the `error` code
/// and the `message` every error carries.
pub fn assert_json_error(status: u16, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"].is_string(), "error code in {body}");
    assert!(body["message"].is_string(), "message in {body}");
}

/// The `Dr …` options of the web portal's Doctor list (`/appointments/new`) in `body`.
pub fn doctor_options(body: &str) -> Vec<String> {
    let Some(start) = body.find(r#"<select id="doctorId""#) else {
        return Vec::new();
    };
    let end = body[start..]
        .find("</select>")
        .map_or(body.len(), |e| e + start);
    body[start..end]
        .split("<option")
        .filter_map(|o| o.split_once('>').map(|(_, rest)| rest))
        .filter_map(|rest| rest.split("</option>").next())
        .filter(|text| text.starts_with("Dr "))
        .map(str::to_owned)
        .collect()
}
