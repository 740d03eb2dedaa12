//! Stores for tests that call the library directly: a fresh one in a
//! temporary folder (deleted with the returned guard), on either engine, and
//! `both_engines!`, which runs a test function once per engine.

use std::path::{Path, PathBuf};

use rdg::store::{Engine, Store, StoreError, StoreOptions};

/// A new, empty store in a temporary folder; keep the folder alive as long
/// as the store.
#[track_caller]
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open a fresh store");
    (tmp, store)
}

/// Opens (creating) the store in `dir` with `engine` and a small cache.
pub fn open_engine(dir: &Path, engine: Engine) -> Result<Store, StoreError> {
    Store::open_with(
        dir,
        &StoreOptions {
            engine: Some(engine),
            cache_bytes: Some(16 << 20),
            ..Default::default()
        },
    )
}

/// One `#[test]` per engine for each named function, which takes the
/// engine: `both_engines!(f, g)` makes `on_fjall::f`, `on_sled::f`, ...
/// `both_engines!(names: f)` passes the engine's name (`"fjall"`, `"sled"`)
/// instead, for tests that run the binary.
#[allow(unused_macros)]
macro_rules! both_engines {
    (names: $($name:ident),* $(,)?) => {
        mod on_fjall {
            $( #[test] fn $name() { super::$name("fjall") } )*
        }
        mod on_sled {
            $( #[test] fn $name() { super::$name("sled") } )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod on_fjall {
            $( #[test] fn $name() { super::$name(rdg::store::Engine::Fjall) } )*
        }
        mod on_sled {
            $( #[test] fn $name() { super::$name(rdg::store::Engine::Sled) } )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_engines;

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
