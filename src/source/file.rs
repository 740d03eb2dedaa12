//! JSON Lines files (`.jsonl`, `.jsonl.gz`) as a source: all files of one
//! topic are read one after the other, as one partition, in the order given.
//!
//! Invariant: line numbers are 1-based and count every line of a file,
//! including blank ones (which are skipped), so a dead letter's `file:line`
//! points at the line in an editor. A UTF-8 byte order mark that begins a
//! file (as some Windows tools write) is not part of its first line; one
//! anywhere else is data. A line longer than [`MAX_RECORD_BYTES`] (its end
//! of line not counted) is read past without being held, and yielded as
//! too long (a dead letter naming its length). Bytes read are added to a
//! shared counter for progress bars.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{MAX_RECORD_BYTES, Poll, RawBatch, Source, SourceError};

/// The files of one topic, bound to a dataflow.
#[derive(Clone, Debug)]
pub struct TopicFiles {
    pub dataflow: String,
    pub files: Vec<PathBuf>,
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads the files of one topic in order.
pub struct FileSource {
    dataflow: String,
    files: Vec<PathBuf>,
    /// Index of the file being read.
    current: usize,
    reader: Option<Box<dyn BufRead + Send>>,
    line: u64,
    buf: Vec<u8>,
    bytes_read: Arc<AtomicU64>,
    /// The longest line taken ([`MAX_RECORD_BYTES`]; less in tests).
    max_line: usize,
}

impl FileSource {
    pub fn new(topic: TopicFiles, bytes_read: Arc<AtomicU64>) -> FileSource {
        FileSource {
            dataflow: topic.dataflow,
            files: topic.files,
            current: 0,
            reader: None,
            line: 0,
            buf: Vec::with_capacity(1024),
            bytes_read,
            max_line: MAX_RECORD_BYTES,
        }
    }

