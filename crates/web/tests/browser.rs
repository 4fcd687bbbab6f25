//! The portal in a real browser: Debian's headless Chromium driven through Debian's
//! chromedriver (WebDriver, with fantoccini), nothing downloaded. The seed guide's acceptance
//! test, literally: log in as the seeded admin at the portal, open `/appointments/new`, and
//! the Doctor list offers the 6 seeded doctors. On failure the test saves a screenshot and the
//! page's HTML under `<target>/tmp/browser/<test>/`; with `UPDATE_SCREENSHOTS=1` it also writes
//! the README's screenshots (`docs/screenshots/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{seeded_doctors, Portal, ADMIN_EMAIL, ADMIN_PASSWORD};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A chromedriver on a free port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let exe = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            Path::new(&exe).exists(),
            "{exe} is missing: scripts/prepare installs Debian's chromium and chromium-driver"
        );
        // A free port may be taken between the check and chromedriver's bind (another test's
        // driver): a driver that exits at once is started again on another port.
        for _ in 0..5 {
            let port = sandbox::process::free_port().unwrap();
            let mut child = tokio::process::Command::new(&exe)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start chromedriver");
            let url = format!("http://127.0.0.1:{port}");
            let status = format!("{url}/status");
            let deadline = std::time::Instant::now() + sandbox::SETTLE;
            let up = loop {
                if child.try_wait().ok().flatten().is_some() {
                    break false;
                }
                if reqwest::get(&status)
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break true;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "chromedriver did not answer"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            if up {
                return Self { child, url };
            }
        }
        panic!("chromedriver exited at start five times");
    }

    /// A new headless browser window (its own profile: its own cookies).
    async fn browser(&self) -> Client {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1100,900"],
            }),
        );
        // Plain HTTP to chromedriver on loopback: no TLS stack needed.
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.child.start_kill().ok();
    }
}

/// Where a test's screenshots and pages go.
fn output_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves what the browser shows now: `<name>.png` and `<name>.html` in the test's folder.
async fn keep(browser: &Client, test: &str, name: &str) -> PathBuf {
    let dir = output_dir(test);
    if let Ok(png) = browser.screenshot().await {
        std::fs::write(dir.join(format!("{name}.png")), png).ok();
    }
    if let Ok(html) = browser.source().await {
        std::fs::write(dir.join(format!("{name}.html")), html).ok();
    }
    dir
}

