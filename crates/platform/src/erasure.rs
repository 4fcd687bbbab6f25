//! Fingerprints of an erased person's email, names and phone: what `portal erasure verify`
//! searches every database and queue for after the data itself is gone. Each is an HMAC-SHA256
//! under a key made for that one erasure, so the record proves what was erased without keeping
//! it in the clear, and a fingerprint of one erasure says nothing about another's.
//!
//! A search tokenises text the way the values were fingerprinted: emails as whole tokens, names
//! as words (case-insensitive), phone numbers as their digits however they are spaced. A row
//! counts as holding the name only when every word of the first AND of the last name is in it:
//! one common first name elsewhere is not a hit, a full name split over two columns is.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The fingerprints of one erased person, as stored with the erasure (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fingerprints {
    /// The HMAC key, base64.
    key: String,
    email: String,
    first_name: Vec<String>,
    last_name: Vec<String>,
    phone: Option<String>,
}

/// What a piece of text (a row, a message) was found to hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    pub email: bool,
    pub name: bool,
    pub phone: bool,
}

impl Found {
    pub fn any(self) -> bool {
        self.email || self.name || self.phone
    }

    /// `email, name, phone` — those found, for a report.
    pub fn describe(self) -> String {
        [
            (self.email, "email"),
            (self.name, "name"),
            (self.phone, "phone"),
        ]
        .iter()
        .filter(|(hit, _)| *hit)
        .map(|(_, what)| *what)
        .collect::<Vec<_>>()
        .join(", ")
    }
}

impl Fingerprints {
    /// Fingerprints of these values under a fresh random key.
    pub fn new(
        email: &str,
        first_name: &str,
        last_name: &str,
        phone: Option<&str>,
    ) -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key_bytes: [u8; 32] = ring::rand::generate(&rng)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?
            .expose();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
        let mark = |kind: &str, value: &str| mark(&key, kind, value);
        Ok(Self {
            key: B64.encode(key_bytes),
            email: mark("email", &email.trim().to_lowercase()),
            first_name: words(first_name).map(|w| mark("word", &w)).collect(),
            last_name: words(last_name).map(|w| mark("word", &w)).collect(),
            phone: phone
                .map(digits)
                .filter(|d| !d.is_empty())
                .map(|d| mark("phone", &d)),
        })
    }

    /// A matcher for searching text (decodes the key once).
    pub fn matcher(&self) -> anyhow::Result<Matcher<'_>> {
        let key = B64
            .decode(&self.key)
            .map_err(|e| anyhow::anyhow!("the erasure's fingerprint key is not base64: {e}"))?;
        Ok(Matcher {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            prints: self,
        })
    }
}

/// Searches text for one person's fingerprints.
pub struct Matcher<'a> {
    key: hmac::Key,
    prints: &'a Fingerprints,
}

impl Matcher<'_> {
    /// What the texts, taken together (the columns of one row, the body of one message), hold.
    pub fn scan<'t>(&self, texts: impl IntoIterator<Item = &'t str>) -> Found {
        let mut found = Found::default();
        let mut seen_words: HashSet<String> = HashSet::new();
        for text in texts {
            for token in text.split(|c: char| !is_email_char(c)) {
                let token = token.trim_matches('.');
                if token.contains('@')
                    && mark(&self.key, "email", &token.to_lowercase()) == self.prints.email
                {
                    found.email = true;
                }
            }
            if let Some(phone) = &self.prints.phone {
                if digit_runs(text).any(|d| &mark(&self.key, "phone", &d) == phone) {
                    found.phone = true;
                }
            }
            for word in words(text) {
                seen_words.insert(mark(&self.key, "word", &word));
            }
        }
        let all_in =
            |name: &[String]| !name.is_empty() && name.iter().all(|w| seen_words.contains(w));
        found.name = all_in(&self.prints.first_name) && all_in(&self.prints.last_name);
        found
    }
}

