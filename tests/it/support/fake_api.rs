//! A fake Optimole cache API (see `shared/optimole-cache-api.md` beside the repository) for
//! integration tests and the demo example.
//!
//! It speaks real HTTP/1.1 on 127.0.0.1 so the real client code (reqwest,
//! timeouts, connection errors) is exercised end to end. It is a tiny
//! hand-written server rather than axum because tests need to inject faults
//! that a framework hides, above all "close the connection without any answer".
//! Every response carries `Connection: close`, so each request has its own TCP
//! connection and a fault never leaks into a later keep-alive request.
//!
//! The API is synchronous (usable from plain `#[test]`s): the server runs its
//! own tokio runtime on a background thread, and dropping `FakeApi` stops it.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const GOOD_KEY: &str = "opt_test_key_1234567890";
pub const API_PATH: &str = "/api/optml/v2/cache";

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A misbehaviour for one request. Queued with `push_fault`; each request
/// (any endpoint) takes the oldest queued fault before anything else is checked.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status with `{"success":false,"error":"injected"}`.
    Status(u16),
    /// Answer this status with a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// Sleep, then answer normally. If the client hangs up meanwhile (e.g. its
    /// timeout fired), the request is not processed and is recorded with status 0.
    Delay(Duration),
    /// Close the connection without any HTTP answer (recorded with status 0).
    Drop,
    /// Answer this status with `{"success":false,"error": msg}`.
    Message(u16, String),
    /// Answer this status with this body as is (`Content-Type` guessed:
    /// JSON when it starts with `{`, else text/plain).
    Body(u16, String),
    /// Answer this status with an HTML error page (`text/html`).
    Html(u16),
    /// Answer this 3xx status with `Location` pointing at [`REDIRECT_PATH`],
    /// where a GET (what a client following the redirect sends) is
    /// answered `200 {"success": true}`.
    Redirect(u16),
    /// Answer 200 with a JSON success body padded to this many bytes, sent
    /// in 64 KiB pieces as fast as the client reads. With `declared`, the
    /// length is in `Content-Length`; without, the body ends when the
    /// connection closes.
    Giant { bytes: usize, declared: bool },
    /// Answer 200 with headers, then one byte of body every `every`, never
    /// finishing (until the client hangs up or the server stops).
    Trickle { every: Duration },
}

/// Where [`Fault::Redirect`] points (after the API path).
pub const REDIRECT_PATH: &str = "/moved";

#[derive(Clone, Debug, serde::Serialize)]
pub struct Recorded {
    pub method: String,
    /// Path after `API_PATH` (e.g. "/token"); the full path if outside it.
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub body: Option<Value>,
    /// `body["assets"]` strings (even on rejected requests), empty otherwise.
    pub assets: Vec<String>,
    /// What the fake answered; 0 for `Drop`, a hang-up, or still in progress.
    pub status: u16,
    /// When the request had fully arrived. (`Instant` has no serde form.)
    #[serde(skip)]
    pub at: Instant,
}

#[derive(Default)]
struct State {
    keys: Vec<String>,
    revoked: HashSet<String>,
    asset_limit: usize,
    token_shape_code: bool,
    faults: VecDeque<Fault>,
    // Records keep their arrival slot; the id lets a delayed request fill in
    // its status later even if others arrived meanwhile.
    log: Vec<(u64, Recorded)>,
    next_id: u64,
    tokens: Vec<String>,
    token_counter: u64,
    /// Issued instead of a fresh token when set.
    token_text: Option<String>,
    /// Assets refused by name on every invalidate request naming them.
    refused: HashSet<String>,
    /// Connections whose handling is over (answered, dropped, or given up
    /// because the client hung up).
    finished: usize,
}

impl State {
    fn set_status(&mut self, id: u64, status: u16) {
        // Not found means `clear()` ran while the request was in flight.
        if let Some((_, r)) = self.log.iter_mut().find(|(i, _)| *i == id) {
            r.status = status;
        }
    }
}

type Shared = Arc<Mutex<State>>;

