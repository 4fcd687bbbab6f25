//! Signing in as a person would: the first admin's first sign-in through the API (temporary
//! password, second-factor enrolment, the password change it is held to), and a browser of
//! the web portal's login form.

use serde_json::{json, Value};

use sandbox::auth::totp_code as code;

/// What the admin holds after the first sign-in.
pub struct SignedIn {
    /// An access token of a full session.
    pub access: String,
    /// The password they chose.
    pub password: String,
    /// A recovery code of their second factor (each signs in once).
    pub recovery: Vec<String>,
}

async fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    sandbox::http::post(url, token, body).await
}

/// The first sign-in of an admin with a temporary password under ADMIN_MFA=required: enrols
/// a second factor, is held to changing the password (nothing else is allowed), changes it,
/// and signs in again with the new one and a code.
pub async fn first_sign_in(api: &str, email: &str, temporary: &str) -> SignedIn {
    let login = |password: String| {
        let url = format!("{api}/api/v1/auth/login");
        let email = email.to_owned();
        async move { post(&url, None, &json!({"email": email, "password": password})).await }
    };
    let (s, asked) = login(temporary.to_owned()).await;
    assert_eq!(s, 202, "{asked}");
    assert_eq!(
        asked["status"], "second_factor_enrolment_required",
        "{asked}"
    );
    let (s, enrolment) = post(
        &format!("{api}/api/v1/auth/login/second-factor/enrol"),
        None,
        &json!({"challenge": asked["challenge"]}),
    )
    .await;
    assert_eq!(s, 200, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let (s, done) = post(
        &format!("{api}/api/v1/auth/login/second-factor"),
        None,
        &json!({"challenge": asked["challenge"], "code": code(&secret, 0)}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["user"]["mustChangePassword"], true, "{done}");
    let recovery: Vec<String> = done["recoveryCodes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let pending = done["accessToken"].as_str().unwrap().to_owned();

    // Held to the password change: the admin API refuses the session until then.
    let (s, body) =
        sandbox::http::get(&format!("{api}/api/v1/auth/admin/users"), Some(&pending)).await;
    assert!(
        s == 401 || s == 403,
        "a session that must change its password used the admin API: {s} {body}"
    );
    let password = "Ward-Seven-Lantern-42".to_owned();
    let (s, body) = post(
        &format!("{api}/api/v1/auth/change-password"),
        Some(&pending),
        &json!({"currentPassword": temporary, "newPassword": password}),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    // Signed in again with the new password and the next code.
    let (s, asked) = login(password.clone()).await;
    assert_eq!(
        (s, asked["status"].as_str()),
        (202, Some("second_factor_required")),
        "{asked}"
    );
    let (s, done) = post(
        &format!("{api}/api/v1/auth/login/second-factor"),
        None,
        &json!({"challenge": asked["challenge"], "code": code(&secret, 1)}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["user"]["mustChangePassword"], false, "{done}");
    SignedIn {
        access: done["accessToken"].as_str().unwrap().to_owned(),
        password,
        recovery,
    }
}

/// A browser of the web portal: its session cookie, no redirects followed.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

pub struct Page {
    pub status: u16,
    pub body: String,
}

impl Page {
    /// The value of the hidden field `name`.
    fn field(&self, name: &str) -> String {
        let marker = format!(r#"name="{name}" value=""#);
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} field in:\n{}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn read(&mut self, response: reqwest::Response) -> Page {
        if let Some(set) = response.headers().get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        Page {
            status: response.status().as_u16(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let response = req.send().await.unwrap();
        self.read(response).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let response = req.send().await.unwrap();
        self.read(response).await
    }

    /// Signs in through the login form and its second-factor step (with a recovery code).
    pub async fn sign_in(&mut self, email: &str, password: &str, recovery: &str) {
        let form = self.get("/login").await;
        let csrf = form.field("csrf");
        let asked = self
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("email", email),
                    ("password", password),
                    ("next", "/"),
                ],
            )
            .await;
        assert!(
            asked.body.contains("/login/second-factor"),
            "no second-factor step ({}):\n{}",
            asked.status,
            asked.body
        );
        let (csrf, challenge) = (asked.field("csrf"), asked.field("challenge"));
        let done = self
            .post(
                "/login/second-factor",
                &[
                    ("csrf", &csrf),
                    ("challenge", &challenge),
                    ("code", recovery),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(done.status, 303, "second factor refused:\n{}", done.body);
    }
}
