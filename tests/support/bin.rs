//! Running the real `rdg` binary (from the manifest directory or a folder
//! of the test's own), and reading what it prints.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The shipped definitions folder.
pub fn dataflows_dir() -> PathBuf {
    Path::new(MANIFEST).join("dataflows")
}

/// The committed sample folder.
pub fn data_dir() -> PathBuf {
    Path::new(MANIFEST).join("data")
}

/// The sample's files, in the order the README's `data/*.jsonl` expands to.
pub fn data_files() -> Vec<PathBuf> {
    ["gaming", "login", "playback"]
        .iter()
        .map(|t| data_dir().join(format!("{t}.jsonl")))
        .collect()
}

/// The binary, to run with arguments of one's own (`spawn`, `output`).
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rdg"))
}

/// Runs `cmd`, which must succeed; its stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run rdg");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `rdg ARGS`; its stdout, or an error with everything it printed.
pub fn rdg_result(args: Vec<OsString>) -> Result<String, String> {
    let run = rdg(args);
    if run.code == Some(0) {
        Ok(run.stdout)
    } else {
        Err(run.describe())
    }
}

/// What one run of the binary did.
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`rdg {}` exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// The lines of stderr that `keep` says yes to, in order.
    pub fn stderr_lines(&self, keep: impl Fn(&str) -> bool) -> Vec<&str> {
        self.stderr.lines().filter(|l| keep(l)).collect()
    }

    /// Panics unless the exit status is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }

    /// Panics unless the run succeeded; its stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        self.expect_code(0);
        &self.stdout
    }
}

/// Runs `rdg ARGS` in `cwd` (the manifest directory when `None`).
pub fn rdg_in<I, S>(cwd: Option<&Path>, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out: Output = command()
        .args(&args)
        .current_dir(cwd.unwrap_or(Path::new(MANIFEST)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run rdg: {e}"));
    Run {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `rdg ARGS` in the manifest directory.
pub fn rdg<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    rdg_in(None, args)
}

/// `rdg replay --dataflows dataflows/ --state STATE --workers N FILES...`,
/// which must succeed; its stdout.
#[track_caller]
pub fn replay(state: &Path, workers: usize, files: &[PathBuf]) -> String {
    replay_with(&[], state, workers, files)
}

/// [`replay`] with `extra` arguments after `replay` (`--engine sled`).
#[track_caller]
pub fn replay_with(extra: &[&str], state: &Path, workers: usize, files: &[PathBuf]) -> String {
    rdg(replay_args(extra, state, workers, files))
        .ok()
        .to_string()
}

/// The arguments of [`replay_with`], for a run whose failure is the point.
pub fn replay_args(
    extra: &[&str],
    state: &Path,
    workers: usize,
    files: &[PathBuf],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["replay".into()];
    args.extend(extra.iter().map(OsString::from));
    args.extend::<[OsString; 6]>([
        "--dataflows".into(),
        dataflows_dir().into(),
        "--state".into(),
        state.into(),
        "--workers".into(),
        workers.to_string().into(),
    ]);
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    args
}

/// `rdg export --state STATE`, which must succeed; its stdout.
#[track_caller]
pub fn export(state: &Path) -> String {
    rdg([
        OsStr::new("export"),
        OsStr::new("--state"),
        state.as_os_str(),
    ])
    .ok()
    .to_string()
}

/// Parses every line of an export; panics naming the first bad line.
#[track_caller]
pub fn parse_export(text: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("export line {} is not JSON ({e}): {l}", i + 1))
        })
        .collect()
}

/// The export lines of namespace `ns`.
pub fn of_ns<'v>(lines: &'v [Value], ns: &str) -> Vec<&'v Value> {
    lines.iter().filter(|v| v["ns"] == ns).collect()
}

/// A string field of a JSON value; panics when it is not a string.
#[track_caller]
pub fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {v}"))
}

/// An integer field of a JSON value; panics when it is not one.
#[track_caller]
pub fn i(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("`{key}` is not an integer in {v}"))
}
