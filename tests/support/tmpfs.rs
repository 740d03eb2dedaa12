//! A small tmpfs of a test's own, to fill the disk under a state: mounted
//! on a temporary folder (root only), resized, filled with a ballast file,
//! unmounted when dropped.
//!
//! Invariant: a test that cannot mount says so on stderr (`SKIPPED:`) and
//! gets `None`; it never passes silently without having run.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `bytes`, or `None` (with a loud message) when this
    /// machine cannot mount one (not root, no tmpfs).
    pub fn mount(bytes: u64, test: &str) -> Option<Tmpfs> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("fs");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir, _tmp: tmp }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot run mount: {e}");
                None
            }
        }
    }

    /// Resizes the file system to `bytes` (more room: space freed).
    #[track_caller]
    pub fn resize(&self, bytes: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.dir)
            .status()
            .expect("mount -o remount")
            .success();
        assert!(ok, "remount {} with size {bytes}", self.dir.display());
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Bytes the files under `dir` occupy (allocated blocks, as `du`).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}
