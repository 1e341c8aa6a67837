//! The deadlines of a connection that actix-http does not keep itself.
//!
//! actix-http times the head of a connection's first request
//! (`http.client_request_timeout`, answered 408) and idle keep-alive, but
//! not the head of any later request on the same connection, and not a
//! response the client does not read: a client that sends a first request,
//! then trickles the next head one byte at a time, or stops reading, held
//! its connection for ever. [`GuardedStream`] wraps each accepted socket
//! and keeps both:
//!
//! - **Every request head** must be complete within
//!   `http.client_request_timeout` of its first byte; otherwise the
//!   connection is closed. The end of a head is its empty line, found by a
//!   scan of the bytes read while a head is under way (requests are a few
//!   hundred bytes; the scan is a `memchr`).
//! - **Writes** may wait for the client (its receive window shut) for
//!   `http.send_timeout` in all over the connection's life: a client that
//!   reads a trickle at a time runs out of it as surely as one that stops.
//!
//! A final answer written ends whatever reading was doing: the next byte
//! starts a new head. (Only a `100 Continue` alone does not: the body
//! follows it.) While a request is answered, its body is read under its own
//! deadline (the API's body middleware) and its handler is bounded by the store's
//! timeouts. The wrapper also counts open connections
//! (`shortener_http_connections`) and those it closes
//! (`shortener_http_timeouts_total{phase="head"|"write"}`).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

/// The deadlines every connection keeps.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From the first byte of a request head to its end.
    pub request_head: Duration,
    /// How long writes may wait for the client, in all.
    pub send: Duration,
}

/// What the connections report: how many are open, how many were closed
/// for being late, by phase.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub head_timeouts: Counter,
    pub write_timeouts: Counter,
}

/// Where a connection is between its requests, as far as reading goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Between requests: the next byte starts a head.
    Idle,
    /// A head is arriving and must end by `deadline`. `seen` says whether
    /// anything but line ends arrived (empty lines before a request are not
    /// its end); `tail` is how the bytes so far ended (see [`scan`]).
    Arriving {
        deadline: Instant,
        seen: bool,
        tail: Tail,
    },
    /// The head ended; the body (timed where it is read) and the handler
    /// follow, until the response is written.
    Answering,
}

/// The end of the bytes scanned so far, as far as an empty line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    Other,
    /// `\n`
    LineEnd,
    /// `\n\r`
    LineEndCr,
}

/// One accepted connection, with the deadlines of [`ConnectionLimits`].
#[derive(Debug)]
pub struct GuardedStream {
    io: TcpStream,
    limits: ConnectionLimits,
    head: Head,
    /// Armed while a head is arriving.
    head_timer: Option<Pin<Box<Sleep>>>,
    /// How long writes have waited for the client so far, in all.
    stalled: Duration,
    /// Since when writes wait, if they do now, with the timer of the rest
    /// of the budget.
    stall: Option<(Instant, Pin<Box<Sleep>>)>,
    metrics: ConnectionMetrics,
    _open: OpenConnection,
}

impl GuardedStream {
    pub fn new(io: TcpStream, limits: ConnectionLimits, metrics: &ConnectionMetrics) -> Self {
        Self {
            io,
            limits,
            head: Head::Idle,
            head_timer: None,
            stalled: Duration::ZERO,
            stall: None,
            metrics: metrics.clone(),
            _open: OpenConnection::new(&metrics.open),
        }
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.io.peer_addr()
    }

    /// Follows the bytes just read through the phases of a request.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let (deadline, seen, tail) = match self.head {
            Head::Answering => return,
            Head::Idle => (None, false, Tail::Other),
            Head::Arriving {
                deadline,
                seen,
                tail,
            } => (Some(deadline), seen, tail),
        };
        // Empty lines before a request line are not the end of its head.
        let (seen, rest, tail) = if seen {
            (true, bytes, tail)
        } else {
            match bytes.iter().position(|&b| b != b'\r' && b != b'\n') {
                Some(start) => (true, &bytes[start..], Tail::Other),
                None => (false, &[][..], Tail::Other),
            }
        };
        self.head = match scan(tail, rest) {
            None => Head::Answering,
            Some(tail) => Head::Arriving {
                // Read once per request, and only when its head did not
                // arrive whole.
                deadline: deadline.unwrap_or_else(|| Instant::now() + self.limits.request_head),
                seen,
                tail,
            },
        };
    }

    /// Whether the head under way, if any, is late; arms its timer so the
    /// task wakes at its deadline.
    fn head_late(&mut self, cx: &mut Context<'_>) -> bool {
        let Head::Arriving { deadline, .. } = self.head else {
            return false;
        };
        let timer = self
            .head_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Whether writes have waited for the client longer than allowed, in
    /// all; starts this wait's clock if it is not running.
    fn write_late(&mut self, cx: &mut Context<'_>) -> bool {
        let left = self.limits.send.saturating_sub(self.stalled);
        let (_, timer) = self.stall.get_or_insert_with(|| {
            let now = Instant::now();
            (now, Box::pin(tokio::time::sleep_until(now + left)))
        });
        timer.as_mut().poll(cx).is_ready()
    }

    fn wrote(&mut self, bytes: &[u8]) {
        if let Some((since, _)) = self.stall.take() {
            self.stalled += since.elapsed();
        }
        // A final answer: whatever head was under way, the next byte read
        // starts a new one. (A write for an earlier request while a head
        // arrives restarts that head's clock, which costs at most one
        // clock per pipelined request, each of which had to arrive whole.)
        if !interim_only(bytes) {
            self.head = Head::Idle;
        }
    }
}

