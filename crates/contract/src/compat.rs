//! Whether the contract breaks its last release: pure comparisons of an old and a new JSON
//! Schema, of an old and a new AsyncAPI document, and the rule that lets a breaking change
//! through only when it is announced (a new major version, and a line in the README's
//! `## Upgrade notes`). `tests/contracts_are_compatible.rs` runs them on `contracts/` against
//! `contracts/released/`.
//!
//! # Which direction breaks
//!
//! A consumer reads what a producer writes, and in this system it reads in both directions of
//! time: a consumer built to the release must read what the new producer writes, and a consumer
//! built to the new contract must read what was written under the release, because the outbox
//! is also the event store (`portal replay`, `portal consumer add` backfill a queue with the
//! whole history), older producers may still run, and messages wait in queues, retry queues and
//! dead-letter queues across an upgrade. So a change is breaking when either direction fails:
//!
//! - **old readers, new messages**: the new schema accepts something a reader of the release
//!   rejects or cannot act on: a property removed or renamed (a rename is a removal plus an
//!   addition), no longer required, a type widened (`"string"` to `["string", "null"]`,
//!   `integer` to `number`), an enum value added, a bound loosened. Widening counts: readers are
//!   strict about the fields they know (the Rust consumers' serde types reject a `null` or an
//!   unknown role, and dead-letter the event as `invalid-payload`).
//! - **new readers, old messages**: the new schema rejects something the release allowed: a
//!   type narrowed (`["string", "null"]` to `"string"`, `number` to `integer`), an enum value
//!   removed or an `enum`/`const` added, a new required property without a `default`, a
//!   property that becomes required without one, a bound tightened.
//!
//! Not breaking: a new optional property (readers ignore unknown properties: the tolerant
//! reader of the version policy), new messages, channels, queues, exchanges and bindings, and
//! any change of annotations (`title`, `description`, `examples`, `default` values). One enum is
//! open by the version policy: a 1.x minor version may add event types, which a consumer that
//! does not know them dead-letters (`unknown-event-type`), so a value added to an `eventType`
//! enum ([`OPEN_ENUMS`]) is a new message, not a break.
//!
//! # What is compared
//!
//! JSON Schema (draft-07, as `schema.rs` generates it): local `$ref` (`#/...`, followed, with a
//! depth limit against cycles), `allOf` (merged: properties and `required` united, `type` and
//! `enum` intersected), `anyOf`/`oneOf` (as alternatives: every new one must match an old one,
//! and every old one a new one), `properties`, `required`, `additionalProperties`, `type`,
//! `enum`, `const`, `format`, `pattern`, numeric, length and size bounds, `uniqueItems`, `items`.
//! Not analysed, so any change of them is reported as breaking: `not`, `if`/`then`/`else`,
//! `dependencies`, `patternProperties`, `propertyNames`, `contains`, `additionalItems`, boolean
//! schemas, a remote `$ref` (compared as text), a regular expression (a changed `pattern` is
//! breaking, whatever the two accept).
//!
//! AsyncAPI (as `schema.rs` generates it): exchanges (by name, with their type and declaration
//! arguments), routing keys (a routing-key channel by exchange and address), queues (by name,
//! with their arguments and bindings), messages (by name: content type, AMQP type, payload,
//! headers), which messages each channel carries and which ones are sent where. A channel's or
//! message's id is the document's own and is not compared; names on the broker are. Receive
//! operations are not compared (they do not change what a consumer gets); parameters,
//! servers and descriptions neither.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The properties whose `enum` may gain values in a minor version (see the module doc).
pub const OPEN_ENUMS: [&str; 1] = ["eventType"];

/// The heading of the README section that announces breaking changes.
pub const UPGRADE_NOTES_HEADING: &str = "## Upgrade notes";

/// The subject of the changes in `envelope.json` (the schema of any user event).
pub const ENVELOPE_SUBJECT: &str = "envelope";

/// How deep `$ref`s and nested schemas are followed: generated schemas are a few levels deep;
/// a recursive type stops here instead of looping.
const MAX_DEPTH: usize = 48;

/// Keywords that say nothing about which messages are valid.
const ANNOTATIONS: [&str; 12] = [
    "title",
    "description",
    "examples",
    "default",
    "$schema",
    "$id",
    "$comment",
    "definitions",
    "$defs",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// Keywords compared by the rules below; any other keyword that differs is reported as a
/// change that was not analysed.
const ANALYSED: [&str; 27] = [
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "type",
    "enum",
    "const",
    "format",
    "pattern",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "multipleOf",
    "uniqueItems",
    // Set by `effective` for a `$ref` it could not follow and for a `false` schema.
    "x-unresolved-ref",
    "x-false",
];

/// A change that an existing consumer, or a consumer reading existing messages, cannot cope with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BreakingChange {
    /// What readers know it by, and what an upgrade note must name: the message (event type or
    /// AMQP type, [`ENVELOPE_SUBJECT`] for `envelope.json`), or the routing key, queue or
    /// exchange on the broker.
    pub subject: String,
    /// Where: `$.payload.role` in a message body, `channels.<id>...` in the AsyncAPI document.
    pub path: String,
    /// What changed and whom it breaks.
    pub reason: String,
}

impl fmt::Display for BreakingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.subject, self.path, self.reason)
    }
}

/// The breaking changes from `old` to `new`, two JSON Schemas of the message `subject`.
pub fn compare_schemas(subject: &str, old: &Value, new: &Value) -> Vec<BreakingChange> {
    let mut cx = SchemaCx::new(subject, old, new);
    cx.compare(old, new, "$", 0);
    cx.out
}

/// One comparison: the documents `$ref`s resolve in, and what was found.
struct SchemaCx<'a> {
    subject: &'a str,
    old_root: &'a Value,
    new_root: &'a Value,
    out: Vec<BreakingChange>,
}

impl<'a> SchemaCx<'a> {
    fn new(subject: &'a str, old_root: &'a Value, new_root: &'a Value) -> Self {
        Self {
            subject,
            old_root,
            new_root,
            out: Vec::new(),
        }
    }

    fn breaking(&mut self, path: &str, reason: String) {
        self.out.push(BreakingChange {
            subject: self.subject.to_owned(),
            path: path.to_owned(),
            reason,
        });
    }

    /// The changes `old` to `new` would make, without recording them: to match alternatives.
    fn trial(&self, old: &Value, new: &Value, path: &str, depth: usize) -> Vec<BreakingChange> {
        let mut cx = SchemaCx::new(self.subject, self.old_root, self.new_root);
        cx.compare_single(old, new, path, depth);
        cx.out
    }

    fn compare(&mut self, old: &Value, new: &Value, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let old = effective(self.old_root, old, 0);
        let new = effective(self.new_root, new, 0);
        let old_alts = alternatives(self.old_root, &old);
        let new_alts = alternatives(self.new_root, &new);
        if let ([o], [n]) = (old_alts.as_slice(), new_alts.as_slice()) {
            self.compare_single(o, n, path, depth);
            return;
        }
        // Alternatives (anyOf/oneOf, or one schema against several): each new one must be
        // readable as one of the old ones, and each old one must still be accepted.
        let open = is_open_enum(path);
        let unmatched_new: Vec<&Value> = new_alts
            .iter()
            .filter(|n| {
                !old_alts
                    .iter()
                    .any(|o| self.trial(o, n, path, depth).is_empty())
            })
            .collect();
        let unmatched_old: Vec<&Value> = old_alts
            .iter()
            .filter(|o| {
                !new_alts
                    .iter()
                    .any(|n| self.trial(o, n, path, depth).is_empty())
            })
            .collect();
        if let ([o], [n]) = (unmatched_old.as_slice(), unmatched_new.as_slice()) {
            // One alternative changed (a nullable object whose object changed): say how.
            self.compare_single(o, n, path, depth);
            return;
        }
        if !open {
            for n in unmatched_new {
                self.breaking(
                    path,
                    format!(
                        "new alternative {}: readers of the release do not accept it",
                        describe(n)
                    ),
                );
            }
        }
        for o in unmatched_old {
            self.breaking(
                path,
                format!(
                    "alternative {} is gone: messages written under the release may take it \
                     and no longer validate",
                    describe(o)
                ),
            );
        }
    }

