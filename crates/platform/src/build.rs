//! What this build is: the crate version and the git commit it was built from.

/// The git commit of this build (12 hex digits), or `unknown`.
pub const GIT_COMMIT: &str = env!("PORTAL_GIT_COMMIT");

/// `0.1.0 (abcdef012345)`: what every binary's `--version` prints after its name.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PORTAL_GIT_COMMIT"),
    ")"
);
