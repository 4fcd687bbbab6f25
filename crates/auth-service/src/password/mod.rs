//! Password hashing with argon2id, always off the async runtime: a hash takes tens of
//! milliseconds of CPU and would otherwise stall every request sharing the runtime thread.
//!
//! Hashes run on a small pool of dedicated threads, one per core. Each hash needs a block of
//! memory; on tokio's blocking pool, 32 concurrent logins ran on many threads whose freed blocks
//! glibc kept per thread arena, and the auth-service reached gigabytes (seen in the benchmark
//! and the chaos run). On a few long-lived threads the same blocks are reused, so memory stays
//! at a few blocks; more hashes in parallel than cores would not be faster anyway.
//!
//! The parameters ([`params`]) are OWASP's 7 MiB, 5 passes, 1 lane: one of the settings its
//! password storage cheat sheet lists as equal in strength to argon2's default (19 MiB, 2
//! passes), trading memory for CPU. The block each hashing thread keeps is then 7 MiB rather
//! than 19, which kept the auth-service under 50 MiB (BENCHMARKS.md). Hashes made with other
//! parameters still verify, and a login with one re-hashes the password ([`is_outdated`]).
//!
//! Generated temporary passwords are the exception: they are stored with a fast keyed hash and
//! an expiry ([`temporary`]).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, Block};
use contract::ValidationError;
use rand::Rng;
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

pub mod temporary;

type Job = Box<dyn FnOnce() + Send>;

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Matches,
    Wrong,
    /// A temporary password, right but past its expiry ([`temporary`]).
    Expired,
    /// A temporary password, right but already used to log in ([`temporary::spent`]): it may
    /// still change the password in the session that login started, nothing else.
    Spent,
}

impl Verdict {
    /// True only for a right password that may still be used.
    pub fn matches(self) -> bool {
        self == Verdict::Matches
    }
}

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
    run_reserved(Slot::reserve()?, job).await
}

/// A place in the hashing queue, taken before the work that needs it is decided (a login takes
/// one before its attempt is counted, so a full queue answers 503 without costing the account
/// an attempt). Given back when dropped unused, or when its job has run or been skipped.
pub struct Slot(bool);

impl Slot {
    /// A place in the queue, or [`HashError::Busy`] when it is full.
    pub fn reserve() -> Result<Self, HashError> {
        if IN_QUEUE.fetch_add(1, Ordering::SeqCst) >= queue_limit() {
            IN_QUEUE.fetch_sub(1, Ordering::SeqCst);
            return Err(HashError::Busy);
        }
        Ok(Self(true))
    }

