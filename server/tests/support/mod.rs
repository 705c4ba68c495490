//! Test harness: starts a real server binary (ws-server or ws-server-tokio) on an
//! ephemeral port with 2 executors/workers and offers raw and tungstenite clients. Every wait is bounded; no assertion is on time.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Upper bound on any single wait in tests (never asserted on; only avoids hanging).
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Server {
    pub child: Child,
    /// This is the tokio baseline.
    pub tokio: bool,
    pub addr: SocketAddr,
    /// The admin listener (`admin on ADDR`), unless `--admin-listen off`.
    pub admin: Option<SocketAddr>,
    /// `--api-key`, if given: the helpers present it on admin requests.
    pub api_key: Option<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The two servers every behaviour test runs against.
pub const WS_SERVER: &str = env!("CARGO_BIN_EXE_ws-server");
pub const WS_SERVER_TOKIO: &str = env!("CARGO_BIN_EXE_ws-server-tokio");

/// True for the tokio baseline (for the few figures only ws-server has, e.g. cross-core hops).
pub fn is_tokio(bin: &str) -> bool {
    bin == WS_SERVER_TOKIO
}

/// Runs each listed `fn name(bin: &str)` as a test against both servers:
/// `ws_server::name` and `ws_server_tokio::name`.
#[macro_export]
macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {
        mod ws_server {
            $( #[test] fn $name() { super::$name(super::support::WS_SERVER) } )*
        }
        mod ws_server_tokio {
            $( #[test] fn $name() { super::$name(super::support::WS_SERVER_TOKIO) } )*
        }
    };
}

/// `--cores` for two executors where the machine allows it.
pub fn two_cores() -> Vec<String> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 2 {
        vec!["--cores".into(), "0,1".into()]
    } else {
        vec![]
    }
}

impl Server {
    pub fn start(bin: &str, args: &[&str]) -> Server {
        Self::start_with(bin, args, |_| {})
    }

    /// Starts the server; `tweak` can adjust the command (e.g. lower its rlimits).
    pub fn start_with(bin: &str, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Server {
        let mut cmd = Command::new(bin);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--cores") {
            cmd.args(two_cores());
        }
        cmd.args(args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("spawn ws-server");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut r = BufReader::new(stderr);
            while r.read_line(&mut s).map(|n| n > 0).unwrap_or(false) {
                log2.lock().unwrap().push_str(&s);
                s.clear();
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .expect("server printed nothing")
            .expect("read stdout");
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {first:?}; stderr: {}",
                    log.lock().unwrap()
                )
            })
            .parse()
            .expect("address");
        let admin_off = args.windows(2).any(|w| w == ["--admin-listen", "off"]);
        let admin = (!admin_off).then(|| {
            let line = lines.next().expect("no admin line").expect("read stdout");
            line.strip_prefix("admin on ")
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .parse()
                .expect("admin address")
        });
        let api_key = args
            .windows(2)
            .find(|w| w[0] == "--api-key")
            .map(|w| w[1].to_string());
        // Keep draining stdout (the exit summary) so the child never blocks on a full pipe.
        let out = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                out.lock().unwrap().push_str(&format!("stdout: {l}\n"));
            }
        });
        Server {
            child,
            tokio: is_tokio(bin),
            addr,
            admin,
            api_key,
            stderr: log,
        }
    }

    /// Whether the server's stderr says `needle`, waiting up to [`WAIT`] for it: stderr is
    /// read by a thread, so a line printed at start may arrive after "listening on".
    pub fn stderr_contains(&self, needle: &str) -> bool {
        let until = std::time::Instant::now() + WAIT;
        loop {
            if self.stderr.lock().unwrap().contains(needle) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A tungstenite client on `/ws` (or another path).
    pub fn ws(&self, path: &str) -> tungstenite::WebSocket<TcpStream> {
        let (ws, resp) = tungstenite::client(self.url(path), self.raw()).expect("handshake");
        assert_eq!(resp.status(), 101);
        ws
    }

    /// A connection to the admin listener.
    pub fn admin_raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.admin.expect("admin listener is off")).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// The headers an admin request from this test needs: an address as Host, and the key.
    pub fn admin_headers(&self) -> String {
        let mut h = format!("Host: {}\r\n", self.admin.expect("admin listener is off"));
        if let Some(k) = &self.api_key {
            h.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        h
    }

    /// Sends `req` (which ends its head with [`Self::admin_headers`]) to the admin
    /// listener and returns the whole response.
    pub fn admin_request(&self, req: &str) -> String {
        let mut s = self.admin_raw();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// `/metrics` as text (from the admin listener).
    pub fn metrics(&self) -> String {
        let out = self.admin_request(&format!(
            "GET /metrics HTTP/1.1\r\n{}\r\n",
            self.admin_headers()
        ));
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    /// Sum over cores of a metric family, optionally restricted to samples containing `label`.
    pub fn metric(&self, name: &str, label: &str) -> u64 {
        sum_metric(&self.metrics(), name, label)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..(WAIT.as_millis() / 50) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sum_metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| label.is_empty() || l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A valid upgrade request with `extra` header lines inserted.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `req` and returns the whole HTTP response head (and whatever came with it).
pub fn exchange(s: &mut TcpStream, req: &[u8]) -> String {
    s.write_all(req).unwrap();
    read_head(s)
}

/// Reads until the end of an HTTP head (or EOF).
pub fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => buf.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status code of an HTTP response head.
pub fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A masked client frame.
pub fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    ws_common::frame::write_header(
        &mut v,
        first_byte & 0x80 != 0,
        first_byte & 0x0F,
        payload.len(),
        Some([1, 2, 3, 4]),
    );
    v[0] = first_byte; // keep reserved bits as given
    let start = v.len();
    v.extend_from_slice(payload);
    ws_common::frame::apply_mask(&mut v[start..], [1, 2, 3, 4]);
    v
}

/// Reads one unmasked server frame: (first byte, payload).
pub fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    Some((h[0], p))
}

/// Reads frames until a Close; returns its code (None for an empty close or EOF first).
pub fn read_until_close(s: &mut TcpStream) -> Option<u16> {
    loop {
        let (b0, p) = read_frame(s)?;
        if b0 & 0x0F == 0x8 {
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
    }
}

/// Upgrades a raw socket on /ws; returns it ready for frames.
pub fn raw_ws(server: &Server) -> TcpStream {
    let mut s = server.raw();
    let head = exchange(&mut s, upgrade_request("/ws", "").as_bytes());
    assert_eq!(status_of(&head), 101, "{head}");
    s
}
