//! The `filter` parameter (RFC 7644 §3.4.2.2), parsed and turned into a SQL condition on the
//! SCIM view with every value bound, never spliced. Supported: `eq ne co sw ew pr gt ge lt le`,
//! `and`, `or`, `not (…)`, parentheses, on `id`, `userName`, `externalId`, `emails` /
//! `emails.value`, `active`, `name.givenName`, `name.familyName`, `displayName`,
//! `meta.created`, `meta.lastModified`. Strings compare without regard to case except
//! `externalId` and `id` (their schema's `caseExact`).

use super::{ScimError, USER_SCHEMA};
use chrono::{DateTime, Utc};

/// The longest filter taken: a directory's filters are a few dozen characters.
pub const MAX_LENGTH: usize = 4096;
/// The deepest nesting of parentheses and `not` taken (the parser recurses once per level).
pub const MAX_DEPTH: usize = 16;
/// The most comparisons in one filter.
pub const MAX_TERMS: usize = 64;

/// A value bound to the SQL a filter becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Bool(bool),
    Time(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
}

fn tokenize(input: &str) -> Result<Vec<Token>, ScimError> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => text.push(e),
                            None => return Err(ScimError::invalid_filter("unterminated string")),
                        },
                        Some(c) => text.push(c),
                        None => return Err(ScimError::invalid_filter("unterminated string")),
                    }
                }
                tokens.push(Token::Text(text));
            }
            '[' | ']' => {
                return Err(ScimError::invalid_filter(
                    "value filters in brackets are not supported here; filter on emails.value",
                ))
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// What an attribute is in SQL, and how it compares.
#[derive(Clone, Copy)]
enum Kind {
    /// Compared without regard to case.
    Text,
    /// Compared as written.
    ExactText,
    Bool,
    Time,
}

fn column(attr: &str) -> Result<(&'static str, Kind), ScimError> {
    let plain = attr
        .strip_prefix(USER_SCHEMA)
        .and_then(|a| a.strip_prefix(':'))
        .unwrap_or(attr)
        .to_ascii_lowercase();
    Ok(match plain.as_str() {
        "id" => ("u.id::text", Kind::ExactText),
        "username" => ("coalesce(s.user_name, u.email)", Kind::Text),
        "externalid" => ("s.external_id", Kind::ExactText),
        "emails" | "emails.value" => ("u.email", Kind::Text),
        "active" => ("u.is_active", Kind::Bool),
        "name.givenname" => ("u.first_name", Kind::Text),
        "name.familyname" => ("u.last_name", Kind::Text),
        "displayname" => ("(u.first_name || ' ' || u.last_name)", Kind::Text),
        "meta.created" => ("u.created_at", Kind::Time),
        "meta.lastmodified" => ("coalesce(u.updated_at, u.created_at)", Kind::Time),
        _ => {
            return Err(ScimError::invalid_filter(format!(
                "cannot filter on {attr:?}: userName, externalId, emails, active, id, \
                 name.givenName, name.familyName, displayName, meta.created and \
                 meta.lastModified can be"
            )))
        }
    })
}

/// The SQL a filter becomes: a condition and its values, numbered from the `first` parameter.
pub struct Sql {
    pub condition: String,
    pub binds: Vec<Bind>,
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    first: usize,
    binds: Vec<Bind>,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn peek_word(&self) -> Option<String> {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.first + self.binds.len() - 1)
    }

    fn or(&mut self) -> Result<String, ScimError> {
        let mut sql = self.and()?;
        while self.peek_word().as_deref() == Some("or") {
            self.at += 1;
            sql = format!("({sql} OR {})", self.and()?);
        }
        Ok(sql)
    }

    fn and(&mut self) -> Result<String, ScimError> {
        let mut sql = self.unary()?;
        while self.peek_word().as_deref() == Some("and") {
            self.at += 1;
            sql = format!("({sql} AND {})", self.unary()?);
        }
        Ok(sql)
    }

    fn unary(&mut self) -> Result<String, ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ScimError::invalid_filter(format!(
                "the filter nests deeper than {MAX_DEPTH} levels"
            )));
        }
        let sql = self.unary_at_depth();
        self.depth -= 1;
        sql
    }

    fn unary_at_depth(&mut self) -> Result<String, ScimError> {
        if self.peek_word().as_deref() == Some("not") {
            self.at += 1;
            if self.next() != Some(Token::Open) {
                return Err(ScimError::invalid_filter("expected ( after not"));
            }
            let inner = self.or()?;
            if self.next() != Some(Token::Close) {
                return Err(ScimError::invalid_filter("expected )"));
            }
            // A missing value is neither equal nor different: `not` keeps those out too.
            return Ok(format!("(NOT coalesce({inner}, false))"));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                if self.next() != Some(Token::Close) {
                    return Err(ScimError::invalid_filter("expected )"));
                }
                Ok(inner)
            }
            Some(Token::Word(attr)) => self.comparison(&attr),
            _ => Err(ScimError::invalid_filter("expected an attribute")),
        }
    }

    fn comparison(&mut self, attr: &str) -> Result<String, ScimError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(ScimError::invalid_filter(format!(
                "the filter has more than {MAX_TERMS} comparisons"
            )));
        }
        let (col, kind) = column(attr)?;
        let op = self
            .next()
            .and_then(|t| match t {
                Token::Word(w) => Some(w.to_ascii_lowercase()),
                _ => None,
            })
            .ok_or_else(|| {
                ScimError::invalid_filter(format!("expected an operator after {attr}"))
            })?;
        if op == "pr" {
            return Ok(format!("({col} IS NOT NULL)"));
        }
        let raw = match self.next() {
            Some(Token::Text(t)) => Value::Text(t),
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => Value::Other(w),
            },
            _ => {
                return Err(ScimError::invalid_filter(format!(
                    "expected a value after {op}"
                )))
            }
        };
        let described = format!("{attr} {op} {raw:?} cannot be compared");
        let unsupported = || ScimError::invalid_filter(described.clone());
        match (kind, raw) {
            (_, Value::Null) => match op.as_str() {
                "eq" => Ok(format!("({col} IS NULL)")),
                "ne" => Ok(format!("({col} IS NOT NULL)")),
                _ => Err(unsupported()),
            },
            (Kind::Bool, Value::Bool(b)) => {
                let p = self.bind(Bind::Bool(b));
                match op.as_str() {
                    "eq" => Ok(format!("({col} = {p})")),
                    "ne" => Ok(format!("({col} <> {p})")),
                    _ => Err(unsupported()),
                }
            }
            (Kind::Time, Value::Text(t)) => {
                let at = DateTime::parse_from_rfc3339(&t)
                    .map_err(|_| ScimError::invalid_filter(format!("{t:?} is not a date-time")))?
                    .with_timezone(&Utc);
                let p = self.bind(Bind::Time(at));
                let sql_op = match op.as_str() {
                    "eq" => "=",
                    "ne" => "<>",
                    "gt" => ">",
                    "ge" => ">=",
                    "lt" => "<",
                    "le" => "<=",
                    _ => return Err(unsupported()),
                };
                Ok(format!("({col} {sql_op} {p})"))
            }
            (Kind::Text | Kind::ExactText, Value::Text(t)) => {
                let exact = matches!(kind, Kind::ExactText);
                let (c, p) = if exact {
                    (col.to_owned(), self.bind(Bind::Text(t)))
                } else {
                    (
                        format!("lower({col})"),
                        self.bind(Bind::Text(t.to_lowercase())),
                    )
                };
                Ok(match op.as_str() {
                    "eq" => format!("({c} = {p})"),
                    "ne" => format!("({c} <> {p})"),
                    "co" => format!("(strpos({c}, {p}) > 0)"),
                    "sw" => format!("starts_with({c}, {p})"),
                    "ew" => format!("(right({c}, length({p})) = {p})"),
                    "gt" => format!("({c} > {p})"),
                    "ge" => format!("({c} >= {p})"),
                    "lt" => format!("({c} < {p})"),
                    "le" => format!("({c} <= {p})"),
                    _ => {
                        return Err(ScimError::invalid_filter(format!(
                            "unknown operator {op:?}"
                        )))
                    }
                })
            }
            (_, Value::Other(word)) => Err(ScimError::invalid_filter(format!(
                "{word:?} is not a value: strings go in double quotes"
            ))),
            (_, raw) => Err(ScimError::invalid_filter(format!(
                "{attr} cannot be compared with {raw:?}"
            ))),
        }
    }
}

