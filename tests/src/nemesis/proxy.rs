//! A fault-injecting HTTP proxy in front of the S3 server: every node's
//! dataset reads the origin through it, and the nemesis tells it which
//! faults are active.
//!
//! It speaks just enough HTTP/1.1 to forward S3 requests and answers
//! (keep-alive, Content-Length and chunked bodies), and spoils only ranged
//! GETs of objects (chunk fetches), never listings. Faults that need bytes
//! the server did not send (another range's bytes, an overwritten object)
//! are served from the dataset's contents, which the test knows; request
//! headers are never rewritten, because S3 signatures cover them.
//!
//! An overwritten object is emulated here rather than by rewriting the
//! file under `rclone serve s3`: rclone computes the ETag and reads the
//! body through two separate opens of the file, so a rewrite racing a GET
//! can make the origin itself answer new bytes under the old ETag, a lie no
//! client can detect. Real S3 overwrites atomically; so does this proxy.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use super::plan::{OriginFault, Rng};

/// One fault the proxy applies while it is active.
#[derive(Debug, Clone)]
pub struct Active {
    pub id: usize,
    pub fault: OriginFault,
    /// Only this object ("bucket/key"), or every object.
    pub key: Option<String>,
    /// Share of matching ranged GETs spoiled.
    pub percent: u64,
    /// Free parameter of the fault (stall length, ETag-change behaviour).
    pub param: u64,
}

struct State {
    upstream: SocketAddr,
    objects: HashMap<String, Arc<Vec<u8>>>,
    active: Mutex<Vec<Active>>,
    injected: Mutex<BTreeMap<OriginFault, u64>>,
    rng: Mutex<Rng>,
    ranged_gets: AtomicU64,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    stop: AtomicBool,
    /// One line per ranged GET: when, what, which fault, how it ended.
    log: Mutex<std::fs::File>,
    epoch: std::time::Instant,
}

/// The proxy; stops accepting and closes its connections on drop.
pub struct FaultProxy {
    pub endpoint: String,
    addr: SocketAddr,
    state: Arc<State>,
}

impl FaultProxy {
    /// Listens on `listen` (any port) and forwards to `upstream`.
    /// `objects` maps "bucket/key" to the object's bytes; every ranged GET
    /// is logged to `log`.
    pub fn start(
        listen: Ipv4Addr,
        upstream: SocketAddr,
        objects: HashMap<String, Arc<Vec<u8>>>,
        seed: u64,
        log: &std::path::Path,
    ) -> Result<Self> {
        let listener = TcpListener::bind((listen, 0))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            objects,
            active: Mutex::new(Vec::new()),
            injected: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(Rng::new(seed)),
            ranged_gets: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            log: Mutex::new(std::fs::File::create(log)?),
            epoch: std::time::Instant::now(),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let id = st.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = client.try_clone() {
                    st.conns.lock().unwrap().insert(id, c);
                }
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &st);
                    st.conns.lock().unwrap().remove(&id);
                });
            }
        });
        Ok(Self {
            endpoint: format!("http://{addr}"),
            addr,
            state,
        })
    }

    pub fn add(&self, active: Active) {
        self.state.active.lock().unwrap().push(active);
    }

    pub fn remove(&self, id: usize) {
        self.state.active.lock().unwrap().retain(|a| a.id != id);
    }

    /// Ranged GETs spoiled so far, per fault.
    pub fn injected(&self) -> BTreeMap<OriginFault, u64> {
        self.state.injected.lock().unwrap().clone()
    }

    /// Ranged GETs that passed through (spoiled or not).
    pub fn ranged_gets(&self) -> u64 {
        self.state.ranged_gets.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for c in self.state.conns.lock().unwrap().values() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A request or response head: the first line and the headers in order.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// Reads a head; None at a clean end of stream before it.
    fn read(r: &mut impl BufRead) -> std::io::Result<Option<Self>> {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            if headers.len() > 200 {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
        }
        Ok(Some(Self {
            first: first.trim_end().to_string(),
            headers,
        }))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value));
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn status(&self) -> u16 {
        self.first
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn closes(&self) -> bool {
        self.get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(head: &Head, is_response: bool, head_request: bool) -> Framing {
    let status = head.status();
    if is_response
        && (head_request || (100..200).contains(&status) || status == 204 || status == 304)
    {
        return Framing::None;
    }
    if head
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Framing::Chunked;
    }
    match head.get("content-length").and_then(|v| v.parse().ok()) {
        Some(n) => Framing::Length(n),
        None if is_response => Framing::UntilClose,
        None => Framing::None,
    }
}

/// Copies one body from `from` to `to`, framing included.
fn copy_body(f: Framing, from: &mut impl BufRead, to: &mut impl Write) -> std::io::Result<()> {
    match f {
        Framing::None => Ok(()),
        Framing::Length(n) => {
            let copied = std::io::copy(&mut from.take(n), to)?;
            if copied != n {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        }
        Framing::UntilClose => std::io::copy(from, to).map(|_| ()),
        Framing::Chunked => loop {
            let mut line = String::new();
            if from.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            to.write_all(line.as_bytes())?;
            let size_hex = line.trim().split(';').next().unwrap_or_default();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    if from.read_line(&mut t)? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    to.write_all(t.as_bytes())?;
                    if t.trim().is_empty() {
                        return Ok(());
                    }
                }
            }
            copy_body(Framing::Length(size + 2), from, to)?;
        },
    }
}