    /// Two schemas without alternatives, `$ref` and `allOf` already resolved.
    fn compare_single(&mut self, old: &Value, new: &Value, path: &str, depth: usize) {
        // Equal text is the same schema only without references: a `$ref` resolves in each
        // side's own document.
        if old == new && !has_ref(old) {
            return;
        }
        let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
            self.breaking(
                path,
                format!("schema changed from {old} to {new} (not analysed)"),
            );
            return;
        };
        self.compare_types(o, n, path);
        self.compare_values(o, n, path);
        self.compare_format_and_pattern(o, n, path);
        self.compare_bounds(o, n, path);
        self.compare_properties(o, n, path, depth);
        self.compare_items(o, n, path, depth);
        for (keyword, text) in [("x-unresolved-ref", "$ref"), ("x-false", "false schema")] {
            if o.get(keyword) != n.get(keyword) {
                self.breaking(
                    path,
                    format!(
                        "{text} changed from {} to {} (not followed)",
                        show(o.get(keyword)),
                        show(n.get(keyword))
                    ),
                );
            }
        }
        let keywords: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for k in keywords {
            if ANNOTATIONS.contains(&k.as_str()) || ANALYSED.contains(&k.as_str()) {
                continue;
            }
            if o.get(k) != n.get(k) {
                self.breaking(
                    path,
                    format!(
                        "`{k}` changed from {} to {} (not analysed, so counted as breaking)",
                        show(o.get(k)),
                        show(n.get(k))
                    ),
                );
            }
        }
    }

    fn compare_types(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, path: &str) {
        let (old, new) = (types(o), types(n));
        match (&old, &new) {
            (None, None) => {}
            (None, Some(new)) => self.breaking(
                path,
                format!(
                    "type restricted to {} (was unrestricted): messages written under the \
                     release may hold another type",
                    join(new)
                ),
            ),
            (Some(old), None) => self.breaking(
                path,
                format!(
                    "type restriction {} removed: readers of the release expect it",
                    join(old)
                ),
            ),
            (Some(old_set), Some(new_set)) => {
                let lost: Vec<&String> = old_set.iter().filter(|t| !covers(new_set, t)).collect();
                let gained: Vec<&String> = new_set.iter().filter(|t| !covers(old_set, t)).collect();
                let change = format!("type {} -> {}", join(old_set), join(new_set));
                if !lost.is_empty() {
                    self.breaking(
                        path,
                        format!(
                            "{change} narrowed: messages written under the release may hold {}, \
                             which the new schema rejects",
                            join(lost)
                        ),
                    );
                }
                if !gained.is_empty() {
                    self.breaking(
                        path,
                        format!(
                            "{change} widened: new messages may hold {}, which readers of the \
                             release reject",
                            join(gained)
                        ),
                    );
                }
            }
        }
    }

    /// `enum` and `const`, one `const` being an enum of one value.
    fn compare_values(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, path: &str) {
        let (old, new) = (allowed_values(o), allowed_values(n));
        if old == new {
            return;
        }
        if let (Some(a), Some(b)) = (o.get("const"), n.get("const")) {
            self.breaking(
                path,
                format!(
                    "const changed from {a} to {b}: readers of the release reject the new value, \
                     the new schema rejects the old one"
                ),
            );
            return;
        }
        match (old, new) {
            (Some(old), Some(new)) => {
                let added: Vec<&Value> = new.iter().filter(|v| !old.contains(v)).collect();
                let removed: Vec<&Value> = old.iter().filter(|v| !new.contains(v)).collect();
                if !added.is_empty() && !is_open_enum(path) {
                    self.breaking(
                        path,
                        format!(
                            "value(s) {} added: readers of the release reject them (or cannot \
                             act on them)",
                            values(&added)
                        ),
                    );
                }
                if !removed.is_empty() {
                    self.breaking(
                        path,
                        format!(
                            "value(s) {} removed: messages written under the release may hold \
                             them",
                            values(&removed)
                        ),
                    );
                }
            }
            (None, Some(new)) => self.breaking(
                path,
                format!(
                    "restricted to {} (was any value): messages written under the release may \
                     hold another",
                    values(&new.iter().collect::<Vec<_>>())
                ),
            ),
            (Some(old), None) if !is_open_enum(path) => self.breaking(
                path,
                format!(
                    "no longer restricted to {}: readers of the release reject other values",
                    values(&old.iter().collect::<Vec<_>>())
                ),
            ),
            _ => {}
        }
    }

    fn compare_format_and_pattern(
        &mut self,
        o: &Map<String, Value>,
        n: &Map<String, Value>,
        path: &str,
    ) {
        for (keyword, why) in [
            (
                "format",
                "readers check formats, and messages written under the release need not have the \
                 new one",
            ),
            (
                "pattern",
                "regular expressions are not compared, so any change counts: readers of the \
                 release or messages written under it may not match the other",
            ),
        ] {
            if o.get(keyword) != n.get(keyword) {
                self.breaking(
                    path,
                    format!(
                        "{keyword} changed from {} to {}: {why}",
                        show(o.get(keyword)),
                        show(n.get(keyword))
                    ),
                );
            }
        }
    }

    /// Bounds: a tighter one rejects messages written under the release, a looser one lets
    /// through values readers of the release reject.
    fn compare_bounds(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, path: &str) {
        const LOWER: [&str; 5] = [
            "minimum",
            "exclusiveMinimum",
            "minLength",
            "minItems",
            "minProperties",
        ];
        const UPPER: [&str; 5] = [
            "maximum",
            "exclusiveMaximum",
            "maxLength",
            "maxItems",
            "maxProperties",
        ];
        for keyword in LOWER.iter().chain(&UPPER) {
            let (old, new) = (
                o.get(*keyword).and_then(Value::as_f64),
                n.get(*keyword).and_then(Value::as_f64),
            );
            let lower = LOWER.contains(keyword);
            let tighter = match (old, new) {
                (None, None) => continue,
                (Some(a), Some(b)) if a == b => continue,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => (b > a) == lower,
            };
            let change = format!("{keyword} {} -> {}", show_num(old), show_num(new));
            let reason = if tighter {
                format!("{change} tightened: messages written under the release may not satisfy it")
            } else {
                format!(
                    "{change} loosened: new messages may hold values readers of the release reject"
                )
            };
            self.breaking(path, reason);
        }
        for keyword in ["multipleOf", "uniqueItems"] {
            let (old, new) = (o.get(keyword), n.get(keyword));
            let unset = |v: Option<&Value>| v.is_none() || v == Some(&Value::Bool(false));
            if old != new && !(unset(old) && unset(new)) {
                self.breaking(
                    path,
                    format!("{keyword} changed from {} to {}", show(old), show(new)),
                );
            }
        }
    }

    fn compare_properties(
        &mut self,
        o: &Map<String, Value>,
        n: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) {
        let empty = Map::new();
        let old_props = o
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let new_props = n
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let old_required = required(o);
        let new_required = required(n);
        let names: BTreeSet<&str> = old_props
            .keys()
            .chain(new_props.keys())
            .map(String::as_str)
            .chain(old_required.iter().copied())
            .chain(new_required.iter().copied())
            .collect();
        let any = Value::Object(Map::new());
        for name in names {
            let at = format!("{path}.{name}");
            let in_old = old_props.contains_key(name) || old_required.contains(name);
            let in_new = new_props.contains_key(name) || new_required.contains(name);
            let was_required = old_required.contains(name);
            let is_required = new_required.contains(name);
            let new_schema = new_props.get(name).unwrap_or(&any);
            let defaulted = effective(self.new_root, new_schema, 0)
                .get("default")
                .is_some();
            match (in_old, in_new) {
                (true, false) => {
                    let how = if was_required {
                        "always expect it"
                    } else {
                        "read it when present"
                    };
                    self.breaking(
                        &at,
                        format!("property removed (or renamed): readers of the release {how}"),
                    );
                }
                (false, true) => {
                    if is_required && !defaulted {
                        self.breaking(
                            &at,
                            "new required property without a default: messages written under \
                             the release lack it"
                                .to_owned(),
                        );
                    } else if forbids_unknown(o) {
                        self.breaking(
                            &at,
                            "new property, but the release's schema forbids unknown properties \
                             (additionalProperties: false)"
                                .to_owned(),
                        );
                    }
                }
                (true, true) => {
                    if was_required && !is_required {
                        self.breaking(
                            &at,
                            "no longer required: readers of the release expect it always".into(),
                        );
                    }
                    if !was_required && is_required && !defaulted {
                        self.breaking(
                            &at,
                            "now required, without a default: messages written under the \
                             release may lack it"
                                .into(),
                        );
                    }
                    let old_schema = old_props.get(name).unwrap_or(&any);
                    self.compare(old_schema, new_schema, &at, depth + 1);
                }
                (false, false) => {}
            }
        }
        match (o.get("additionalProperties"), n.get("additionalProperties")) {
            (a, b) if a == b => {}
            (Some(Value::Bool(false)), _) => self.breaking(
                path,
                "unknown properties now allowed, which the release's schema forbids \
                 (additionalProperties: false)"
                    .into(),
            ),
            (_, Some(Value::Bool(false))) => self.breaking(
                path,
                "unknown properties now forbidden (additionalProperties: false): messages \
                 written under the release may carry some"
                    .into(),
            ),
            (Some(a @ Value::Object(_)), Some(b @ Value::Object(_))) => {
                self.compare(a, b, &format!("{path}.*"), depth + 1);
            }
            (a, b) => self.breaking(
                path,
                format!(
                    "additionalProperties changed from {} to {}",
                    show(a),
                    show(b)
                ),
            ),
        }
    }

    fn compare_items(
        &mut self,
        o: &Map<String, Value>,
        n: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) {
        let at = format!("{path}[]");
        match (o.get("items"), n.get("items")) {
            (None, None) => {}
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                if a.len() != b.len() {
                    self.breaking(
                        &at,
                        format!("tuple of {} items became one of {}", a.len(), b.len()),
                    );
                }
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    self.compare(x, y, &format!("{path}[{i}]"), depth + 1);
                }
            }
            (Some(Value::Array(_)), _) | (_, Some(Value::Array(_))) => self.breaking(
                &at,
                "items changed between a tuple and a list (not analysed)".into(),
            ),
            (a, b) => {
                let any = Value::Object(Map::new());
                self.compare(a.unwrap_or(&any), b.unwrap_or(&any), &at, depth + 1);
            }
        }
    }
}

