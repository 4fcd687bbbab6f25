//! Password hashing with argon2id, always off the async runtime: a hash takes tens of
//! milliseconds of CPU and would otherwise stall every request sharing the runtime thread.
//!
//! Hashes run on a small pool of dedicated threads, one per core. Each hash needs a 19 MiB
//! block; on tokio's blocking pool, 32 concurrent logins ran on many threads whose freed blocks
//! glibc kept per thread arena, and the auth-service reached gigabytes (seen in the benchmark
//! and the chaos run). On a few long-lived threads the same blocks are reused, so memory stays
//! at a few blocks; more hashes in parallel than cores would not be faster anyway.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use contract::ValidationError;
use rand::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Why a hash was not computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full: the caller answers 503 rather than wait behind a flood.
    #[error("too many passwords are being checked; try again in a moment")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Jobs queued or running; bounded by [`queue_limit`].
static IN_QUEUE: AtomicUsize = AtomicUsize::new(0);
static QUEUE_LIMIT: OnceLock<usize> = OnceLock::new();

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Sets how many hashes may wait or run at once (the first call wins; default 16 per core,
/// about half a second of waiting on this machine class).
pub fn set_queue_limit(limit: usize) {
    let _ = QUEUE_LIMIT.set(limit.max(1));
}

pub fn queue_limit() -> usize {
    *QUEUE_LIMIT.get_or_init(|| 16 * threads())
}

/// The hashing threads' queue, started on first use.
fn hashing_pool() -> &'static Mutex<mpsc::Sender<Job>> {
    static POOL: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..threads() {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take the next job, not while hashing.
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Mutex::new(tx)
    })
}

/// Runs one argon2 job on the hashing threads and waits for it without blocking the runtime.
/// Refused with [`HashError::Busy`] when the queue is full; a job whose caller has gone (the
/// client hung up, the request timed out) is skipped when its turn comes.
async fn on_hashing_thread<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashError> {
    if IN_QUEUE.fetch_add(1, Ordering::SeqCst) >= queue_limit() {
        IN_QUEUE.fetch_sub(1, Ordering::SeqCst);
        return Err(HashError::Busy);
    }
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        if !done.is_closed() {
            let _ = done.send(job());
        }
        IN_QUEUE.fetch_sub(1, Ordering::SeqCst);
    });
    let sent = hashing_pool()
        .lock()
        .map_err(|_| anyhow::anyhow!("password hashing pool poisoned"))
        .and_then(|pool| {
            pool.send(job)
                .map_err(|_| anyhow::anyhow!("password hashing threads are gone"))
        });
    if let Err(e) = sent {
        IN_QUEUE.fetch_sub(1, Ordering::SeqCst);
        return Err(e.into());
    }
    result
        .await
        .map_err(|_| HashError::Failed(anyhow::anyhow!("a hashing job was lost")))
}

pub const MIN_LENGTH: usize = 8;
/// Longer passwords are refused before hashing: argon2's cost grows with the input, and no
/// person types more.
pub const MAX_LENGTH: usize = 128;

/// The 10,000 most common passwords (`data/common-passwords.txt`, see its README).
fn common_passwords() -> &'static HashSet<&'static str> {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("../data/common-passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// What a password must not contain: the account's own words.
#[derive(Debug, Default, Clone, Copy)]
pub struct Owner<'a> {
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
}

/// Checks the password policy, naming `field` in the error: 8 to 128 characters, not one of the
/// 10,000 most common passwords, and not containing the email's local part or the person's
/// first or last name (compared without case; words shorter than 3 letters are not checked).
pub fn check_policy(
    field: &'static str,
    password: &str,
    owner: Owner<'_>,
) -> Result<(), ValidationError> {
    let n = password.chars().count();
    if n < MIN_LENGTH {
        return Err(ValidationError::new(
            field,
            format!("must be at least {MIN_LENGTH} characters"),
        ));
    }
    if n > MAX_LENGTH {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_LENGTH} characters"),
        ));
    }
    let lower = password.to_lowercase();
    if common_passwords().contains(lower.as_str()) {
        return Err(ValidationError::new(
            field,
            "is one of the most common passwords; choose another",
        ));
    }
    let local = owner.email.split('@').next().unwrap_or_default();
    for (what, word) in [
        ("the email address", local),
        ("your first name", owner.first_name),
        ("your last name", owner.last_name),
    ] {
        let word = word.trim().to_lowercase();
        if word.chars().count() >= 3 && lower.contains(&word) {
            return Err(ValidationError::new(
                field,
                format!("must not contain {what}"),
            ));
        }
    }
    Ok(())
}

