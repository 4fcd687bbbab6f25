//! `PATCH` (RFC 7644 §3.5.2) applied to a user's SCIM form; the result is then stored like a
//! `PUT`, so both go through the same checks and the same store. Accepts what directories are
//! documented to send: `Operations` or `operations`, `op` in any case (`Replace`), no `path`
//! with an object value (Okta, and Entra for `active`), values filters such as
//! `emails[type eq "work"].value` (Entra adds the item when none matches), attributes
//! qualified by the User schema's URN, and the enterprise extension's attributes (accepted,
//! not kept: the portal has no place for them).

use super::resource::get_ci;
use super::{ScimError, USER_SCHEMA};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// A `path`: an attribute, an optional value filter, an optional sub-attribute.
#[derive(Debug)]
struct Path {
    attr: String,
    filter: Vec<(String, Value)>,
    sub: Option<String>,
}

/// Attributes SCIM shows but nobody writes; changes to them are ignored, as a directory that
/// sends `displayName` with every change expects.
const DERIVED: [&str; 3] = ["displayname", "meta", "schemas"];

fn parse_path(raw: &str) -> Result<Option<Path>, ScimError> {
    let raw = raw.trim();
    // Another schema's attribute (the enterprise extension): not kept here.
    let raw = match raw.strip_prefix(USER_SCHEMA) {
        Some(rest) => rest.trim_start_matches(':'),
        None if raw.to_ascii_lowercase().starts_with("urn:") => return Ok(None),
        None => raw,
    };
    let (head, filter, tail) = match raw.find('[') {
        Some(open) => {
            let close = raw
                .rfind(']')
                .filter(|c| *c > open)
                .ok_or_else(|| ScimError::invalid_path(format!("{raw:?}: unclosed [")))?;
            (&raw[..open], Some(&raw[open + 1..close]), &raw[close + 1..])
        }
        None => (raw, None, ""),
    };
    let (attr, mut sub) = match head.split_once('.') {
        Some((a, s)) => (a.to_owned(), Some(s.to_owned())),
        None => (head.to_owned(), None),
    };
    if let Some(rest) = tail.strip_prefix('.') {
        sub = Some(rest.to_owned());
    } else if !tail.is_empty() {
        return Err(ScimError::invalid_path(format!(
            "{raw:?}: unexpected {tail:?}"
        )));
    }
    if attr.is_empty()
        || attr
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-'))
    {
        return Err(ScimError::invalid_path(format!(
            "{raw:?} is not an attribute path"
        )));
    }
    let filter = match filter {
        Some(f) => parse_value_filter(f)?,
        None => Vec::new(),
    };
    Ok(Some(Path { attr, filter, sub }))
}

/// `type eq "work"`, or several joined by `and`: the only value filters directories send.
fn parse_value_filter(raw: &str) -> Result<Vec<(String, Value)>, ScimError> {
    let mut terms = Vec::new();
    for term in split_and(raw) {
        let mut parts = term.trim().splitn(3, ' ');
        let (Some(attr), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ScimError::invalid_filter(format!(
                "{raw:?}: expected attr eq value"
            )));
        };
        if !op.eq_ignore_ascii_case("eq") {
            return Err(ScimError::invalid_filter(format!(
                "{raw:?}: only eq is supported in a value filter"
            )));
        }
        let value: Value = serde_json::from_str(value.trim())
            .map_err(|_| ScimError::invalid_filter(format!("{raw:?}: {value} is not a value")))?;
        terms.push((attr.to_owned(), value));
    }
    Ok(terms)
}

fn split_and(raw: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(at) = rest.to_ascii_lowercase().find(" and ") {
        out.push(&rest[..at]);
        rest = &rest[at + 5..];
    }
    out.push(rest);
    out
}

