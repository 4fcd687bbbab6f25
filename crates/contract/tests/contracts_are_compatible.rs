//! The contract under `contracts/` must not break the last release's, kept under
//! `contracts/released/`, unless the break is announced: the major version of what it breaks
//! went up, and README.md's `## Upgrade notes` names it with that version (see
//! `contract::compat` for what counts as breaking). `UPDATE_RELEASED_CONTRACTS=1` makes today's
//! contract the release instead of comparing (at a release, and only then).
//!
//! The second test proves the check can fail: a field removed from a copy of the released
//! contract is reported, passes only with a major version and an upgrade note, and fails with
//! either alone.

// Test code: a failure to read or write a file is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::compat::{self, Contract, Unannounced};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const REFRESH_HINT: &str =
    "UPDATE_RELEASED_CONTRACTS=1 cargo test -p contract --test contracts_are_compatible";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn contracts_dir() -> PathBuf {
    repository().join("contracts")
}

fn released_dir() -> PathBuf {
    contracts_dir().join("released")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}. Run `{REFRESH_HINT}`?", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `*.json` files of `dir`, by name.
fn json_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect()
}

/// The contract in `dir`: `schemas/*.json` and `asyncapi.json`.
fn load(dir: &Path) -> Contract {
    Contract {
        schemas: json_files(&dir.join("schemas"))
            .into_iter()
            .map(|(name, path)| (name, read_json(&path)))
            .collect(),
        asyncapi: read_json(&dir.join("asyncapi.json")),
    }
}

/// README.md's text, `None` without one.
fn readme() -> Option<String> {
    std::fs::read_to_string(repository().join("README.md")).ok()
}

/// Makes `released/` a copy of today's `schemas/*.json` and `asyncapi.json` (its README stays).
fn refresh_release() {
    let (from, to) = (contracts_dir(), released_dir());
    std::fs::create_dir_all(to.join("schemas")).unwrap();
    let current = json_files(&from.join("schemas"));
    for (name, path) in json_files(&to.join("schemas")) {
        if !current.contains_key(&name) {
            std::fs::remove_file(path).unwrap();
        }
    }
    for (name, path) in &current {
        std::fs::copy(path, to.join("schemas").join(name)).unwrap();
    }
    std::fs::copy(from.join("asyncapi.json"), to.join("asyncapi.json")).unwrap();
}

fn report(unannounced: &[Unannounced]) -> String {
    unannounced
        .iter()
        .map(|u| format!("  - {u}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether this run makes today's contract the release.
fn updating() -> bool {
    std::env::var_os("UPDATE_RELEASED_CONTRACTS").is_some_and(|v| v == "1")
}

#[test]
fn the_contract_does_not_break_the_released_one() {
    if updating() {
        refresh_release();
        return;
    }
    let released = load(&released_dir());
    let current = load(&contracts_dir());
    let unannounced = compat::unannounced(&released, &current, readme().as_deref());
    assert!(
        unannounced.is_empty(),
        "contracts/ breaks the released contract (contracts/released/) in {} place(s):\n{}\n\n\
         Either keep the change compatible (add an optional field, a new message type, a new \
         channel), or make it a new major version of what it breaks and say so in README.md's \
         `## Upgrade notes` (a line naming it and the new major version, e.g. `user.updated` \
         2.0); see contracts/README.md, \"Compatibility check\".",
        unannounced.len(),
        report(&unannounced)
    );
}

/// A fresh copy of the released contract in a directory of its own.
fn copy_of_release(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("contracts-compat-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    for (file, path) in json_files(&released_dir().join("schemas")) {
        std::fs::copy(path, dir.join("schemas").join(file)).unwrap();
    }
    std::fs::copy(
        released_dir().join("asyncapi.json"),
        dir.join("asyncapi.json"),
    )
    .unwrap();
    dir
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value = read_json(path);
    edit(&mut value);
    std::fs::write(path, format!("{value:#}\n")).unwrap();
}

#[test]
fn a_removed_field_fails_unless_announced_with_a_new_major_version() {
    // It reads released/, which the refresh is rewriting at the same time.
    if updating() {
        return;
    }
    let released = load(&released_dir());
    let dir = copy_of_release("removed-field");
    let file = dir.join("schemas/user.updated.json");
    // A copy identical to the release passes.
    assert_eq!(compat::unannounced(&released, &load(&dir), None), []);

    // `lastName` removed from the payload of user.updated.
    edit_json(&file, |schema| {
        let snapshot = &mut schema["definitions"]["UserSnapshot"];
        assert!(snapshot["properties"]
            .as_object_mut()
            .unwrap()
            .remove("lastName")
            .is_some());
        let required = snapshot["required"].as_array_mut().unwrap();
        required.retain(|r| r != "lastName");
    });
    let changed = load(&dir);
    let found = compat::breaking_changes(&released, &changed);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].subject, "user.updated");
    assert_eq!(found[0].path, "$.payload.lastName");
    assert!(found[0].reason.contains("removed"), "{}", found[0]);

    let note = "# Portal\n\n## Upgrade notes\n\n- `user.updated` 2.0: the payload no longer \
                carries `lastName`.\n\n## Tests\n";
    // Without a new major version, a note does not help.
    let refused = compat::unannounced(&released, &changed, Some(note));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].missing.contains("did not go up"),
        "{}",
        refused[0]
    );

    // A new major version of user.updated...
    edit_json(&file, |schema| {
        assert_eq!(schema["properties"]["version"]["pattern"], "^1\\.[0-9]+$");
        schema["properties"]["version"]["pattern"] = json!("^2\\.[0-9]+$");
    });
    let bumped = load(&dir);
    assert_eq!(bumped.major("user.updated"), Some(2));
    assert_eq!(released.major("user.updated"), Some(1));
    // ...without a note: refused, both the removal and the version change.
    for readme in [
        None,
        Some("# Portal\n\n## Tests\n"),
        Some("## Upgrade notes\n\n- `user.created` 2.0: another type.\n"),
        Some("## Upgrade notes\n\n- `user.updated` 1.1: the wrong version.\n"),
    ] {
        let refused = compat::unannounced(&released, &bumped, readme);
        assert_eq!(refused.len(), 2, "{readme:?}: {refused:?}");
        assert!(
            refused.iter().all(|u| u.change.subject == "user.updated"),
            "{refused:?}"
        );
    }
    // ...with the note: announced, still reported as breaking.
    assert_eq!(compat::unannounced(&released, &bumped, Some(note)), []);
    assert_eq!(compat::breaking_changes(&released, &bumped).len(), 2);

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_removed_queue_or_routing_key_fails_too() {
    if updating() {
        return;
    }
    let released = load(&released_dir());
    let dir = copy_of_release("removed-channel");
    edit_json(&dir.join("asyncapi.json"), |doc| {
        let channels = doc["channels"].as_object_mut().unwrap();
        assert!(channels
            .remove("appointment-service-user-events-dlq")
            .is_some());
        assert!(channels.remove("user-role-changed").is_some());
    });
    let refused = compat::unannounced(&released, &load(&dir), readme().as_deref());
    let text = report(&refused);
    assert!(
        refused
            .iter()
            .any(|u| u.change.subject == "appointment-service.user-events.dlq"),
        "{text}"
    );
    assert!(
        refused
            .iter()
            .any(|u| u.change.subject == "user.role.changed"
                && u.change.reason.contains("routing key removed")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
