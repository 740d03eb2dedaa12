//! `GET /v1/export`: the whole graph as sorted JSON Lines, the same bytes
//! as `rdg export --state` of one process holding everything.
//!
//! - `scope=local` (or `X-Rdg-Local: 1`, or no cluster): this process's
//!   store. The export is written to a temporary file under one
//!   [`ReadView`](crate::store::ReadView) (a consistent copy; commits wait
//!   only as long as the disk write, never for a slow client), then
//!   streamed from the file.
//! - default in a cluster: every process's local export, merged line by
//!   line (k-way, bytewise). Each line is on exactly one process and each
//!   process's lines are sorted, so the merge is the one-process export.
//!
//! Invariants: the answer's headers are sent only once every process has
//! answered (an unreachable peer is a 502/504 naming it, not a short
//! export); an error later (a peer dying mid-stream, a disk error, a bug
//! that panics the export thread) aborts the HTTP stream, so a client sees
//! a broken transfer, never a silently truncated graph; at most
//! `max_exports` exports run at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, Seek, Write};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::error::ApiError;
use super::fresh::FreshSet;
use super::params::{self, Params};
use super::peers::Peers;
use super::state::{App, Caller};

/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 << 10;
/// Chunks buffered between the export thread and the connection.
const CHANNEL: usize = 8;

type Chunk = Result<Bytes, std::io::Error>;

/// A sorted line stream to merge, named for error messages.
type Source = (String, Box<dyn BufRead + Send>);

/// The export as it streams: JSON Lines with the freshness of every process
/// it is read from (sent before the first byte).
pub struct Streamed {
    fresh: FreshSet,
    chunks: mpsc::Receiver<Chunk>,
}

impl IntoResponse for Streamed {
    fn into_response(self) -> Response {
        let stream = futures_util::stream::unfold(self.chunks, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        self.fresh.apply(resp.headers_mut());
        resp
    }
}

pub async fn export(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Streamed, ApiError> {
    let q = Params::parse(raw.as_deref(), &["scope"])?;
    let local_only = match q.get("scope") {
        None | Some("cluster") => false,
        Some("local") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`scope` must be `cluster` or `local`, got `{}`",
                params::shorten(other)
            )));
        }
    };
    let peers = if local_only {
        None
    } else {
        app.coordinator(caller)
    };
    let permit = app.exports.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} exports are already running on this process",
                app.config.max_exports
            ),
        )
        .with_hint("try again when one has finished")
    })?;
    let deadline = Instant::now() + app.config.request_timeout.mul_f64(0.8);
    let mut fresh = FreshSet::default();
    let mut sources: Vec<Source> = Vec::new();
    if let Some(peers) = &peers {
        let opened = peers
            .fan_out(&peers.others(), |p| {
                peers.stream(p, "/v1/export?scope=local", deadline)
            })
            .await;
        for (p, stream) in opened {
            let (f, reader) = stream?;
            fresh.add(p, f);
            let name = format!("process {p} ({})", peers.url(p));
            sources.push((name, Box::new(BufReader::with_capacity(CHUNK, reader))));
        }
    }
    let me = peers.as_deref().map_or(0, Peers::me);
    let (head_tx, head_rx) = oneshot::channel::<Result<FreshSet, ApiError>>();
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL);
    let worker = app.clone();
    std::thread::Builder::new()
        .name("rdg-export".into())
        .spawn(move || {
            // A panic must break the transfer, not end it as if complete.
            let broken = tx.clone();
            let run = || produce(&worker, me, fresh, sources, head_tx, tx, permit);
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                let e = "the export stopped: an internal error (a bug; the server goes on)";
                let _ = broken.blocking_send(Err(std::io::Error::other(e)));
            }
        })
        .map_err(|e| ApiError::internal(format!("cannot start the export: {e}")))?;
    let fresh = head_rx.await.unwrap_or_else(|_| {
        Err(ApiError::internal(
            "the export stopped before it began (a bug; the server goes on)",
        ))
    })?;
    Ok(Streamed { fresh, chunks: rx })
}