fn read_body(f: Framing, from: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    copy_body(f, from, &mut out)?;
    Ok(out)
}

/// "bytes=S-E" (both given) as (S, E) inclusive.
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (s, e) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    Some((s.parse().ok()?, e.parse().ok()?))
}

/// "bytes S-E/T" as (S, E, T).
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    Some((s.parse().ok()?, e.parse().ok()?, total.parse().ok()?))
}

/// The object a request names: "bucket/key" of a path-style target.
fn object_key(target: &str) -> String {
    let path = target.split('?').next().unwrap_or_default();
    let path = path.trim_start_matches('/');
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An S3 error answer.
fn s3_error(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>nemesis</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: nemesis\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Closes `s` with a TCP reset rather than a FIN.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this process owns, with a correctly
    // sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

struct Upstream {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Upstream {
    fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        // Longer than any stall the nemesis injects, far shorter than the
        // time TCP takes to give up on a link that went down.
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            r: BufReader::with_capacity(64 << 10, s.try_clone()?),
            w: s,
        })
    }

    /// Sends a request and reads the answer's head.
    fn exchange(&mut self, req: &[u8]) -> std::io::Result<Head> {
        self.w.write_all(req)?;
        Head::read(&mut self.r)?.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
    }
}

/// What to do to one answer (decided per request).
struct Spoil {
    fault: OriginFault,
    param: u64,
    /// Where to cut a body, or which way to stall: drawn per request.
    cut: u64,
    /// The request carried If-Match (the node sends the listed ETag).
    if_match: bool,
}

impl State {
    fn pick(&self, key: &str) -> Option<Spoil> {
        let active = self.active.lock().unwrap();
        let mut rng = self.rng.lock().unwrap();
        for a in active.iter() {
            if a.key.as_deref().is_some_and(|k| k != key) {
                continue;
            }
            if rng.percent(a.percent) {
                return Some(Spoil {
                    fault: a.fault,
                    param: a.param,
                    cut: rng.next_u64(),
                    if_match: false,
                });
            }
        }
        None
    }

    fn count(&self, fault: OriginFault) {
        *self.injected.lock().unwrap().entry(fault).or_default() += 1;
    }

