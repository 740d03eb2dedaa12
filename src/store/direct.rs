//! A large file written front to back and synced, with a checksum at its
//! end, at the disk's speed: what is written is gathered into aligned
//! chunks of [`CHUNK`] bytes that a second thread writes (and checksums)
//! while the first goes on, with direct I/O (`O_DIRECT`, Linux) where the
//! filesystem takes it, so that the bytes are not copied into the page
//! cache first. The redo file of a continue (~350 MB for 2M events) took
//! 1.1–1.35 s through a buffered writer, most of it the kernel's copies.
//!
//! Invariant: once [`write_checksummed`] returned `Ok`, the file holds
//! exactly the bytes its `fill` wrote, in order, then the CRC-32 of those
//! bytes (u32, big-endian), and it is synced. Direct I/O is only ever a
//! way of writing: a filesystem that refuses it (tmpfs, some network
//! filesystems) gets the same bytes through the page cache.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes handed to the kernel at a time (a multiple of [`ALIGN`]).
const CHUNK: usize = 8 << 20;
/// The alignment direct I/O asks of buffers, offsets and lengths: the
/// largest logical block size in common use.
const ALIGN: usize = 4096;
/// Chunks in use at once: one being filled, one being written, one spare.
const CHUNKS: usize = 3;

/// Creates `path` (truncating it) and writes into it what `fill` writes,
/// then the CRC-32 of those bytes, and syncs it (see the module doc).
pub(crate) fn write_checksummed(
    path: &Path,
    fill: impl FnOnce(&mut Chunks) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_with(path, true, fill)
}

/// [`write_checksummed`], with direct I/O tried (`direct`) or not (through
/// the page cache, asking the kernel to start writing each chunk back at
/// once, so that the final sync waits for the last one only).
fn write_with(
    path: &Path,
    direct: bool,
    fill: impl FnOnce(&mut Chunks) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let file = File::create(path)?;
    let (full_tx, full_rx) = sync_channel::<Chunk>(CHUNKS);
    let (free_tx, free_rx) = sync_channel::<Chunk>(CHUNKS);
    std::thread::scope(|s| {
        let writer = s.spawn(move || drain(file, direct, full_rx, free_tx));
        let mut out = Chunks {
            current: Chunk::new(),
            made: 1,
            full: full_tx,
            free: free_rx,
        };
        // The last chunk goes once `fill` is done; dropping `out` tells the
        // writer that nothing more comes.
        let filled = fill(&mut out).and_then(|()| out.send_current());
        drop(out);
        let drained = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // The writer's error is the cause of a failed send: it goes first.
        let (mut file, crc) = drained?;
        filled?;
        file.write_all(&crc.finalize().to_be_bytes())?;
        file.sync_all()
    })
}

/// The writing end given to `fill`: an [`std::io::Write`] that gathers
/// bytes into chunks and hands each full one to the writer thread.
pub(crate) struct Chunks {
    current: Chunk,
    /// Chunks allocated so far (at most [`CHUNKS`]).
    made: usize,
    full: SyncSender<Chunk>,
    free: Receiver<Chunk>,
}

impl Chunks {
    /// Hands the current chunk to the writer and takes an empty one.
    fn send_current(&mut self) -> std::io::Result<()> {
        if self.current.len == 0 {
            return Ok(());
        }
        let mut next = match self.free.try_recv() {
            Ok(chunk) => chunk,
            Err(_) if self.made < CHUNKS => {
                self.made += 1;
                Chunk::new()
            }
            Err(_) => self.free.recv().map_err(|_| writer_stopped())?,
        };
        next.len = 0;
        let full = std::mem::replace(&mut self.current, next);
        self.full.send(full).map_err(|_| writer_stopped())
    }
}