fn matches(item: &Value, filter: &[(String, Value)]) -> bool {
    let Value::Object(o) = item else { return false };
    filter
        .iter()
        .all(|(attr, want)| match (get_ci(o, attr), want) {
            (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
            (Some(a), b) => {
                super::resource::as_bool(a).is_some_and(|x| Some(x) == b.as_bool()) || a == b
            }
            (None, _) => false,
        })
}

/// The key of `obj` named `name` in any case, or `name` itself.
fn key_of(obj: &Map<String, Value>, name: &str) -> String {
    obj.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

/// Applies a PatchOp body to `user` (its SCIM form).
pub fn apply(user: &mut Value, body: &Value) -> Result<(), ScimError> {
    let body = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a PatchOp must be a JSON object"))?;
    let ops = get_ci(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a PatchOp needs Operations, a list"))?;
    let user = user
        .as_object_mut()
        .ok_or_else(|| ScimError::internal("a user's SCIM form is not an object"))?;
    for op in ops {
        let op = op
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("each operation must be an object"))?;
        let kind = match get_ci(op, "op")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
        {
            Some(k) if k == "add" => Op::Add,
            Some(k) if k == "replace" => Op::Replace,
            Some(k) if k == "remove" => Op::Remove,
            other => {
                return Err(ScimError::invalid_syntax(format!(
                    "op must be add, replace or remove, not {other:?}"
                )))
            }
        };
        let value = get_ci(op, "value").cloned();
        match get_ci(op, "path").and_then(Value::as_str) {
            Some(path) => {
                if let Some(path) = parse_path(path)? {
                    apply_at(user, kind, &path, value)?;
                }
            }
            None => {
                if kind == Op::Remove {
                    return Err(ScimError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        Some("noTarget"),
                        "remove needs a path",
                    ));
                }
                let Some(Value::Object(values)) = value else {
                    return Err(ScimError::invalid_syntax(
                        "an operation without a path needs an object value",
                    ));
                };
                for (name, v) in values {
                    if let Some(path) = parse_path(&name)? {
                        // A complex value merges into what is there (RFC 7644 §3.5.2.1).
                        if let (Value::Object(sub), None, true) =
                            (&v, &path.sub, path.filter.is_empty())
                        {
                            if !path.attr.eq_ignore_ascii_case("emails")
                                && !path.attr.eq_ignore_ascii_case("phoneNumbers")
                                && !path.attr.eq_ignore_ascii_case("roles")
                            {
                                for (s, sv) in sub {
                                    let p = Path {
                                        attr: path.attr.clone(),
                                        filter: Vec::new(),
                                        sub: Some(s.clone()),
                                    };
                                    apply_at(user, kind, &p, Some(sv.clone()))?;
                                }
                                continue;
                            }
                        }
                        apply_at(user, kind, &path, Some(v))?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn apply_at(
    user: &mut Map<String, Value>,
    kind: Op,
    path: &Path,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let lower = path.attr.to_ascii_lowercase();
    if DERIVED.contains(&lower.as_str()) {
        return Ok(());
    }
    if lower == "id" {
        return Err(ScimError::mutability("id cannot change"));
    }
    let needs_value = || {
        value
            .clone()
            .ok_or_else(|| ScimError::invalid_syntax(format!("{} needs a value", path.attr)))
    };
    let key = key_of(user, &path.attr);
    if !path.filter.is_empty() {
        // A value filter on a multi-valued attribute.
        let list = user.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if !list.is_array() {
            *list = Value::Array(vec![list.clone()]);
        }
        let Value::Array(items) = list else {
            return Ok(());
        };
        match (kind, &path.sub) {
            (Op::Remove, None) => items.retain(|i| !matches(i, &path.filter)),
            (Op::Remove, Some(sub)) => {
                for item in items.iter_mut().filter(|i| matches(i, &path.filter)) {
                    if let Value::Object(o) = item {
                        let k = key_of(o, sub);
                        o.remove(&k);
                    }
                }
            }
            (_, sub) => {
                let v = needs_value()?;
                let mut found = false;
                for item in items.iter_mut().filter(|i| matches(i, &path.filter)) {
                    found = true;
                    set_in(item, sub.as_deref(), v.clone());
                }
                if !found {
                    // Entra adds `emails[type eq "work"].value` to a user without one.
                    let mut item = Map::new();
                    for (a, fv) in &path.filter {
                        item.insert(a.clone(), fv.clone());
                    }
                    let mut item = Value::Object(item);
                    set_in(&mut item, sub.as_deref(), v);
                    items.push(item);
                }
            }
        }
        return Ok(());
    }
    match (&path.sub, kind) {
        (None, Op::Remove) => {
            user.remove(&key);
        }
        (None, Op::Add) if is_multi(&lower) => {
            let v = needs_value()?;
            let list = user.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            let new_items = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            match list {
                Value::Array(items) => {
                    // A new primary value takes the place of the old primary (RFC 7643 §2.4).
                    if new_items
                        .iter()
                        .any(|i| matches(i, &[("primary".into(), Value::Bool(true))]))
                    {
                        for i in items.iter_mut() {
                            if let Value::Object(o) = i {
                                o.remove(&key_of(o, "primary"));
                            }
                        }
                    }
                    for item in new_items {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                }
                other => *other = Value::Array(new_items),
            }
        }
        (None, _) => {
            let v = needs_value()?;
            match (user.get_mut(&key), v) {
                // A complex attribute's given sub-attributes replace those there; the others
                // stay (RFC 7644 §3.5.2.1 and §3.5.2.3).
                (Some(Value::Object(there)), Value::Object(given)) => {
                    for (sub, sv) in given {
                        let k = key_of(there, &sub);
                        there.insert(k, sv);
                    }
                }
                (_, v) => {
                    user.insert(key, v);
                }
            }
        }
        (Some(sub), Op::Remove) => {
            if let Some(Value::Object(o)) = user.get_mut(&key) {
                let k = key_of(o, sub);
                o.remove(&k);
            }
        }
        (Some(sub), _) => {
            let v = needs_value()?;
            let target = user.entry(key).or_insert_with(|| Value::Object(Map::new()));
            set_in(target, Some(sub), v);
        }
    }
    Ok(())
}

fn is_multi(lower: &str) -> bool {
    matches!(lower, "emails" | "phonenumbers" | "roles")
}

/// Sets `sub` of `item` (or `item` itself) to `value`.
fn set_in(item: &mut Value, sub: Option<&str>, value: Value) {
    match sub {
        None => *item = value,
        Some(sub) => {
            if !item.is_object() {
                *item = Value::Object(Map::new());
            }
            if let Value::Object(o) = item {
                let k = key_of(o, sub);
                o.insert(k, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA], "id": "1", "userName": "jane@h.example",
            "name": {"givenName": "Jane", "familyName": "Doe"},
            "emails": [{"value": "jane@h.example", "type": "work", "primary": true}],
            "active": true,
            "roles": [{"value": "doctor", "primary": true}]
        })
    }

    #[test]
    fn entra_deactivation_with_capital_letters_and_a_string_boolean() {
        let mut u = user();
        apply(
            &mut u,
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
        )
        .expect("applies");
        assert_eq!(u["active"], json!("False"));
    }

    #[test]
    fn okta_replace_without_a_path() {
        let mut u = user();
        apply(
            &mut u,
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false,
                "name": {"givenName": "Janet"}}}]}),
        )
        .expect("applies");
        assert_eq!(u["active"], json!(false));
        assert_eq!(
            u["name"],
            json!({"givenName": "Janet", "familyName": "Doe"})
        );
    }

    #[test]
    fn entra_value_filters_change_or_add_the_item() {
        let mut u = user();
        apply(&mut u, &json!({"Operations": [
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "j.doe@h.example"},
            {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+263 77 000 0000"},
            {"op": "Replace", "path": "name.familyName", "value": "Smith"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Surgery"},
            {"op": "Replace", "path": "displayName", "value": "Jane Smith"}
        ]}))
        .expect("applies");
        assert_eq!(u["emails"][0]["value"], json!("j.doe@h.example"));
        assert_eq!(
            u["phoneNumbers"],
            json!([{"type": "work", "value": "+263 77 000 0000"}])
        );
        assert_eq!(u["name"]["familyName"], json!("Smith"));
        assert!(u.get("displayName").is_none());
    }

    #[test]
    fn a_complex_value_at_a_path_keeps_the_sub_attributes_it_does_not_name() {
        let mut u = user();
        apply(
            &mut u,
            &json!({"Operations": [
                {"op": "replace", "path": "name", "value": {"familyName": "Moyo"}}
            ]}),
        )
        .expect("applies");
        assert_eq!(
            u["name"],
            json!({"givenName": "Jane", "familyName": "Moyo"})
        );
    }

    #[test]
    fn remove_and_bad_operations() {
        let mut u = user();
        apply(
            &mut u,
            &json!({"Operations": [{"op": "remove", "path": "emails[type eq \"work\"]"}]}),
        )
        .expect("applies");
        assert_eq!(u["emails"], json!([]));
        for bad in [
            json!({"Operations": [{"op": "remove"}]}),
            json!({"Operations": [{"op": "delete", "path": "active"}]}),
            json!({"Operations": [{"op": "replace", "path": "id", "value": "2"}]}),
            json!({"Operations": [{"op": "replace", "path": "emails[type eq \"work\"", "value": "x"}]}),
            json!({"operations": "no"}),
            json!([]),
        ] {
            assert!(apply(&mut user(), &bad).is_err(), "{bad} was accepted");
        }
    }
}
