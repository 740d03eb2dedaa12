//! Definition files → a checked [`Plan`].
//!
//! A definition folder holds one `NAME.toml` per dataflow (dataflow name =
//! file stem) and an optional `rdg.toml` with global settings. [`load`] reads
//! them all and checks them like a compiler checks code: every problem of
//! every file, each with file, line, column and (where one helps) a hint, all
//! at once. `docs/definitions.md` is the reference for the format.
//!
//! Layout: `reader` walks a spanned TOML tree and turns bad values into
//! problems, `condition` reads conditions, `check` gives each key its meaning
//! and checks across files, `problem` shows problems, `duration` parses
//! durations, `plan` is the checked result and evaluates events, `decode`
//! extracts the fields a definition reads from an event's JSON bytes.
//!
//! Invariant: `load` returns a `Plan` only when there is no problem at all,
//! and never panics, whatever the files contain.

mod check;
mod condition;
mod decode;
mod duration;
mod plan;
mod problem;
mod reader;

use std::path::{Path, PathBuf};

pub use decode::{EventView, FieldRef, FieldSet, Fields, Slot};
pub use duration::parse_duration;
pub use plan::*;
pub use problem::{Problem, SpecErrors};

/// The global settings file, which is not a definition.
const SETTINGS_FILE: &str = "rdg.toml";

/// Loads every `*.toml` in `dir` except `rdg.toml` as a definition (dataflow
/// name = file stem), plus `dir/rdg.toml` (optional; defaults from
/// [`IdentityConfig::default`]).
pub fn load(dir: &Path) -> Result<Plan, SpecErrors> {
    let files = list_toml_files(dir).map_err(|p| SpecErrors { problems: vec![p] })?;
    let read = files
        .into_iter()
        .map(|(name, path)| {
            let text = read_text(&path);
            (name, path, text)
        })
        .collect();
    check_files(dir, read)
}

/// Checks definition texts as [`load`] checks the files of a folder: each
/// `(file name, text)` as if it were `dir/NAME` (for tests and fuzzing,
/// without files).
pub fn load_texts(dir: &Path, texts: &[(String, String)]) -> Result<Plan, SpecErrors> {
    let files = texts
        .iter()
        .map(|(name, text)| (name.clone(), dir.join(name), Ok(text.clone())))
        .collect();
    check_files(dir, files)
}

/// A loaded file: name, path, text or why it could not be read.
type ReadFile = (String, PathBuf, Result<String, Problem>);

fn check_files(dir: &Path, files: Vec<ReadFile>) -> Result<Plan, SpecErrors> {
    let mut problems = Vec::new();
    let mut identity = Some(IdentityConfig::default());
    let mut definitions = Vec::new();
    for (file_name, path, text) in &files {
        let text = match text {
            Ok(text) => text,
            Err(p) => {
                problems.push(p.clone());
                if file_name == SETTINGS_FILE {
                    identity = None;
                }
                continue;
            }
        };
        if file_name == SETTINGS_FILE {
            let (config, ps) = check::read_settings(path, text);
            identity = config;
            problems.extend(ps);
        } else {
            let stem = file_name.strip_suffix(".toml").unwrap_or(file_name);
            let def = check::read_definition(path, stem, text);
            problems.extend(def.problems.iter().cloned());
            definitions.push((stem.to_string(), def));
        }
    }
    let readable = files.iter().filter(|(n, _, _)| n != SETTINGS_FILE).count();
    if readable == 0 {
        problems.push(folder_problem(
            dir,
            format!("no definitions in `{}`", dir.display()),
            Some(
                "a definition is a `NAME.toml` file with a [source] table and rules; \
                 `rdg.toml` holds only global settings"
                    .to_string(),
            ),
        ));
    }
    let defs: Vec<(String, &check::Definition)> =
        definitions.iter().map(|(n, d)| (n.clone(), d)).collect();
    problems.extend(check::cross_check(&defs));

    if !problems.is_empty() {
        problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(SpecErrors { problems });
    }
    let mut plans = Vec::new();
    let mut edges = Vec::new();
    for (_, def) in definitions {
        plans.extend(def.plan);
        edges.extend(def.edges);
    }
    // Every file passed, so the settings were read.
    let identity = identity.unwrap_or_default();
    Ok(check::assemble(plans, &edges, identity))
}

/// The `*.toml` files of `dir` as (file name, path), sorted by name.
fn list_toml_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, Problem> {
    let unreadable = |e: std::io::Error| {
        folder_problem(
            dir,
            format!("cannot read definition folder `{}`: {e}", dir.display()),
            None,
        )
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(folder_problem(
                dir,
                format!("definition folder `{}` does not exist", dir.display()),
                Some(
                    "pass the folder that holds the `*.toml` definitions, e.g. `dataflows`"
                        .to_string(),
                ),
            ));
        }
        Err(e) => return Err(unreadable(e)),
    };
    if !meta.is_dir() {
        return Err(folder_problem(
            dir,
            format!("`{}` is not a folder", dir.display()),
            Some("pass the folder that holds the `*.toml` definitions, not a file".to_string()),
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(unreadable)?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") || !path.is_file() {
            continue;
        }
        // A file name that is not UTF-8 cannot be a dataflow name; it gets
        // a name that `name_problem` rejects, so it is reported, not skipped.
        let name = entry
            .file_name()
            .into_string()
            .unwrap_or_else(|raw| format!("{} (not UTF-8)", raw.to_string_lossy()));
        files.push((name, path));
    }
    files.sort();
    Ok(files)
}

/// A problem of the folder itself (no line).
fn folder_problem(dir: &Path, message: String, hint: Option<String>) -> Problem {
    Problem {
        file: dir.to_path_buf(),
        line: None,
        column: None,
        message,
        hint,
    }
}

/// The text of a file, or a problem (unreadable, not UTF-8).
fn read_text(path: &Path) -> Result<String, Problem> {
    let problem = |line, column, message| Problem {
        file: path.to_path_buf(),
        line,
        column,
        message,
        hint: None,
    };
    let bytes =
        std::fs::read(path).map_err(|e| problem(None, None, format!("cannot read file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // The valid prefix is UTF-8 by definition.
        let prefix = String::from_utf8_lossy(valid);
        let (line, column) = problem::LineIndex::new(&prefix).position(prefix.len());
        Problem {
            hint: Some("save the file as UTF-8".to_string()),
            ..problem(
                Some(line),
                Some(column),
                "file is not valid UTF-8".to_string(),
            )
        }
    })
}