    fn name(&self, i: usize) -> String {
        self.files
            .get(i)
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn open(&self, i: usize) -> Result<Box<dyn BufRead + Send>, SourceError> {
        let path = &self.files[i];
        let file = File::open(path).map_err(|source| SourceError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let counted = Counted {
            inner: file,
            counter: self.bytes_read.clone(),
        };
        let gz = path.extension().is_some_and(|e| e == "gz");
        Ok(if gz {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(BufReader::new(counted)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, counted))
        })
    }
}

/// Counts compressed (on-disk) bytes as they are read.
struct Counted {
    inner: File,
    counter: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Source for FileSource {
    fn dataflow(&self) -> &str {
        &self.dataflow
    }

    fn poll(&mut self, max: usize, out: &mut RawBatch) -> Result<Poll, SourceError> {
        let mut n = 0;
        while n < max {
            if self.reader.is_none() {
                if self.current >= self.files.len() {
                    return Ok(if n > 0 { Poll::Ready } else { Poll::Done });
                }
                self.reader = Some(self.open(self.current)?);
                self.line = 0;
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            self.buf.clear();
            let path = &self.files[self.current];
            let read_error = |line: u64| {
                move |source| SourceError::Read {
                    path: path.display().to_string(),
                    line,
                    source,
                }
            };
            // At most one byte over the limit: enough to know it is over.
            let limit = self.max_line as u64 + 1;
            let read = (&mut *reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(read_error(self.line))?;
            if read == 0 {
                self.reader = None;
                self.current += 1;
                continue;
            }
            self.line += 1;
            if self.buf.len() > self.max_line && self.buf.last() != Some(&b'\n') {
                let rest = reader.skip_until(b'\n').map_err(read_error(self.line))?;
                let len = (self.buf.len() + rest) as u64;
                out.push_too_long(self.current as u32, self.line, len);
                n += 1;
                continue;
            }
            let line = if self.line == 1 {
                self.buf.strip_prefix(BOM).unwrap_or(&self.buf)
            } else {
                &self.buf[..]
            };
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            out.push(self.current as u32, self.line, line, None);
            n += 1;
        }
        Ok(Poll::Ready)
    }

    fn describe(&self, partition: u32, offset: u64) -> String {
        format!("{}:{}", self.name(partition as usize), offset)
    }

    fn partition_key(&self, partition: u32) -> String {
        self.name(partition as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_files_in_order_with_line_numbers() {
        let dir = std::env::temp_dir().join(format!("rdg-file-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("t.jsonl");
        std::fs::write(&a, "{\"a\":1}\n\n{\"a\":2}\n").unwrap();
        let b = dir.join("t.2.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"b\":1}").unwrap();
        std::fs::write(&b, gz.finish().unwrap()).unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let mut src = FileSource::new(
            TopicFiles {
                dataflow: "t".into(),
                files: vec![a, b],
            },
            counter.clone(),
        );
        let mut out = RawBatch::default();
        assert_eq!(src.poll(2, &mut out).unwrap(), Poll::Ready);
        assert_eq!(src.poll(10, &mut out).unwrap(), Poll::Ready);
        assert_eq!(src.poll(10, &mut out).unwrap(), Poll::Done);
        let got: Vec<_> = out
            .iter()
            .map(|r| src.describe(r.partition, r.offset))
            .collect();
        assert_eq!(got, vec!["t.jsonl:1", "t.jsonl:3", "t.2.jsonl.gz:1"]);
        let payloads: Vec<&[u8]> = out.iter().map(|r| r.payload).collect();
        assert_eq!(
            payloads,
            [&b"{\"a\":1}\n"[..], b"{\"a\":2}\n", b"{\"b\":1}"]
        );
        assert!(counter.load(Ordering::Relaxed) > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_over_the_limit_is_yielded_as_too_long_and_read_past() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("t.jsonl");
        let long = "x".repeat(40);
        // Lines 2 and 4 are over a 16-byte limit, line 4 without an end of
        // line; line 3 is 16 bytes, the limit, before its end of line.
        let text = format!("{{\"a\":1}}\n{long}\n{{\"a\":\"67890123\"}}\n{long}");
        std::fs::write(&a, &text).unwrap();
        let b = dir.path().join("t.2.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(format!("{long}\n{{\"b\":1}}\n").as_bytes())
            .unwrap();
        std::fs::write(&b, gz.finish().unwrap()).unwrap();
        let topic = TopicFiles {
            dataflow: "t".into(),
            files: vec![a, b],
        };
        let mut src = FileSource::new(topic, Arc::new(AtomicU64::new(0)));
        src.max_line = 16;
        let mut out = RawBatch::default();
        while src.poll(2, &mut out).unwrap() == Poll::Ready {}
        let got: Vec<(String, &[u8], Option<u64>)> = out
            .iter()
            .map(|r| (src.describe(r.partition, r.offset), r.payload, r.too_long))
            .collect();
        let want: [(&str, &[u8], Option<u64>); 6] = [
            ("t.jsonl:1", b"{\"a\":1}\n", None),
            ("t.jsonl:2", b"", Some(41)),
            ("t.jsonl:3", b"{\"a\":\"67890123\"}\n", None),
            ("t.jsonl:4", b"", Some(40)),
            ("t.2.jsonl.gz:1", b"", Some(41)),
            ("t.2.jsonl.gz:2", b"{\"b\":1}\n", None),
        ];
        let want: Vec<(String, &[u8], Option<u64>)> = want
            .iter()
            .map(|(d, p, t)| (d.to_string(), *p, *t))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_byte_order_mark_that_begins_a_file_is_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("t.jsonl");
        // A BOM before line 1 (dropped), and before line 2 (kept: data).
        std::fs::write(&a, b"\xEF\xBB\xBF{\"a\":1}\n\xEF\xBB\xBF{\"a\":2}\n").unwrap();
        let b = dir.path().join("t.2.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"\xEF\xBB\xBF\n{\"b\":1}\n").unwrap();
        std::fs::write(&b, gz.finish().unwrap()).unwrap();
        let files = vec![a, b];
        let topic = TopicFiles {
            dataflow: "t".into(),
            files,
        };
        let mut src = FileSource::new(topic, Arc::new(AtomicU64::new(0)));
        let mut out = RawBatch::default();
        while src.poll(10, &mut out).unwrap() == Poll::Ready {}
        let got: Vec<(String, &[u8])> = out
            .iter()
            .map(|r| (src.describe(r.partition, r.offset), r.payload))
            .collect();
        let want: [(&str, &[u8]); 3] = [
            ("t.jsonl:1", b"{\"a\":1}\n"),
            ("t.jsonl:2", b"\xEF\xBB\xBF{\"a\":2}\n"),
            // A first line that is only a BOM is blank, and skipped.
            ("t.2.jsonl.gz:2", b"{\"b\":1}\n"),
        ];
        let want: Vec<(String, &[u8])> = want.iter().map(|(d, p)| (d.to_string(), *p)).collect();
        assert_eq!(got, want);
    }
}
