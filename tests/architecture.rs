//! ARCHITECTURE.md stays the map of the code: every source file under
//! `src/` is named in its "Files" table, every file the table names exists,
//! and every source file opens with a module doc (`//!`) saying what it
//! owns.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::MANIFEST;

/// The `.rs` files under `dir`, as paths relative to the manifest.
fn sources(dir: &Path, out: &mut BTreeSet<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path.strip_prefix(MANIFEST).unwrap();
            out.insert(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The files the "Files" table names: the first column's `src/...` paths.
fn mapped(architecture: &str) -> BTreeSet<String> {
    let table = architecture
        .split("\n## Files\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Files\" section");
    let table = table.split("\n## ").next().unwrap_or(table);
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| `src/"))
        .filter_map(|rest| rest.split('`').next())
        .map(|path| format!("src/{path}"))
        .collect()
}

#[test]
fn every_source_file_is_on_the_map_and_the_map_names_only_files() {
    let root = Path::new(MANIFEST);
    let mut files = BTreeSet::new();
    sources(&root.join("src"), &mut files);
    assert!(files.contains("src/main.rs"), "{files:?}");
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let map = mapped(&architecture);
    let missing: Vec<_> = files.difference(&map).collect();
    let stale: Vec<_> = map.difference(&files).collect();
    assert!(
        missing.is_empty(),
        "source files missing from ARCHITECTURE.md's Files table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md's Files table names files that do not exist: {stale:?}"
    );
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let root = Path::new(MANIFEST);
    let mut files = BTreeSet::new();
    sources(&root.join("src"), &mut files);
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            !text.starts_with("//! ")
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "files without a module doc on their first line: {undocumented:?}"
    );
}
