//! `docs/reference.md` is generated from the code and stays complete: it matches what
//! `cargo xtask reference` writes, and every variable the sources read is on it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_page_is_what_the_code_generates() {
    let page = std::fs::read_to_string(root().join("docs/reference.md")).unwrap();
    assert!(
        page == pgops::reference::markdown(),
        "docs/reference.md is out of date with the code: run `cargo xtask reference`"
    );
}

/// The quoted names in `text` that look like variables pgops reads.
fn variables(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for piece in text.split('"').skip(1).step_by(2) {
        let is_name = ["PGOPS_", "DATABASE_", "AWS_", "APP_"]
            .iter()
            .any(|p| piece.starts_with(p))
            && piece
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !piece.ends_with('_');
        if is_name {
            found.push(piece.to_owned());
        }
    }
    found
}

#[test]
fn every_variable_the_sources_read_is_on_the_page() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let page = std::fs::read_to_string(root().join("docs/reference.md")).unwrap();
    let mut sources = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut sources);
        }
    }
    let mut missing = std::collections::BTreeSet::new();
    let mut seen = 0;
    for file in &sources {
        // Unit tests set variables of their own; only what the code reads counts.
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for name in variables(code) {
            seen += 1;
            if !page.contains(&format!("`{name}`")) {
                missing.insert(format!("{name} ({})", file.display()));
            }
        }
    }
    assert!(seen > 20, "the scan found only {seen} names");
    assert!(
        missing.is_empty(),
        "read by the code but not in docs/reference.md (add them to pgops::reference::OTHER): {missing:?}"
    );
}

#[test]
fn names_are_found_in_quotes_only() {
    assert_eq!(
        variables(r#"env::var("PGOPS_METRICS_TOKEN") and "PGOPS_POOL_" and "not_one""#),
        ["PGOPS_METRICS_TOKEN"]
    );
}