    fn note(&self, started: std::time::Instant, what: &str) {
        let line = format!(
            "+{:.3}s {what} ({:.3}s)\n",
            (started - self.epoch).as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        let _ = self.log.lock().unwrap().write_all(line.as_bytes());
    }
}

/// Serves one client connection until it closes (or a fault closes it).
fn serve(client: TcpStream, st: &State) -> std::io::Result<()> {
    let peer = client.peer_addr()?;
    let mut c_r = BufReader::new(client.try_clone()?);
    let mut c_w = client;
    let mut up: Option<Upstream> = None;
    while let Some(req) = Head::read(&mut c_r)? {
        let mut raw = req.encode();
        raw.extend(read_body(framing(&req, false, false), &mut c_r)?);
        let method = req
            .first
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let target = req.first.split_whitespace().nth(1).unwrap_or_default();
        let key = object_key(target);
        let range = req.get("range").and_then(parse_range);
        let started = std::time::Instant::now();
        let spoil = if method == "GET" && range.is_some() {
            st.ranged_gets.fetch_add(1, Ordering::SeqCst);
            st.pick(&key).map(|s| Spoil {
                if_match: req.get("if-match").is_some(),
                ..s
            })
        } else {
            None
        };
        // A pooled upstream connection the server closed fails at once:
        // one new connection is tried.
        let mut head = None;
        for _ in 0..2 {
            if up.is_none() {
                up = Some(Upstream::connect(st.upstream)?);
            }
            match up.as_mut().expect("connected").exchange(&raw) {
                Ok(h) => {
                    head = Some(h);
                    break;
                }
                Err(_) => up = None,
            }
        }
        let Some(mut head) = head else {
            // The origin is unreachable: so is its proxy.
            st.note(
                started,
                &format!("{peer} {key} {range:?}: origin unreachable, reset"),
            );
            reset(&c_w);
            return Ok(());
        };
        let up_conn = up.as_mut().expect("connected");
        let body_framing = framing(&head, true, method == "HEAD");
        let keep = !head.closes() && body_framing != Framing::UntilClose;
        let fault = spoil.as_ref().map(|s| s.fault);
        let status = head.status();
        let outcome = match (spoil, range) {
            (Some(s), Some(range)) => {
                apply(st, &s, &key, range, &mut head, body_framing, up_conn, &c_w)
            }
            _ => Ok(false),
        };
        let outcome = match outcome {
            Ok(false) => {
                c_w.write_all(&head.encode())?;
                copy_body(body_framing, &mut up_conn.r, &mut c_w).map(|()| false)
            }
            other => other,
        };
        if let Some(range) = range {
            let how = match &outcome {
                Ok(true) => format!("{fault:?}"),
                Ok(false) => "forwarded".into(),
                Err(e) => format!("{fault:?}, connection ended: {e}"),
            };
            st.note(
                started,
                &format!("{peer} {key} {range:?} -> {status}, {how}"),
            );
        }
        outcome?;
        if !keep {
            return Ok(());
        }
    }
    Ok(())
}

/// Applies `s` to one answer; false if this answer cannot carry the fault
/// (then it is forwarded unchanged and not counted). Faults that end the
/// connection return an error after writing, so the caller stops.
#[allow(clippy::too_many_arguments)]
fn apply(
    st: &State,
    s: &Spoil,
    key: &str,
    (start, end): (u64, u64),
    head: &mut Head,
    body: Framing,
    up: &mut Upstream,
    client: &TcpStream,
) -> std::io::Result<bool> {
    let mut c = client;
    let ok = matches!(head.status(), 200 | 206);
    let Framing::Length(len) = body else {
        return Ok(false);
    };
    if !ok || len < 2 {
        return Ok(false);
    }
    let ended = || Err(std::io::ErrorKind::ConnectionAborted.into());
    match s.fault {
        OriginFault::ServerError | OriginFault::SlowDown => {
            copy_body(body, &mut up.r, &mut std::io::sink())?;
            let answer = if s.fault == OriginFault::ServerError {
                s3_error(
                    "500 Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            } else {
                s3_error(
                    "503 Slow Down",
                    "SlowDown",
                    "Please reduce your request rate.",
                )
            };
            st.count(s.fault);
            c.write_all(&answer)?;
            Ok(true)
        }
        OriginFault::ResetMidBody => {
            st.count(s.fault);
            c.write_all(&head.encode())?;
            let cut = 1 + s.cut % (len - 1);
            std::io::copy(&mut (&mut up.r).take(cut), &mut c)?;
            c.flush()?;
            reset(client);
            ended()
        }
        OriginFault::TruncatedBody => {
            st.count(s.fault);
            c.write_all(&head.encode())?;
            let cut = 1 + s.cut % (len - 1);
            std::io::copy(&mut (&mut up.r).take(cut), &mut c)?;
            let _ = client.shutdown(std::net::Shutdown::Both);
            ended()
        }
        OriginFault::ShortBody => {
            let bytes = read_body(body, &mut up.r)?;
            let cut = 1 + s.cut % (len - 1);
            head.set("Content-Length", cut.to_string());
            st.count(s.fault);
            c.write_all(&head.encode())?;
            c.write_all(&bytes[..cut as usize])?;
            Ok(true)
        }
        OriginFault::Stall => {
            let stall = Duration::from_millis(1_000 + s.param % 7_000);
            st.count(s.fault);
            if s.cut & 1 == 0 {
                std::thread::sleep(stall);
                c.write_all(&head.encode())?;
                copy_body(body, &mut up.r, &mut c)?;
            } else {
                c.write_all(&head.encode())?;
                let half = len / 2;
                std::io::copy(&mut (&mut up.r).take(half), &mut c)?;
                c.flush()?;
                std::thread::sleep(stall);
                copy_body(Framing::Length(len - half), &mut up.r, &mut c)?;
            }
            Ok(true)
        }
        OriginFault::WrongContentRange => {
            let Some((s0, e0, total)) = head.get("content-range").and_then(parse_content_range)
            else {
                return Ok(false);
            };
            let n = e0 - s0 + 1;
            let lie = if e0 + n < total {
                format!("bytes {}-{}/{total}", s0 + n, e0 + n)
            } else if s0 >= n {
                format!("bytes {}-{}/{total}", s0 - n, e0 - n)
            } else {
                format!("bytes {s0}-{e0}/{}", total + n)
            };
            head.set("Content-Range", lie);
            st.count(s.fault);
            c.write_all(&head.encode())?;
            copy_body(body, &mut up.r, &mut c)?;
            Ok(true)
        }
        OriginFault::ShiftedRange => {
            let Some(object) = st.objects.get(key) else {
                return Ok(false);
            };
            let total = object.len() as u64;
            let n = end - start + 1;
            if end >= total || n >= total {
                return Ok(false);
            }
            // Another range of the same length, as close as the object allows.
            let shift_up = (1 + s.cut % n).min(total - 1 - end);
            let (s1, e1) = if shift_up > 0 {
                (start + shift_up, end + shift_up)
            } else {
                let back = (1 + s.cut % n).min(start);
                (start - back, end - back)
            };
            copy_body(body, &mut up.r, &mut std::io::sink())?;
            head.first = "HTTP/1.1 206 Partial Content".into();
            head.set("Content-Range", format!("bytes {s1}-{e1}/{total}"));
            head.set("Content-Length", n.to_string());
            st.count(s.fault);
            c.write_all(&head.encode())?;
            c.write_all(&object[s1 as usize..=e1 as usize])?;
            Ok(true)
        }
        OriginFault::EtagChanged => {
            let Some(etag) = head.get("etag").map(str::to_string) else {
                return Ok(false);
            };
            // The overwritten object's ETag: the listed one, digits rotated.
            let new_etag: String = etag
                .chars()
                .map(|ch| match ch.to_digit(16) {
                    Some(d) => std::char::from_digit((d + 7) % 16, 16).unwrap_or(ch),
                    None => ch,
                })
                .collect();
            let mut bytes = read_body(body, &mut up.r)?;
            st.count(s.fault);
            if s.param & 1 == 0 && s.if_match {
                // S3: the listed ETag no longer matches.
                c.write_all(&s3_error(
                    "412 Precondition Failed",
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                ))?;
                return Ok(true);
            }
            // rclone: If-Match ignored, the new object's bytes and ETag.
            for b in &mut bytes {
                *b ^= 0x5A;
            }
            head.set("ETag", new_etag);
            c.write_all(&head.encode())?;
            c.write_all(&bytes)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-object S3 stand-in: ranged GETs answered 206 with an ETag.
    fn origin(object: Arc<Vec<u8>>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let object = object.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    while let Ok(Some(req)) = Head::read(&mut r) {
                        let (s, e) = req.get("range").and_then(parse_range).unwrap();
                        let body = &object[s as usize..=e as usize];
                        let head = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{e}/{}\r\nContent-Length: {}\r\nETag: \"0123abcd\"\r\n\r\n",
                            object.len(),
                            body.len()
                        );
                        w.write_all(head.as_bytes()).unwrap();
                        w.write_all(body).unwrap();
                    }
                });
            }
        });
        addr
    }

    fn get(proxy: &FaultProxy, range: (u64, u64)) -> std::io::Result<(Head, Vec<u8>)> {
        let addr = proxy.endpoint.trim_start_matches("http://");
        let s = TcpStream::connect(addr)?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut w = s;
        write!(
            w,
            "GET /bucket/o.bin?x-id=GetObject HTTP/1.1\r\nHost: x\r\nRange: bytes={}-{}\r\nIf-Match: \"0123abcd\"\r\n\r\n",
            range.0, range.1
        )?;
        let head = Head::read(&mut r)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let body = read_body(framing(&head, true, false), &mut r)?;
        Ok((head, body))
    }

    fn proxy_with(
        object: &Arc<Vec<u8>>,
        fault: OriginFault,
        param: u64,
    ) -> (FaultProxy, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let objects = HashMap::from([("bucket/o.bin".to_string(), object.clone())]);
        let p = FaultProxy::start(
            Ipv4Addr::LOCALHOST,
            origin(object.clone()),
            objects,
            1,
            &dir.path().join("log"),
        )
        .unwrap();
        p.add(Active {
            id: 1,
            fault,
            key: None,
            percent: 100,
            param,
        });
        (p, dir)
    }

    #[test]
    fn answers_are_forwarded_or_spoiled_as_planned() {
        let object = Arc::new(crate::pattern(3, 10_000));
        let (p, _d) = proxy_with(&object, OriginFault::ShiftedRange, 0);
        let (head, body) = get(&p, (1000, 1999)).unwrap();
        let (s, e, _) = parse_content_range(head.get("content-range").unwrap()).unwrap();
        assert_ne!(s, 1000, "another range");
        assert_eq!(body, object[s as usize..=e as usize], "honestly labelled");
        p.remove(1);
        let (_, body) = get(&p, (1000, 1999)).unwrap();
        assert_eq!(body, object[1000..2000], "forwarded once the fault is gone");
        assert_eq!(p.injected()[&OriginFault::ShiftedRange], 1);
        assert_eq!(p.ranged_gets(), 2);

        let (p, _d) = proxy_with(&object, OriginFault::EtagChanged, 0);
        assert_eq!(
            get(&p, (0, 99)).unwrap().0.status(),
            412,
            "S3 refuses If-Match"
        );
        let (p, _d) = proxy_with(&object, OriginFault::EtagChanged, 1);
        let (head, body) = get(&p, (0, 99)).unwrap();
        assert_ne!(head.get("etag"), Some("\"0123abcd\""), "rclone: a new ETag");
        assert!(body.iter().zip(&object[..100]).all(|(a, b)| a ^ 0x5A == *b));

        let (p, _d) = proxy_with(&object, OriginFault::ShortBody, 0);
        let (head, body) = get(&p, (0, 999)).unwrap();
        assert!(body.len() < 1000 && head.get("content-length") == Some(&*body.len().to_string()));
        for fault in [OriginFault::ResetMidBody, OriginFault::TruncatedBody] {
            let (p, _d) = proxy_with(&object, fault, 0);
            assert!(
                get(&p, (0, 999)).is_err(),
                "{fault:?}: the body never completes"
            );
        }
    }
}
