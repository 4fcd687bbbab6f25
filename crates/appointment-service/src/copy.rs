//! The appointment-service's part of consuming user events: how a batch changes
//! `appointment_db` (the shared [`consumer`] crate does the rest — batches, trust, the newest
//! event per user, retries, dead letters, reconnection, clean shutdown).
//!
//! In the transaction that applies the snapshots, the future booked appointments of anyone who
//! is no longer an active doctor become `needs_reassignment`; when they are an active doctor
//! again (an offboarding cancelled, a deactivation undone), those still flagged are booked with
//! them again (staff may have moved or cancelled some meanwhile: those stay as they are).
//! The end-of-history mark is kept with the number of users a complete copy holds. An erased
//! person stays a tombstone under their id; their appointments show "former clinician".

use consumer::{Apply, Changed, Comparison};
use contract::wire::HistoryComplete;
use contract::Envelope;

/// Marks the future booked appointments of the doctors whose ids are `$1` as needing another
/// doctor: what follows when a doctor leaves (a snapshot makes them no longer an active doctor),
/// and when the copy stops knowing one (`portal reconcile --delete-extra` removes a clinician
/// `auth_db` does not hold, e.g. after `auth_db` was restored from a backup older than them).
pub const FLAG_APPOINTMENTS_OF: &str =
    "UPDATE appointments SET status = 'needs_reassignment', version = version + 1, \
     updated_at = now() \
     WHERE doctor_id = ANY($1) AND status = 'booked' AND starts_at > now()";

/// Books again with the doctors whose ids are `$1` (active doctors again) their future
/// appointments still flagged, where the doctor has not been booked at that time since.
pub const UNFLAG_APPOINTMENTS_OF: &str =
    "UPDATE appointments a SET status = 'booked', version = version + 1, updated_at = now() \
     WHERE a.doctor_id = ANY($1) AND a.status = 'needs_reassignment' AND a.starts_at > now() \
       AND NOT EXISTS (SELECT 1 FROM appointments b WHERE b.doctor_id = a.doctor_id \
           AND b.status = 'booked' AND tstzrange(b.starts_at, b.ends_at) && tstzrange(a.starts_at, a.ends_at))";

/// `clinicians`, kept by the version rule, and the appointments that follow from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClinicianCopy;