/// Whether `bytes` are an interim answer alone (`100 Continue`), with the
/// final answer still to come.
fn interim_only(bytes: &[u8]) -> bool {
    bytes.starts_with(b"HTTP/1.1 1")
        && memchr::memmem::find(bytes, b"\r\n\r\n").is_none_or(|end| end + 4 >= bytes.len())
}

/// Scans `bytes` for an empty line (`\n\n` or `\n\r\n`), continuing from
/// how the bytes before them ended. `None` if one is there; otherwise how
/// these bytes end.
fn scan(tail: Tail, bytes: &[u8]) -> Option<Tail> {
    let Some(&last) = bytes.last() else {
        return Some(tail);
    };
    for i in memchr::memchr_iter(b'\n', bytes) {
        let before = |back: usize| i.checked_sub(back).map(|j| bytes[j]);
        let empty = match (before(1), before(2)) {
            (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => true,
            (None, _) => matches!(tail, Tail::LineEnd | Tail::LineEndCr),
            (Some(b'\r'), None) => tail == Tail::LineEnd,
            _ => false,
        };
        if empty {
            return None;
        }
    }
    Some(match last {
        b'\n' => Tail::LineEnd,
        b'\r' if bytes.len() >= 2 && bytes[bytes.len() - 2] == b'\n' => Tail::LineEndCr,
        b'\r' if bytes.len() == 1 && tail == Tail::LineEnd => Tail::LineEndCr,
        _ => Tail::Other,
    })
}

fn timed_out(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.head_late(cx) => {
                this.metrics.head_timeouts.inc();
                Poll::Ready(Err(timed_out("the request head was not sent in time")))
            }
            other => other,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.wrote(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.write_late(cx) => {
                this.metrics.write_timeouts.inc();
                Poll::Ready(Err(timed_out("the client did not read the response")))
            }
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                this.wrote(&first[..n.min(first.len())]);
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.write_late(cx) => {
                this.metrics.write_timeouts.inc();
                Poll::Ready(Err(timed_out("the client did not read the response")))
            }
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Pending if this.write_late(cx) => {
                this.metrics.write_timeouts.inc();
                Poll::Ready(Err(timed_out("the client did not read the response")))
            }
            other => other,
        }
    }
}

/// Counts a connection in `shortener_http_connections` while it is open.
#[derive(Debug)]
struct OpenConnection(Gauge);

impl OpenConnection {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> bool {
        let mut tail = Tail::Other;
        for chunk in chunks {
            match scan(tail, chunk) {
                None => return true,
                Some(next) => tail = next,
            }
        }
        false
    }

    #[test]
    fn heads_end_at_their_empty_line_however_split() {
        let head: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..=head.len() {
            assert!(ends(&[&head[..cut], &head[cut..]]), "cut at {cut}");
            for cut2 in cut..=head.len() {
                assert!(
                    ends(&[&head[..cut], &head[cut..cut2], &head[cut2..]]),
                    "cut at {cut} and {cut2}"
                );
            }
        }
        assert!(ends(&[b"GET /x HTTP/1.1\nHost: a\n\n"]));
        assert!(ends(&[b"GET /x HTTP/1.1\n", b"\n"]));
        assert!(ends(&[b"GET /x HTTP/1.1\n", b"\r", b"\n"]));
    }

    #[test]
    fn only_a_lone_interim_answer_keeps_a_request_open() {
        assert!(interim_only(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(interim_only(b"HTTP/1.1 100 Continue\r\n"));
        assert!(!interim_only(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!interim_only(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!interim_only(b"{\"status\":\"ok\"}"));
    }

    #[test]
    fn partial_heads_do_not_end() {
        for chunks in [
            &[&b"GET /x HTTP/1.1\r\nHost: a\r\n"[..]][..],
            &[b"GET /x HTTP/1.1\r\n", b"Host: a\r\n", b"X: \r"],
            &[b"GET /x HTTP/1.1\r", b"\n", b"\r"],
            &[b"a\rb\r\n"],
        ] {
            assert!(!ends(chunks), "{chunks:?}");
        }
    }
}