// Ignore poisoning: one panicking test thread should not cascade into others.
fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeApi {
    addr: SocketAddr,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    pub fn start() -> FakeApi {
        Self::start_with_keys(&[GOOD_KEY])
    }

    pub fn start_with_keys(keys: &[&str]) -> FakeApi {
        // Bind here, not in the thread, so the port accepts before we return.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("fake api: bind");
        listener
            .set_nonblocking(true)
            .expect("fake api: nonblocking");
        let addr = listener.local_addr().expect("fake api: local_addr");
        let state = Arc::new(Mutex::new(State {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            asset_limit: 100,
            ..State::default()
        }));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-optimole-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake api: runtime");
                rt.block_on(accept_loop(listener, st, rx));
                // Drops in-flight connections (e.g. ones sleeping in a Delay).
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("fake api: spawn thread");
        FakeApi {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, API_PATH)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state)
            .log
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn successful(&self, path: &str) -> Vec<Recorded> {
        let ok =
            |r: &Recorded| r.method == "POST" && r.path == path && (200..300).contains(&r.status);
        self.requests().into_iter().filter(ok).collect()
    }

    pub fn invalidate_requests(&self) -> Vec<Recorded> {
        self.successful("/invalidate/asset")
    }

    pub fn token_requests(&self) -> Vec<Recorded> {
        self.successful("/token")
    }

    pub fn invalidated_assets(&self) -> Vec<String> {
        self.invalidate_requests()
            .into_iter()
            .flat_map(|r| r.assets)
            .collect()
    }

    /// How many connections the fake is done with: after this, nothing it
    /// records about them changes any more.
    pub fn finished(&self) -> usize {
        lock(&self.state).finished
    }

    /// How many queued faults no request has taken yet.
    pub fn queued_faults(&self) -> usize {
        lock(&self.state).faults.len()
    }

    pub fn tokens_issued(&self) -> Vec<String> {
        lock(&self.state).tokens.clone()
    }

    /// Forgets recorded requests and issued tokens (not queued faults or settings).
    pub fn clear(&self) {
        let mut s = lock(&self.state);
        s.log.clear();
        s.tokens.clear();
    }

    /// Drops every queued fault: the outage is over.
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    pub fn push_fault(&self, f: Fault) {
        lock(&self.state).faults.push_back(f);
    }

    pub fn push_faults(&self, f: Fault, n: usize) {
        let mut s = lock(&self.state);
        s.faults.extend(std::iter::repeat_n(f, n));
    }

    pub fn set_asset_limit(&self, n: usize) {
        lock(&self.state).asset_limit = n;
    }

    pub fn revoke_key(&self, key: &str) {
        lock(&self.state).revoked.insert(key.to_string());
    }

    /// Every token request from now on gets this token (`None`: fresh ones).
    pub fn set_token_text(&self, token: Option<&str>) {
        lock(&self.state).token_text = token.map(str::to_string);
    }

    /// Every invalidate request holding `asset` gets `422 {"success": false,
    /// "error": "Invalid asset: <asset>"}`, until [`FakeApi::accept`].
    pub fn refuse(&self, asset: &str) {
        lock(&self.state).refused.insert(asset.to_string());
    }

    /// Stops refusing `asset`.
    pub fn accept(&self, asset: &str) {
        lock(&self.state).refused.remove(asset);
    }

    pub fn set_token_shape_code(&self, yes: bool) {
        lock(&self.state).token_shape_code = yes;
    }

    /// Polls every 10 ms until `pred` holds on the recorded requests, then
    /// returns them; panics naming `what` and listing them at the deadline.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if pred(&reqs) {
                return reqs;
            }
            if Instant::now() >= deadline {
                let list: Vec<String> = reqs
                    .iter()
                    .map(|r| {
                        let body = r.body.as_ref().map(Value::to_string).unwrap_or_default();
                        format!("  {} {} -> {} {}", r.method, r.path, r.status, body)
                    })
                    .collect();
                panic!(
                    "fake api: timed out after {timeout:?} waiting for {what}; {} recorded requests:\n{}",
                    reqs.len(),
                    list.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            // Ignore a server panic: we may be unwinding from a failed test already.
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    state: Shared,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("fake api: tokio listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(stream, state.clone()));
                }
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>, // names lowercased
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        content_type: "application/json",
        headers: Vec::new(),
    }
}

