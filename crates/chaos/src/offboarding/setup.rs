//! What an offboarding run sets up before anything is killed, as `portal setup` and an operator
//! would: the consumers registered (their receipts are what the saga waits for), the people
//! (an admin, the leaving doctors, the staying doctors) written through the auth-service's
//! store with their events, the queue of the run's own that records every appointment event,
//! and the bookings through the appointment-service's API.
//!
//! The bookings are laid out so that only a staying doctor can ever take a leaving doctor's
//! appointment: every leaving doctor holds both slots of the day ([`SLOTS`]), so one who is
//! still active is never free when another one's appointment needs a doctor (were they, the
//! appointment could move to them and legitimately move again at their own offboarding, and
//! "at most one resolution per appointment" would not hold by design). The staying doctors are
//! free at the first slot; half of them are booked at the second. The first reassigning sagas
//! therefore complete, the next find the second slot taken and need attention, and once every
//! staying doctor is taken the rest cancel with `cancelled-no-doctor-free`.

use anyhow::{anyhow, bail, Context};
use api_client::ApiClient;
use auth_service::store::NewUser;
use contract::api::NewAppointment;
use contract::topology::{self, APPOINTMENT_SERVICE, USER_SERVICE};
use contract::Role;
use futures::{StreamExt, TryStreamExt};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use platform::jwt::{KeyDir, KeyRing, LOCAL_ACCESS_TTL_SECONDS};
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The slots every leaving doctor is booked at: (hour, minute) UTC, 30 minutes each, on one day
/// two days ahead.
pub const SLOTS: [(u32, u32); 2] = [(9, 0), (9, 30)];
/// Minutes of each appointment.
const SLOT_MINUTES: i64 = 30;
/// The queue of the run's own, bound to every appointment event before anything moves.
pub const EVENTS_QUEUE: &str = "chaos.appointment-events";
/// Bookings sent at once.
const BOOKING_CONCURRENCY: usize = 8;

const FIRST_NAMES: &[&str] = &[
    "Tendai", "Rudo", "Farai", "Chipo", "Tatenda", "Nyasha", "Tafadzwa", "Kudzai", "Rumbi",
    "Tinashe", "Vimbai", "Simba",
];

/// The run's people.
#[derive(Debug, Clone)]
pub struct People {
    pub admin: Uuid,
    pub admin_email: String,
    pub leaving: Vec<Uuid>,
    pub staying: Vec<Uuid>,
}

/// One appointment booked for the run.
#[derive(Debug, Clone, Copy)]
pub struct Booking {
    pub id: Uuid,
    pub doctor: Uuid,
    /// Index into [`SLOTS`].
    pub slot: usize,
}

/// Registers the user-service and the appointment-service as required consumers, trusted from
/// the run's broker user (their receipts are published as it), as `portal setup` does.
pub async fn register_consumers(auth_pool: &PgPool, amqp_url: &str) -> anyhow::Result<()> {
    let broker_user = platform::amqp::broker_user(amqp_url);
    for consumer in [USER_SERVICE, APPOINTMENT_SERVICE] {
        auth_service::consumers::register(auth_pool, consumer, true, &broker_user)
            .await
            .with_context(|| format!("registering {consumer}"))?;
    }
    Ok(())
}

/// Writes the admin, `leaving` leaving doctors and `staying` staying doctors through the
/// auth-service's store (each with its `user.created` event). One password hash serves them
/// all: nobody logs in (the run signs its tokens with the run's key).
pub async fn create_people(
    auth_pool: &PgPool,
    run_id: &str,
    leaving: u32,
    staying: u32,
) -> anyhow::Result<People> {
    let hash = auth_service::password::hash(auth_service::password::temporary()).await?;
    let admin_email = format!("chaos-admin-{run_id}@clinic.example");
    let admin = NewUser::staff(&admin_email, "Chaos", "Admin", Role::Admin, hash.clone())?;
    let admin = auth_service::store::insert_user(auth_pool, admin).await?.id;
    let mut people = People {
        admin,
        admin_email,
        leaving: Vec::new(),
        staying: Vec::new(),
    };
    for (kind, count) in [("leaving", leaving), ("staying", staying)] {
        for n in 0..count {
            let first = FIRST_NAMES[n as usize % FIRST_NAMES.len()];
            let last = format!(
                "{}-{n}",
                if kind == "leaving" {
                    "Leaver"
                } else {
                    "Stayer"
                }
            );
            let email = format!("chaos-{run_id}-{kind}-{n}@clinic.example");
            let doctor = NewUser::staff(&email, first, &last, Role::Doctor, hash.clone())?;
            let id = auth_service::store::insert_user(auth_pool, doctor)
                .await
                .with_context(|| format!("creating {email}"))?
                .id;
            match kind {
                "leaving" => people.leaving.push(id),
                _ => people.staying.push(id),
            }
        }
    }
    Ok(people)
}

/// Signs the run's bearer tokens with the run's key pair, as the auth-service would: a new one
/// per request, so none expires during a long run.
pub struct Tokens {
    ring: KeyRing,
}

