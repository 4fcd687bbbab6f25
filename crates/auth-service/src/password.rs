//! Password hashing with argon2id, always on the blocking pool: a hash takes tens of
//! milliseconds of CPU and would otherwise stall every request sharing the runtime thread.
//!
//! At most one hash per core runs at a time. Each needs a 19 MiB block; without a bound, 32
//! concurrent logins ran 32 blocking threads whose freed blocks glibc kept, and the benchmark
//! saw the auth-service reach 6 GiB. More hashes in parallel than cores would not be faster.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use contract::ValidationError;
use rand::Rng;
use std::sync::OnceLock;
use tokio::sync::Semaphore;

/// The permits for concurrent hashes: one per core.
fn hashing_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    })
}

/// Runs one argon2 job on the blocking pool once a core is free for it.
async fn on_a_free_core<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _slot = hashing_slots().acquire().await?;
    Ok(tokio::task::spawn_blocking(job).await?)
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
    on_a_free_core(move || {
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
    on_a_free_core(move || {
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