    /// Hands the place to a job, which gives it back when done.
    fn take(mut self) {
        self.0 = false;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0 {
            IN_QUEUE.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

async fn run_reserved<T: Send + 'static>(
    slot: Slot,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashError> {
    slot.take();
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
        include_str!("../../data/common-passwords.txt")
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
    on_hashing_thread(move || hash_here(&password))
        .await?
        .map_err(HashError::Failed)
}

/// argon2 on this thread, in its reused memory ([`BLOCKS`]).
fn argon2_into(
    argon2: &Argon2<'_>,
    params: &argon2::Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> anyhow::Result<()> {
    BLOCKS
        .with(|blocks| {
            let mut blocks = blocks.borrow_mut();
            let needed = params.block_count();
            if blocks.len() < needed {
                blocks.resize(needed, Block::default());
            }
            argon2.hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
        })
        .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
}

/// The argon2id parameters of new hashes: 7 MiB, 5 passes, 1 lane (see the module's text).
pub fn params() -> argon2::Params {
    // Constant, valid values: `Params::new` cannot refuse them (a unit test builds them).
    argon2::Params::new(7 * 1024, 5, 1, None).unwrap_or_default()
}

fn hasher() -> Argon2<'static> {
    Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params(),
    )
}

/// True when `stored` is an argon2 hash made with other parameters than [`params`] (an
/// account from before they changed): the next login with the right password re-hashes it.
pub fn is_outdated(stored: &str) -> bool {
    if temporary::is_temporary(stored) {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let current = params();
    argon2::Params::try_from(&parsed).is_ok_and(|p| {
        (p.m_cost(), p.t_cost(), p.p_cost())
            != (current.m_cost(), current.t_cost(), current.p_cost())
    }) || parsed.algorithm != argon2::Algorithm::Argon2id.ident()
}

/// argon2id with [`params`] and a random salt, as a PHC string.
fn hash_here(password: &str) -> anyhow::Result<String> {
    let failed = |e: argon2::password_hash::Error| anyhow::anyhow!("password hashing failed: {e}");
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_buf).map_err(failed)?;
    let argon2 = hasher();
    let params = argon2.params().clone();
    let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon2, &params, password.as_bytes(), raw_salt, &mut out)?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(failed)?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against `stored_hash` (argon2id, or a temporary password's hash) off the
/// async runtime.
pub async fn verify(password: String, stored_hash: String) -> Result<Verdict, HashError> {
    verify_in(Slot::reserve()?, password, stored_hash).await
}

/// [`verify`] in a place of the queue taken before.
pub async fn verify_in(
    slot: Slot,
    password: String,
    stored_hash: String,
) -> Result<Verdict, HashError> {
    run_reserved(slot, move || verify_here(&password, &stored_hash))
        .await?
        .map_err(HashError::Failed)
}

thread_local! {
    /// This hashing thread's argon2 memory (19 MiB with the default parameters), kept for the
    /// thread's life. Allocated per verification, each block stayed in the thread's malloc
    /// arena anyway: 20 logins took the auth-service from 14 to 192 MiB (seen with a login
    /// flood); reused, the memory is one block per thread.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Checks `password` against `stored`, on this thread.
fn verify_here(password: &str, stored: &str) -> anyhow::Result<Verdict> {
    if temporary::is_temporary(stored) {
        // Spend what an argon2 check spends, so the time a login takes does not tell whether
        // the account holds a temporary password.
        let argon2 = hasher();
        let params = argon2.params().clone();
        let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
        argon2_into(
            &argon2,
            &params,
            password.as_bytes(),
            b"portal-equal-time",
            &mut out,
        )?;
        return temporary::check(password, stored, chrono::Utc::now());
    }
    Ok(if argon2_matches(password, stored)? {
        Verdict::Matches
    } else {
        Verdict::Wrong
    })
}

/// Checks `password` against the PHC string `stored`, on this thread, in its reused memory.
fn argon2_matches(password: &str, stored: &str) -> anyhow::Result<bool> {
    let unreadable = |e: argon2::password_hash::Error| {
        anyhow::anyhow!("stored password hash is unreadable: {e}")
    };
    let parsed = PasswordHash::new(stored).map_err(unreadable)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(anyhow::anyhow!(
            "stored password hash has no salt or output"
        ));
    };
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).map_err(unreadable)?;
    let version = parsed
        .version
        .map(argon2::Version::try_from)
        .transpose()
        .map_err(|e| anyhow::anyhow!("stored password hash: {e}"))?
        .unwrap_or_default();
    let params = argon2::Params::try_from(&parsed).map_err(unreadable)?;
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(unreadable)?;
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    argon2_into(&argon2, &params, password.as_bytes(), salt, &mut out)?;
    // `Output` compares in constant time.
    let computed = argon2::password_hash::Output::new(&out).map_err(unreadable)?;
    Ok(computed == expected)
}

/// A new temporary password and its stored form, valid for `ttl`: what an admin's creation, a
/// reset and a bulk import give out (see [`temporary`] for why it is not argon2).
pub fn temporary_with_hash(
    ttl: std::time::Duration,
    key: &temporary::TagKey,
) -> anyhow::Result<(String, String)> {
    let password = temporary();
    let stored = temporary::hash(&password, ttl, chrono::Utc::now(), key)?;
    Ok((password, stored))
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
        assert!(verify("correct horse".into(), h.clone())
            .await
            .unwrap()
            .matches());
        assert_eq!(
            verify("wrong horse".into(), h).await.unwrap(),
            Verdict::Wrong
        );
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_format_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default()
            .hash_password(b"night shift", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_here("night shift", &theirs).unwrap().matches());
        assert_eq!(verify_here("day shift", &theirs).unwrap(), Verdict::Wrong);
        let ours = hash_here("night shift").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"night shift", &parsed)
            .is_ok());
        assert!(verify_here("x", "not a hash").is_err());
    }

    #[test]
    fn new_hashes_use_owasps_7_mib_setting_and_older_ones_are_outdated() {
        use argon2::password_hash::PasswordHasher;
        let p = argon2::Params::new(7 * 1024, 5, 1, None).expect("valid parameters");
        assert_eq!(params(), p);
        let ours = hash_here("night shift").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{ours}");
        assert!(!is_outdated(&ours));
        // argon2's default (19 MiB, 2 passes): what accounts from before hold; still verifies.
        let before = Argon2::default()
            .hash_password(b"night shift", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(is_outdated(&before));
        assert!(verify_here("night shift", &before).unwrap().matches());
        let key = temporary::TagKey::from_bytes(&[1u8; 32]);
        let (_, temporary) = temporary_with_hash(std::time::Duration::from_secs(60), &key).unwrap();
        assert!(!is_outdated(&temporary));
        assert!(!is_outdated("not a hash"));
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
