//! A fault-injecting HTTP/1.1 proxy, put between kiln and a real registry
//! (or any HTTP server) to make the network fail in chosen ways.
//!
//! Each request the proxy reads is shown to a rule, which answers with a
//! [`Fault`]: pass it on, answer a status without asking the registry, drop
//! the connection, or forward it and cut the request or the response body
//! short. Every request, the fault applied and what came of it are logged.
//!
//! It speaks to clients with keep-alive, and to the upstream server with
//! one fresh `Connection: close` connection per request. The `Host` header
//! goes on as the client sent it, so the registry's `Location` URLs point
//! back at the proxy. It also works as a forward proxy: absolute-form
//! targets (`GET http://host:port/v2/...`, as clients send them with
//! `HTTP_PROXY`) and `CONNECT host:port` tunnels (`HTTPS_PROXY`) all go to
//! the one upstream, whatever host they name. Bodies are streamed, never
//! held whole. Standard library only.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The text in the error body of every status the proxy makes up, so a
/// test can find it in kiln's error message.
pub const FAULT_MESSAGE: &str = "injected by the fault proxy";

/// How long the proxy waits on a silent upstream or client.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Largest request or response head the proxy reads.
const MAX_HEAD: usize = 64 << 10;

/// A request head as the client sent it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Order of arrival at the proxy, from 0.
    pub n: usize,
    pub method: String,
    /// As sent: `/v2/x?y` (origin form), `http://host/v2/x` (absolute
    /// form, through `HTTP_PROXY`) or `host:port` (`CONNECT`).
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of that name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The path, without scheme, host or query; for `CONNECT`, the
    /// `host:port` it asks for.
    pub fn path(&self) -> &str {
        if self.method == "CONNECT" {
            return &self.target;
        }
        let t = match self.target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => &self.target,
        };
        t.split(['?', '#']).next().unwrap_or(t)
    }

    /// The query string, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Sent in absolute form (`GET http://host/...`), as to a forward proxy.
    pub fn is_absolute(&self) -> bool {
        self.target.starts_with("http://") || self.target.starts_with("https://")
    }

    /// A body upload to a started blob upload: `PATCH` or `PUT` to
    /// `/v2/<repo>/blobs/uploads/<id>`.
    pub fn is_upload(&self) -> bool {
        (self.method == "PATCH" || self.method == "PUT")
            && self
                .path()
                .split_once("/blobs/uploads/")
                .is_some_and(|(_, id)| !id.is_empty())
    }

    /// `Content-Length`, when the client sent one.
    pub fn content_length(&self) -> Option<u64> {
        self.header("Content-Length").and_then(|v| v.parse().ok())
    }

    fn keep_alive(&self) -> bool {
        let conn = self.header("Connection").unwrap_or("").to_ascii_lowercase();
        if self.version == "HTTP/1.0" {
            conn.contains("keep-alive")
        } else {
            !conn.contains("close")
        }
    }
}

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward it, and its answer, untouched.
    Pass,
    /// Answer this status with a small registry-style JSON error body
    /// (naming [`FAULT_MESSAGE`]) after reading the request body; nothing
    /// is forwarded.
    Status(u16),
    /// Answer this status with these extra headers and this body (for
    /// `429` with `Retry-After`); nothing is forwarded.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Close the connection without answering, right after reading the
    /// request head (the body, if any, is not read).
    Drop,
    /// Forward the head and only the first N bytes of the body as sent
    /// (chunk framing included), then end the upstream request there: the
    /// server keeps what it got. The proxy waits until the server is done
    /// with it (so a retry cannot overtake it), then closes the client's
    /// connection without an answer. A body of N bytes or fewer passes
    /// whole.
    CutRequest(usize),
    /// Forward, and pass the response head intact (its `Content-Length`
    /// as the server said) but only the first N bytes of the body as sent
    /// (chunk framing included), then close. A shorter body passes whole.
    CutResponse(usize),
    /// Forward, but after the first N bytes of the response body stop for
    /// this long, then send the rest (a slow network, for watching a
    /// transfer's progress).
    Stall(usize, Duration),
}