/// The schema with its `$ref` followed and its `allOf` merged in, so the keywords that apply
/// are all at its top level. `anyOf`/`oneOf` stay (see [`alternatives`]).
fn effective(root: &Value, schema: &Value, depth: usize) -> Value {
    let Some(object) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Value::Object(Map::new()),
            Value::Bool(false) => serde_json::json!({"x-false": true}),
            other => other.clone(),
        };
    };
    let mut base = object.clone();
    let mut parts = Vec::new();
    if let Some(reference) = base.remove("$ref") {
        let target = reference
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer));
        match target {
            Some(target) if depth < MAX_DEPTH => parts.push(effective(root, target, depth + 1)),
            // A remote reference, a dangling one or a cycle: compared as text.
            _ => {
                base.insert("x-unresolved-ref".into(), reference);
            }
        }
    }
    if let Some(Value::Array(all)) = base.remove("allOf") {
        for part in &all {
            parts.push(effective(root, part, depth + 1));
        }
    }
    parts.into_iter().fold(Value::Object(base), merge)
}

/// Both schemas at once (`allOf`): properties and `required` united, `type` and `enum`
/// intersected; of any other keyword the first one wins (generated schemas do not repeat them).
fn merge(a: Value, b: Value) -> Value {
    let (Value::Object(mut a), Value::Object(b)) = (a.clone(), b) else {
        return a;
    };
    for (key, value) in b {
        match (key.as_str(), a.remove(&key)) {
            (_, None) => {
                a.insert(key, value);
            }
            ("properties", Some(Value::Object(mut mine))) => {
                if let Value::Object(theirs) = value {
                    for (name, schema) in theirs {
                        let merged = match mine.remove(&name) {
                            Some(existing) => serde_json::json!({"allOf": [existing, schema]}),
                            None => schema,
                        };
                        mine.insert(name, merged);
                    }
                }
                a.insert(key, Value::Object(mine));
            }
            ("required", Some(Value::Array(mine))) => {
                let mut all: Vec<Value> = mine;
                for v in value.as_array().into_iter().flatten() {
                    if !all.contains(v) {
                        all.push(v.clone());
                    }
                }
                a.insert(key, Value::Array(all));
            }
            ("type", Some(mine)) => {
                let (x, y) = (type_set(&mine), type_set(&value));
                let both: Vec<Value> = x
                    .iter()
                    .filter(|t| covers(&y, t))
                    .chain(y.iter().filter(|t| covers(&x, t)))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|t| Value::String(t.clone()))
                    .collect();
                a.insert(key, Value::Array(both));
            }
            ("enum", Some(Value::Array(mine))) => {
                let theirs = value.as_array().cloned().unwrap_or_default();
                let both: Vec<Value> = mine.into_iter().filter(|v| theirs.contains(v)).collect();
                a.insert(key, Value::Array(both));
            }
            (_, Some(mine)) => {
                a.insert(key, mine);
            }
        }
    }
    Value::Object(a)
}

/// The alternatives a schema allows: each member of its `anyOf` or `oneOf` (with the rest of
/// the schema merged in), or the schema itself. With both, `oneOf` is used and `anyOf` kept as
/// a keyword (not analysed).
fn alternatives(root: &Value, schema: &Value) -> Vec<Value> {
    let Some(object) = schema.as_object() else {
        return vec![schema.clone()];
    };
    let key = if object.contains_key("oneOf") {
        "oneOf"
    } else {
        "anyOf"
    };
    let Some(Value::Array(members)) = object.get(key) else {
        return vec![schema.clone()];
    };
    let mut base = object.clone();
    base.remove(key);
    members
        .iter()
        .map(|m| {
            let member = effective(root, m, 0);
            let merged = merge(effective(root, &Value::Object(base.clone()), 0), member);
            // A member that is itself a union is flattened one level.
            match alternatives(root, &merged).as_slice() {
                [single] => single.clone(),
                _ => merged,
            }
        })
        .collect()
}

/// Whether a `$ref` occurs anywhere in `v`.
fn has_ref(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key("$ref") || o.values().any(has_ref),
        Value::Array(a) => a.iter().any(has_ref),
        _ => false,
    }
}

/// The types a schema allows; `None` when it does not say.
fn types(o: &Map<String, Value>) -> Option<BTreeSet<String>> {
    o.get("type").map(type_set)
}

