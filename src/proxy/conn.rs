//! The client connection's guard: request-head validation and the time limits that
//! hyper does not enforce by itself.
//!
//! [`GuardedIo`] sits between the client's socket and hyper. It reads the byte stream as
//! a sequence of request heads and bodies and:
//!
//! * validates every head *before* hyper sees it: size (→ `431`), header count (→ `431`),
//!   URI length (→ `414`), and framing — duplicate or conflicting `Content-Length`,
//!   `Content-Length` with `Transfer-Encoding`, any `Transfer-Encoding` other than exactly
//!   `chunked` (→ `400`). A bad head gets its status written straight to the socket and
//!   the connection is closed, so no byte of it reaches an upstream connection;
//! * follows `Content-Length` and chunked bodies (refusing malformed chunking with
//!   `400`), so a pipelined next head is validated too; after a `CONNECT` or an
//!   `Upgrade` the rest is passed through and the connection is marked to close after
//!   the response unless it became a tunnel;
//! * times the connection by phase: idle between requests (keep-alive), receiving a head
//!   (→ `408`), receiving a body (slow POST), and a stalled write (slow read).
//!
//! hyper's own `header_read_timeout` runs from the moment it starts waiting for a head,
//! idle keep-alive time included, and answers no status; hence this layer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::sign_in::LastSignIn;

/// Limits applied to each client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Largest request head, in bytes.
    pub head_bytes: usize,
    /// Most header fields in one head.
    pub headers: usize,
    /// Longest request target, in bytes.
    pub uri_bytes: usize,
    /// Time to receive a whole head once its first byte has arrived.
    pub head_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Time without progress while receiving a request body.
    pub body_idle_timeout: Duration,
    /// Time a write to the client may stall.
    pub write_idle_timeout: Duration,
}

const PHASE_IDLE: u8 = 0;
const PHASE_REQUEST: u8 = 1;

/// State shared between the guard and the request handler.
#[derive(Debug)]
pub struct ConnSignal {
    started: Instant,
    phase: AtomicU8,
    idle_since_ms: AtomicU64,
    close: AtomicBool,
    /// Kerberos sign-in is per connection (RFC 4559 §4): who signed in on it, or the
    /// half-made context of a multi-leg exchange.
    negotiated: std::sync::Mutex<Negotiated>,
    /// The last `Basic` sign-in on this connection, so the same header on the next
    /// request is answered without reading it again (see [`LastSignIn`]).
    last_sign_in: std::sync::Mutex<Option<LastSignIn>>,
}

/// A connection's Kerberos sign-in.
#[derive(Debug, Default)]
pub struct Negotiated {
    /// The account signed in on this connection (the principal without its realm).
    pub user: Option<String>,
    /// A context waiting for the client's next token.
    pub pending: Option<Box<libgssapi::context::ServerCtx>>,
}

impl ConnSignal {
    fn new() -> ConnSignal {
        ConnSignal {
            started: Instant::now(),
            phase: AtomicU8::new(PHASE_IDLE),
            idle_since_ms: AtomicU64::new(0),
            close: AtomicBool::new(false),
            negotiated: std::sync::Mutex::new(Negotiated::default()),
            last_sign_in: std::sync::Mutex::new(None),
        }
    }

    /// This connection's last `Basic` sign-in.
    pub(super) fn last_sign_in(&self) -> &std::sync::Mutex<Option<LastSignIn>> {
        &self.last_sign_in
    }

    /// This connection's Kerberos sign-in.
    pub fn negotiated(&self) -> &std::sync::Mutex<Negotiated> {
        &self.negotiated
    }

    /// The response has been sent: the connection is idle until the next head.
    pub fn response_done(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms, Ordering::Relaxed);
        self.phase.store(PHASE_IDLE, Ordering::Release);
    }

    /// Whether the handler must close the connection after this response (the guard
    /// stopped following the request stream).
    pub fn must_close(&self) -> bool {
        self.close.load(Ordering::Relaxed)
    }

    fn idle_since(&self) -> Instant {
        self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Head larger than the limit, or too many header fields.
    TooLarge,
    /// Request target longer than the limit.
    UriTooLong,
    /// Malformed, or ambiguous framing.
    Bad(&'static str),
}

impl HeadError {
    fn response(self) -> &'static [u8] {
        match self {
            HeadError::TooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            HeadError::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            HeadError::Bad(_) => b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        }
    }
}

/// How the bytes after a validated head are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (0 when absent).
    Length(u64),
    /// Chunked body: its framing is followed to find where it ends.
    Chunked,
    /// `CONNECT` or `Upgrade`: raw bytes follow if the request succeeds.
    Passthrough,
}

