//! What ARCHITECTURE.md states about the code, checked so it stays true: the crate graph in
//! its `crate-graph` block is the graph `cargo metadata` reads from the manifests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

/// Package -> its normal dependencies on workspace packages (`?` marks an optional one).
type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn documented() -> Graph {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let block = text
        .split("```text crate-graph\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a ```text crate-graph block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, deps) = line.split_once(':').expect("`crate: dep, dep` lines");
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

fn actual() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let ours: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter(|d| ours.contains(d["name"].as_str().unwrap()))
                .map(|d| {
                    let name = d["name"].as_str().unwrap();
                    if d["optional"] == true {
                        format!("{name}?")
                    } else {
                        name.to_owned()
                    }
                })
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_documented_crate_graph_is_the_real_one() {
    let documented = documented();
    let actual = actual();
    for (name, deps) in &actual {
        assert_eq!(
            documented.get(name),
            Some(deps),
            "ARCHITECTURE.md's crate-graph line for {name} should read `{name}: {}`",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let extra: Vec<&String> = documented
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    assert!(
        extra.is_empty(),
        "ARCHITECTURE.md names crates that do not exist: {extra:?}"
    );
}

#[test]
fn the_leaf_crate_depends_on_nothing_of_ours_and_feature_crates_not_on_each_other() {
    let actual = actual();
    assert!(actual["pgops-pg"].is_empty());
    assert_eq!(
        actual["pgops-testkit"],
        BTreeSet::from(["pgops-pg".to_owned()])
    );
    assert_eq!(
        actual["pgops-backup"],
        BTreeSet::from(["pgops-pg".to_owned()])
    );
    assert!(!actual["pgops-health"].contains("pgops-backup"));
    for (name, deps) in &actual {
        if name.starts_with("pgops-") && name != "pgops-tasks" && name != "pgops-benches" {
            assert!(
                !deps.contains("pgops") && !deps.contains("pgops-tasks") && !deps.contains("xtask"),
                "{name} depends on a binary crate"
            );
        }
    }
}
