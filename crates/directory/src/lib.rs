//! The user directory both services serve (the auth-service's admin list over `auth_db`, the
//! user-service's directory over `user_db`): the `users` record every copy shares and its
//! conversions, and the one user-list query they run, from the query string to the JSON page.
//! It lives here, not in `platform`, because it is domain code that several services (and
//! `ops`, which reads the records) share, while `platform` holds plumbing only.
//!
//! Layout:
//! - [`record`]: the synced columns of one `users` row, its snapshot and its colleague view.
//! - [`list`]: the list query's parameters, their validation, and the SQL of one page.
//! - [`http`]: the list parameters as an extractor, and one page as the API answers it.

pub mod http;
pub mod list;
pub mod record;