/// Validates one complete request head (`head` ends with the blank line).
pub fn validate_head(head: &[u8], limits: &ConnLimits) -> Result<Framing, HeadError> {
    if head.len() > limits.head_bytes {
        return Err(HeadError::TooLarge);
    }
    // Header slots on the stack for the usual limit (no allocation per request), on
    // the heap for a larger configured one; uninitialised either way.
    const ON_STACK: usize = 128;
    let mut stack = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; ON_STACK];
    let mut heap = Vec::new();
    let slots: &mut [std::mem::MaybeUninit<httparse::Header<'_>>] = if limits.headers <= ON_STACK {
        &mut stack[..limits.headers]
    } else {
        heap.resize_with(limits.headers, std::mem::MaybeUninit::uninit);
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Bad("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Bad("malformed request head")),
    }
    if req.path.is_some_and(|p| p.len() > limits.uri_bytes) {
        return Err(HeadError::UriTooLong);
    }
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut upgrade = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HeadError::Bad("more than one Content-Length"));
            }
            let text =
                std::str::from_utf8(h.value).map_err(|_| HeadError::Bad("bad Content-Length"))?;
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 18 {
                return Err(HeadError::Bad("bad Content-Length"));
            }
            content_length = Some(
                text.parse()
                    .map_err(|_| HeadError::Bad("bad Content-Length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only exactly `chunked` is unambiguous; `chunked, chunked`, `xchunked`,
            // `chunked;x`, `identity` are the stuff of request smuggling.
            if transfer_encoding || !h.value.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Bad(
                    "Transfer-Encoding other than a single \"chunked\"",
                ));
            }
            transfer_encoding = true;
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if hosts > 1 {
        return Err(HeadError::Bad("more than one Host"));
    }
    if transfer_encoding && content_length.is_some() {
        return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
    }
    if transfer_encoding && req.version == Some(0) {
        return Err(HeadError::Bad("Transfer-Encoding in HTTP/1.0"));
    }
    if req.method == Some("CONNECT") || upgrade {
        return Ok(Framing::Passthrough);
    }
    if transfer_encoding {
        return Ok(Framing::Chunked);
    }
    Ok(Framing::Length(content_length.unwrap_or(0)))
}

/// What the guard expects next in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Head,
    Body(u64),
    Chunked(Chunk),
    Passthrough,
}

/// Where a chunked body's scanner is (RFC 9112 §7.1). It only follows the framing, to
/// find where the body ends and to refuse a malformed one; hyper decodes the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` so far, `value` so far.
    Size { digits: u8, value: u64 },
    /// After the size: extensions up to CR.
    Extension { value: u64 },
    /// Expecting LF after the size line's CR.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { left: u64 },
    /// Expecting CR after data.
    DataCr,
    /// Expecting LF after data.
    DataLf,
    /// In the trailer section: at the start of a line (`true`) or inside one.
    Trailer { line_start: bool },
    /// Expecting LF after a trailer line's CR.
    TrailerLf { empty_line: bool },
}

/// What one byte does to a chunked body's framing.
enum ChunkStep {
    Continue(Chunk),
    End,
    Bad,
}

fn chunk_step(state: Chunk, b: u8) -> ChunkStep {
    use Chunk::*;
    use ChunkStep::{Bad, Continue, End};
    match state {
        Size { digits, value } => match (b as char).to_digit(16) {
            Some(d) if digits < 15 => Continue(Size {
                digits: digits + 1,
                value: value * 16 + u64::from(d),
            }),
            Some(_) => Bad,
            None if digits == 0 => Bad,
            None => match b {
                b'\r' => Continue(SizeLf { value }),
                b';' | b' ' | b'\t' => Continue(Extension { value }),
                _ => Bad,
            },
        },
        Extension { value } => match b {
            b'\r' => Continue(SizeLf { value }),
            b'\n' => Bad,
            _ => Continue(Extension { value }),
        },
        SizeLf { value } => match b {
            b'\n' if value == 0 => Continue(Trailer { line_start: true }),
            b'\n' => Continue(Data { left: value }),
            _ => Bad,
        },
        Data { left } => {
            if left > 1 {
                Continue(Data { left: left - 1 })
            } else {
                Continue(DataCr)
            }
        }
        DataCr => {
            if b == b'\r' {
                Continue(DataLf)
            } else {
                Bad
            }
        }
        DataLf => {
            if b == b'\n' {
                Continue(Size {
                    digits: 0,
                    value: 0,
                })
            } else {
                Bad
            }
        }
        Trailer { line_start } => match b {
            b'\r' => Continue(TrailerLf {
                empty_line: line_start,
            }),
            b'\n' => Bad,
            _ => Continue(Trailer { line_start: false }),
        },
        TrailerLf { empty_line } => match b {
            b'\n' if empty_line => End,
            b'\n' => Continue(Trailer { line_start: true }),
            _ => Bad,
        },
    }
}

/// Which time limit fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Idle keep-alive.
    Idle,
    /// Head not received in time (`408` sent).
    Head,
    /// Request body stalled.
    Body,
    /// Client not reading the response.
    Write,
}

/// The client socket, guarded. See the module documentation.
pub struct GuardedIo {
    stream: TcpStream,
    limits: ConnLimits,
    signal: Arc<ConnSignal>,
    expect: Expect,
    /// Bytes of a head not yet complete.
    head: Vec<u8>,
    head_started: Option<Instant>,
    /// Validated bytes waiting for hyper.
    ready: Vec<u8>,
    ready_pos: usize,
    last_read: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_stalled_since: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    /// Reused read buffer (allocated once per connection, not zeroed per read).
    scratch: Box<[u8]>,
    /// Set when a limit closed the connection, for the caller's accounting.
    pub fired: Option<Timeout>,
    /// Set when a head was refused.
    pub refused: Option<HeadError>,
}