#[derive(Debug)]
enum Value {
    Text(String),
    Bool(bool),
    Null,
    Other(String),
}

/// `filter` as a SQL condition whose values are `$first`, `$first + 1`, ….
pub fn to_sql(filter: &str, first: usize) -> Result<Sql, ScimError> {
    if filter.len() > MAX_LENGTH {
        return Err(ScimError::invalid_filter(format!(
            "the filter is longer than {MAX_LENGTH} bytes"
        )));
    }
    let mut parser = Parser {
        tokens: tokenize(filter)?,
        at: 0,
        first,
        binds: Vec::new(),
        depth: 0,
        terms: 0,
    };
    let condition = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(ScimError::invalid_filter(format!(
            "unexpected text after the filter: {:?}",
            parser.tokens.get(parser.at)
        )));
    }
    Ok(Sql {
        condition,
        binds: parser.binds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_directories_send_become_bound_sql() {
        let sql = to_sql(r#"userName eq "Jane.Doe@Hospital.example""#, 1).expect("parses");
        assert_eq!(
            sql.condition,
            "(lower(coalesce(s.user_name, u.email)) = $1)"
        );
        assert_eq!(
            sql.binds,
            vec![Bind::Text("jane.doe@hospital.example".into())]
        );
        let sql = to_sql(r#"externalId eq "A1" and active eq True"#, 3).expect("parses");
        assert_eq!(
            sql.condition,
            "((s.external_id = $3) AND (u.is_active = $4))"
        );
        let sql = to_sql(
            r#"emails.value co "@x" or not (name.familyName sw "Do")"#,
            1,
        )
        .expect("parses");
        assert!(
            sql.condition.contains("OR (NOT coalesce("),
            "{}",
            sql.condition
        );
        let sql = to_sql(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#, 1).expect("parses");
        assert!(matches!(sql.binds[0], Bind::Time(_)));
        assert_eq!(
            to_sql("externalId pr", 1).expect("parses").condition,
            "(s.external_id IS NOT NULL)"
        );
    }

    #[test]
    fn nonsense_is_an_invalid_filter_naming_the_problem() {
        for bad in [
            "userName",
            r#"userName eq"#,
            r#"password eq "x""#,
            r#"userName eq "x" and"#,
            r#"emails[type eq "work"]"#,
            r#"(userName eq "x""#,
            r#"active co true"#,
            r#"userName eq "unterminated"#,
            r#"meta.created gt "yesterday""#,
        ] {
            let e = to_sql(bad, 1)
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            assert_eq!(e.scim_type, Some("invalidFilter"), "{bad}");
        }
    }

    #[test]
    fn deep_long_or_wide_filters_are_refused_before_they_cost_anything() {
        let deep = format!("{}userName eq \"a\"{}", "(".repeat(5000), ")".repeat(5000));
        let wide = vec!["userName eq \"a\""; 100].join(" or ");
        let nots = format!("{}userName eq \"a\"{}", "not (".repeat(40), ")".repeat(40));
        for bad in [deep, wide, nots, "x".repeat(MAX_LENGTH + 1)] {
            let e = to_sql(&bad, 1).err().expect("refused");
            assert_eq!(e.scim_type, Some("invalidFilter"), "{}", e.detail);
        }
        let nested = format!("{}userName eq \"a\"{}", "(".repeat(10), ")".repeat(10));
        assert!(to_sql(&nested, 1).is_ok());
    }

    #[test]
    fn quotes_cannot_escape_into_sql() {
        let sql = to_sql(r#"userName eq "x' OR 1=1 --""#, 1).expect("parses");
        assert!(!sql.condition.contains("OR 1=1"));
    }
}
