//! Embeds the workspace's `migrations/` directory into the crate, so that binaries built from
//! it can migrate a database without a source tree.

use std::{env, fmt::Write as _, fs, path::PathBuf};

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let mut code = String::from("&[\n");
    for name in names {
        let path = dir.join(&name);
        let file = |f: &str| path.join(f).canonicalize().map(|p| p.display().to_string());
        let up = file("up.sql").unwrap_or_else(|e| panic!("{name}: up.sql: {e}"));
        let down = file("down.sql").unwrap_or_else(|e| panic!("{name}: down.sql: {e}"));
        let metadata = match file("metadata.toml") {
            Ok(p) => format!("Some(include_str!({p:?}))"),
            Err(_) => "None".to_owned(),
        };
        writeln!(
            code,
            "    EmbeddedMigration {{ name: {name:?}, up_sql: include_str!({up:?}), \
             down_sql: include_str!({down:?}), metadata_toml: {metadata} }},"
        )
        .expect("writing to a String");
    }
    code.push(']');
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