impl GuardedIo {
    /// Guards `stream`; returns the guard and the signal the handler uses.
    pub fn new(stream: TcpStream, limits: ConnLimits) -> (GuardedIo, Arc<ConnSignal>) {
        let signal = Arc::new(ConnSignal::new());
        let now = Instant::now();
        (
            GuardedIo {
                stream,
                limits,
                signal: signal.clone(),
                expect: Expect::Head,
                head: Vec::new(),
                head_started: None,
                ready: Vec::new(),
                ready_pos: 0,
                last_read: now,
                read_timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
                write_stalled_since: None,
                write_timer: Box::pin(tokio::time::sleep_until(now + limits.write_idle_timeout)),
                scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
                fired: None,
                refused: None,
            },
            signal,
        )
    }

    /// The deadline for the read in progress, and which limit it is; `None` while the
    /// request is with the upstream (its own timeouts apply).
    fn read_deadline(&self) -> Option<(Instant, Timeout)> {
        match self.expect {
            Expect::Passthrough => None,
            Expect::Body(_) | Expect::Chunked(_) => Some((
                self.last_read + self.limits.body_idle_timeout,
                Timeout::Body,
            )),
            Expect::Head => {
                if let Some(started) = self.head_started {
                    return Some((started + self.limits.head_timeout, Timeout::Head));
                }
                if self.signal.phase.load(Ordering::Acquire) == PHASE_IDLE {
                    Some((
                        self.signal.idle_since() + self.limits.idle_timeout,
                        Timeout::Idle,
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// Feeds freshly read bytes through the head/body tracker into `ready`.
    fn absorb(&mut self, mut data: &[u8]) -> Result<(), HeadError> {
        while !data.is_empty() {
            match self.expect {
                Expect::Passthrough => {
                    self.ready.extend_from_slice(data);
                    return Ok(());
                }
                Expect::Chunked(mut state) => {
                    // Chunk data is skipped in bulk; only the framing bytes are stepped.
                    let mut used = 0;
                    let mut end = false;
                    while used < data.len() {
                        if let Chunk::Data { left } = state {
                            let n = (left as usize).min(data.len() - used);
                            used += n;
                            state = if n as u64 == left {
                                Chunk::DataCr
                            } else {
                                Chunk::Data {
                                    left: left - n as u64,
                                }
                            };
                            continue;
                        }
                        match chunk_step(state, data[used]) {
                            ChunkStep::Continue(next) => state = next,
                            ChunkStep::End => end = true,
                            ChunkStep::Bad => return Err(HeadError::Bad("malformed chunked body")),
                        }
                        used += 1;
                        if end {
                            break;
                        }
                    }
                    self.ready.extend_from_slice(&data[..used]);
                    data = &data[used..];
                    self.expect = if end {
                        Expect::Head
                    } else {
                        Expect::Chunked(state)
                    };
                }
                Expect::Body(left) => {
                    let n = (left as usize).min(data.len());
                    self.ready.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    let left = left - n as u64;
                    self.expect = if left == 0 {
                        Expect::Head
                    } else {
                        Expect::Body(left)
                    };
                }
                Expect::Head => {
                    // Blank lines before a request are allowed (RFC 9112 §2.2).
                    if self.head.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        self.ready.extend_from_slice(&data[..skip]);
                        data = &data[skip..];
                        if data.is_empty() {
                            return Ok(());
                        }
                        self.head_started = Some(Instant::now());
                    }
                    // The usual case: a whole head in one read, nothing held back.
                    // It is checked where it lies, with no copy into `head`.
                    if self.head.is_empty() {
                        let Some(end) = find_head_end(data) else {
                            self.head.extend_from_slice(data);
                            if self.head.len() > self.limits.head_bytes {
                                return Err(HeadError::TooLarge);
                            }
                            return Ok(());
                        };
                        self.end_head(&data[..end])?;
                        data = &data[end..];
                        continue;
                    }
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    // Look for the end of the head, starting a little before the new bytes.
                    let from = before.saturating_sub(3);
                    let Some(end) = find_head_end(&self.head[from..]) else {
                        if self.head.len() > self.limits.head_bytes {
                            return Err(HeadError::TooLarge);
                        }
                        return Ok(());
                    };
                    // The end lies in the new bytes (the old ones held none), so what
                    // follows it is the rest of `data`.
                    let end = from + end;
                    let mut head = std::mem::take(&mut self.head);
                    let done = self.end_head(&head[..end]);
                    head.clear();
                    self.head = head;
                    done?;
                    data = &data[end - before..];
                }
            }
        }
        Ok(())
    }

    /// A complete head (ending with its blank line): validated, passed on, and its
    /// framing decides what the following bytes are.
    fn end_head(&mut self, head: &[u8]) -> Result<(), HeadError> {
        let framing = validate_head(head, &self.limits)?;
        self.ready.extend_from_slice(head);
        self.head_started = None;
        self.signal.phase.store(PHASE_REQUEST, Ordering::Release);
        self.expect = match framing {
            Framing::Length(0) => Expect::Head,
            Framing::Length(n) => Expect::Body(n),
            Framing::Chunked => Expect::Chunked(Chunk::Size {
                digits: 0,
                value: 0,
            }),
            Framing::Passthrough => {
                self.signal.close.store(true, Ordering::Relaxed);
                Expect::Passthrough
            }
        };
        Ok(())
    }
}

/// Where the head's blank line ends, if `buf` holds it. Heads have a few short lines,
/// so this visits the line ends (memchr) rather than every byte.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf)
        .find(|&i| i >= 3 && &buf[i - 3..i] == b"\r\n\r")
        .map(|i| i + 1)
}

impl Read for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_pos < this.ready.len() {
                let avail = &this.ready[this.ready_pos..];
                let n = avail.len().min(buf.remaining());
                buf.put_slice(&avail[..n]);
                this.ready_pos += n;
                if this.ready_pos == this.ready.len() {
                    this.ready.clear();
                    this.ready_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut scratch = std::mem::take(&mut this.scratch);
            let mut rb = ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut this.stream).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            let was_ready = polled.is_ready();
            let result = match polled {
                Poll::Ready(Ok(())) if n == 0 => {
                    // End of stream (a client gone mid-head has nothing to answer).
                    this.head.clear();
                    Some(Ok(()))
                }
                Poll::Ready(Ok(())) => {
                    this.last_read = Instant::now();
                    match this.absorb(&scratch[..n]) {
                        Ok(()) => None,
                        Err(e) => {
                            this.refused = Some(e);
                            // Best effort: a live connection has room for a few bytes;
                            // if not, closing says enough.
                            let _ = this.stream.try_write(e.response());
                            Some(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "request head refused",
                            )))
                        }
                    }
                }
                Poll::Ready(Err(e)) => Some(Err(e)),
                Poll::Pending => None,
            };
            this.scratch = scratch;
            if let Some(r) = result {
                return Poll::Ready(r);
            }
            if was_ready {
                continue;
            }
            let Some((deadline, which)) = this.read_deadline() else {
                return Poll::Pending;
            };
            if this.read_timer.deadline() != deadline {
                this.read_timer.as_mut().reset(deadline);
            }
            match this.read_timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    // Deadlines move (the phase may have changed): re-check.
                    if this
                        .read_deadline()
                        .is_some_and(|(d, _)| d > Instant::now())
                    {
                        continue;
                    }
                    this.fired = Some(which);
                    if which == Timeout::Head {
                        let _ = this.stream.try_write(
                                b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                            );
                    }
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client timed out",
                    )));
                }
            }
        }
    }
}

