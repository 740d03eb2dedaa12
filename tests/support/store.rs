//! Stores for tests that call the library directly: a fresh one in a
//! temporary folder (deleted with the returned guard).

use rdg::store::Store;

/// A new, empty store in a temporary folder; keep the folder alive as long
/// as the store.
#[track_caller]
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open a fresh store");
    (tmp, store)
}
