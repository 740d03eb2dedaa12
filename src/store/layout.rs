//! The files of a state directory around the engine's own: which engine
//! wrote it, the lock that keeps it to one `Store`, and the marker of a bulk
//! load in progress.
//!
//! | file | what |
//! |------|------|
//! | `rdg-engine` | `fjall` or `sled` and a newline: the engine the state was created with |
//! | `rdg.lock` | locked (`flock`) while a `Store` has the state open |
//! | `rdg-bulk-load` | present from [`Store::bulk_load`](super::Store::bulk_load) until its `finish` |
//! | `rdg-format` | the format version and a newline, written once the engine holds it durably |
//! | `rdg-durable` | the number of commits the engine held durably at the last flush, and a newline |
//! | `fjall/` | the fjall database |
//! | `conf`, `db`, `blobs/`, `snap.*` | the sled database (at the top, as rdg's first states have it) |
//!
//! Invariants: the engine marker is written (and fsynced with its
//! directory) before the engine writes anything, so a state with data always
//! names its engine, except the states of rdg before the marker existed,
//! which are sled's: a directory without the marker that holds sled's `conf`
//! or `db` file is a sled state. The bulk load marker is durable before the
//! first byte of the load is written and is removed only after the load's
//! last byte is durable. `rdg-format` is written only after the engine holds
//! the format version durably, so a state that has the file and whose engine
//! has no format version lost its data (a missing, truncated or zeroed
//! journal, a deleted keyspace): it is refused, never reopened as a new,
//! empty state. States written before the file existed get it when next
//! opened. `rdg-durable` is replaced (written aside, fsynced, renamed) only
//! after the engine made that many commits durable, and removed before a
//! wipe empties the state, so an engine that opens with fewer commits lost
//! durable ones (a journal damaged in the middle, which the engine's own
//! recovery cuts short without a word): the state is refused.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StoreError;
use super::engine::Engine;

const ENGINE_FILE: &str = "rdg-engine";
const LOCK_FILE: &str = "rdg.lock";
const BULK_FILE: &str = "rdg-bulk-load";
const FORMAT_FILE: &str = "rdg-format";
const DURABLE_FILE: &str = "rdg-durable";

/// How long to wait for another process's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_millis(250);

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the state's lock (released when the file is dropped). Another
/// holder is [`StoreError::Locked`] once it lasted [`LOCK_WAIT`].
pub(crate) fn lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(dir))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(dir)(e)),
        }
    }
}

/// The engine the state in `dir` was written with; `None` for a new state.
pub(crate) fn recorded_engine(dir: &Path) -> Result<Option<Engine>, StoreError> {
    let path = dir.join(ENGINE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .parse::<Engine>()
            .map(Some)
            .map_err(|e| StoreError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("conf").exists() || dir.join("db").exists() {
                // A state of rdg before engines were recorded.
                Ok(Some(Engine::Sled))
            } else if dir.join(super::engine::fjall::DIR).exists() {
                Ok(Some(Engine::Fjall))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Records `engine` as the state's engine, durably.
pub(crate) fn record_engine(dir: &Path, engine: Engine) -> Result<(), StoreError> {
    write_durably(&dir.join(ENGINE_FILE), format!("{engine}\n").as_bytes())?;
    sync_dir(dir)
}

/// True when the state says its engine holds a format version.
pub(crate) fn format_recorded(dir: &Path) -> bool {
    dir.join(FORMAT_FILE).exists()
}

/// Records, durably, that the engine holds format version `version`.
pub(crate) fn record_format(dir: &Path, version: u64) -> Result<(), StoreError> {
    write_durably(&dir.join(FORMAT_FILE), format!("{version}\n").as_bytes())?;
    sync_dir(dir)
}

/// The number of commits the last flush made durable; `None` when no flush
/// recorded one (a new state, or one written before the file existed).
pub(crate) fn durable_commits(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(DURABLE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim_end()
            .parse::<u64>()
            .map(Some)
            .map_err(|e| StoreError::Damaged {
                path: dir.to_path_buf(),
                detail: format!("{} does not hold a number of commits ({e})", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Records that the engine holds `commits` commits durably (call after
/// the engine's flush): written aside and renamed, so the file is always
/// whole.
pub(crate) fn record_durable(dir: &Path, commits: u64) -> Result<(), StoreError> {
    let path = dir.join(DURABLE_FILE);
    let aside = dir.join(format!("{DURABLE_FILE}.new"));
    write_durably(&aside, format!("{commits}\n").as_bytes())?;
    std::fs::rename(&aside, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

/// Forgets the durable commit count (before the state is wiped empty).
pub(crate) fn remove_durable(dir: &Path) -> Result<(), StoreError> {
    remove_durably(dir, &[DURABLE_FILE])
}

/// Removes the files `names` of the state directory `dir` (those missing
/// are fine), then syncs the directory so the removal lasts.
pub(crate) fn remove_durably(dir: &Path, names: &[&str]) -> Result<(), StoreError> {
    for name in names {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
    sync_dir(dir)
}

fn bulk_path(dir: &Path) -> PathBuf {
    dir.join(BULK_FILE)
}

/// True when a bulk load started and did not finish.
pub(crate) fn bulk_marker_present(dir: &Path) -> bool {
    bulk_path(dir).exists()
}

/// Marks a bulk load as started, durably.
pub(crate) fn write_bulk_marker(dir: &Path) -> Result<(), StoreError> {
    write_durably(
        &bulk_path(dir),
        b"a bulk load into this state started and has not finished; opening the state wipes it back to empty\n",
    )?;
    sync_dir(dir)
}

/// Marks the bulk load as finished, durably.
pub(crate) fn remove_bulk_marker(dir: &Path) -> Result<(), StoreError> {
    remove_durably(dir, &[BULK_FILE])
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}