fn type_set(v: &Value) -> BTreeSet<String> {
    match v {
        Value::String(s) => BTreeSet::from([s.clone()]),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Whether the types `set` accept every value of type `t` (`number` takes integers).
fn covers(set: &BTreeSet<String>, t: &str) -> bool {
    set.contains(t) || (t == "integer" && set.contains("number"))
}

/// The values an `enum` or a `const` allows; `None` when it has neither.
fn allowed_values(o: &Map<String, Value>) -> Option<Vec<Value>> {
    match (o.get("enum"), o.get("const")) {
        (Some(Value::Array(values)), _) => Some(values.clone()),
        (_, Some(value)) => Some(vec![value.clone()]),
        _ => None,
    }
}

fn required(o: &Map<String, Value>) -> BTreeSet<&str> {
    o.get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn forbids_unknown(o: &Map<String, Value>) -> bool {
    o.get("additionalProperties") == Some(&Value::Bool(false))
}

/// Whether the instance at `path` is a property whose enum may grow ([`OPEN_ENUMS`]).
fn is_open_enum(path: &str) -> bool {
    path.rsplit('.')
        .next()
        .is_some_and(|last| OPEN_ENUMS.contains(&last))
}

/// A short description of an alternative, for a reason.
fn describe(schema: &Value) -> String {
    let Some(o) = schema.as_object() else {
        return schema.to_string();
    };
    if let Some(values) = allowed_values(o) {
        return values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("|");
    }
    if let Some(t) = types(o) {
        return join(&t);
    }
    let mut text = schema.to_string();
    if text.len() > 80 {
        let cut = (0..=77)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn join<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join("|")
}

fn values(v: &[&Value]) -> String {
    v.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".to_owned(), Value::to_string)
}

fn show_num(v: Option<f64>) -> String {
    v.map_or_else(|| "(none)".to_owned(), |n| n.to_string())
}

// ---------------------------------------------------------------------------------------------
// AsyncAPI
// ---------------------------------------------------------------------------------------------

/// One channel of an AsyncAPI document, by what it is on the broker.
#[derive(Debug, Default)]
struct Channel<'a> {
    /// The document's id, for paths.
    id: &'a str,
    /// `routingKey` or `queue`.
    is: &'a str,
    /// The routing key or the queue name.
    address: &'a str,
    /// The exchange of a routing key.
    exchange: Option<&'a str>,
    arguments: Option<&'a Value>,
    /// A queue's bindings: `(exchange, routing key)`.
    bound_to: BTreeSet<(&'a str, &'a str)>,
    /// The names of the messages it carries.
    messages: BTreeSet<&'a str>,
}

impl Channel<'_> {
    /// What identifies it on the broker.
    fn key(&self) -> String {
        match self.exchange {
            Some(exchange) if self.is == "routingKey" => {
                format!("routing key {} on {exchange}", self.address)
            }
            _ => format!("queue {}", self.address),
        }
    }

    /// What an upgrade note names: the routing key or the queue.
    fn subject(&self) -> String {
        self.address.to_owned()
    }
}

/// The parts of an AsyncAPI document the comparison reads.
struct Document<'a> {
    doc: &'a Value,
    channels: BTreeMap<String, Channel<'a>>,
    /// Exchange name -> its type, where a routing-key channel says it.
    exchanges: BTreeMap<&'a str, Option<&'a Value>>,
    /// Message name -> (component id, message).
    messages: BTreeMap<&'a str, (&'a str, &'a Value)>,
    /// `(channel key, message name)` of every send operation.
    sends: BTreeSet<(String, &'a str)>,
}

/// Follows a local `#/...` reference of the document (`None` if dangling).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> Option<&'a Value> {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => doc.pointer(reference.strip_prefix('#')?),
        None => Some(value),
    }
}

impl<'a> Document<'a> {
    fn read(doc: &'a Value) -> Self {
        let mut messages = BTreeMap::new();
        for (id, m) in doc["components"]["messages"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let name = m["name"].as_str().unwrap_or(id);
            messages.insert(name, (id.as_str(), m));
        }
        let message_name = |r: &'a Value| -> Option<&'a str> {
            // A channel's message, or an operation's reference to it: may be two hops.
            let mut m = resolve(doc, r)?;
            if m.get("$ref").is_some() {
                m = resolve(doc, m)?;
            }
            m["name"].as_str()
        };

        let mut channels = BTreeMap::new();
        let mut exchanges = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (id, c) in doc["channels"].as_object().into_iter().flatten() {
            let amqp = &c["bindings"]["amqp"];
            let is = amqp["is"].as_str().unwrap_or("routingKey");
            let exchange = amqp["exchange"]["name"].as_str();
            let arguments = amqp.get("x-arguments").filter(|a| !a.is_null());
            if let Some(name) = exchange {
                let kind = amqp["exchange"].get("type").filter(|t| !t.is_null());
                exchanges.insert(name, kind);
            }
            let mut bound_to = BTreeSet::new();
            for b in amqp["x-bound-to"].as_array().into_iter().flatten() {
                if let (Some(e), Some(k)) = (b["exchange"].as_str(), b["routingKey"].as_str()) {
                    bound_to.insert((e, k));
                    exchanges.entry(e).or_insert(None);
                }
            }
            if let Some(alternate) = arguments
                .and_then(|a| a.get("alternate-exchange"))
                .and_then(Value::as_str)
            {
                exchanges.entry(alternate).or_insert(None);
            }
            let channel = Channel {
                id,
                is,
                address: c["address"].as_str().unwrap_or(id),
                exchange,
                arguments,
                bound_to,
                messages: c["messages"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, r)| message_name(r))
                    .collect(),
            };
            by_id.insert(id.as_str(), channel.key());
            channels.insert(channel.key(), channel);
        }

        let mut sends = BTreeSet::new();
        for op in doc["operations"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, op)| op)
        {
            if op["action"] != "send" {
                continue;
            }
            let channel = op["channel"]["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/channels/"))
                .and_then(|id| by_id.get(id));
            let Some(channel) = channel else { continue };
            for m in op["messages"].as_array().into_iter().flatten() {
                if let Some(name) = message_name(m) {
                    sends.insert((channel.clone(), name));
                }
            }
        }
        Self {
            doc,
            channels,
            exchanges,
            messages,
            sends,
        }
    }
}

fn breaking(out: &mut Vec<BreakingChange>, subject: &str, path: String, reason: String) {
    out.push(BreakingChange {
        subject: subject.to_owned(),
        path,
        reason,
    });
}

