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
use std::sync::{mpsc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads' queue, started on first use.
fn hashing_pool() -> &'static Mutex<mpsc::Sender<Job>> {
    static POOL: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        for i in 0..threads {
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
async fn on_hashing_thread<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = done.send(job());
    });
    hashing_pool()
        .lock()
        .map_err(|_| anyhow::anyhow!("password hashing pool poisoned"))?
        .send(job)
        .map_err(|_| anyhow::anyhow!("password hashing threads are gone"))?;
    Ok(result.await?)
}

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 128;

/// Checks the password policy, naming `field` in the error.
pub fn check_policy(field: &'static str, password: &str) -> Result<(), ValidationError> {
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
    Ok(())
}

/// Hashes `password` (argon2id, default parameters, random salt) off the async runtime.
pub async fn hash(password: String) -> anyhow::Result<String> {
    on_hashing_thread(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
    })
    .await?
}

/// True when `password` matches `stored_hash`; checked off the async runtime.
pub async fn verify(password: String, stored_hash: String) -> anyhow::Result<bool> {
    on_hashing_thread(move || {
        let parsed = PasswordHash::new(&stored_hash)
            .map_err(|e| anyhow::anyhow!("stored password hash is unreadable: {e}"))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
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
        assert!(check_policy("password", &a).is_ok());
        assert!(check_policy("password", "short").is_err());
    }
}
