//! The redo file of a commit applied by ingestion (fjall): a replay that
//! continues a state ends in one large commit, and fjall takes sorted runs
//! into new tables far faster than it takes a write batch (the batch's
//! memtable inserts were one thread's 5–6 s at the end of a 2M-event
//! continue), but its ingestion is atomic per keyspace only.
//!
//! Invariant: no namespace registers an ingested table before the whole
//! commit (every namespace's name and every operation, with a checksum) is
//! durable in `STATE/rdg-redo` (the tables are written meanwhile, beside the
//! file; unregistered ones are removed by fjall at the next open), and the
//! file is removed only once every namespace holds the commit
//! (fjall syncs ingested tables and their registration before `finish`
//! returns). Ingesting the same keys and values again changes nothing, so an
//! open that finds the file finishes the commit from it: after any crash a
//! state shows all of the commit or none of it. A file that is not complete
//! under its final name is never read (`rdg-redo.tmp` is renamed into place
//! after its sync); a complete one that fails its checksum is damage, and the
//! state is refused with the file's name.
//!
//! Layout, integers big-endian: `RDGREDO1`, the count of namespaces (u32),
//! each name (u16 length, bytes); the count of operations (u64), each as
//! namespace index (u32), key length (u32), key, value length (u32,
//! `u32::MAX` for a removal), value; then the CRC-32 of all that (u32).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::direct;
use super::engine::WriteSet;
use super::layout::{self, io_err, sync_dir};

const FILE: &str = "rdg-redo";
const TMP: &str = "rdg-redo.tmp";
const MAGIC: &[u8; 8] = b"RDGREDO1";
/// The value length of a removal.
const REMOVAL: u32 = u32::MAX;

/// The redo file of `dir`'s state.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `set` (normalized: sorted by namespace and key, one op per key)
/// over the namespaces `names` durably to the redo file.
pub(crate) fn write(dir: &Path, names: &[String], set: &WriteSet) -> Result<(), StoreError> {
    let tmp = dir.join(TMP);
    let written = write_tmp(&tmp, names, set);
    if written.is_err() {
        // Nothing began: the partial file only takes space.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    let done = path(dir);
    std::fs::rename(&tmp, &done).map_err(io_err(&done))?;
    sync_dir(dir)
}

fn write_tmp(tmp: &Path, names: &[String], set: &WriteSet) -> Result<(), StoreError> {
    direct::write_checksummed(tmp, |out| encode(names, set, out)).map_err(io_err(tmp))
}

fn encode(names: &[String], set: &WriteSet, out: &mut impl Write) -> std::io::Result<()> {
    let too_long = |what| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    out.write_all(MAGIC)?;
    let count = u32::try_from(names.len()).map_err(|_| too_long("too many namespaces"))?;
    out.write_all(&count.to_be_bytes())?;
    for name in names {
        let len = u16::try_from(name.len()).map_err(|_| too_long("namespace name"))?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(name.as_bytes())?;
    }
    out.write_all(&(set.ops.len() as u64).to_be_bytes())?;
    for op in set.in_order(&set.ops) {
        let ns = u32::try_from(op.ns()).map_err(|_| too_long("namespace index"))?;
        let key = set.bytes(op.key());
        out.write_all(&ns.to_be_bytes())?;
        // The set's check refuses keys over 64 KiB and values of 4 GiB.
        out.write_all(&(key.len() as u32).to_be_bytes())?;
        out.write_all(key)?;
        match op.value() {
            Some(v) => {
                let value = set.bytes(v);
                out.write_all(&(value.len() as u32).to_be_bytes())?;
                out.write_all(value)?;
            }
            None => out.write_all(&REMOVAL.to_be_bytes())?,
        }
    }
    Ok(())
}

/// Removes the redo file (the commit is in every namespace), durably, and
/// any unfinished temporary file.
pub(crate) fn remove(dir: &Path) -> Result<(), StoreError> {
    layout::remove_durably(dir, &[FILE, TMP])
}

/// The commit of the redo file, if there is one: the namespaces' names and
/// the operations (normalized). A file that fails its checksum or does not
/// parse is [`StoreError::Damaged`].
pub(crate) fn read(dir: &Path) -> Result<Option<(Vec<String>, WriteSet)>, StoreError> {
    let p = path(dir);
    let mut bytes = Vec::new();
    match File::open(&p) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io_err(&p))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A temporary file left by a crash: its commit never began.
            let _ = std::fs::remove_file(dir.join(TMP));
            return Ok(None);
        }
        Err(e) => return Err(io_err(&p)(e)),
    };
    let damaged = |detail: String| StoreError::Damaged {
        path: dir.to_path_buf(),
        detail: format!(
            "the redo file {} of an interrupted commit {detail}",
            p.display()
        ),
    };
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(damaged("is shorter than its checksum".to_string()));
    };
    if crc32fast::hash(body) != u32::from_be_bytes(*crc) {
        return Err(damaged("fails its checksum".to_string()));
    }
    let (names, mut set) =
        decode(body).map_err(|at| damaged(format!("does not parse at byte {at}")))?;
    set.normalize();
    Ok(Some((names, set)))
}

/// Parses a checksummed body; `Err` is the offset where it went wrong.
fn decode(body: &[u8]) -> Result<(Vec<String>, WriteSet), usize> {
    let mut r = Reader { body, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(0);
    }
    let count = r.u32()?;
    let mut names = Vec::new();
    for _ in 0..count {
        let len = usize::from(u16::from_be_bytes(r.array()?));
        let at = r.at;
        let name = std::str::from_utf8(r.take(len)?).map_err(|_| at)?;
        names.push(name.to_string());
    }
    let ops = r.u64()?;
    let mut set = WriteSet::default();
    for _ in 0..ops {
        let at = r.at;
        let ns = r.u32()? as usize;
        if ns >= names.len() {
            return Err(at);
        }
        let len = r.u32()? as usize;
        let key = set.push(r.take(len)?);
        match r.u32()? {
            REMOVAL => set.remove(ns, key),
            len => {
                let value = set.push(r.take(len as usize)?);
                set.put(ns, key, value);
            }
        }
    }
    if r.at != body.len() {
        return Err(r.at);
    }
    Ok((names, set))
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], usize> {
        let part = self.body.get(self.at..self.at + n).ok_or(self.at)?;
        self.at += n;
        Ok(part)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], usize> {
        let at = self.at;
        self.take(N)?.try_into().map_err(|_| at)
    }

    fn u32(&mut self) -> Result<u32, usize> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, usize> {
        self.array().map(u64::from_be_bytes)
    }
}