/// The breaking changes from the AsyncAPI document `old` to `new` (see the module doc). The
/// schema files a message's payload refers to are compared on their own ([`compare_schemas`]);
/// an inline payload and the headers are compared here.
pub fn compare_asyncapi(old: &Value, new: &Value) -> Vec<BreakingChange> {
    let (old_doc, new_doc) = (Document::read(old), Document::read(new));
    let mut out = Vec::new();

    for (name, kind) in &old_doc.exchanges {
        match new_doc.exchanges.get(name) {
            None => breaking(
                &mut out,
                name,
                format!("exchanges.{name}"),
                "exchange removed (or renamed): what publishes to it or binds a queue to it \
                 fails"
                    .into(),
            ),
            Some(new_kind) if kind.is_some() && new_kind.is_some() && kind != new_kind => breaking(
                &mut out,
                name,
                format!("exchanges.{name}"),
                format!(
                    "exchange type changed from {} to {}: declaring it as the release \
                         does fails (PRECONDITION_FAILED), and routing changes",
                    show(*kind),
                    show(*new_kind)
                ),
            ),
            Some(_) => {}
        }
    }

    for (key, c) in &old_doc.channels {
        let path = format!("channels.{}", c.id);
        let Some(n) = new_doc.channels.get(key) else {
            let reason = if c.is == "queue" {
                "queue removed (or renamed): its consumers and the operators' tools look for it \
                 by name, and what waits in it is stranded"
                    .to_owned()
            } else {
                format!(
                    "routing key removed (or renamed) on {}: queues bound with it receive \
                     nothing more",
                    c.exchange.unwrap_or("?")
                )
            };
            breaking(&mut out, &c.subject(), path, format!("{key}: {reason}"));
            continue;
        };
        if c.arguments != n.arguments {
            let subject = if c.is == "queue" {
                c.subject()
            } else {
                c.exchange.unwrap_or(c.address).to_owned()
            };
            breaking(
                &mut out,
                &subject,
                format!("{path}.bindings.amqp.x-arguments"),
                format!(
                    "{key}: declaration arguments changed from {} to {}: declaring it with the \
                     release's arguments fails (PRECONDITION_FAILED)",
                    show(c.arguments),
                    show(n.arguments)
                ),
            );
        }
        for (exchange, routing_key) in c.bound_to.difference(&n.bound_to) {
            breaking(
                &mut out,
                &c.subject(),
                format!("{path}.bindings.amqp.x-bound-to"),
                format!(
                    "{key}: binding to {exchange} with {routing_key:?} removed: the queue no \
                     longer receives those messages"
                ),
            );
        }
        for message in c.messages.difference(&n.messages) {
            breaking(
                &mut out,
                message,
                format!("{path}.messages"),
                format!("{key} no longer carries {message}: its readers wait for it in vain"),
            );
        }
    }

    for (name, (id, m)) in &old_doc.messages {
        let path = format!("components.messages.{id}");
        let Some((_, n)) = new_doc.messages.get(name) else {
            breaking(
                &mut out,
                name,
                path,
                "message removed (or renamed): its readers get nothing more, or an unknown \
                 name they dead-letter"
                    .into(),
            );
            continue;
        };
        for (field, pointer) in [
            ("content type", "/contentType"),
            ("AMQP type", "/bindings/amqp/messageType"),
        ] {
            if m.pointer(pointer) != n.pointer(pointer) {
                breaking(
                    &mut out,
                    name,
                    format!("{path}{}", pointer.replace('/', ".")),
                    format!(
                        "{field} changed from {} to {}: readers dispatch and decode on it",
                        show(m.pointer(pointer)),
                        show(n.pointer(pointer))
                    ),
                );
            }
        }
        let (old_payload, new_payload) = (&m["payload"], &n["payload"]);
        let (old_ref, new_ref) = (old_payload.get("$ref"), new_payload.get("$ref"));
        match (old_ref, new_ref) {
            // Both in schema files: compared file by file.
            (Some(a), Some(b)) if a == b => {}
            (None, None) => {
                let mut cx = SchemaCx::new(name, old_doc.doc, new_doc.doc);
                cx.compare(old_payload, new_payload, &format!("{path}.payload"), 0);
                out.extend(cx.out);
            }
            (a, b) => breaking(
                &mut out,
                name,
                format!("{path}.payload"),
                format!(
                    "payload schema changed from {} to {}",
                    a.map_or_else(|| "inline".to_owned(), Value::to_string),
                    b.map_or_else(|| "inline".to_owned(), Value::to_string)
                ),
            ),
        }
        // No headers is a headers object without properties.
        let none = serde_json::json!({"type": "object"});
        let old_headers = m.get("headers").unwrap_or(&none);
        let new_headers = n.get("headers").unwrap_or(&none);
        let mut cx = SchemaCx::new(name, old_doc.doc, new_doc.doc);
        cx.compare(old_headers, new_headers, &format!("{path}.headers"), 0);
        out.extend(cx.out);
    }

    for (channel, message) in old_doc.sends.difference(&new_doc.sends) {
        breaking(
            &mut out,
            message,
            "operations".into(),
            format!(
                "nobody sends {message} to {channel} any more: its readers wait for it in vain"
            ),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The release, and announcing a breaking change
// ---------------------------------------------------------------------------------------------

/// A contract as documents: the JSON Schemas by file name (`user.updated.json`) and the
/// AsyncAPI document.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    pub schemas: BTreeMap<String, Value>,
    pub asyncapi: Value,
}

/// The subject of the changes in a schema file: the message it describes (its AMQP type, the
/// file's name without `.json`), [`ENVELOPE_SUBJECT`] for `envelope.json`.
pub fn file_subject(file: &str) -> String {
    let stem = file.strip_suffix(".json").unwrap_or(file);
    if file == crate::schema::ENVELOPE_FILE {
        ENVELOPE_SUBJECT.to_owned()
    } else {
        stem.to_owned()
    }
}

/// The major version of a `major.minor` version (`"2.0"` -> 2).
pub fn major(version: &str) -> Option<u64> {
    let (major, _) = version.trim().split_once('.')?;
    major.parse().ok()
}

/// The major version a message schema fixes in its `version` property: a `const` or single
/// `enum` value (`"2.0"`), or a `pattern` that starts `^<major>\.` (`^1\.[0-9]+$`, as the
/// generated schemas say it). `None` for a message without a version (the control messages).
pub fn schema_major(schema: &Value) -> Option<u64> {
    let version = effective(schema, &schema["properties"]["version"], 0);
    if let Some(v) = version
        .get("const")
        .or_else(|| version.get("enum").and_then(|e| e.get(0)))
        .and_then(Value::as_str)
    {
        return major(v);
    }
    let pattern = version.get("pattern")?.as_str()?.strip_prefix('^')?;
    let digits: String = pattern.chars().take_while(char::is_ascii_digit).collect();
    let rest = &pattern[digits.len()..];
    if rest.starts_with("\\.") || rest.starts_with("[.]") {
        digits.parse().ok()
    } else {
        None
    }
}

impl Contract {
    /// The major version that applies to `subject`: its schema file's (by file subject, or the
    /// file the AsyncAPI message of that name refers to), else the AsyncAPI document's
    /// `info.version` (for messages without a version of their own, and for queues, routing
    /// keys and exchanges).
    pub fn major(&self, subject: &str) -> Option<u64> {
        let by_file = self
            .schemas
            .iter()
            .find(|(file, _)| file_subject(file) == subject)
            .and_then(|(_, schema)| schema_major(schema));
        let by_message = || {
            self.asyncapi["components"]["messages"]
                .as_object()?
                .values()
                .find(|m| m["name"] == subject)?["payload"]["$ref"]
                .as_str()?
                .rsplit('/')
                .next()
                .and_then(|file| self.schemas.get(file))
                .and_then(schema_major)
        };
        by_file
            .or_else(by_message)
            .or_else(|| major(self.asyncapi["info"]["version"].as_str()?))
    }
}

/// Every breaking change from `old` to `new`: each schema file of `old` against the same file
/// of `new` (a file gone is a message gone), then the AsyncAPI documents.
pub fn breaking_changes(old: &Contract, new: &Contract) -> Vec<BreakingChange> {
    let mut out = Vec::new();
    for (file, old_schema) in &old.schemas {
        let subject = file_subject(file);
        match new.schemas.get(file) {
            Some(new_schema) => out.extend(compare_schemas(&subject, old_schema, new_schema)),
            None => out.push(BreakingChange {
                subject,
                path: format!("schemas/{file}"),
                reason: "schema file removed: the message is no longer described".into(),
            }),
        }
    }
    out.extend(compare_asyncapi(&old.asyncapi, &new.asyncapi));
    out
}

/// A breaking change that is not announced, and what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unannounced {
    pub change: BreakingChange,
    pub missing: String,
}

impl fmt::Display for Unannounced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n    not announced: {}", self.change, self.missing)
    }
}