impl Apply for ClinicianCopy {
    async fn apply(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&Envelope],
        newer: Comparison,
    ) -> Result<Vec<Changed>, sqlx::Error> {
        let column = |f: fn(&Envelope) -> String| events.iter().map(|e| f(e)).collect::<Vec<_>>();
        let id: Vec<_> = events.iter().map(|e| e.payload.user_id.0).collect();
        let active: Vec<_> = events.iter().map(|e| e.payload.is_active).collect();
        let version: Vec<_> = events.iter().map(|e| e.payload.user_version).collect();
        let stamp: Vec<_> = events.iter().map(|e| e.timestamp.as_datetime()).collect();
        let rows: Vec<(uuid::Uuid, String, bool)> = sqlx::query_as(&format!(
            "INSERT INTO clinicians AS c (id, first_name, last_name, role, is_active, \
                 user_version, event_timestamp) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], \
                 $5::bool[], $6::int8[], $7::timestamptz[]) \
             ON CONFLICT (id) DO UPDATE SET first_name = EXCLUDED.first_name, \
                 last_name = EXCLUDED.last_name, role = EXCLUDED.role, \
                 is_active = EXCLUDED.is_active, user_version = EXCLUDED.user_version, \
                 event_timestamp = EXCLUDED.event_timestamp, synced_at = now() \
             WHERE {rule} \
             RETURNING id, first_name || ' ' || last_name, \
                 is_active AND role = 'doctor'",
            rule = consumer::version_rule("c", newer)
        ))
        .bind(&id)
        .bind(column(|e| e.payload.first_name.clone()))
        .bind(column(|e| e.payload.last_name.clone()))
        .bind(column(|e| e.payload.role.as_str().to_owned()))
        .bind(&active)
        .bind(&version)
        .bind(&stamp)
        .fetch_all(&mut *conn)
        .await?;
        let mut changed = Vec::with_capacity(rows.len());
        let (mut left, mut bookable_again) = (Vec::new(), Vec::new());
        for (id, label, bookable) in rows {
            match bookable {
                false => left.push(id),
                true => bookable_again.push(id),
            }
            changed.push(Changed { id, label });
        }
        if !bookable_again.is_empty() {
            let unflagged = sqlx::query(UNFLAG_APPOINTMENTS_OF)
                .bind(&bookable_again)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if unflagged > 0 {
                tracing::info!(unflagged, "appointments booked again: their doctor is back");
            }
        }
        if !left.is_empty() {
            // A statement of its own, so its snapshot is taken after the upsert has waited for
            // every booking holding one of these doctors `FOR SHARE`: a booking committed a
            // moment ago is flagged too (a CTE of the upsert would not see it).
            let flagged = sqlx::query(FLAG_APPOINTMENTS_OF)
                .bind(&left)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if flagged > 0 {
                tracing::info!(flagged, "appointments need reassignment: their doctor left");
            }
        }
        Ok(changed)
    }

    /// Keeps each erased person as a tombstone (id, the greater version, `erased_at`, the
    /// placeholders), and rewrites what this service derived from their name: the doctor of a
    /// saga's result, the replies and appointment events that named them, now "former
    /// clinician". Their appointments stay (a clinical record) under the id.
    async fn erase(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&Envelope],
    ) -> Result<Vec<Changed>, sqlx::Error> {
        let id: Vec<_> = events.iter().map(|e| e.payload.user_id.0).collect();
        let named: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT id, first_name || ' ' || last_name FROM clinicians \
             WHERE id = ANY($1) AND erased_at IS NULL FOR UPDATE",
        )
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?;
        let column = |f: fn(&Envelope) -> String| events.iter().map(|e| f(e)).collect::<Vec<_>>();
        let version: Vec<_> = events.iter().map(|e| e.payload.user_version).collect();
        let stamp: Vec<_> = events.iter().map(|e| e.timestamp.as_datetime()).collect();
        let erased_at: Vec<_> = events
            .iter()
            .map(|e| e.payload.erased_at.unwrap_or(e.timestamp).as_datetime())
            .collect();
        let changed: Vec<Changed> = sqlx::query_as(
            "INSERT INTO clinicians AS c (id, first_name, last_name, role, is_active, \
                 user_version, event_timestamp, erased_at) \
             SELECT id, first_name, last_name, role, false, user_version, event_timestamp, \
                 erased_at \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], \
                 $6::timestamptz[], $7::timestamptz[]) \
                 AS e(id, first_name, last_name, role, user_version, event_timestamp, erased_at) \
             ON CONFLICT (id) DO UPDATE SET first_name = EXCLUDED.first_name, \
                 last_name = EXCLUDED.last_name, is_active = false, \
                 role = CASE WHEN coalesce(EXCLUDED.user_version, 0) >= \
                     coalesce(c.user_version, 0) THEN EXCLUDED.role ELSE c.role END, \
                 user_version = greatest(c.user_version, EXCLUDED.user_version), \
                 event_timestamp = greatest(c.event_timestamp, EXCLUDED.event_timestamp), \
                 erased_at = coalesce(c.erased_at, EXCLUDED.erased_at), synced_at = now() \
             WHERE c.erased_at IS NULL \
                OR coalesce(EXCLUDED.user_version, 0) >= coalesce(c.user_version, 0) \
             RETURNING id, $8 AS label",
        )
        .bind(&id)
        .bind(column(|e| e.payload.first_name.clone()))
        .bind(column(|e| e.payload.last_name.clone()))
        .bind(column(|e| e.payload.role.as_str().to_owned()))
        .bind(&version)
        .bind(&stamp)
        .bind(&erased_at)
        .bind(contract::erasure::FORMER_CLINICIAN)
        .fetch_all(&mut *conn)
        .await?;
        sqlx::query("UPDATE command_results SET doctor_name = $2 WHERE doctor_id = ANY($1)")
            .bind(&id)
            .bind(contract::erasure::FORMER_CLINICIAN)
            .execute(&mut *conn)
            .await?;
        for (_, name) in &named {
            for (table, column) in [("processed_commands", "reply"), ("outbox", "body")] {
                sqlx::query(&format!(
                    "UPDATE {table} SET {column} = replace({column}::text, $1, $2)::jsonb \
                     WHERE strpos({column}::text, $1) > 0"
                ))
                .bind(name)
                .bind(contract::erasure::FORMER_CLINICIAN)
                .execute(&mut *conn)
                .await?;
            }
        }
        // An erased doctor left long ago; any future booking still with them needs another.
        sqlx::query(FLAG_APPOINTMENTS_OF)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        Ok(changed)
    }

    async fn history_complete(
        &self,
        conn: &mut sqlx::PgConnection,
        mark: HistoryComplete,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO history (users) VALUES ($1) \
             ON CONFLICT (complete) DO UPDATE SET users = EXCLUDED.users, completed_at = now()",
        )
        .bind(mark.users)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// The appointment-service's consumer.
pub type ClinicianConsumer = consumer::Consumer<ClinicianCopy>;