impl Fault {
    /// `status` with `Retry-After: secs`.
    pub fn retry_after(status: u16, secs: u64) -> Fault {
        Fault::Reply {
            status,
            headers: vec![("Retry-After".into(), secs.to_string())],
            body: error_body(status),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Pass => write!(f, "pass"),
            Fault::Status(s) => write!(f, "status {s}"),
            Fault::Reply { status, .. } => write!(f, "reply {status}"),
            Fault::Drop => write!(f, "drop"),
            Fault::CutRequest(n) => write!(f, "cut-request {n}"),
            Fault::CutResponse(n) => write!(f, "cut-response {n}"),
            Fault::Stall(n, d) => write!(f, "stall {n} {d:?}"),
        }
    }
}

/// One request as the proxy handled it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub req: Request,
    pub fault: Fault,
    /// When the request head arrived.
    pub at: Instant,
    /// The status the client was answered (`None`: no answer, as with
    /// [`Fault::Drop`] and [`Fault::CutRequest`]).
    pub status: Option<u16>,
    /// The status the upstream server answered, when the request went
    /// there (also for a cut request, whose answer the client never sees).
    pub upstream: Option<u16>,
    /// Request body bytes read from the client (framing included):
    /// forwarded, or thrown away when the proxy answered itself.
    pub received: u64,
    /// Request body bytes forwarded upstream (framing included).
    pub sent: u64,
    /// Response body bytes passed to the client (framing included).
    pub returned: u64,
}

impl Entry {
    /// One line: `#n +ms METHOD target -> fault [statuses, bytes]`, with
    /// the registry's long `_state` upload tokens shortened.
    pub fn line(&self, start: Instant) -> String {
        let target = match self.req.target.split_once("_state=") {
            Some((a, b)) => {
                let rest = b.find('&').map_or("", |i| &b[i..]);
                format!("{a}_state=…{rest}")
            }
            None => self.req.target.clone(),
        };
        format!(
            "#{} +{}ms {} {target} -> {} [client {}, upstream {}, received {}, sent {}, returned {}]",
            self.req.n,
            self.at.saturating_duration_since(start).as_millis(),
            self.req.method,
            self.fault,
            self.status.map_or("-".into(), |s| s.to_string()),
            self.upstream.map_or("-".into(), |s| s.to_string()),
            self.received,
            self.sent,
            self.returned,
        )
    }
}

/// Counts events by key, for rules like "the second GET of this blob".
#[derive(Default)]
pub struct Hits(Mutex<HashMap<String, usize>>);

impl Hits {
    /// How many times `key` was seen before this call (0 the first time).
    pub fn next(&self, key: &str) -> usize {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(key.to_string()).or_insert(0);
        *c += 1;
        *c - 1
    }
}

type Rule = dyn Fn(&Request) -> Fault + Send + Sync;

struct Shared {
    upstream: String,
    rule: Box<Rule>,
    next: AtomicUsize,
    log: Mutex<Vec<Entry>>,
    /// The client connections, shut down when the proxy is dropped.
    conns: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, req: Request, fault: Fault) -> usize {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push(Entry {
            req,
            fault,
            at: Instant::now(),
            status: None,
            upstream: None,
            received: 0,
            sent: 0,
            returned: 0,
        });
        log.len() - 1
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut Entry)) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = log.get_mut(i) {
            f(e);
        }
    }
}

/// The proxy: listening on a free loopback port until dropped.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub started: Instant,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`host:port`), asking `rule` what to do with
    /// each request.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Request) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            rule: Box::new(rule),
            next: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    s.conns.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                }
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        FaultProxy {
            addr,
            started: Instant::now(),
            shared,
        }
    }

    /// A proxy that passes everything (and logs it).
    pub fn pass(upstream: &str) -> FaultProxy {
        FaultProxy::start(upstream, |_| Fault::Pass)
    }

    /// Every request so far, in order of arrival.
    pub fn log(&self) -> Vec<Entry> {
        let mut log = self
            .shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        log.sort_by_key(|e| e.req.n);
        log
    }

    /// The log, one line a request, for assertion messages.
    pub fn summary(&self) -> String {
        self.log()
            .iter()
            .map(|e| e.line(self.started))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        for c in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// One client connection: request after request until either side closes.
fn serve(shared: &Shared, client: TcpStream) {
    let _ = client.set_read_timeout(Some(TIMEOUT));
    let _ = client.set_write_timeout(Some(TIMEOUT));
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 << 10, read_half);
    let mut writer = client;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let lines = match read_head(&mut reader) {
            Ok(Some(lines)) => lines,
            _ => break,
        };
        let Some(req) = parse_request(&lines, shared.next.fetch_add(1, Ordering::SeqCst)) else {
            let _ = write_reply(&mut writer, "GET", 400, &[], &error_body(400), true);
            break;
        };
        let fault = (shared.rule)(&req);
        let i = shared.record(req.clone(), fault.clone());
        if req.method == "CONNECT" {
            connect(shared, i, &fault, reader, writer);
            return;
        }
        if !handle(shared, i, &req, &fault, &mut reader, &mut writer).unwrap_or(false) {
            break;
        }
    }
    let _ = writer.flush();
    let _ = writer.shutdown(Shutdown::Both);
}

