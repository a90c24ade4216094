//! The layers' rule, checked on the sources: every import points down. `routes` (HTTP) may use
//! everything below it; `accounts` (user administration) never names `routes`; `oauth` and `auth`
//! never name `routes` or `accounts`; `db` knows only the domain; the domain knows nothing of the rest.

use std::collections::BTreeSet;
use std::path::Path;

/// For each layer, the top-level modules of this crate it may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &["domain", "errors"]),
    ("db", &["db", "domain", "errors", "log_context"]),
    ("auth", &["auth", "db", "domain", "errors", "log_context", "random", "config", "metrics"]),
    ("oauth", &["oauth", "auth", "db", "domain", "errors", "log_context", "random", "config", "metrics"]),
    ("config.rs", &["random"]),
    ("errors.rs", &[]),
    ("log_context.rs", &[]),
    ("random.rs", &[]),
    ("metrics.rs", &[]),
    ("mail", &["mail", "db", "domain", "errors", "log_context", "config", "metrics"]),
    ("accounts", &["accounts", "auth", "mail", "db", "domain", "errors", "log_context", "random", "config", "metrics"]),
    (
        "routes",
        &[
            "routes",
            "accounts",
            "mail",
            "oauth",
            "auth",
            "db",
            "domain",
            "errors",
            "log_context",
            "random",
            "config",
            "metrics",
        ],
    ),
];

/// The top-level modules a source names as `crate::x` or inside `crate::{x, y::z}`.
fn named_modules(source: &str) -> BTreeSet<String> {
    let leading_word =
        |text: &str| -> String { text.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut names = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.insert(leading_word(rest));
            continue;
        };
        // Split the group's top-level items at commas outside nested braces.
        let (mut depth, mut item_start) = (0, 0);
        for (index, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                ',' | '}' if depth == 0 => {
                    names.insert(leading_word(&group[item_start..index]));
                    item_start = index + 1;
                    if c == '}' {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    names.remove("");
    names
}

fn sources(path: &Path) -> Vec<(String, String)> {
    if path.is_file() {
        return vec![(path.display().to_string(), std::fs::read_to_string(path).unwrap())];
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        found.extend(sources(&entry.unwrap().path()));
    }
    found
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, allowed) in ALLOWED {
        for (file, source) in sources(&src.join(layer)) {
            // `super::super` would climb out of a layer without naming `crate::`.
            if source.contains("super::super::super") {
                violations.push(format!("{file} climbs three levels with super::"));
            }
            for name in named_modules(&source) {
                if !allowed.contains(&name.as_str()) {
                    violations.push(format!("{file} names crate::{name}"));
                }
            }
        }
    }
    assert!(violations.is_empty(), "imports that point up or sideways:\n{}", violations.join("\n"));
}

#[test]
fn the_check_sees_grouped_and_nested_imports() {
    let names = named_modules("use crate::{db::{self, users}, routes};\nlet x = crate::auth::jwt::x();");
    assert_eq!(names, BTreeSet::from(["auth".to_owned(), "db".to_owned(), "routes".to_owned()]));
}