/// The breaking changes from `old` to `new` that are not announced. One is announced when the
/// major version of its subject ([`Contract::major`]) went up from `old` to `new`, AND the
/// README's `## Upgrade notes` section (`readme`: its whole text, `None` when there is no
/// README) has a line naming the subject and the new major version ([`announces`]).
pub fn unannounced(old: &Contract, new: &Contract, readme: Option<&str>) -> Vec<Unannounced> {
    let notes = readme.and_then(upgrade_notes);
    breaking_changes(old, new)
        .into_iter()
        .filter_map(|change| {
            let (was, is) = (old.major(&change.subject), new.major(&change.subject));
            let missing = match (was, is) {
                (Some(was), Some(is)) if is > was => match notes {
                    None => format!(
                        "the major version went {was} -> {is}, but README.md has no \
                         `{UPGRADE_NOTES_HEADING}` section"
                    ),
                    Some(notes) if !announces(notes, &change.subject, is) => format!(
                        "the major version went {was} -> {is}, but no line of README.md's \
                         `{UPGRADE_NOTES_HEADING}` names `{}` and `{is}.0`",
                        change.subject
                    ),
                    Some(_) => return None,
                },
                (was, is) => format!(
                    "the major version of `{}` did not go up ({} -> {}): a breaking change \
                     needs a new major version and an upgrade note",
                    change.subject,
                    was.map_or("?".into(), |v| v.to_string()),
                    is.map_or("?".into(), |v| v.to_string()),
                ),
            };
            Some(Unannounced { change, missing })
        })
        .collect()
}