/// Hashes `password` (argon2id, default parameters, random salt) off the async runtime.
pub async fn hash(password: String) -> Result<String, HashError> {
    on_hashing_thread(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
    })
    .await?
    .map_err(HashError::Failed)
}

/// True when `password` matches `stored_hash`; checked off the async runtime.
pub async fn verify(password: String, stored_hash: String) -> Result<bool, HashError> {
    on_hashing_thread(move || {
        let parsed = PasswordHash::new(&stored_hash)
            .map_err(|e| anyhow::anyhow!("stored password hash is unreadable: {e}"))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
    .map_err(HashError::Failed)
}

/// A random password for accounts an admin creates: 20 characters from an alphabet without
/// look-alikes (no 0/O, 1/l/I), about 116 bits.
pub fn temporary() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), h.clone()).await.unwrap());
        assert!(!verify("wrong horse".into(), h).await.unwrap());
    }

    #[test]
    fn temporary_passwords_are_random_and_meet_the_policy() {
        let (a, b) = (temporary(), temporary());
        assert_ne!(a, b);
        assert!(check_policy("password", &a, Owner::default()).is_ok());
        assert!(check_policy("password", "short", Owner::default()).is_err());
    }

    #[test]
    fn the_policy_refuses_common_passwords_and_the_owners_own_words() {
        let owner = Owner {
            email: "tendai.moyo@clinic.test",
            first_name: "Tendai",
            last_name: "Moyo",
        };
        let refused = |p: &str| check_policy("password", p, owner).unwrap_err().to_string();
        assert!(
            refused("Password1").contains("common"),
            "list compared without case"
        );
        assert!(refused("iloveyou").contains("common"));
        assert!(refused("xx-tendai.moyo-xx").contains("email"));
        assert!(refused("TENDAI-ward-7!").contains("first name"));
        assert!(refused("ward7-moyo-rounds").contains("last name"));
        assert!(refused(&"a".repeat(129)).contains("at most 128"));
        assert!(check_policy("password", "ward seven rounds at dawn", owner).is_ok());
        assert_eq!(common_passwords().len(), 10_000);
    }

    #[tokio::test]
    async fn a_job_whose_caller_is_gone_is_skipped() {
        // Occupy every hashing thread, queue a job, drop its caller before its turn.
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Arc::new(Mutex::new(gate));
        let mut blockers: Vec<_> = (0..threads())
            .map(|_| {
                let (gate, started) = (gate.clone(), started.clone());
                Box::pin(on_hashing_thread(move || {
                    let _ = started.send(());
                    let _ = gate.lock().map(|g| g.recv());
                }))
            })
            .collect();
        for blocker in &mut blockers {
            // One poll queues the job.
            assert!(futures::poll!(blocker).is_pending());
        }
        for _ in 0..threads() {
            running
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("every hashing thread busy");
        }
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let mut abandoned = Box::pin(on_hashing_thread(move || {
            flag.store(true, Ordering::SeqCst);
        }));
        // One poll queues the job; dropping the future is the client going away.
        assert!(futures::poll!(&mut abandoned).is_pending());
        drop(abandoned);
        for _ in 0..threads() {
            release.send(()).unwrap();
        }
        for b in blockers {
            b.await.unwrap();
        }
        // Jobs run in order: one queued now runs after the abandoned one's turn.
        for _ in 0..threads() {
            on_hashing_thread(|| ()).await.unwrap();
        }
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job did not run");
    }
}