/// Handles one request; returns whether the client connection stays open.
fn handle(
    shared: &Shared,
    i: usize,
    req: &Request,
    fault: &Fault,
    reader: &mut BufReader<TcpStream>,
    client: &mut TcpStream,
) -> io::Result<bool> {
    let framing = request_framing(req);
    let keep = req.keep_alive();
    let expects = req
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects && framing != Framing::Empty && *fault != Fault::Drop {
        // The proxy reads the body before asking upstream: it says go on
        // itself (and drops `Expect` from what it forwards).
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    match fault {
        Fault::Drop => return Ok(false),
        Fault::Status(status) => {
            let (received, _) = copy_body(reader, &mut io::sink(), framing, None)?;
            shared.update(i, |e| e.received = received);
            write_reply(
                client,
                &req.method,
                *status,
                &[],
                &error_body(*status),
                !keep,
            )?;
            shared.update(i, |e| e.status = Some(*status));
            return Ok(keep);
        }
        Fault::Reply {
            status,
            headers,
            body,
        } => {
            let (received, _) = copy_body(reader, &mut io::sink(), framing, None)?;
            shared.update(i, |e| e.received = received);
            write_reply(client, &req.method, *status, headers, body, !keep)?;
            shared.update(i, |e| e.status = Some(*status));
            return Ok(keep);
        }
        Fault::Pass | Fault::CutRequest(_) | Fault::CutResponse(_) | Fault::Stall(..) => {}
    }
    let mut up = match TcpStream::connect(&shared.upstream) {
        Ok(up) => up,
        Err(_) => {
            copy_body(reader, &mut io::sink(), framing, None)?;
            write_reply(client, &req.method, 502, &[], &error_body(502), true)?;
            shared.update(i, |e| e.status = Some(502));
            return Ok(false);
        }
    };
    up.set_read_timeout(Some(TIMEOUT))?;
    up.set_write_timeout(Some(TIMEOUT))?;
    let _ = up.set_nodelay(true);
    up.write_all(request_head(req).as_bytes())?;
    let limit = match fault {
        Fault::CutRequest(n) => Some(*n as u64),
        _ => None,
    };
    let (sent, cut) = copy_body(reader, &mut up, framing, limit)?;
    shared.update(i, |e| {
        e.received = sent;
        e.sent = sent;
    });
    if cut {
        // The server sees the body end early; wait for it to be done with
        // the request (it answers an error and closes), then hang up on
        // the client without an answer.
        let _ = up.shutdown(Shutdown::Write);
        let _ = up.set_read_timeout(Some(Duration::from_secs(10)));
        let mut answer = Vec::new();
        let _ = (&up).take(1 << 20).read_to_end(&mut answer);
        let status = std::str::from_utf8(&answer)
            .ok()
            .and_then(|a| a.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok());
        shared.update(i, |e| e.upstream = status);
        return Ok(false);
    }
    let mut upr = BufReader::with_capacity(64 << 10, up);
    let (status, head) = loop {
        let lines = read_head(&mut upr)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))?;
        let status: u16 = lines
            .first()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        if (100..200).contains(&status) && status != 101 {
            // An interim answer (100 Continue) goes on as it is.
            client.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
            continue;
        }
        break (status, lines);
    };
    shared.update(i, |e| e.upstream = Some(status));
    let headers: Vec<(String, String)> = head[1..].iter().filter_map(|l| split_header(l)).collect();
    let rframing = response_framing(&req.method, status, &headers);
    let keep = keep && rframing != Framing::Close;
    let mut out = format!("{}\r\n", head[0]);
    for (k, v) in &headers {
        if !is_hop_by_hop(k) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if !keep {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    client.write_all(out.as_bytes())?;
    shared.update(i, |e| e.status = Some(status));
    let limit = match fault {
        Fault::CutResponse(n) => Some(*n as u64),
        _ => None,
    };
    let (returned, cut) = match fault {
        Fault::Stall(n, d) => {
            let mut w = Staller {
                w: client,
                left: *n,
                pause: Some(*d),
            };
            copy_body(&mut upr, &mut w, rframing, limit)?
        }
        _ => copy_body(&mut upr, client, rframing, limit)?,
    };
    shared.update(i, |e| e.returned = returned);
    Ok(keep && !cut)
}

/// `CONNECT`: a tunnel to the upstream, or the fault instead.
fn connect(
    shared: &Shared,
    i: usize,
    fault: &Fault,
    reader: BufReader<TcpStream>,
    mut client: TcpStream,
) {
    let (up_limit, down_limit) = match fault {
        Fault::Drop => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Status(status) => {
            let _ = write_reply(
                &mut client,
                "CONNECT",
                *status,
                &[],
                &error_body(*status),
                true,
            );
            shared.update(i, |e| e.status = Some(*status));
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Reply {
            status,
            headers,
            body,
        } => {
            let _ = write_reply(&mut client, "CONNECT", *status, headers, body, true);
            shared.update(i, |e| e.status = Some(*status));
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Pass | Fault::Stall(..) => (None, None),
        Fault::CutRequest(n) => (Some(*n as u64), None),
        Fault::CutResponse(n) => (None, Some(*n as u64)),
    };
    let Ok(up) = TcpStream::connect(&shared.upstream) else {
        let _ = write_reply(&mut client, "CONNECT", 502, &[], &error_body(502), true);
        shared.update(i, |e| e.status = Some(502));
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    shared.update(i, |e| e.status = Some(200));
    let _ = client.set_read_timeout(None);
    let (Ok(up2), Ok(client2)) = (up.try_clone(), client.try_clone()) else {
        return;
    };
    let down = std::thread::spawn(move || {
        let mut r = BufReader::new(up2);
        let mut w = client2;
        splice(&mut r, &mut w, down_limit)
    });
    let mut r = reader;
    let mut w = up;
    let (sent, up_cut) = splice(&mut r, &mut w, up_limit);
    let (returned, down_cut) = down.join().unwrap_or((0, false));
    if up_cut || down_cut {
        let _ = w.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
    }
    shared.update(i, |e| {
        e.received = sent;
        e.sent = sent;
        e.returned = returned;
    });
}

/// Copies one direction of a tunnel until EOF or `limit`; on EOF passes
/// the half-close on, on a cut closes both sockets (so the other
/// direction ends too). Returns the bytes copied and whether it cut.
fn splice(r: &mut BufReader<TcpStream>, w: &mut TcpStream, limit: Option<u64>) -> (u64, bool) {
    let mut b = Budget::new(w, limit);
    let res = copy_to_eof(r, &mut b);
    let sent = b.sent;
    match res {
        Ok(true) => {
            let _ = w.shutdown(Shutdown::Both);
            let _ = r.get_ref().shutdown(Shutdown::Both);
            (sent, true)
        }
        _ => {
            let _ = w.shutdown(Shutdown::Write);
            (sent, false)
        }
    }
}

/// How a body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// The server closes the connection at its end.
    Close,
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("Transfer-Encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

fn content_length(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn request_framing(req: &Request) -> Framing {
    if is_chunked(&req.headers) {
        Framing::Chunked
    } else {
        match content_length(&req.headers) {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    }
}

fn response_framing(method: &str, status: u16, headers: &[(String, String)]) -> Framing {
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else if is_chunked(headers) {
        Framing::Chunked
    } else {
        match content_length(headers) {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    ["Connection", "Keep-Alive", "Proxy-Connection"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// The head sent upstream: as the client sent it (target, `Host` and all),
/// but with `Connection: close` and without `Expect`.
fn request_head(req: &Request) -> String {
    let mut out = format!("{} {} {}\r\n", req.method, req.target, req.version);
    for (k, v) in &req.headers {
        if !is_hop_by_hop(k) && !k.eq_ignore_ascii_case("Expect") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// A registry-style JSON error body.
fn error_body(status: u16) -> String {
    format!(
        r#"{{"errors":[{{"code":"UNKNOWN","message":"{FAULT_MESSAGE} (HTTP {status})","detail":null}}]}}"#
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    }
}

/// An answer the proxy makes up (no body for `HEAD`).
fn write_reply(
    w: &mut TcpStream,
    method: &str,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    close: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if method != "HEAD" {
        out.push_str(body);
    }
    w.write_all(out.as_bytes())?;
    w.flush()
}

/// Reads a head's lines (without line ends), skipping blank lines before
/// it; `None` at a clean EOF before any.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take(MAX_HEAD as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "head cut"))
            };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too big"));
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if text.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(text);
    }
}

fn split_header(line: &str) -> Option<(String, String)> {
    let (k, v) = line.split_once(':')?;
    Some((k.trim().to_string(), v.trim().to_string()))
}

fn parse_request(lines: &[String], n: usize) -> Option<Request> {
    let mut parts = lines.first()?.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next()?.to_string();
    let headers = lines[1..].iter().filter_map(|l| split_header(l)).collect();
    Some(Request {
        n,
        method,
        target,
        version,
        headers,
    })
}

/// A writer that passes on at most `left` bytes.
/// Passes bytes on, stopping once for `pause` after the first `left`.
struct Staller<'a, W: Write> {
    w: &'a mut W,
    left: usize,
    pause: Option<Duration>,
}

impl<W: Write> Write for Staller<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(d) = self.pause {
            if self.left == 0 {
                self.w.flush()?;
                std::thread::sleep(d);
                self.pause = None;
            } else {
                let k = self.left.min(buf.len());
                self.w.write_all(&buf[..k])?;
                self.left -= k;
                return Ok(k);
            }
        }
        self.w.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

struct Budget<'a, W: Write> {
    w: &'a mut W,
    left: Option<u64>,
    sent: u64,
}

impl<'a, W: Write> Budget<'a, W> {
    fn new(w: &'a mut W, left: Option<u64>) -> Self {
        Budget { w, left, sent: 0 }
    }

    /// Writes what the budget allows of `buf`; true when it had to stop
    /// short (the cut).
    fn put(&mut self, buf: &[u8]) -> io::Result<bool> {
        let take = match self.left {
            Some(l) => l.min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        self.w.write_all(&buf[..take])?;
        self.sent += take as u64;
        if let Some(l) = &mut self.left {
            *l -= take as u64;
        }
        Ok(take < buf.len())
    }
}

/// Copies a body as sent, framing and all, up to `limit` bytes; returns
/// the bytes written and whether the limit cut it short.
fn copy_body<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    framing: Framing,
    limit: Option<u64>,
) -> io::Result<(u64, bool)> {
    let mut b = Budget::new(w, limit);
    let cut = match framing {
        Framing::Empty => false,
        Framing::Length(n) => copy_n(r, &mut b, n)?,
        Framing::Close => copy_to_eof(r, &mut b)?,
        Framing::Chunked => copy_chunked(r, &mut b)?,
    };
    b.w.flush()?;
    Ok((b.sent, cut))
}

fn copy_n<R: Read, W: Write>(r: &mut R, b: &mut Budget<'_, W>, mut n: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    while n > 0 {
        let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        let k = r.read(&mut buf[..want])?;
        if k == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut"));
        }
        if b.put(&buf[..k])? {
            return Ok(true);
        }
        n -= k as u64;
    }
    Ok(false)
}

fn copy_to_eof<R: Read, W: Write>(r: &mut R, b: &mut Budget<'_, W>) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if b.put(&buf[..k])? {
            return Ok(true);
        }
        b.w.flush()?;
    }
}

fn raw_line<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.by_ref().take(4096).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk cut"));
    }
    Ok(line)
}

fn copy_chunked<R: BufRead, W: Write>(r: &mut R, b: &mut Budget<'_, W>) -> io::Result<bool> {
    loop {
        let line = raw_line(r)?;
        if b.put(&line)? {
            return Ok(true);
        }
        let text = String::from_utf8_lossy(&line);
        let size = text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let t = raw_line(r)?;
                if b.put(&t)? {
                    return Ok(true);
                }
                if t == b"\r\n" || t == b"\n" {
                    return Ok(false);
                }
            }
        }
        if copy_n(r, b, size)? {
            return Ok(true);
        }
        let end = raw_line(r)?;
        if b.put(&end)? {
            return Ok(true);
        }
    }
}