impl Tokens {
    pub fn open(key_dir: &KeyDir) -> anyhow::Result<Self> {
        Ok(Self {
            ring: KeyRing::open(key_dir, LOCAL_ACCESS_TTL_SECONDS)?,
        })
    }

    pub fn sign(&self, user: Uuid, email: &str, role: Role) -> anyhow::Result<String> {
        self.ring.sign(user, email, role)
    }
}

/// Declares the run's queue bound to every appointment event (`appointment.#` on
/// `appointment.events`, the exchange declared first), durable so nothing published is lost
/// whatever is killed.
pub async fn declare_event_queue(amqp_url: &str) -> anyhow::Result<()> {
    let conn = platform::amqp::connect(amqp_url, "chaos appointment events").await?;
    let result = async {
        let ch = conn.create_channel().await?;
        platform::amqp::declare(&ch, &topology::control_declarations()).await?;
        ch.queue_declare(
            EVENTS_QUEUE,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            EVENTS_QUEUE,
            topology::APPOINTMENT_EXCHANGE,
            "appointment.#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.close(200, "done").await?;
        Ok::<_, lapin::Error>(())
    }
    .await;
    conn.close(200, "done").await.ok();
    result.context("declaring the run's appointment-event queue")
}

/// One message of the run's event queue: its AMQP message id and its body.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub message_id: Option<String>,
    pub body: Vec<u8>,
}

/// Takes every message of the run's event queue (acked: the queue is the run's alone).
pub async fn take_recorded_events(amqp_url: &str) -> anyhow::Result<Vec<Recorded>> {
    let conn = platform::amqp::connect(amqp_url, "chaos appointment events").await?;
    let result = async {
        let ch = conn.create_channel().await?;
        let mut out = Vec::new();
        while let Some(message) = ch
            .basic_get(EVENTS_QUEUE, BasicGetOptions { no_ack: true })
            .await?
        {
            out.push(Recorded {
                message_id: message
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned()),
                body: message.delivery.data,
            });
        }
        ch.close(200, "done").await?;
        Ok::<_, lapin::Error>(out)
    }
    .await;
    conn.close(200, "done").await.ok();
    result.context("reading the run's appointment-event queue")
}

/// Waits until the appointment-service answers `/health/ready` with 200: its copy holds the
/// whole history, so it books.
pub async fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client")?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http.get(format!("{url}/health/ready")).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("the appointment-service was not ready after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The start of slot `slot` on the run's day (two days ahead, UTC).
fn slot_start(slot: usize) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();
    let (hour, minute) = SLOTS.get(slot).ok_or_else(|| anyhow!("no slot {slot}"))?;
    day.and_hms_opt(*hour, *minute, 0)
        .map(|t| t.and_utc())
        .ok_or_else(|| anyhow!("no time {hour}:{minute}"))
}

/// Books, as a nurse through the appointment-service's API, every slot of every leaving doctor
/// and the second slot of the first half of the staying doctors; returns the leaving doctors'
/// bookings and the staying doctors'.
pub async fn book(
    appointments_url: &str,
    tokens: &Tokens,
    people: &People,
) -> anyhow::Result<(Vec<Booking>, Vec<Booking>)> {
    let nurse = tokens.sign(Uuid::now_v7(), "chaos-nurse@clinic.example", Role::Nurse)?;
    let api = ApiClient::new(appointments_url)
        .context("API client")?
        .authenticated(nurse);
    let mut wanted = Vec::new();
    for (n, doctor) in people.leaving.iter().enumerate() {
        for slot in 0..SLOTS.len() {
            wanted.push((*doctor, slot, format!("Leaving Patient {n}-{slot}")));
        }
    }
    let busy = people.staying.len() / 2;
    for (n, doctor) in people.staying.iter().take(busy).enumerate() {
        wanted.push((*doctor, 1, format!("Staying Patient {n}")));
    }
    let booked: Vec<Booking> = futures::stream::iter(wanted)
        .map(|(doctor, slot, patient)| {
            let api = &api;
            async move {
                let request = NewAppointment {
                    patient_name: patient,
                    doctor_id: doctor.to_string(),
                    starts_at: slot_start(slot)?.to_rfc3339(),
                    duration_minutes: SLOT_MINUTES,
                    reason: Some("review".to_owned()),
                };
                let appointment = api
                    .book(&request)
                    .await
                    .with_context(|| format!("booking doctor {doctor} at slot {slot}"))?;
                anyhow::Ok(Booking {
                    id: appointment.id,
                    doctor,
                    slot,
                })
            }
        })
        .buffer_unordered(BOOKING_CONCURRENCY)
        .try_collect()
        .await?;
    let leaving: HashSet<Uuid> = people.leaving.iter().copied().collect();
    let (leaving, staying): (Vec<Booking>, Vec<Booking>) = booked
        .into_iter()
        .partition(|b| leaving.contains(&b.doctor));
    Ok((leaving, staying))
}