/// A screenshot for the README, when asked for (`UPDATE_SCREENSHOTS=1`).
async fn screenshot_for_readme(browser: &Client, name: &str) {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// What the page says is wrong, if it says so (`role="alert"`), for a failure's message.
async fn alert_text(browser: &Client) -> Option<String> {
    let alert = browser.find(Locator::Css("[role='alert']")).await.ok()?;
    alert.text().await.ok()
}

/// The element once the page shows it. A click that submits a form may return before the next
/// page has loaded (CI once looked for the new page's element on the old one), so whatever
/// follows a submit waits for it, within the tests' deadline, and a page that shows an alert
/// instead fails at once with the alert's text.
async fn appears(browser: &Client, locator: Locator<'_>) -> anyhow::Result<Element> {
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    loop {
        if let Ok(found) = browser.find(locator).await {
            return Ok(found);
        }
        if let Some(alert) = alert_text(browser).await {
            // The alert may belong to the page that holds the element (loaded since the find).
            if let Ok(found) = browser.find(locator).await {
                return Ok(found);
            }
            anyhow::bail!("the page shows {alert:?} instead of {locator:?}");
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{locator:?} did not appear on {}",
            browser.current_url().await?
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn log_in(
    browser: &Client,
    portal: &Portal,
    email: &str,
    password: &str,
) -> anyhow::Result<()> {
    submit_password(browser, portal, email, password).await?;
    // Signed in once the browser has left the login page (a refusal shows an alert there).
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    while browser.current_url().await?.path() == "/login" {
        if let Some(alert) = alert_text(browser).await {
            // The alert may be the next page's (the password page says why it is shown): only
            // one read on the login page itself is a refusal.
            if browser.current_url().await?.path() == "/login" {
                anyhow::bail!("{email} was not signed in: {alert}");
            }
            continue;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{email}: still on the login page"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The texts of the Doctor list's options, placeholder left out.
async fn doctor_options(browser: &Client) -> anyhow::Result<Vec<String>> {
    // Found by its label, as a person finds it.
    let label = browser
        .find(Locator::XPath("//label[normalize-space()='Doctor']"))
        .await?;
    let id = label.attr("for").await?.unwrap_or_default();
    let select = browser.find(Locator::Id(&id)).await?;
    let mut names = Vec::new();
    for option in select.find_all(Locator::Css("option")).await? {
        let text = option.text().await?;
        if text.starts_with("Dr ") {
            names.push(text);
        }
    }
    Ok(names)
}

/// Runs `steps` in a browser; on failure keeps a screenshot and the HTML, then fails.
async fn in_browser<F, Fut>(test: &str, driver: &Driver, steps: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = (Client, anyhow::Result<()>)>,
{
    let browser = driver.browser().await;
    let (browser, outcome) = steps(browser).await;
    if let Err(e) = outcome {
        let dir = keep(&browser, test, "failure").await;
        browser.close().await.ok();
        panic!("{test}: {e:#}; screenshot and page in {}", dir.display());
    }
    browser.close().await.ok();
}

#[tokio::test]
async fn the_seeded_admin_sees_the_six_seeded_doctors_in_the_appointment_form() {
    let portal = Portal::start().await;
    let driver = Driver::start().await;
    let expected = seeded_doctors(&portal.auth_db).await;
    assert_eq!(expected.len(), 6);
    in_browser("six_doctors", &driver, |browser| async {
        let outcome = async {
            browser.goto(&portal.url("/")).await?;
            // Not signed in: the login page, which comes back to the page asked for.
            anyhow::ensure!(browser.current_url().await?.path() == "/login");
            screenshot_for_readme(&browser, "login").await;
            log_in(&browser, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
            browser.goto(&portal.url("/appointments/new")).await?;
            let offered = doctor_options(&browser).await?;
            anyhow::ensure!(
                offered == expected,
                "offered {offered:?}, seeded {expected:?}"
            );
            screenshot_for_readme(&browser, "appointment-form").await;
            keep(&browser, "six_doctors", "appointment-form").await;
            Ok(())
        }
        .await;
        (browser, outcome)
    })
    .await;
}

#[tokio::test]
async fn a_booking_made_in_the_browser_is_listed() {
    let portal = Portal::start().await;
    let driver = Driver::start().await;
    in_browser("booking", &driver, |browser| async {
        let outcome = async {
            log_in(&browser, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
            browser.goto(&portal.url("/appointments/new")).await?;
            let select = browser.find(Locator::Id("doctorId")).await?;
            select.select_by_index(1).await?;
            let doctor = select.prop("value").await?.unwrap_or_default();
            browser
                .find(Locator::Id("reason"))
                .await?
                .send_keys("Follow-up")
                .await?;
            // Sent without a patient name: the form comes back with the rest as chosen.
            browser
                .find(Locator::XPath(
                    "//button[normalize-space()='Book appointment']",
                ))
                .await?
                .click()
                .await?;
            appears(&browser, Locator::Id("patientName-error")).await?;
            let kept = browser
                .find(Locator::Id("doctorId"))
                .await?
                .prop("value")
                .await?;
            anyhow::ensure!(kept.as_deref() == Some(doctor.as_str()), "{kept:?}");
            let reason = browser
                .find(Locator::Id("reason"))
                .await?
                .prop("value")
                .await?;
            anyhow::ensure!(reason.as_deref() == Some("Follow-up"), "{reason:?}");
            browser
                .find(Locator::Id("patientName"))
                .await?
                .send_keys("Rudo Mhlanga")
                .await?;
            // A date input takes the date as typed in the browser's locale order; setting the
            // value directly is locale-proof.
            let date = (chrono::Utc::now() + chrono::Duration::days(2))
                .format("%Y-%m-%d")
                .to_string();
            browser
                .execute(
                    "document.getElementById('date').value = arguments[0]; \
                     document.getElementById('time').value = '10:15';",
                    vec![serde_json::json!(date)],
                )
                .await?;
            browser
                .find(Locator::XPath(
                    "//button[normalize-space()='Book appointment']",
                ))
                .await?
                .click()
                .await?;
            let notice = appears(&browser, Locator::Css("p.notice"))
                .await?
                .text()
                .await?;
            anyhow::ensure!(
                notice.starts_with("Booked: Rudo Mhlanga with Dr "),
                "{notice}"
            );
            screenshot_for_readme(&browser, "booked").await;
            browser.goto(&portal.url("/appointments")).await?;
            let table = browser.find(Locator::Css("table")).await?.text().await?;
            anyhow::ensure!(table.contains("Rudo Mhlanga"), "{table}");
            screenshot_for_readme(&browser, "appointments").await;
            Ok(())
        }
        .await;
        (browser, outcome)
    })
    .await;
}

/// The scenario across two people: an admin creates a doctor in `/admin/users`; in a
/// second browser a nurse's Doctor list offers 7 after a reload; the admin deactivates the
/// doctor; the nurse's list is back to 6. The time each took to arrive is printed.
#[tokio::test]
async fn a_doctor_created_by_the_admin_appears_in_a_colleagues_list_and_goes_when_deactivated() {
    let portal = Portal::start().await;
    let driver = Driver::start().await;
    let nurse_email: String = sqlx::query_scalar("SELECT email FROM users WHERE role = 'nurse'")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    let admin = driver.browser().await;
    let nurse = driver.browser().await;
    let outcome = async {
        log_in(&admin, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        log_in(&nurse, &portal, &nurse_email, common::STAFF_PASSWORD).await?;
        nurse.goto(&portal.url("/appointments/new")).await?;
        anyhow::ensure!(doctor_options(&nurse).await?.len() == 6);

        admin.goto(&portal.url("/admin/users")).await?;
        admin
            .find(Locator::Id("email"))
            .await?
            .send_keys("ama.nkomo@clinic.co.zw")
            .await?;
        admin
            .find(Locator::Id("firstName"))
            .await?
            .send_keys("Ama")
            .await?;
        admin
            .find(Locator::Id("lastName"))
            .await?
            .send_keys("Nkomo")
            .await?;
        admin
            .find(Locator::Css("#newRole option[value='doctor']"))
            .await?
            .click()
            .await?;
        admin
            .find(Locator::XPath("//button[normalize-space()='Create user']"))
            .await?
            .click()
            .await?;
        let temporary = appears(&admin, Locator::Id("temporaryPassword")).await?;
        anyhow::ensure!(temporary
            .prop("value")
            .await?
            .is_some_and(|v| v.len() >= 12));
        // The copy button (the one script of the portal) copies it.
        admin
            .find(Locator::XPath("//button[normalize-space()='Copy']"))
            .await?
            .click()
            .await?;
        let copied = admin
            .find(Locator::Css("[data-copied-for='temporaryPassword']"))
            .await?;
        let deadline = std::time::Instant::now() + sandbox::SETTLE;
        while copied.text().await? != "Copied." {
            anyhow::ensure!(std::time::Instant::now() < deadline, "not copied");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        screenshot_for_readme(&admin, "user-created").await;

        let count_until = |want: usize| {
            let nurse = &nurse;
            let portal = &portal;
            async move {
                let started = std::time::Instant::now();
                loop {
                    nurse.goto(&portal.url("/appointments/new")).await?;
                    let offered = doctor_options(nurse).await?;
                    if offered.len() == want {
                        return anyhow::Ok((offered, started.elapsed()));
                    }
                    anyhow::ensure!(
                        started.elapsed() < sandbox::SETTLE,
                        "still {} doctors offered, waiting for {want}",
                        offered.len()
                    );
                }
            }
        };
        let (offered, took) = count_until(7).await?;
        anyhow::ensure!(offered.contains(&"Dr Ama Nkomo".to_owned()), "{offered:?}");
        println!("the new doctor was offered after {took:?} of reloading");

        admin.goto(&portal.url("/admin/users?q=ama.nkomo")).await?;
        admin
            .find(Locator::XPath(
                "//button[@aria-label='Deactivate Ama Nkomo']",
            ))
            .await?
            .click()
            .await?;
        let (offered, took) = count_until(6).await?;
        anyhow::ensure!(!offered.contains(&"Dr Ama Nkomo".to_owned()), "{offered:?}");
        println!("the deactivated doctor was gone after {took:?} of reloading");
        admin.goto(&portal.url("/admin/users")).await?;
        screenshot_for_readme(&admin, "admin-users").await;

        // The sync page: "Verify now" runs in the background; the page refreshes itself until
        // the result is in. (The nurse's list proved the directory has the deactivation; the
        // appointment-service's copy is waited for, or verify would rightly find it behind.)
        let appointment_db =
            platform::db::lazy_pool(&portal.sb.database_url("appointment"), 1).unwrap();
        sandbox::poll_until(
            sandbox::SETTLE,
            "the deactivation in appointment_db",
            || async {
                let active: bool = sqlx::query_scalar(
                "SELECT is_active FROM clinicians WHERE first_name = 'Ama' AND last_name = 'Nkomo'",
            )
            .fetch_one(&appointment_db)
            .await
            .ok()?;
                (!active).then_some(())
            },
        )
        .await;
        admin.goto(&portal.url("/admin/sync")).await?;
        admin
            .find(Locator::XPath("//button[normalize-space()='Verify now']"))
            .await?
            .click()
            .await?;
        let deadline = std::time::Instant::now() + sandbox::SETTLE;
        loop {
            // The page reloads itself meanwhile: a find or a read that meets the page between
            // two loads is tried again.
            let text = match admin.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains("Last run finished") {
                anyhow::ensure!(text.matches("11 users compared").count() == 2, "{text}");
                break;
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "{text}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        screenshot_for_readme(&admin, "admin-sync").await;
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        let dir = keep(&nurse, "admin_creates_a_doctor", "nurse").await;
        keep(&admin, "admin_creates_a_doctor", "admin").await;
        panic!("{e:#}; screenshots and pages in {}", dir.display());
    }
    admin.close().await.ok();
    nurse.close().await.ok();
}

/// The page's heading.
async fn heading(browser: &Client) -> anyhow::Result<String> {
    Ok(browser.find(Locator::Css("h1")).await?.text().await?)
}

/// A doctor an admin has just created logs in with the temporary password: every page sends
/// them to `/account/password` (the appointment form too) until they have chosen their own;
/// then the form is theirs.
#[tokio::test]
async fn a_new_doctor_must_change_the_temporary_password_before_anything_else() {
    let portal = Portal::start().await;
    let driver = Driver::start().await;
    let api = api_client::ApiClient::new(&portal.gateway().url())
        .unwrap()
        .logged_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap();
    let created = api
        .create_user(&contract::api::CreateUserRequest {
            email: "farai.dube@clinic.co.zw".into(),
            first_name: "Farai".into(),
            last_name: "Dube".into(),
            role: "doctor".into(),
            phone_number: None,
        })
        .await
        .unwrap();
    in_browser("temporary_password", &driver, |browser| async {
        let outcome = async {
            log_in(
                &browser,
                &portal,
                "farai.dube@clinic.co.zw",
                &created.temporary_password,
            )
            .await?;
            anyhow::ensure!(browser.current_url().await?.path() == "/account/password");
            browser.goto(&portal.url("/appointments/new")).await?;
            anyhow::ensure!(
                browser.current_url().await?.path() == "/account/password",
                "the form before the password was changed: {}",
                browser.current_url().await?
            );
            let new_password = "a quiet night on ward six";
            for (id, value) in [
                ("currentPassword", created.temporary_password.as_str()),
                ("newPassword", new_password),
                ("confirmPassword", new_password),
            ] {
                browser
                    .find(Locator::Id(id))
                    .await?
                    .send_keys(value)
                    .await?;
            }
            browser
                .find(Locator::Css("form.stacked button[type='submit']"))
                .await?
                .click()
                .await?;
            // Changing the password ends every session: the portal asks for the new one.
            let deadline = std::time::Instant::now() + sandbox::SETTLE;
            while browser.current_url().await?.path() == "/account/password" {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "still on the password page: {:?}",
                    alert_text(&browser).await
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if browser.current_url().await?.path() == "/login" {
                log_in(&browser, &portal, "farai.dube@clinic.co.zw", new_password).await?;
            }
            browser.goto(&portal.url("/appointments/new")).await?;
            let offered = doctor_options(&browser).await?;
            anyhow::ensure!(offered == ["Dr Farai Dube"], "{offered:?}");
            Ok(())
        }
        .await;
        (browser, outcome)
    })
    .await;
}

/// What is refused is refused visibly: a nurse gets the 403 page on the admin pages; a form
/// sent without its CSRF token gets the 403 page; with the user-service stopped the appointment
/// form says the directory cannot be reached and shows no Doctor list at all.
#[tokio::test]
async fn refusals_and_a_directory_outage_are_pages_that_say_so() {
    let mut portal = Portal::start().await;
    let driver = Driver::start().await;
    let nurse_email: String = sqlx::query_scalar("SELECT email FROM users WHERE role = 'nurse'")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    let browser = driver.browser().await;
    let outcome = async {
        log_in(&browser, &portal, &nurse_email, common::STAFF_PASSWORD).await?;
        for page in ["/admin/users", "/admin/sync"] {
            browser.goto(&portal.url(page)).await?;
            anyhow::ensure!(heading(&browser).await? == "Not allowed", "{page}");
        }
        browser.goto(&portal.url("/appointments/new")).await?;
        browser
            .execute(
                "document.querySelector('form.stacked input[name=csrf]').remove();",
                vec![],
            )
            .await?;
        browser
            .find(Locator::XPath(
                "//button[normalize-space()='Book appointment']",
            ))
            .await?
            .click()
            .await?;
        appears(
            &browser,
            Locator::XPath("//h1[normalize-space()='Not allowed']"),
        )
        .await?;
        let said = alert_text(&browser).await.unwrap_or_default();
        anyhow::ensure!(said.contains("did not come from this site"), "{said}");

        portal.stop_directory().await;
        browser.goto(&portal.url("/appointments/new")).await?;
        let said = alert_text(&browser).await.unwrap_or_default();
        anyhow::ensure!(said.contains("staff directory cannot be reached"), "{said}");
        anyhow::ensure!(
            browser.find_all(Locator::Css("select")).await?.is_empty(),
            "a Doctor list while the directory is down"
        );
        browser
            .find(Locator::XPath("//a[normalize-space()='Try again']"))
            .await?;
        screenshot_for_readme(&browser, "directory-down").await;
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        let dir = keep(&browser, "refusals", "failure").await;
        browser.close().await.ok();
        panic!("{e:#}; screenshot and page in {}", dir.display());
    }
    browser.close().await.ok();
}

/// The text of `css` on a page that reloads itself: a find or a read that meets the page
/// between two loads is an empty text, and the caller tries again.
async fn text_of(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(found) => found.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The check: an admin offboards a doctor from the person's page in the portal and
/// reads the saga page, which refreshes itself until it is completed, with the receipts of
/// the user-service and the appointment-service.
#[tokio::test]
async fn an_admin_offboards_a_doctor_and_reads_the_saga_page() {
    let portal = Portal::start().await;
    let driver = Driver::start().await;
    let (first, last): (String, String) = sqlx::query_as(
        "SELECT first_name, last_name FROM users WHERE role = 'doctor' ORDER BY email LIMIT 1",
    )
    .fetch_one(&portal.auth_db)
    .await
    .unwrap();
    let name = format!("{first} {last}");
    in_browser("offboarding", &driver, |browser| async {
        let outcome = async {
            log_in(&browser, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
            browser.goto(&portal.url("/admin/users")).await?;
            browser
                .find(Locator::LinkText(&name))
                .await?
                .click()
                .await?;
            appears(
                &browser,
                Locator::XPath("//summary[normalize-space()='Offboard…']"),
            )
            .await?
            .click()
            .await?;
            browser
                .find(Locator::Id("offboardReason"))
                .await?
                .send_keys("Moved to another clinic")
                .await?;
            browser
                .find(Locator::Id("policyCancel"))
                .await?
                .click()
                .await?;
            browser
                .find(Locator::Id("offboardConfirm"))
                .await?
                .click()
                .await?;
            keep(&browser, "offboarding", "user-page").await;
            browser
                .find(Locator::XPath(&format!(
                    "//button[normalize-space()='Offboard {name}']"
                )))
                .await?
                .click()
                .await?;
            let deadline = std::time::Instant::now() + sandbox::SETTLE;
            loop {
                let state = text_of(&browser, "#state").await;
                if state.contains("Completed") {
                    break;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "not completed: {state:?} at {}",
                    browser.current_url().await?
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            anyhow::ensure!(heading(&browser).await? == format!("Offboarding of {name}"));
            let receipts = text_of(&browser, "section[aria-labelledby='receipts'] table").await;
            for consumer in ["user-service", "appointment-service"] {
                anyhow::ensure!(receipts.contains(consumer), "{consumer}: {receipts}");
            }
            anyhow::ensure!(
                receipts.matches("has the current version").count() == 2,
                "{receipts}"
            );
            keep(&browser, "offboarding", "saga").await;
            Ok(())
        }
        .await;
        (browser, outcome)
    })
    .await;
}

/// Types the password at `/login` and submits it (a second factor's page follows).
async fn submit_password(
    browser: &Client,
    portal: &Portal,
    email: &str,
    password: &str,
) -> anyhow::Result<()> {
    browser.goto(&portal.url("/login")).await?;
    browser
        .find(Locator::Id("email"))
        .await?
        .send_keys(email)
        .await?;
    browser
        .find(Locator::Id("password"))
        .await?
        .send_keys(password)
        .await?;
    browser
        .find(Locator::XPath("//button[normalize-space()='Log in']"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// Types `code` on the second step's page and continues.
async fn enter_code(browser: &Client, code: &str) -> anyhow::Result<()> {
    appears(browser, Locator::Id("code"))
        .await?
        .send_keys(code)
        .await?;
    browser
        .find(Locator::XPath("//button[normalize-space()='Continue']"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// Waits until the browser is at `path`.
async fn arrives(browser: &Client, path: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    while browser.current_url().await?.path() != path {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not at {path} but {}: {:?}",
            browser.current_url().await?,
            alert_text(browser).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The check: under ADMIN_MFA=required the seeded admin enrols a second factor at
/// sign-in (the key shown, a code computed by the test from it), keeps ten recovery codes, and
/// the next sign-in asks for a code — the enrolment's code no longer works, the next one does.
#[tokio::test]
async fn an_admin_enrols_and_signs_in_with_a_second_factor() {
    let portal = Portal::start_configured(
        |auth| auth.security.mfa = auth_service::mfa::MfaPolicy::Required,
        |_| {},
    )
    .await;
    let driver = Driver::start().await;
    in_browser("second_factor", &driver, |browser| async {
        let outcome = async {
            submit_password(&browser, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
            let key = appears(&browser, Locator::Id("second-factor-key"))
                .await?
                .text()
                .await?;
            let first = sandbox::auth::totp_code(&key, 0);
            enter_code(&browser, &first).await?;
            let codes = appears(&browser, Locator::Id("recovery-codes")).await?;
            let shown = codes.find_all(Locator::Css("li")).await?.len();
            anyhow::ensure!(shown == 10, "{shown} recovery codes shown");
            browser
                .find(Locator::LinkText("Continue"))
                .await?
                .click()
                .await?;
            arrives(&browser, "/").await?;
            browser
                .find(Locator::XPath("//button[normalize-space()='Log out']"))
                .await?
                .click()
                .await?;
            arrives(&browser, "/login").await?;

            submit_password(&browser, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
            appears(&browser, Locator::Id("code")).await?;
            anyhow::ensure!(
                browser
                    .find(Locator::Id("second-factor-key"))
                    .await
                    .is_err(),
                "the key is shown only while enrolling"
            );
            enter_code(&browser, &first).await?;
            let refused = appears(&browser, Locator::Css("[role='alert']")).await?;
            let said = refused.text().await?;
            anyhow::ensure!(said.contains("each code works once"), "{said}");
            enter_code(&browser, &sandbox::auth::totp_code(&key, 1)).await?;
            arrives(&browser, "/").await?;
            browser.goto(&portal.url("/admin/users")).await?;
            appears(&browser, Locator::Css("table")).await?;
            Ok(())
        }
        .await;
        (browser, outcome)
    })
    .await;
}

/// axe-core's WCAG 2.1 A and AA rules, run on the page the browser shows, with
/// `label-content-name-mismatch` (WCAG 2.5.3: a control's accessible name contains its visible
/// text), which axe counts as experimental and leaves out unless asked. Its `axe.min.js` is
/// the one `scripts/prepare-tests` installs from the npm registry (`PORTAL_AXE_DIR`, by default
/// /var/tmp/portal-axe): the project vendors no JavaScript and downloads nothing at test time.
/// Fails naming each rule broken and the elements that break it.
async fn audit(browser: &Client, page: &str) -> anyhow::Result<()> {
    let dir = std::env::var_os("PORTAL_AXE_DIR").map_or_else(
        || std::path::PathBuf::from("/var/tmp/portal-axe"),
        std::path::PathBuf::from,
    );
    let path = dir.join("node_modules/axe-core/axe.min.js");
    let source = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (run scripts/prepare-tests)", path.display()))?;
    // Through WebDriver, so the page's content security policy (scripts from the portal only)
    // does not apply.
    browser.execute(&source, vec![]).await?;
    let violations = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag',
                                            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
                                 rules: { 'label-content-name-mismatch': { enabled: true } } })
               .then(r => done(r.violations.map(v => v.id + ' (' + v.help + '): '
                                 + v.nodes.map(n => n.target.join(' ')).join(', '))),
                     e => done(['axe did not run: ' + e]));",
            vec![],
        )
        .await?;
    let violations: Vec<String> = serde_json::from_value(violations)?;
    anyhow::ensure!(
        violations.is_empty(),
        "{page} at {}: {violations:#?}",
        browser.current_url().await?
    );
    Ok(())
}

/// `/admin/scim` in a browser: reached from `/admin/users` by its link; a new token's page
/// shows the secret in a read-only field with its "Copy" button (shown by the script) and the
/// tenant URL; the list's "Revoke" for that token asks first, then says it is revoked; a taken
/// name comes back by the field. Each page passes the accessibility audit ([`audit`]).
#[tokio::test]
async fn an_admin_creates_and_revokes_a_scim_token_in_the_browser() {
    let portal = Portal::start().await;
    let driver = Driver::start().await;
    in_browser("scim", &driver, |browser| async {
        let outcome = async {
            log_in(&browser, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
            browser.goto(&portal.url("/admin/users")).await?;
            browser
                .find(Locator::LinkText("SCIM tokens"))
                .await?
                .click()
                .await?;
            arrives(&browser, "/admin/scim").await?;
            anyhow::ensure!(heading(&browser).await? == "SCIM tokens");
            audit(&browser, "no token").await?;

            let create = |name: &'static str| {
                let browser = &browser;
                async move {
                    // Found by its label, as a person finds it.
                    let label = browser
                        .find(Locator::XPath("//label[normalize-space()='Name']"))
                        .await?;
                    let id = label.attr("for").await?.unwrap_or_default();
                    browser
                        .find(Locator::Id(&id))
                        .await?
                        .send_keys(name)
                        .await?;
                    browser
                        .find(Locator::XPath(
                            "//button[normalize-space()='Create SCIM token']",
                        ))
                        .await?
                        .click()
                        .await?;
                    anyhow::Ok(())
                }
            };
            create("entra-browser").await?;
            let secret = appears(&browser, Locator::Id("scimSecret")).await?;
            anyhow::ensure!(heading(&browser).await? == "SCIM token created");
            let value = secret.prop("value").await?.unwrap_or_default();
            anyhow::ensure!(value.starts_with("scim_"), "{value:?}");
            anyhow::ensure!(secret.attr("readonly").await?.is_some(), "read-only");
            let copy = browser
                .find(Locator::XPath(
                    "//button[@data-copy='scimSecret' and normalize-space()='Copy']",
                ))
                .await?;
            anyhow::ensure!(copy.is_displayed().await?, "the script shows Copy");
            let tenant = browser.find(Locator::Id("scimTenantUrl")).await?;
            let tenant = tenant.prop("value").await?.unwrap_or_default();
            anyhow::ensure!(tenant.ends_with("/scim/v2"), "{tenant:?}");
            audit(&browser, "secret").await?;
            keep(&browser, "scim", "secret").await;

            browser
                .find(Locator::LinkText("Back to the SCIM tokens"))
                .await?
                .click()
                .await?;
            let revoke = appears(
                &browser,
                Locator::XPath("//button[@aria-label='Revoke entra-browser']"),
            )
            .await?;
            let page = browser.source().await?;
            anyhow::ensure!(!page.contains(&value), "the list never shows the secret");
            audit(&browser, "one live token").await?;
            keep(&browser, "scim", "list").await;
            revoke.click().await?;
            let yes = appears(
                &browser,
                Locator::XPath("//button[normalize-space()='Yes, revoke entra-browser']"),
            )
            .await?;
            audit(&browser, "confirmation").await?;
            keep(&browser, "scim", "confirmation").await;
            yes.click().await?;
            let notice = appears(&browser, Locator::Css("p.notice[role='status']")).await?;
            let said = notice.text().await?;
            anyhow::ensure!(said.contains("entra-browser is revoked"), "{said}");
            anyhow::ensure!(
                browser
                    .find(Locator::XPath(
                        "//button[@aria-label='Revoke entra-browser']"
                    ))
                    .await
                    .is_err(),
                "no Revoke for a revoked token"
            );
            audit(&browser, "revoked").await?;

            create("okta-browser").await?;
            appears(&browser, Locator::Id("scimSecret")).await?;
            browser.goto(&portal.url("/admin/scim")).await?;
            create("okta-browser").await?;
            let problem = appears(&browser, Locator::Id("scimName-error")).await?;
            let said = problem.text().await?;
            anyhow::ensure!(said.contains("exists already"), "{said}");
            audit(&browser, "name taken").await?;
            Ok(())
        }
        .await;
        (browser, outcome)
    })
    .await;
}

/// The check in the portal: erasing an active person is refused with the reason; an
/// admin deactivates a pharmacist in `/admin/users`, opens their page, follows "Erase personal
/// data…" to the confirmation (what erasure does, that it cannot be undone, a reason without
/// personal data, a tick), erases, and reads the record (the queues purged) with the command
/// that verifies it; the person's page then says when they were erased and offers nothing to
/// do. Each page passes the accessibility audit ([`audit`]).
#[tokio::test]
async fn an_admin_erases_a_deactivated_persons_data_after_a_confirmation() {
    let portal = Portal::start().await;
    let driver = Driver::start().await;
    let (id, first, last): (uuid::Uuid, String, String) = sqlx::query_as(
        "SELECT id, first_name, last_name FROM users WHERE role = 'pharmacist' \
         ORDER BY email LIMIT 1",
    )
    .fetch_one(&portal.auth_db)
    .await
    .unwrap();
    let name = format!("{first} {last}");
    in_browser("erasure", &driver, |browser| async {
        let outcome = async {
            log_in(&browser, &portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
            // Still active: the confirmation says why not, and has no form.
            browser
                .goto(&portal.url(&format!("/admin/users/{id}/erasure")))
                .await?;
            let refused = alert_text(&browser).await.unwrap_or_default();
            anyhow::ensure!(refused.contains("still active"), "{refused:?}");
            anyhow::ensure!(browser
                .find_all(Locator::Css("main form"))
                .await?
                .is_empty());
            browser.goto(&portal.url("/admin/users")).await?;
            browser
                .find(Locator::XPath(&format!(
                    "//button[@aria-label='Deactivate {name}']"
                )))
                .await?
                .click()
                .await?;
            appears(
                &browser,
                Locator::XPath(&format!("//button[@aria-label='Activate {name}']")),
            )
            .await?;
            audit(&browser, "users").await?;
            browser
                .find(Locator::LinkText(&name))
                .await?
                .click()
                .await?;
            let erase = appears(&browser, Locator::LinkText("Erase personal data…")).await?;
            audit(&browser, "user page").await?;
            erase.click().await?;
            // Found by its label, as a person finds it.
            let label = appears(
                &browser,
                Locator::XPath("//label[normalize-space()='Reason (required)']"),
            )
            .await?;
            anyhow::ensure!(heading(&browser).await? == "Erase personal data?");
            let page = browser.find(Locator::Css("main")).await?.text().await?;
            for said in [
                "Erasure cannot be undone.",
                "write no personal data here",
                &name,
            ] {
                anyhow::ensure!(page.contains(said), "{said:?} in {page}");
            }
            audit(&browser, "confirmation").await?;
            keep(&browser, "erasure", "confirmation").await;
            let reason = label.attr("for").await?.unwrap_or_default();
            browser
                .find(Locator::Id(&reason))
                .await?
                .send_keys("Erasure request of 2026-12-01, ticket 4711")
                .await?;
            browser
                .find(Locator::XPath(
                    "//label[normalize-space()='I understand that erasure cannot be undone']",
                ))
                .await?
                .click()
                .await?;
            browser
                .find(Locator::XPath(&format!(
                    "//button[normalize-space()='Erase personal data of {name}']"
                )))
                .await?
                .click()
                .await?;
            let notice = appears(&browser, Locator::Css("p.notice[role='status']"))
                .await?
                .text()
                .await?;
            anyhow::ensure!(
                notice.contains(&format!("The personal data of user {id} is erased")),
                "{notice}"
            );
            anyhow::ensure!(heading(&browser).await? == format!("Erasure of user {id}"));
            let command = browser
                .find(Locator::Id("verify-command"))
                .await?
                .text()
                .await?;
            anyhow::ensure!(
                command == format!("portal erasure verify {id}"),
                "{command}"
            );
            let facts = browser.find(Locator::Css("dl.facts")).await?.text().await?;
            anyhow::ensure!(
                facts.contains("Erasure request of 2026-12-01, ticket 4711"),
                "{facts}"
            );
            // The purge ran at once, through the sync admin API.
            let purged = browser.find(Locator::Id("purge")).await?.text().await?;
            anyhow::ensure!(purged.contains(" removed ("), "{purged}");
            anyhow::ensure!(alert_text(&browser).await.is_none(), "{purged}");
            let shown = browser.source().await?;
            anyhow::ensure!(!shown.contains(&last), "the record names no one: {shown}");
            audit(&browser, "erasure record").await?;
            keep(&browser, "erasure", "record").await;
            screenshot_for_readme(&browser, "erasure").await;

            // The person's page now: when, and nothing to do.
            browser
                .goto(&portal.url(&format!("/admin/users/{id}")))
                .await?;
            let erased = appears(&browser, Locator::Id("erased"))
                .await?
                .text()
                .await?;
            anyhow::ensure!(erased.starts_with("Erased on "), "{erased}");
            let forms = browser.find_all(Locator::Css("main form")).await?;
            anyhow::ensure!(forms.is_empty(), "no action on an erased person's page");
            audit(&browser, "erased user page").await?;
            keep(&browser, "erasure", "erased-user").await;
            Ok(())
        }
        .await;
        (browser, outcome)
    })
    .await;
}
