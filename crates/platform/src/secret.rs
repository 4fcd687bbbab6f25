//! Keeping credentials out of what people read: URLs shown in messages and logs without their
//! password, and files holding secrets created readable by their owner only.

use anyhow::Context;
use std::path::Path;
use url::Url;

/// `url` with its password replaced by `***` (a URL that does not parse is not shown at all,
/// since it may hold a password in a shape this cannot find).
/// A list of URLs (`a,b`) is redacted entry by entry.
pub fn redact_url(url: &str) -> String {
    let entries = crate::addresses::split(url);
    if entries.len() > 1 {
        return entries
            .into_iter()
            .map(redact_one)
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    match Url::parse(url) {
        // `amqp:user:pw@host` parses, as a scheme and an opaque path holding the password.
        Ok(parsed) if parsed.cannot_be_a_base() => "<a URL without a host>".to_owned(),
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // A password may also ride in the query (`?password=…`, which libpq and sqlx take).
            if parsed
                .query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("password"))
            {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k.eq_ignore_ascii_case("password") {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "<a URL that does not parse>".to_owned(),
    }
}

/// Creates `dir` (and its parents) for secrets: readable, writable and listable by its owner
/// only. An existing directory is narrowed to that too.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}

/// Creates `dir` (and its parents) owner-only when it does not exist; an existing directory
/// keeps its mode. For a directory that holds secret files among others (`/etc/portal`, whose
/// per-part credentials each part's user must reach): the files are owner-only themselves.
pub fn dir_for_secrets(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    private_dir(dir)
}

/// Writes a new secret file readable and writable by its owner only; fails if it exists.
pub fn write_new_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Refuses a secret file that its group or others may read or write: a private key or a
/// credentials file anyone on the machine can read is no longer a secret.
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} is readable by others (mode {:o}); it holds a secret: chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("amqp://relay:s3cret@127.0.0.1:5672/%2f"),
            "amqp://relay:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/auth_db"),
            "postgres://postgres@127.0.0.1:5432/auth_db"
        );
        assert!(!redact_url("postgres://u:p@ss@[bad").contains("p@ss"));
        assert!(!redact_url("amqp:guest:s3cret@host").contains("s3cret"));
        let in_query = redact_url("postgres://u@h/db?sslmode=require&password=s3cret");
        assert!(!in_query.contains("s3cret"), "{in_query}");
        assert!(in_query.contains("sslmode=require"), "{in_query}");
    }

    #[test]
    fn each_url_of_a_list_is_redacted() {
        assert_eq!(
            redact_url("amqp://r:s1@a:5672/v, amqp://r:s1@b:5673/v"),
            "amqp://r:***@a:5672/v,amqp://r:***@b:5673/v"
        );
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_owner_only_and_loose_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("secret-test-{}", uuid::Uuid::new_v4()));
        private_dir(&dir.join("keys")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("keys")), 0o700);
        let key = dir.join("keys/secret");
        write_new_secret(&key, b"x").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert!(check_private(&key).is_ok());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_private(&key).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