fn mark(key: &hmac::Key, kind: &str, value: &str) -> String {
    let tag = hmac::sign(key, format!("{kind}:{value}").as_bytes());
    B64.encode(tag.as_ref())
}

fn is_email_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '@')
}

/// The lower-cased words of `text`: runs of letters (and apostrophes), so "Mary-Jane O'Neil"
/// is `mary`, `jane`, `o'neil`.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphabetic() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The digits of every phone-like run in `text`: digits, optionally after a `+`, with single
/// spaces, dashes, dots or brackets between them, at least five digits.
fn digit_runs(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut runs = Vec::new();
    let mut current = String::new();
    let mut gap = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            current.push(c);
            gap = 0;
        } else if !current.is_empty() && matches!(c, ' ' | '-' | '.' | '(' | ')') && gap < 2 {
            // "(020) 7946", "+44 (0)20": up to two separators between digits.
            gap += 1;
        } else if current.is_empty() && matches!(c, '(' | '+') {
        } else {
            if current.len() >= 5 {
                runs.push(std::mem::take(&mut current));
            }
            current.clear();
            gap = 0;
        }
    }
    if current.len() >= 5 {
        runs.push(current);
    }
    runs.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prints() -> Fingerprints {
        Fingerprints::new(
            "Zebulon.Quix@Example.org",
            "Zebulon",
            "Quixwort-Amberley",
            Some("+44 7700 900123"),
        )
        .expect("fingerprints")
    }

    #[test]
    fn finds_each_value_in_the_forms_rows_and_messages_hold_it() {
        let p = prints();
        let m = p.matcher().expect("matcher");
        let json = r#"{"email":"zebulon.quix@example.org","firstName":"Zebulon","lastName":"Quixwort-Amberley","phoneNumber":"+44 7700 900123"}"#;
        assert_eq!(
            m.scan([json]),
            Found {
                email: true,
                name: true,
                phone: true
            }
        );
        // Split over the columns of one row; the phone written without spaces.
        assert_eq!(
            m.scan(["ZEBULON", "quixwort-amberley", "447700900123"]),
            Found {
                email: false,
                name: true,
                phone: true
            }
        );
        assert!(m.scan(["Dr Zebulon Quixwort-Amberley."]).name);
        assert!(m.scan(["mailto:ZEBULON.QUIX@example.org."]).email);
        let london = Fingerprints::new("a@b.co", "A", "B", Some("+44 (0)20 7946 0000"))
            .expect("fingerprints");
        let m = london.matcher().expect("matcher");
        assert!(m.scan(["call +44 (0)20 7946 0000 now"]).phone);
        assert!(m.scan(["440207946 0000"]).phone);
    }

    #[test]
    fn a_part_of_a_name_or_another_number_is_not_a_hit() {
        let p = prints();
        let m = p.matcher().expect("matcher");
        assert!(!m.scan(["Zebulon Smith", "Quixwort"]).any());
        assert!(!m
            .scan([
                "+44 7700 900124",
                "2026-12-07 10:00",
                "zebulon.quix@example.com"
            ])
            .any());
        assert!(!m.scan(["Erased", "User", "erased-1@erased.invalid"]).any());
    }

    #[test]
    fn fingerprints_keep_no_value_and_survive_storage() {
        let p = prints();
        let stored = serde_json::to_string(&p).expect("json");
        for value in ["zebulon", "Zebulon", "quixwort", "7700", "example.org"] {
            assert!(
                !stored.to_lowercase().contains(&value.to_lowercase()),
                "{value} in {stored}"
            );
        }
        let back: Fingerprints = serde_json::from_str(&stored).expect("parses");
        assert!(
            back.matcher()
                .expect("matcher")
                .scan(["zebulon.quix@example.org"])
                .email
        );
        // Another erasure of the same values has other fingerprints.
        assert_ne!(prints().email, p.email);
    }
}