impl GuardedIo {
    fn check_write_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let now = Instant::now();
        let since = *self.write_stalled_since.get_or_insert(now);
        let deadline = since + self.limits.write_idle_timeout;
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.fired = Some(Timeout::Write);
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Write for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.write_stalled_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => match this.check_write_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_flush(cx) {
            Poll::Ready(r) => {
                this.write_stalled_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => match this.check_write_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.write_stalled_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => match this.check_write_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            head_bytes: 1024,
            headers: 8,
            uri_bytes: 64,
            head_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            body_idle_timeout: Duration::from_secs(1),
            write_idle_timeout: Duration::from_secs(1),
        }
    }

    fn scan(body: &[u8]) -> Result<usize, ()> {
        let mut state = Chunk::Size {
            digits: 0,
            value: 0,
        };
        for (i, &b) in body.iter().enumerate() {
            match chunk_step(state, b) {
                ChunkStep::Continue(next) => state = next,
                ChunkStep::End => return Ok(i + 1),
                ChunkStep::Bad => return Err(()),
            }
        }
        Err(())
    }

    #[test]
    fn chunked_framing_table() {
        let rows: &[(&[u8], Result<usize, ()>)] = &[
            (b"0\r\n\r\n", Ok(5)),
            (b"5\r\nhello\r\n0\r\n\r\nNEXT", Ok(15)),
            (
                b"A;ext=1\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n",
                Ok(40),
            ),
            (b"zz\r\nbad\r\n0\r\n\r\n", Err(())),
            (b"5\r\nhelloX\r\n0\r\n\r\n", Err(())),
            (b"5\nhello\r\n0\r\n\r\n", Err(())),
            (b"\r\n", Err(())),
            (b"10000000000000000\r\n", Err(())),
            (b"-1\r\n", Err(())),
        ];
        for (body, want) in rows {
            assert_eq!(scan(body), *want, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn head_validation_table() {
        let l = limits();
        let get = "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n";
        let many: String = (0..9).map(|i| format!("X-{i}: y\r\n")).collect();
        let rows: Vec<(String, Result<Framing, HeadError>)> = vec![
            (format!("{get}\r\n"), Ok(Framing::Length(0))),
            (
                format!("{get}Content-Length: 5\r\n\r\n"),
                Ok(Framing::Length(5)),
            ),
            (
                format!("{get}Transfer-Encoding: chunked\r\n\r\n"),
                Ok(Framing::Chunked),
            ),
            (
                format!("{get}transfer-encoding: CHUNKED\r\n\r\n"),
                Ok(Framing::Chunked),
            ),
            (
                "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n".into(),
                Ok(Framing::Passthrough),
            ),
            (
                format!("{get}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
                Ok(Framing::Passthrough),
            ),
            (
                format!("{get}Content-Length: 5\r\nContent-Length: 5\r\n\r\n"),
                Err(HeadError::Bad("more than one Content-Length")),
            ),
            (
                format!("{get}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"),
                Err(HeadError::Bad("more than one Content-Length")),
            ),
            (
                format!("{get}Content-Length: 5, 5\r\n\r\n"),
                Err(HeadError::Bad("bad Content-Length")),
            ),
            (
                format!("{get}Content-Length: -1\r\n\r\n"),
                Err(HeadError::Bad("bad Content-Length")),
            ),
            (
                format!("{get}Content-Length: +5\r\n\r\n"),
                Err(HeadError::Bad("bad Content-Length")),
            ),
            (
                format!("{get}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
                Err(HeadError::Bad("both Content-Length and Transfer-Encoding")),
            ),
            (
                format!("{get}Transfer-Encoding: chunked, chunked\r\n\r\n"),
                Err(HeadError::Bad(
                    "Transfer-Encoding other than a single \"chunked\"",
                )),
            ),
            (
                format!("{get}Transfer-Encoding: xchunked\r\n\r\n"),
                Err(HeadError::Bad(
                    "Transfer-Encoding other than a single \"chunked\"",
                )),
            ),
            (
                format!("{get}Transfer-Encoding: gzip, chunked\r\n\r\n"),
                Err(HeadError::Bad(
                    "Transfer-Encoding other than a single \"chunked\"",
                )),
            ),
            (
                format!("{get}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
                Err(HeadError::Bad(
                    "Transfer-Encoding other than a single \"chunked\"",
                )),
            ),
            (
                format!("{get}Transfer-Encoding : chunked\r\n\r\n"),
                Err(HeadError::Bad("malformed request head")),
            ),
            (
                format!("{get}Host: b.example\r\n\r\n"),
                Err(HeadError::Bad("more than one Host")),
            ),
            (format!("{get}{many}\r\n"), Err(HeadError::TooLarge)),
            (
                format!("GET http://a.example/{} HTTP/1.1\r\n\r\n", "x".repeat(100)),
                Err(HeadError::UriTooLong),
            ),
            (
                format!("{get}X: {}\r\n\r\n", "y".repeat(2000)),
                Err(HeadError::TooLarge),
            ),
            (
                "GET http://a.example/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                Err(HeadError::Bad("Transfer-Encoding in HTTP/1.0")),
            ),
            (
                "NOT A REQUEST\r\n\r\n".into(),
                Err(HeadError::Bad("malformed request head")),
            ),
        ];
        for (head, want) in rows {
            assert_eq!(validate_head(head.as_bytes(), &l), want, "{head:?}");
        }
    }

    /// Feeds `input` to a fresh guard in pieces cut at `cuts`; returns what it passed
    /// on, or the first refusal.
    async fn absorb_in_pieces(input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, HeadError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut io, _signal) = GuardedIo::new(client, limits());
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            io.absorb(&input[at..cut])?;
            at = cut;
        }
        assert_eq!(io.expect, Expect::Head, "ends between requests");
        assert!(io.head.is_empty());
        Ok(io.ready)
    }

    #[test]
    fn the_head_ends_after_its_first_blank_line() {
        for (buf, want) in [
            (&b""[..], None),
            (b"\r\n\r\n", Some(4)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Some(27)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\r\n\r\n", Some(27)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"GET / HTTP/1.1\n\nHost: a\r\n\r", None),
            (b"\n\r\n", None),
            (b"x\r\r\n\r\n", Some(6)),
        ] {
            assert_eq!(
                find_head_end(buf),
                want,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[tokio::test]
    async fn heads_split_anywhere_pass_through_whole() {
        // Blank lines, a body by length, a chunked body and a bare GET, pipelined.
        let stream: &[u8] = b"\r\nPOST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello\
GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
GET http://a.example/y HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(absorb_in_pieces(stream, &[]).await.unwrap(), stream);
        for cut in 0..=stream.len() {
            let got = absorb_in_pieces(stream, &[cut]).await.unwrap();
            assert_eq!(got, stream, "one cut at {cut}");
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(absorb_in_pieces(stream, &every).await.unwrap(), stream);

        // A second head that breaks a rule is refused however the bytes arrive.
        let bad: &[u8] = b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n\
GET http://a.example/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        for cut in 0..=bad.len() {
            assert_eq!(
                absorb_in_pieces(bad, &[cut]).await,
                Err(HeadError::Bad("more than one Host")),
                "cut at {cut}"
            );
        }
        // A head over the limit with no end in sight is refused before it ends.
        let huge = format!("GET http://a.example/ HTTP/1.1\r\nX: {}", "y".repeat(2000));
        for cut in [0, 10, 1000] {
            assert_eq!(
                absorb_in_pieces(huge.as_bytes(), &[cut]).await,
                Err(HeadError::TooLarge)
            );
        }
    }

    /// Property tests of the guard as a parser of untrusted bytes: request streams, valid
    /// and broken, cut into reads at arbitrary places.
    mod streams {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::{select, Index};

        std::thread_local! {
            /// `GuardedIo::new` needs a runtime (a socket, timers); `absorb` itself does no I/O.
            static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a test runtime");
        }

        /// What the guard did with a stream: what it passed on, what it holds of a head
        /// not yet complete, and its refusal if it refused.
        #[derive(Debug)]
        struct Fed {
            ready: Vec<u8>,
            head: Vec<u8>,
            result: Result<(), HeadError>,
        }

        /// Feeds `input` to a fresh guard in reads cut at `cuts` (sorted), stopping at a
        /// refusal as the connection does.
        fn feed(input: &[u8], cuts: &[usize]) -> Fed {
            RUNTIME.with(|runtime| {
                let _in = runtime.enter();
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let client = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                    .expect("connect");
                client.set_nonblocking(true).expect("non-blocking");
                let stream = TcpStream::from_std(client).expect("registers");
                let (mut io, _signal) = GuardedIo::new(stream, limits());
                let mut at = 0;
                let mut result = Ok(());
                for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
                    if let Err(e) = io.absorb(&input[at..cut]) {
                        result = Err(e);
                        break;
                    }
                    at = cut;
                }
                Fed {
                    ready: io.ready,
                    head: io.head,
                    result,
                }
            })
        }

        /// The ways to cut `len` bytes tried for every stream: none, every byte, and the
        /// random ones.
        fn cut_sets(len: usize, random: &[Vec<Index>]) -> Vec<Vec<usize>> {
            let mut sets = vec![Vec::new(), (1..len).collect()];
            for picks in random {
                let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
                cuts.sort_unstable();
                cuts.dedup();
                sets.push(cuts);
            }
            sets
        }

        fn random_cuts() -> impl Strategy<Value = Vec<Vec<Index>>> {
            prop::collection::vec(prop::collection::vec(any::<Index>(), 1..12), 1..4)
        }

        const HOST: &str = "Host: a.example\r\n";
        const LENGTH_NAMES: [&str; 3] = ["Content-Length", "content-length", "CONTENT-LENGTH"];
        const CHUNKED: [(&str, &str); 3] = [
            ("Transfer-Encoding", "chunked"),
            ("transfer-encoding", "Chunked"),
            ("TRANSFER-ENCODING", "CHUNKED"),
        ];

        fn path() -> impl Strategy<Value = String> {
            "/[a-z0-9?=&]{0,12}"
        }

        fn body(min: usize) -> impl Strategy<Value = Vec<u8>> {
            // Any bytes: a body may hold what looks like a head, or its blank line.
            prop::collection::vec(any::<u8>(), min..40)
        }

        /// A chunked body: its chunks (size in either case of hex, an extension or not),
        /// the last chunk, a trailer or not.
        fn chunks() -> impl Strategy<Value = Vec<u8>> {
            (
                prop::collection::vec((body(1), any::<bool>(), any::<bool>()), 0..4),
                any::<bool>(),
            )
                .prop_map(|(chunks, trailer)| {
                    let mut out = Vec::new();
                    for (data, upper, ext) in chunks {
                        let size = if upper {
                            format!("{:X}", data.len())
                        } else {
                            format!("{:x}", data.len())
                        };
                        out.extend_from_slice(size.as_bytes());
                        if ext {
                            out.extend_from_slice(b";ext=1");
                        }
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n");
                    if trailer {
                        out.extend_from_slice(b"X-Trailer: y\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                    out
                })
        }

        /// One well-framed piece of a request stream.
        fn valid_part() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                // Blank lines before a request (RFC 9112 §2.2).
                (1..3usize).prop_map(|n| b"\r\n".repeat(n)),
                (
                    select(&["GET", "HEAD", "DELETE", "OPTIONS"][..]),
                    path(),
                    0..4usize
                )
                    .prop_map(|(method, path, extra)| {
                        let mut head =
                            format!("{method} http://a.example{path} HTTP/1.1\r\n{HOST}");
                        for i in 0..extra {
                            head.push_str(&format!("X-{i}: v{i}\r\n"));
                        }
                        head.push_str("\r\n");
                        head.into_bytes()
                    }),
                (select(&LENGTH_NAMES[..]), path(), body(0)).prop_map(|(name, path, body)| {
                    let mut out = format!(
                        "POST http://a.example{path} HTTP/1.1\r\n{HOST}{name}: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(&body);
                    out
                }),
                (select(&CHUNKED[..]), path(), chunks()).prop_map(|((name, value), path, body)| {
                    let mut out = format!(
                        "POST http://a.example{path} HTTP/1.1\r\n{HOST}{name}: {value}\r\n\r\n"
                    )
                    .into_bytes();
                    out.extend_from_slice(&body);
                    out
                }),
            ]
        }

        fn valid_stream() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(valid_part(), 0..6).prop_map(|parts| parts.concat())
        }

        /// A piece the guard must refuse: its bytes, and how many of them may be passed on
        /// before the refusal (at least, at most). A refused head passes none of itself;
        /// a malformed chunked body passes its head and may pass what precedes the first
        /// bad byte, read before it.
        fn bad_part() -> impl Strategy<Value = (Vec<u8>, usize, usize)> {
            let head = |extra: String| {
                let head =
                    format!("POST http://a.example/ HTTP/1.1\r\n{HOST}{extra}\r\n").into_bytes();
                (head, 0, 0)
            };
            let heads = prop_oneof![
                // Framing that two parsers could read two ways: request smuggling.
                (select(&LENGTH_NAMES[..]), 0..1000u32)
                    .prop_map(move |(name, n)| format!("{name}: {n}\r\n{name}: {n}\r\n")),
                (0..1000u32, 1..1000u32).prop_map(|(n, d)| format!(
                    "Content-Length: {n}\r\nContent-Length: {}\r\n",
                    n + d
                )),
                select(
                    &[
                        "5, 5",
                        "+5",
                        "-1",
                        "0x5",
                        "5 5",
                        "",
                        "1e3",
                        "1234567890123456789"
                    ][..]
                )
                .prop_map(|v| format!("Content-Length: {v}\r\n")),
                (0..1000u32, any::<bool>()).prop_map(|(n, te_first)| if te_first {
                    format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n")
                } else {
                    format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n")
                }),
                select(
                    &[
                        "chunked, chunked",
                        "xchunked",
                        "gzip, chunked",
                        "chunked;q=1",
                        "identity",
                        "chunked,",
                        ",chunked",
                        "chunk",
                        "chunked\tgzip",
                    ][..]
                )
                .prop_map(|v| format!("Transfer-Encoding: {v}\r\n")),
                Just("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".to_string()),
                select(
                    &[
                        "Transfer-Encoding ",
                        "Transfer-Encoding\t",
                        " Transfer-Encoding"
                    ][..]
                )
                .prop_map(|name| format!("{name}: chunked\r\n")),
                Just("Host: b.example\r\n".to_string()),
                // Over the limits (8 fields, 1 KiB).
                Just((0..8).map(|i| format!("X-{i}: y\r\n")).collect::<String>()),
                (1030..1200usize).prop_map(|n| format!("X-Big: {}\r\n", "y".repeat(n))),
            ]
            .prop_map(head);
            let other_heads = prop_oneof![
                Just(
                    b"POST http://a.example/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_vec()
                ),
                (65..200usize).prop_map(|n| format!(
                    "GET http://a.example/{} HTTP/1.1\r\n{HOST}\r\n",
                    "x".repeat(n)
                )
                .into_bytes()),
            ]
            .prop_map(|head| (head, 0, 0));
            // (the bad line, where its first bad byte is)
            const BAD_CHUNK: &[(&[u8], usize)] = &[
                (b"zz\r\n", 0),
                (b"-1\r\n", 0),
                (b"+5\r\n", 0),
                (b" 5\r\n", 0),
                (b"\r\n", 0),
                (b";x\r\n", 0),
                (b"0x5\r\n", 1),
                (b"1000000000000000\r\n", 15),
                (b"5\nhello\r\n", 1),
                (b"5;a\nhello\r\n", 3),
                (b"3\r\nabc\n", 6),
                (b"5\r\nhelloX", 8),
                (b"0\r\nX: y\n", 7),
                (b"0\r\n\n", 3),
            ];
            let chunked_bodies =
                (select(BAD_CHUNK), chunks()).prop_map(|((line, bad_at), valid)| {
                    let mut out = format!(
                    "POST http://a.example/ HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n"
                )
                    .into_bytes();
                    let head_len = out.len();
                    // Valid chunks first (without the last chunk and its blank line).
                    let chunks_before = &valid[..valid.len() - 2];
                    let chunks_before = match chunks_before.strip_suffix(b"X-Trailer: y\r\n") {
                        Some(before) => before,
                        None => chunks_before,
                    };
                    let chunks_before = &chunks_before[..chunks_before.len() - 3];
                    out.extend_from_slice(chunks_before);
                    let at_most = out.len() + bad_at;
                    out.extend_from_slice(line);
                    (out, head_len, at_most)
                });
            prop_oneof![heads, other_heads, chunked_bodies]
        }

        /// A stream broken at random: bytes flipped, inserted, deleted or repeated.
        fn mutated_stream() -> impl Strategy<Value = Vec<u8>> {
            let edit = prop_oneof![
                (any::<Index>(), any::<u8>()).prop_map(|(i, b)| (0u8, i, vec![b], 0usize)),
                (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
                    .prop_map(|(i, bytes)| (1, i, bytes, 0)),
                (any::<Index>(), 1..8usize).prop_map(|(i, n)| (2, i, Vec::new(), n)),
                (any::<Index>(), 1..32usize).prop_map(|(i, n)| (3, i, Vec::new(), n)),
            ];
            const TOKENS: &[&[u8]] = &[
                b"\r\n",
                b"GET http://a.example/ HTTP/1.1\r\n",
                b"CONNECT a.example:443 HTTP/1.1\r\n",
                b"Host: a.example\r\n",
                b"Content-Length: 5\r\n",
                b"Content-Length: 0\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"5\r\nhello\r\n",
                b"0\r\n\r\n",
                b"hello",
                b"\r\n\r\n",
            ];
            let tokens = prop::collection::vec(select(TOKENS), 0..16).prop_map(|t| t.concat());
            prop_oneof![
                (valid_stream(), prop::collection::vec(edit, 1..4)).prop_map(|(mut s, edits)| {
                    for (kind, at, bytes, n) in edits {
                        let i = at.index(s.len() + 1);
                        match kind {
                            0 if i < s.len() => s[i] = bytes[0],
                            1 => {
                                s.splice(i..i, bytes);
                            }
                            2 => {
                                s.drain(i..(i + n).min(s.len()));
                            }
                            3 => {
                                let piece = s[i..(i + n).min(s.len())].to_vec();
                                s.splice(i..i, piece);
                            }
                            _ => {}
                        }
                    }
                    s
                }),
                tokens,
                prop::collection::vec(any::<u8>(), 0..200),
            ]
        }

        fn is_prefix(short: &[u8], long: &[u8]) -> bool {
            long.starts_with(short)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Well-framed pipelined requests pass through byte for byte however they
            /// are cut into reads.
            #[test]
            fn valid_streams_pass_through_whole(stream in valid_stream(), random in random_cuts()) {
                for cuts in cut_sets(stream.len(), &random) {
                    let fed = feed(&stream, &cuts);
                    prop_assert_eq!(&fed.result, &Ok(()), "cuts {:?}", cuts);
                    prop_assert!(
                        fed.ready == stream,
                        "cuts {:?}: passed {:?}",
                        cuts,
                        String::from_utf8_lossy(&fed.ready)
                    );
                    prop_assert!(fed.head.is_empty());
                }
            }

            /// A request the guard must refuse is refused at every cut, for the same
            /// reason, and nothing of it (nor after it) is passed on; what came before it
            /// is.
            #[test]
            fn refused_requests_pass_nothing_on(
                before in valid_stream(),
                (bad, at_least, at_most) in bad_part(),
                after in prop_oneof![valid_stream(), body(0)],
                random in random_cuts(),
            ) {
                let stream = [&before[..], &bad, &after].concat();
                let whole = feed(&stream, &[]);
                prop_assert!(whole.result.is_err(), "accepted {:?}", String::from_utf8_lossy(&bad));
                for cuts in cut_sets(stream.len(), &random) {
                    let fed = feed(&stream, &cuts);
                    prop_assert_eq!(&fed.result, &whole.result, "cuts {:?}", cuts);
                    prop_assert!(is_prefix(&fed.ready, &stream));
                    let (least, most) = (before.len() + at_least, before.len() + at_most);
                    prop_assert!(
                        (least..=most).contains(&fed.ready.len()),
                        "cuts {:?}: passed {} bytes of {:?}, want {}..={}",
                        cuts,
                        fed.ready.len(),
                        String::from_utf8_lossy(&stream),
                        least,
                        most
                    );
                }
            }

            /// Any bytes at all: the guard never panics, and how the bytes are cut into
            /// reads changes nothing — the same refusal or none, the same bytes passed on
            /// and held (a refused chunked body may pass more of what preceded its bad
            /// byte when that came in an earlier read, never anything after it).
            #[test]
            fn any_bytes_cut_anywhere_agree(stream in mutated_stream(), random in random_cuts()) {
                let whole = feed(&stream, &[]);
                let bytewise = feed(&stream, &(1..stream.len()).collect::<Vec<_>>());
                prop_assert_eq!(&bytewise.result, &whole.result);
                for cuts in cut_sets(stream.len(), &random) {
                    let fed = feed(&stream, &cuts);
                    prop_assert_eq!(&fed.result, &whole.result, "cuts {:?}", cuts);
                    match fed.result {
                        Ok(()) => {
                            prop_assert_eq!(&fed.ready, &whole.ready, "cuts {:?}", cuts);
                            prop_assert_eq!(&fed.head, &whole.head, "cuts {:?}", cuts);
                            prop_assert!([&fed.ready[..], &fed.head].concat() == stream);
                        }
                        Err(HeadError::Bad("malformed chunked body")) => {
                            prop_assert!(is_prefix(&whole.ready, &fed.ready), "cuts {:?}", cuts);
                            prop_assert!(is_prefix(&fed.ready, &bytewise.ready), "cuts {:?}", cuts);
                            prop_assert!(is_prefix(&bytewise.ready, &stream));
                        }
                        Err(_) => {
                            prop_assert_eq!(&fed.ready, &whole.ready, "cuts {:?}", cuts);
                            prop_assert!(is_prefix(&fed.ready, &stream));
                        }
                    }
                }
            }
        }
    }
}