impl Write for Chunks {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.current.put(buf);
        if self.current.len == CHUNK {
            self.send_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `fill` sees when the writer thread gave up (its error is the one
/// reported).
fn writer_stopped() -> std::io::Error {
    std::io::Error::other("the file's writer stopped")
}

/// A buffer whose bytes start at an [`ALIGN`]ed address.
struct Chunk {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let buf = vec![0; CHUNK + ALIGN];
        // Never more than ALIGN - 1 for bytes; min() keeps the slice in
        // bounds whatever it says (a misaligned buffer makes direct writes
        // fail with EINVAL, which falls back to the page cache).
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Chunk { buf, start, len: 0 }
    }

    /// Copies as much of `bytes` as fits; returns how much.
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(CHUNK - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// The writer thread: writes and checksums the chunks in order, hands each
/// back for reuse, and returns the file (direct I/O off again) and the
/// checksum once the filling side hung up.
fn drain(
    mut file: File,
    try_direct: bool,
    full: Receiver<Chunk>,
    free: SyncSender<Chunk>,
) -> std::io::Result<(File, crc32fast::Hasher)> {
    let mut crc = crc32fast::Hasher::new();
    let mut direct = try_direct && set_direct(&file, true).is_ok();
    let mut written: u64 = 0;
    for chunk in full {
        let bytes = chunk.bytes();
        crc.update(bytes);
        let mut rest = bytes;
        if direct {
            let aligned = bytes.len() / ALIGN * ALIGN;
            match file.write_all(&bytes[..aligned]) {
                Ok(()) => {
                    written += aligned as u64;
                    rest = &bytes[aligned..];
                }
                // Refused after all (a misaligned buffer, a filesystem that
                // takes the flag but not the writes): from where the file
                // stands, through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    direct = false;
                    set_direct(&file, false)?;
                    file.seek(SeekFrom::Start(written))?;
                }
                Err(e) => return Err(e),
            }
        }
        if !rest.is_empty() {
            if direct {
                // Only the last chunk has an unaligned end.
                direct = false;
                set_direct(&file, false)?;
            }
            file.write_all(rest)?;
            start_writeback(&file, written, rest.len() as u64);
            written += rest.len() as u64;
        }
        // The filling side may be gone already (it has sent its last).
        let _ = free.send(chunk);
    }
    if direct {
        set_direct(&file, false)?;
    }
    Ok((file, crc))
}

/// Turns direct I/O on or off for `file`.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor that `file` owns and keeps open for the
    // call; neither call reads or writes this process's memory.
    let set = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            -1
        } else if on {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT)
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT)
        }
    };
    if set < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &File, on: bool) -> std::io::Result<()> {
    if on {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    Ok(())
}

/// Starts writing `len` bytes of `file` from `from` to disk, without
/// waiting (a hint: the final `sync_all` is what makes the file durable and
/// reports errors).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor belongs to `file`, open for the call; the call
    // reads and writes none of this process's memory.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// Pieces of every size class: tiny, around a block, several chunks.
    fn pieces(seed: u64) -> Vec<Vec<u8>> {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..400)
            .map(|i| {
                let len = match i % 7 {
                    0 => rng.random_range(0..5),
                    1 => rng.random_range(ALIGN - 3..ALIGN + 3),
                    2 if i % 70 == 2 => rng.random_range(CHUNK..2 * CHUNK + 17),
                    _ => rng.random_range(1..20_000),
                };
                (0..len).map(|_| rng.random()).collect()
            })
            .collect()
    }

    #[test]
    fn the_file_holds_the_bytes_written_then_their_checksum_in_both_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (seed, direct) in [(1, true), (2, false), (3, true)] {
            let pieces = pieces(seed);
            let expected: Vec<u8> = pieces.concat();
            let path = dir.path().join(format!("f{seed}"));
            write_with(&path, direct, |out| {
                pieces.iter().try_for_each(|p| out.write_all(p))
            })
            .expect("write");
            let got = std::fs::read(&path).expect("read");
            let (body, crc) = got.split_last_chunk::<4>().expect("a checksum");
            assert_eq!(body.len(), expected.len(), "direct {direct}");
            assert!(body == expected.as_slice(), "direct {direct}: other bytes");
            assert_eq!(u32::from_be_bytes(*crc), crc32fast::hash(&expected));
        }
    }

    #[test]
    fn an_empty_fill_leaves_the_checksum_of_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty");
        write_checksummed(&path, |_| Ok(())).expect("write");
        let got = std::fs::read(&path).expect("read");
        assert_eq!(got, crc32fast::hash(&[]).to_be_bytes());
    }

    #[test]
    fn an_error_of_fill_is_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("failed");
        let err = write_checksummed(&path, |out| {
            out.write_all(&[7; 3 * CHUNK / 2])?;
            Err(std::io::Error::other("the encoder's own error"))
        })
        .expect_err("a failed fill");
        assert_eq!(err.to_string(), "the encoder's own error");
    }
}
