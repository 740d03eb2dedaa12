//! A connection's socket that comes back to the accept loop when hyper lets
//! go of it, so that the loop can still answer on it (a 408 when a
//! request's headers did not arrive in time, which hyper reports only as
//! an error after it dropped the connection).
//!
//! Invariant: the socket is closed exactly once: by whoever holds it last,
//! hyper's [`Reclaim`] while the connection is served, then the
//! [`Returned`] handle it hands the socket to when hyper drops it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The socket as hyper sees it; dropping it hands the socket to
/// [`Returned`].
pub(super) struct Reclaim {
    stream: Option<TcpStream>,
    back: Returned,
}

/// Where the socket goes when hyper drops its [`Reclaim`].
#[derive(Clone)]
pub(super) struct Returned(Arc<Mutex<Option<TcpStream>>>);

impl Returned {
    /// The socket, once hyper has dropped it.
    pub(super) fn take(&self) -> Option<TcpStream> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Reclaim {
    pub(super) fn new(stream: TcpStream) -> (Reclaim, Returned) {
        let back = Returned(Arc::new(Mutex::new(None)));
        let io = Reclaim {
            stream: Some(stream),
            back: back.clone(),
        };
        (io, back)
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.stream.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for Reclaim {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            *self.back.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
        }
    }
}

impl AsyncRead for Reclaim {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Reclaim {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