fn fail(status: u16, msg: &str) -> Reply {
    reply(status, json!({"success": false, "error": msg}))
}

fn raw(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        content_type: if body.trim_start().starts_with('{') {
            "application/json"
        } else {
            "text/plain"
        },
        headers: Vec::new(),
    }
}

fn html(status: u16) -> Reply {
    Reply {
        status,
        body: format!(
            "<!DOCTYPE html>\n<html><head><title>{status} Error</title></head>\n\
             <body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n"
        ),
        content_type: "text/html; charset=utf-8",
        headers: Vec::new(),
    }
}

/// Counts a connection as finished when its handling ends, however it ends.
struct Finished(Shared);

impl Drop for Finished {
    fn drop(&mut self) {
        lock(&self.0).finished += 1;
    }
}

/// One connection, one request (we always answer `Connection: close`).
async fn serve_connection(mut stream: TcpStream, state: Shared) {
    let _finished = Finished(state.clone());
    let Some(req) = read_request(&mut stream).await else {
        return;
    };
    let body: Option<Value> = serde_json::from_slice(&req.body).ok();
    let assets = body
        .as_ref()
        .and_then(|b| b.get("assets"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let rec = Recorded {
        method: req.method.clone(),
        path: req
            .path
            .strip_prefix(API_PATH)
            .unwrap_or(&req.path)
            .to_string(),
        authorization: req.header("authorization"),
        content_type: req.header("content-type"),
        user_agent: req.header("user-agent"),
        body: body.clone(),
        assets,
        status: 0,
        at: Instant::now(),
    };
    let (id, fault) = {
        let mut s = lock(&state);
        let id = s.next_id;
        s.next_id += 1;
        s.log.push((id, rec));
        (id, s.faults.pop_front())
    };
    let answer = match fault {
        Some(Fault::Drop) => return, // dropping the stream closes it, no answer
        Some(Fault::Status(code)) => Some(fail(code, "injected")),
        Some(Fault::Message(code, msg)) => Some(fail(code, &msg)),
        Some(Fault::RetryAfter(code, value)) => Some(Reply {
            headers: vec![("Retry-After", value)],
            ..fail(code, "injected")
        }),
        Some(Fault::Body(code, body)) => Some(raw(code, &body)),
        Some(Fault::Html(code)) => Some(html(code)),
        Some(Fault::Redirect(code)) => Some(Reply {
            headers: vec![("Location", format!("{API_PATH}{REDIRECT_PATH}"))],
            ..raw(code, "")
        }),
        Some(Fault::Giant { bytes, declared }) => {
            lock(&state).set_status(id, 200);
            giant(&mut stream, bytes, declared).await;
            return;
        }
        Some(Fault::Trickle { every }) => {
            lock(&state).set_status(id, 200);
            trickle(&mut stream, every).await;
            return;
        }
        Some(Fault::Delay(d)) => {
            if hung_up_during(&mut stream, d).await {
                return;
            }
            None
        }
        None => None,
    };
    // Decide and record the status under one lock, before the client can see
    // the answer, so `requests()` is up to date once the client call returns.
    let answer = {
        let mut s = lock(&state);
        let a = answer.unwrap_or_else(|| handle(&mut s, &req, body.as_ref()));
        s.set_status(id, a.status);
        a
    };
    write_reply(&mut stream, &answer).await;
}

/// The documented protocol, after faults.
fn handle(s: &mut State, req: &Request, body: Option<&Value>) -> Reply {
    let route = req.path.strip_prefix(API_PATH).unwrap_or("");
    if req.method == "GET" && route == REDIRECT_PATH {
        // What a client that followed a redirect gets: a "success".
        return reply(200, json!({"success": true, "data": {}}));
    }
    let known = [
        "/invalidate/asset",
        "/invalidate/domain",
        "/invalidate/all",
        "/token",
    ];
    if req.method != "POST" || !known.contains(&route) {
        return fail(404, "Not found");
    }
    let key = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer ").map(|k| k.trim().to_string()));
    if !key.is_some_and(|k| s.keys.contains(&k) && !s.revoked.contains(&k)) {
        // Older-style error shape on purpose: clients must read both shapes.
        return reply(
            401,
            json!({"code": "user_not_found", "error": "User not found"}),
        );
    }
    if route == "/invalidate/all" {
        return reply(200, json!({"success": true, "data": {}}));
    }
    if route == "/token" {
        s.token_counter += 1;
        // Odd multiplier mod 2^40 is a bijection: distinct, random-looking, 10 hex chars.
        let token = s.token_text.clone().unwrap_or_else(|| {
            format!(
                "tk{:010x}",
                s.token_counter.wrapping_mul(2_654_435_761) % (1u64 << 40)
            )
        });
        s.tokens.push(token.clone());
        let status = if s.token_shape_code {
            json!({"code": 200})
        } else {
            json!({"success": true})
        };
        let mut b = status;
        b["data"] = json!({"token": token});
        return reply(200, b);
    }
    // Invalidate asset/domain: JSON bodies only.
    let is_json = req
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    let Some(body) = body.filter(|_| is_json) else {
        return fail(400, "Body must be JSON sent as application/json");
    };
    if route == "/invalidate/domain" {
        return match body.get("domain").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => reply(200, json!({"success": true, "data": {"domain": d}})),
            _ => fail(400, "domain must be a non-empty string"),
        };
    }
    let n = match body.get("assets").and_then(Value::as_array) {
        Some(a) if !a.is_empty() && a.iter().all(Value::is_string) => a.len(),
        _ => return fail(400, "assets must be a non-empty array of strings"),
    };
    if n > s.asset_limit {
        return fail(400, "Too many assets to invalidate");
    }
    let refused = body["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|a| s.refused.contains(*a));
    if let Some(asset) = refused {
        return fail(422, &format!("Invalid asset: {asset}"));
    }
    reply(200, json!({"success": true, "data": {"invalidated": n}}))
}

/// Reads one HTTP/1.1 request with a `Content-Length` body (all reqwest sends
/// for JSON). `None` if the client goes away or sends garbage.
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.split('?').next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return None;
    }
    let mut body = buf.split_off(head_end + 4);
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Sleeps `d`; true if the client closed its side first (read hits EOF).
async fn hung_up_during(stream: &mut TcpStream, d: Duration) -> bool {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    let mut scratch = [0u8; 1024];
    loop {
        tokio::select! {
            _ = &mut sleep => return false,
            r = stream.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { return true },
        }
    }
}

async fn write_reply(stream: &mut TcpStream, r: &Reply) {
    // Clients read the status code; the reason phrase is decoration.
    let reason = if r.status < 400 { "OK" } else { "Error" };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&r.body);
    // The client may have gone away; nothing useful to do about write errors.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A 200 whose JSON success body is `bytes` long, streamed.
async fn giant(stream: &mut TcpStream, bytes: usize, declared: bool) {
    let open = b"{\"success\":true,\"pad\":\"";
    let close = b"\"}";
    let pad = bytes.saturating_sub(open.len() + close.len());
    let length = if declared {
        format!("Content-Length: {}\r\n", open.len() + pad + close.len())
    } else {
        String::new()
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(open).await.is_err() {
        return;
    }
    let piece = vec![b'x'; 64 * 1024];
    let mut left = pad;
    while left > 0 {
        let n = left.min(piece.len());
        if stream.write_all(&piece[..n]).await.is_err() {
            return; // the client stopped reading: what a capped client does
        }
        left -= n;
    }
    let _ = stream.write_all(close).await;
    let _ = stream.shutdown().await;
}

/// A 200 whose body never ends: one byte every `every`.
async fn trickle(stream: &mut TcpStream, every: Duration) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(every).await;
        if stream.write_all(b" ").await.is_err() {
            return;
        }
    }
}