/// The text of the `## Upgrade notes` section of a README (up to the next `## ` heading), or
/// `None` when it has none.
pub fn upgrade_notes(readme: &str) -> Option<&str> {
    let mut start = None;
    let mut offset = 0;
    for line in readme.split_inclusive('\n') {
        let heading = line.trim_end();
        if let Some(begin) = start {
            if heading.starts_with("## ") || heading == "##" || heading.starts_with("# ") {
                return Some(&readme[begin..offset]);
            }
        } else if heading.eq_ignore_ascii_case(UPGRADE_NOTES_HEADING) {
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    start.map(|begin| &readme[begin..])
}

/// Whether one line of `notes` names `subject` and the major version `major` (as `2.0`, `2.1`
/// or `2.x`), each as a word of its own: `user.updated` does not match `user.updated.v2`, and
/// `2.0` does not match `12.0`.
pub fn announces(notes: &str, subject: &str, major: u64) -> bool {
    notes
        .lines()
        .any(|line| has_word(line, subject, |_| true) && has_version(line, major))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// Whether `word` occurs in `line` with no word character (nor a dot) right before it, and no
/// word character (nor a dot followed by one) right after it; `rest_ok` checks what follows.
fn has_word(line: &str, word: &str, rest_ok: impl Fn(&str) -> bool) -> bool {
    if word.is_empty() {
        return false;
    }
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = &line[at + word.len()..];
        let mut next = after.chars();
        let ends = match next.next() {
            None => true,
            Some('.') => !next.next().is_some_and(is_word_char),
            Some(c) => !is_word_char(c),
        };
        !before.is_some_and(|c| is_word_char(c) || c == '.') && ends && rest_ok(after)
    })
}

/// Whether `line` names `major.<digits>` or `major.x` as a word.
fn has_version(line: &str, major: u64) -> bool {
    let prefix = format!("{major}.");
    line.match_indices(&prefix).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| is_word_char(c) || c == '.') {
            return false;
        }
        let rest = &line[at + prefix.len()..];
        let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = if !minor.is_empty() {
            &rest[minor.len()..]
        } else if let Some(tail) = rest.strip_prefix(['x', 'X']) {
            tail
        } else {
            return false;
        };
        let mut next = tail.chars();
        match next.next() {
            None => true,
            Some('.') => !next.next().is_some_and(is_word_char),
            Some(c) => !is_word_char(c),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small message schema in the generated style: a `$ref`'d payload, an optional nullable
    /// field, an enum, a version pattern.
    fn schema() -> Value {
        json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "required": ["eventType", "payload", "version"],
            "properties": {
                "eventType": {"$ref": "#/definitions/EventType"},
                "version": {"type": "string", "pattern": "^1\\.[0-9]+$"},
                "payload": {"allOf": [{"$ref": "#/definitions/Payload"}], "description": "x"},
            },
            "definitions": {
                "EventType": {"type": "string", "enum": ["user.created", "user.updated"]},
                "Role": {"type": "string", "enum": ["admin", "doctor"]},
                "Payload": {
                    "type": "object",
                    "required": ["userId", "role", "count"],
                    "properties": {
                        "userId": {"type": "string", "format": "uuid"},
                        "role": {"$ref": "#/definitions/Role"},
                        "count": {"type": "number"},
                        "phoneNumber": {"type": ["string", "null"]},
                        "previousRole": {"anyOf": [{"$ref": "#/definitions/Role"}, {"type": "null"}]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        })
    }

    fn changes(edit: impl FnOnce(&mut Value)) -> Vec<BreakingChange> {
        let old = schema();
        let mut new = old.clone();
        edit(&mut new);
        compare_schemas("user.updated", &old, &new)
    }

    fn payload(v: &mut Value) -> &mut Value {
        &mut v["definitions"]["Payload"]
    }

    fn paths(found: &[BreakingChange]) -> Vec<&str> {
        found.iter().map(|c| c.path.as_str()).collect()
    }

    #[test]
    fn the_same_schema_and_annotations_are_not_breaking() {
        assert_eq!(changes(|_| {}), []);
        assert_eq!(
            changes(|v| {
                v["title"] = json!("a new title");
                payload(v)["properties"]["count"]["description"] = json!("how many");
                payload(v)["properties"]["count"]["examples"] = json!([3]);
            }),
            []
        );
    }

    #[test]
    fn a_new_optional_property_is_not_breaking() {
        let found = changes(|v| {
            payload(v)["properties"]["department"] = json!({"type": "string"});
        });
        assert_eq!(found, []);
        // Nor a new required one with a default: readers fill it in.
        let found = changes(|v| {
            payload(v)["properties"]["active"] = json!({"type": "boolean", "default": true});
            payload(v)["required"]
                .as_array_mut()
                .unwrap()
                .push(json!("active"));
        });
        assert_eq!(found, []);
    }

    #[test]
    fn removing_a_field_is_breaking() {
        let found = changes(|v| {
            payload(v)["properties"]
                .as_object_mut()
                .unwrap()
                .remove("role");
            payload(v)["required"] = json!(["userId", "count"]);
        });
        assert_eq!(paths(&found), ["$.payload.role"]);
        assert!(found[0].reason.contains("removed"), "{found:?}");
        assert!(found[0].reason.contains("always expect it"), "{found:?}");
        assert_eq!(found[0].subject, "user.updated");
        // An optional one too: readers of the release read it when present.
        let found = changes(|v| {
            payload(v)["properties"]
                .as_object_mut()
                .unwrap()
                .remove("phoneNumber");
        });
        assert_eq!(paths(&found), ["$.payload.phoneNumber"]);
    }

    #[test]
    fn a_rename_shows_as_a_removal() {
        let found = changes(|v| {
            let props = payload(v)["properties"].as_object_mut().unwrap();
            let phone = props.remove("phoneNumber").unwrap();
            props.insert("phone".into(), phone);
        });
        assert_eq!(paths(&found), ["$.payload.phoneNumber"]);
    }

    #[test]
    fn narrowing_a_type_is_breaking() {
        let found = changes(|v| {
            payload(v)["properties"]["phoneNumber"]["type"] = json!("string");
        });
        assert_eq!(paths(&found), ["$.payload.phoneNumber"]);
        assert!(found[0].reason.contains("narrowed"), "{found:?}");
        assert!(found[0].reason.contains("null"), "{found:?}");

        let found = changes(|v| {
            payload(v)["properties"]["count"]["type"] = json!("integer");
        });
        assert_eq!(paths(&found), ["$.payload.count"]);
        assert!(found[0].reason.contains("narrowed"), "{found:?}");
        // Through anyOf: a nullable field that may no longer be null.
        let found = changes(|v| {
            payload(v)["properties"]["previousRole"] = json!({"$ref": "#/definitions/Role"});
        });
        assert_eq!(paths(&found), ["$.payload.previousRole"]);
        assert!(found[0].reason.contains("gone"), "{found:?}");
    }

    #[test]
    fn widening_a_type_breaks_readers_of_the_release() {
        let found = changes(|v| {
            payload(v)["properties"]["userId"]["type"] = json!(["string", "null"]);
        });
        assert_eq!(paths(&found), ["$.payload.userId"]);
        assert!(found[0].reason.contains("widened"), "{found:?}");
        let found = changes(|v| {
            payload(v)["properties"]["role"] =
                json!({"anyOf": [{"$ref": "#/definitions/Role"}, {"type": "null"}]});
        });
        assert_eq!(paths(&found), ["$.payload.role"]);
        assert!(
            found[0].reason.contains("new alternative null"),
            "{found:?}"
        );
    }

    #[test]
    fn enum_values_added_or_removed_are_breaking_except_new_event_types() {
        let found = changes(|v| {
            v["definitions"]["Role"]["enum"] = json!(["admin", "doctor", "porter"]);
        });
        // Role is used twice: the role and (nullable) the previous role.
        assert_eq!(
            paths(&found),
            ["$.payload.previousRole", "$.payload.role"],
            "{found:?}"
        );
        assert!(found.iter().all(|c| c.reason.contains("\"porter\" added")));
        let found = changes(|v| {
            v["definitions"]["Role"]["enum"] = json!(["admin"]);
        });
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .all(|c| c.reason.contains("\"doctor\" removed")));
        // A new enum where there was none.
        let found = changes(|v| {
            payload(v)["properties"]["userId"]["enum"] = json!(["a"]);
        });
        assert_eq!(paths(&found), ["$.payload.userId"]);
        // A minor version may add event types.
        let found = changes(|v| {
            v["definitions"]["EventType"]["enum"] =
                json!(["user.created", "user.updated", "user.erased"]);
        });
        assert_eq!(found, []);
        // But not take one away.
        let found = changes(|v| {
            v["definitions"]["EventType"]["enum"] = json!(["user.created"]);
        });
        assert_eq!(paths(&found), ["$.eventType"]);
    }

    #[test]
    fn a_changed_const_is_breaking() {
        let old = json!({"properties": {"eventType": {"const": "user.updated"}}});
        let new = json!({"properties": {"eventType": {"const": "user.changed"}}});
        let found = compare_schemas("user.updated", &old, &new);
        assert_eq!(paths(&found), ["$.eventType"]);
        assert!(found[0].reason.contains("const changed"), "{found:?}");
    }

    #[test]
    fn a_new_required_field_without_default_is_breaking() {
        let found = changes(|v| {
            payload(v)["properties"]["department"] = json!({"type": "string"});
            payload(v)["required"]
                .as_array_mut()
                .unwrap()
                .push(json!("department"));
        });
        assert_eq!(paths(&found), ["$.payload.department"]);
        assert!(found[0].reason.contains("without a default"), "{found:?}");
        // An existing optional field made required, and the other way round.
        let found = changes(|v| {
            payload(v)["required"] = json!(["userId", "role", "count", "phoneNumber"]);
        });
        assert_eq!(paths(&found), ["$.payload.phoneNumber"]);
        let found = changes(|v| {
            payload(v)["required"] = json!(["userId", "role"]);
        });
        assert_eq!(paths(&found), ["$.payload.count"]);
        assert!(found[0].reason.contains("no longer required"), "{found:?}");
    }

    #[test]
    fn all_of_requirements_merge_like_the_per_type_files() {
        // `user.updated.json` requires changedFields through allOf beside the $ref.
        let mut old = schema();
        payload(&mut old)["properties"]["changedFields"] = json!({"type": ["array", "null"]});
        let mut new = old.clone();
        new["properties"]["payload"] = json!({"allOf": [
            {"$ref": "#/definitions/Payload"},
            {"required": ["changedFields"], "properties": {"changedFields": {"type": "array"}}},
        ]});
        let found = compare_schemas("user.updated", &old, &new);
        let mut found_paths = paths(&found);
        found_paths.dedup();
        assert_eq!(found_paths, ["$.payload.changedFields"], "{found:?}");
        // And the same file against itself is clean.
        assert_eq!(compare_schemas("user.updated", &new, &new), []);
    }

    #[test]
    fn items_bounds_formats_and_patterns_are_compared() {
        let found = changes(|v| {
            payload(v)["properties"]["tags"]["items"]["type"] = json!("integer");
        });
        // Both ways: a string is no longer valid, an integer is new to readers.
        assert_eq!(paths(&found), ["$.payload.tags[]", "$.payload.tags[]"]);
        let found = changes(|v| {
            payload(v)["properties"]["userId"]["maxLength"] = json!(36);
        });
        assert!(found[0].reason.contains("tightened"), "{found:?}");
        let found = changes(|v| {
            payload(v)["properties"]["userId"]["format"] = json!("email");
        });
        assert_eq!(paths(&found), ["$.payload.userId"]);
        let found = changes(|v| {
            v["properties"]["version"]["pattern"] = json!("^2\\.[0-9]+$");
        });
        assert_eq!(paths(&found), ["$.version"]);
        // A keyword the rules do not know counts too.
        let found = changes(|v| {
            payload(v)["properties"]["userId"]["not"] = json!({"const": ""});
        });
        assert!(found[0].reason.contains("not analysed"), "{found:?}");
    }

    #[test]
    fn recursive_references_terminate() {
        let old = json!({
            "$ref": "#/definitions/Node",
            "definitions": {"Node": {"type": "object", "properties": {
                "next": {"$ref": "#/definitions/Node"},
            }}},
        });
        let mut new = old.clone();
        new["definitions"]["Node"]["properties"]["value"] = json!({"type": "string"});
        assert_eq!(compare_schemas("node", &old, &new), []);
        let looped =
            json!({"$ref": "#/definitions/A", "definitions": {"A": {"$ref": "#/definitions/A"}}});
        let _ = compare_schemas("loop", &looped, &old);
    }

    /// A small AsyncAPI document: an exchange with one routing key, a queue bound to it.
    fn asyncapi() -> Value {
        json!({
            "info": {"version": "1.0"},
            "channels": {
                "user-updated": {
                    "address": "user.updated",
                    "messages": {"user-updated": {"$ref": "#/components/messages/user-updated"}},
                    "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "user.events", "type": "topic"}, "x-arguments": {"alternate-exchange": "user.events.unrouted"}}},
                },
                "main": {
                    "address": "user-service.user-events",
                    "messages": {"user-updated": {"$ref": "#/components/messages/user-updated"}},
                    "bindings": {"amqp": {"is": "queue", "queue": {"name": "user-service.user-events"},
                        "x-arguments": {"x-queue-type": "quorum"},
                        "x-bound-to": [{"exchange": "user.events", "routingKey": "user.#"}]}},
                },
            },
            "operations": {
                "send": {"action": "send", "channel": {"$ref": "#/channels/user-updated"},
                    "messages": [{"$ref": "#/channels/user-updated/messages/user-updated"}]},
            },
            "components": {"messages": {"user-updated": {
                "name": "user.updated",
                "contentType": "application/json",
                "payload": {"$ref": "./schemas/user.updated.json"},
                "headers": {"type": "object", "properties": {"x-retry-count": {"type": "integer"}}},
                "bindings": {"amqp": {"messageType": "user.updated"}},
            }}},
        })
    }

    fn asyncapi_changes(edit: impl FnOnce(&mut Value)) -> Vec<BreakingChange> {
        let old = asyncapi();
        let mut new = old.clone();
        edit(&mut new);
        compare_asyncapi(&old, &new)
    }

    #[test]
    fn additions_to_the_asyncapi_document_are_not_breaking() {
        assert_eq!(asyncapi_changes(|_| {}), []);
        let found = asyncapi_changes(|d| {
            d["channels"]["user-created"] = json!({
                "address": "user.created",
                "messages": {},
                "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "user.events", "type": "topic"}, "x-arguments": {"alternate-exchange": "user.events.unrouted"}}},
            });
            d["components"]["messages"]["user-created"] = json!({"name": "user.created"});
            d["components"]["messages"]["user-updated"]["headers"]["properties"]["traceparent"] =
                json!({"type": "string"});
            d["channels"]["main"]["bindings"]["amqp"]["x-bound-to"]
                .as_array_mut()
                .unwrap()
                .push(json!({"exchange": "user.events", "routingKey": "resend.user-service"}));
            // Ids are the document's own: renaming one changes nothing on the broker.
            let main = d["channels"]
                .as_object_mut()
                .unwrap()
                .remove("main")
                .unwrap();
            d["channels"]["user-service-main"] = main;
        });
        assert_eq!(found, []);
    }

    #[test]
    fn removing_a_channel_is_breaking() {
        let found = asyncapi_changes(|d| {
            d["channels"]
                .as_object_mut()
                .unwrap()
                .remove("user-updated");
            d["operations"] = json!({});
        });
        let subjects: Vec<&str> = found.iter().map(|c| c.subject.as_str()).collect();
        assert!(subjects.contains(&"user.updated"), "{found:?}");
        assert!(
            found
                .iter()
                .any(|c| c.reason.contains("routing key removed")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|c| c.reason.contains("nobody sends")),
            "{found:?}"
        );
    }

    #[test]
    fn renaming_a_queue_or_routing_key_or_changing_arguments_is_breaking() {
        let found = asyncapi_changes(|d| {
            d["channels"]["main"]["address"] = json!("user-service.events");
            d["channels"]["main"]["bindings"]["amqp"]["queue"]["name"] =
                json!("user-service.events");
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].subject, "user-service.user-events");
        assert!(found[0].reason.contains("queue removed"), "{found:?}");

        let found = asyncapi_changes(|d| {
            d["channels"]["user-updated"]["address"] = json!("user.changed");
        });
        assert!(
            found
                .iter()
                .any(|c| c.subject == "user.updated" && c.reason.contains("routing key removed")),
            "{found:?}"
        );

        let found = asyncapi_changes(|d| {
            d["channels"]["main"]["bindings"]["amqp"]["x-arguments"]["x-queue-type"] =
                json!("classic");
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].reason.contains("PRECONDITION_FAILED"), "{found:?}");

        let found = asyncapi_changes(|d| {
            d["channels"]["main"]["bindings"]["amqp"]["x-bound-to"] =
                json!([{"exchange": "user.events", "routingKey": "user.*"}]);
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].reason.contains("binding"), "{found:?}");
    }

    #[test]
    fn removed_messages_and_headers_are_breaking() {
        let found = asyncapi_changes(|d| {
            d["components"]["messages"]["user-updated"]["name"] = json!("user.changed");
        });
        assert!(
            found
                .iter()
                .any(|c| c.subject == "user.updated" && c.reason.contains("message removed")),
            "{found:?}"
        );
        let found = asyncapi_changes(|d| {
            d["components"]["messages"]["user-updated"]
                .as_object_mut()
                .unwrap()
                .remove("headers");
        });
        assert_eq!(
            paths(&found),
            ["components.messages.user-updated.headers.x-retry-count"]
        );
        let found = asyncapi_changes(|d| {
            d["components"]["messages"]["user-updated"]["bindings"]["amqp"]["messageType"] =
                json!("user.changed");
        });
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn exchanges_removed_or_retyped_are_breaking() {
        let found = asyncapi_changes(|d| {
            d["channels"]["user-updated"]["bindings"]["amqp"]["exchange"]["type"] = json!("direct");
        });
        assert!(
            found
                .iter()
                .any(|c| c.subject == "user.events" && c.reason.contains("type changed")),
            "{found:?}"
        );
        let found = asyncapi_changes(|d| {
            d["channels"]["user-updated"]["bindings"]["amqp"]["x-arguments"] = json!({});
        });
        assert!(
            found
                .iter()
                .any(|c| c.subject == "user.events.unrouted"
                    && c.reason.contains("exchange removed")),
            "{found:?}"
        );
    }

    #[test]
    fn majors_come_from_the_version_property_or_the_document() {
        assert_eq!(major("2.0"), Some(2));
        assert_eq!(major("10.3"), Some(10));
        assert_eq!(major("two"), None);
        assert_eq!(schema_major(&schema()), Some(1));
        let mut v2 = schema();
        v2["properties"]["version"] = json!({"const": "2.0"});
        assert_eq!(schema_major(&v2), Some(2));
        assert_eq!(schema_major(&json!({"properties": {}})), None);

        let contract = Contract {
            schemas: BTreeMap::from([
                ("user.updated.json".to_owned(), v2),
                ("portal.receipt.json".to_owned(), json!({"properties": {}})),
            ]),
            asyncapi: asyncapi(),
        };
        assert_eq!(contract.major("user.updated"), Some(2));
        assert_eq!(contract.major("portal.receipt"), Some(1), "the document's");
        assert_eq!(contract.major("user-service.user-events"), Some(1));
        assert_eq!(file_subject("envelope.json"), "envelope");
        assert_eq!(file_subject("user.role.changed.json"), "user.role.changed");
    }

    #[test]
    fn upgrade_notes_are_found_and_read_word_by_word() {
        let readme = "# Portal\n\n## Upgrade notes\n\n- `user.updated` 2.0: `lastName` is gone.\n\
                      - queue user-service.events (2.x) replaces the old one.\n\n## Tests\n\n\
                      user.created 2.0 here does not count.\n";
        let notes = upgrade_notes(readme).unwrap();
        assert!(!notes.contains("Tests"));
        assert!(announces(notes, "user.updated", 2));
        assert!(announces(notes, "user-service.events", 2));
        assert!(!announces(notes, "user.updated", 3));
        assert!(!announces(notes, "user.created", 2), "outside the section");
        assert!(
            !announces(notes, "user", 2),
            "a part of a name is not the name"
        );
        assert!(!announces("- user.updated 12.0", "user.updated", 2));
        assert!(!announces("- user.updated.v2 2.0", "user.updated", 2));
        assert!(
            !announces("- user.updated\n- 2.0", "user.updated", 2),
            "one line"
        );
        assert_eq!(upgrade_notes("# Portal\n\n## Usage\n"), None);
        assert_eq!(upgrade_notes("## Upgrade notes\nlast"), Some("last"));
    }

    #[test]
    fn a_breaking_change_passes_only_with_a_major_version_and_a_note() {
        let old = Contract {
            schemas: BTreeMap::from([("user.updated.json".to_owned(), schema())]),
            asyncapi: asyncapi(),
        };
        let mut new = old.clone();
        let file = new.schemas.get_mut("user.updated.json").unwrap();
        payload(file)["properties"]
            .as_object_mut()
            .unwrap()
            .remove("phoneNumber");
        let note = "## Upgrade notes\n\n- user.updated 2.0: phoneNumber removed.\n";
        // No major version change: refused, note or not.
        assert_eq!(unannounced(&old, &new, None).len(), 1);
        let refused = unannounced(&old, &new, Some(note));
        assert_eq!(refused.len(), 1);
        assert!(refused[0].missing.contains("did not go up"), "{refused:?}");
        // A major version, no note: refused.
        let file = new.schemas.get_mut("user.updated.json").unwrap();
        file["properties"]["version"]["pattern"] = json!("^2\\.[0-9]+$");
        let refused = unannounced(&old, &new, Some("# Portal\n"));
        assert_eq!(refused.len(), 2, "the field and the version: {refused:?}");
        assert!(refused[0].missing.contains("no `## Upgrade notes`"));
        let refused = unannounced(&old, &new, Some("## Upgrade notes\n\n- user.created 2.0\n"));
        assert_eq!(refused.len(), 2, "{refused:?}");
        // Both: announced.
        assert_eq!(unannounced(&old, &new, Some(note)), []);
        assert_eq!(breaking_changes(&old, &new).len(), 2, "still reported");
    }
}