/// Writes chunks to the connection; false once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }

    fn fail(&self, e: std::io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_chunk()
    }
}

/// The export thread: exports this process's store (process `me`) to a
/// temporary file under one view, sends the answer's freshness (`fresh`:
/// the peers' streams already opened, then this process's), then merges
/// every source into `tx`.
fn produce(
    app: &App,
    me: usize,
    mut fresh: FreshSet,
    mut sources: Vec<Source>,
    head: oneshot::Sender<Result<FreshSet, ApiError>>,
    tx: mpsc::Sender<Chunk>,
    _permit: OwnedSemaphorePermit,
) {
    let file = {
        let view = app.store.read();
        let local = match app.fresh.of(&view) {
            Ok(f) => f,
            Err(e) => {
                let _ = head.send(Err(e.into()));
                return;
            }
        };
        fresh.add(me, local.process());
        if head.send(Ok(fresh)).is_err() {
            return;
        }
        let written = tempfile::tempfile().and_then(|f| {
            let mut w = std::io::BufWriter::with_capacity(CHUNK, f);
            view.export(&mut w)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut f = w.into_inner().map_err(|e| e.into_error())?;
            f.rewind()?;
            Ok(f)
        });
        match written {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("export: {e}");
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    };
    sources.push((
        "this process".to_string(),
        Box::new(BufReader::with_capacity(CHUNK, file)),
    ));
    let mut out = ChunkWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    match merge(&mut sources, &mut out).and_then(|()| out.flush_chunk()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            tracing::warn!("export: {e}");
            out.fail(e);
        }
    }
}

/// Merges sorted line streams into `out`, bytewise. A source whose lines
/// are out of order, or that ends without a newline, is an error naming it.
pub fn merge(sources: &mut [Source], out: &mut dyn Write) -> std::io::Result<()> {
    let read = |name: &str, r: &mut dyn BufRead, line: &mut Vec<u8>| -> std::io::Result<bool> {
        line.clear();
        let n = r
            .read_until(b'\n', line)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{name}: {e}")))?;
        if n > 0 && line.last() != Some(&b'\n') {
            return Err(std::io::Error::other(format!(
                "{name}: the export ended in the middle of a line"
            )));
        }
        Ok(n > 0)
    };
    // (line with its newline, source) min-heap; '\n' sorts below every byte
    // of a JSON line, so lines compare as they would without it.
    let mut heap = BinaryHeap::new();
    for (i, (name, r)) in sources.iter_mut().enumerate() {
        let mut line = Vec::new();
        if read(name, r.as_mut(), &mut line)? {
            heap.push(Reverse((line, i)));
        }
    }
    while let Some(Reverse((line, i))) = heap.pop() {
        out.write_all(&line)?;
        let (name, r) = &mut sources[i];
        let mut next = Vec::with_capacity(line.len());
        if read(name, r.as_mut(), &mut next)? {
            if next < line {
                return Err(std::io::Error::other(format!(
                    "{name}: the export is not sorted"
                )));
            }
            heap.push(Reverse((next, i)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &'static str) -> Source {
        (name.to_string(), Box::new(text.as_bytes()))
    }

    #[test]
    fn merges_sorted_streams_and_names_a_broken_one() {
        let mut s = vec![
            src("a", "{\"a\"}\n{\"c\"}\n"),
            src("b", "{\"b\"}\n{\"d\"}\n"),
            src("c", ""),
        ];
        let mut out = Vec::new();
        merge(&mut s, &mut out).expect("merge");
        assert_eq!(out, b"{\"a\"}\n{\"b\"}\n{\"c\"}\n{\"d\"}\n");
        let mut s = vec![src("p1", "b\na\n")];
        let e = merge(&mut s, &mut Vec::new()).expect_err("unsorted");
        assert!(
            e.to_string().contains("p1: the export is not sorted"),
            "{e}"
        );
        let mut s = vec![src("p2", "a\nb")];
        let e = merge(&mut s, &mut Vec::new()).expect_err("cut");
        assert!(e.to_string().contains("p2: the export ended"), "{e}");
    }
}
