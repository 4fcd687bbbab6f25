//! The user-list query both directories run (the auth-service's admin list and the
//! user-service's directory): its parameters as they arrive, their validation, and the SQL of
//! one page of `users` in directory order.

use crate::record::{UserRecord, RECORD_COLUMNS};
use contract::{Role, ValidationError};
use serde::Deserialize;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Query parameters as they arrive; parsed by [`ListQuery::parse`] so each bad value gets a
/// 422 naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawListQuery {
    pub role: Option<String>,
    pub is_active: Option<String>,
    pub q: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

/// A validated list query; `None` filters mean "any".
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub role: Option<Role>,
    pub is_active: Option<bool>,
    /// Case-insensitive substring of first name, last name, full name or email.
    pub q: Option<String>,
    pub limit: i64,
    pub offset: i64,
    /// The view a colleague gets (not from the query string; the handler sets it for
    /// non-admins): active clinical staff only, and `q` matches names, not email addresses.
    pub colleagues_only: bool,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            role: None,
            is_active: None,
            q: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
            colleagues_only: false,
        }
    }
}

fn parse_int(
    field: &'static str,
    raw: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ValidationError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(default);
    };
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ValidationError::new(
                field,
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

impl ListQuery {
    pub fn parse(raw: &RawListQuery) -> Result<Self, ValidationError> {
        let role = raw
            .role
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(str::parse::<Role>)
            .transpose()?;
        let is_active = match raw.is_active.as_deref() {
            None | Some("") => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(ValidationError::new("isActive", "must be true or false")),
        };
        let q = raw
            .q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned);
        if q.as_ref().is_some_and(|q| q.chars().count() > 200) {
            return Err(ValidationError::new("q", "must be at most 200 characters"));
        }
        // PostgreSQL text cannot hold NUL, and no name holds a control character (found by the
        // API fuzz test: `q=%00` was a 500).
        if q.as_ref().is_some_and(|q| q.chars().any(char::is_control)) {
            return Err(ValidationError::new(
                "q",
                "must not contain control characters",
            ));
        }
        Ok(Self {
            role,
            is_active,
            q,
            limit: parse_int("limit", raw.limit.as_deref(), DEFAULT_LIMIT, 1..=MAX_LIMIT)?,
            offset: parse_int("offset", raw.offset.as_deref(), 0, 0..=i64::from(i32::MAX))?,
            colleagues_only: false,
        })
    }

    /// Binds for [`WHERE_SQL`]: `$1` role, `$2` isActive, `$3` the `ILIKE` pattern, `$4` the
    /// colleagues' view.
    pub fn binds(&self) -> (Option<&'static str>, Option<bool>, Option<String>, bool) {
        (
            self.role.map(Role::as_str),
            self.is_active,
            self.q.as_deref().map(like_pattern),
            self.colleagues_only,
        )
    }
}

/// The filter over `users`, with the parameters of [`ListQuery::binds`] as `$1..$4`.
const WHERE_SQL: &str = "WHERE erased_at IS NULL AND ($1::text IS NULL OR role = $1) \
       AND ($2::bool IS NULL OR is_active = $2) \
       AND ($3::text IS NULL OR first_name ILIKE $3 OR last_name ILIKE $3 \
            OR (first_name || ' ' || last_name) ILIKE $3 OR (NOT $4 AND email ILIKE $3)) \
       AND (NOT $4 OR (is_active AND role <> 'admin'))";

/// The directory's order: last name, first name, then id so pages are stable.
const ORDER_SQL: &str = "ORDER BY last_name, first_name, id";

/// One page of `users` matching `query`, in directory order, and the total matching; both
/// directories run exactly this.
pub async fn page(
    conn: &mut sqlx::PgConnection,
    query: &ListQuery,
) -> Result<(Vec<UserRecord>, i64), sqlx::Error> {
    let (role, is_active, pattern, colleagues) = query.binds();
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM users {WHERE_SQL}"))
        .bind(role)
        .bind(is_active)
        .bind(pattern.as_deref())
        .bind(colleagues)
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM users {WHERE_SQL} {ORDER_SQL} LIMIT $5 OFFSET $6"
    ))
    .bind(role)
    .bind(is_active)
    .bind(pattern.as_deref())
    .bind(colleagues)
    .bind(query.limit)
    .bind(query.offset)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let bad = |raw: RawListQuery| ListQuery::parse(&raw).unwrap_err().field;
        assert_eq!(
            bad(RawListQuery {
                role: Some("wizard".into()),
                ..Default::default()
            }),
            "role"
        );
        assert_eq!(
            bad(RawListQuery {
                is_active: Some("yes".into()),
                ..Default::default()
            }),
            "isActive"
        );
        assert_eq!(
            bad(RawListQuery {
                limit: Some("0".into()),
                ..Default::default()
            }),
            "limit"
        );
        assert_eq!(
            bad(RawListQuery {
                offset: Some("-1".into()),
                ..Default::default()
            }),
            "offset"
        );
        assert_eq!(
            bad(RawListQuery {
                q: Some("mo\0yo".into()),
                ..Default::default()
            }),
            "q"
        );
        let ok = ListQuery::parse(&RawListQuery {
            q: Some("  moyo ".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (ok.q.as_deref(), ok.limit, ok.offset),
            (Some("moyo"), 50, 0)
        );
    }
}
