//! Test helpers: an independent WebSocket server that is not our code (tungstenite, one
//! std thread per connection), a runner for the real `ws-loadgen` binary, and the real
//! `ws-server` binary found (or built) and started on a free port.
//!
//! The server under test is only ever a URL to [`run_loadgen`], so the same tests can be
//! pointed at `ws-server` by starting it ([`WsServer`]) and passing its URL.
#![allow(dead_code)]

pub mod certs;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// How the test server behaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Refuse every upgrade with this HTTP status.
    pub reject_status: Option<u16>,
    /// Close every connection with 1001 this long after its handshake.
    pub close_after: Option<Duration>,
    /// Hold every message this long before echoing it.
    pub echo_delay: Option<Duration>,
}

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    /// Successful handshakes.
    pub upgraded: AtomicU64,
    /// Connections open now.
    pub open: AtomicUsize,
    pub echoed: AtomicU64,
    pub peers: Mutex<BTreeSet<IpAddr>>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start(b: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (seen, stop, b) = (s2.clone(), st2.clone(), b.clone());
                std::thread::spawn(move || serve(stream, seen, stop, b));
            }
        });
        Self { addr, seen, stop }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

#[allow(clippy::result_large_err)] // the callback type is tungstenite's
fn serve(stream: TcpStream, seen: Arc<Seen>, stop: Arc<AtomicBool>, b: Behaviour) {
    if let Ok(peer) = stream.peer_addr() {
        seen.peers.lock().unwrap().insert(peer.ip());
    }
    let reject = b.reject_status;
    let cb = move |_req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        match reject {
            Some(code) => {
                let mut r = ErrorResponse::new(Some("refused by test server".into()));
                *r.status_mut() = tungstenite::http::StatusCode::from_u16(code).unwrap();
                Err(r)
            }
            None => Ok(resp),
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut ws) = tungstenite::accept_hdr(stream, cb) else {
        return;
    };
    seen.upgraded.fetch_add(1, Ordering::Relaxed);
    seen.open.fetch_add(1, Ordering::Relaxed);
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(20)));
    let opened = Instant::now();
    let mut closing = false;
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if let Some(d) = b.echo_delay {
                    std::thread::sleep(d);
                }
                if ws.send(m).is_err() {
                    break;
                }
                seen.echoed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let _ = ws.flush();
            }
            Err(_) => break,
        }
        if stop.load(Ordering::Relaxed) || Instant::now() > give_up {
            break;
        }
        if let Some(after) = b.close_after {
            if !closing && opened.elapsed() >= after {
                closing = true;
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "test server going away".into(),
                }));
            }
        }
    }
    seen.open.fetch_sub(1, Ordering::Relaxed);
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A fresh temporary file path.
pub fn temp_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ws-loadgen-test-{}-{n}-{name}", std::process::id()))
}

/// Result of a loadgen run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: Option<serde_json::Value>,
    pub json_text: Option<String>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ws-loadgen")
}

/// Runs `ws-loadgen URL ARGS... --json TMP --progress plain` and reads the report back.
pub fn run_loadgen(url: &str, args: &[&str]) -> Run {
    let json = temp_path("report.json");
    let out: Output = Command::new(bin())
        .arg(url)
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--progress")
        .arg("plain")
        .output()
        .expect("run ws-loadgen");
    let json_text = std::fs::read_to_string(&json).ok();
    let _ = std::fs::remove_file(&json);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        json: json_text
            .as_deref()
            .map(|t| serde_json::from_str(t).expect("report is JSON")),
        json_text,
    }
}

impl Run {
    pub fn j(&self) -> &serde_json::Value {
        match &self.json {
            Some(j) => j,
            None => panic!(
                "no JSON report; exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            ),
        }
    }

    pub fn u(&self, ptr: &str) -> u64 {
        self.j()
            .pointer(ptr)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("{ptr} missing in report:\n{}", self.stdout))
    }

    pub fn explain(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A raw TCP server that reads one request head and then runs `script` on the socket: for
/// servers that misbehave in ways a WebSocket library will not.
pub struct RawServer {
    pub addr: SocketAddr,
}

impl RawServer {
    pub fn start<F>(script: F) -> Self
    where
        F: Fn(&mut TcpStream, &str) + Send + Sync + 'static,
    {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut s) = stream else { continue };
                let script = script.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut b = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&buf).into_owned();
                    script(&mut s, &req);
                    // Hold the socket open a little so the client sees data before EOF.
                    std::thread::sleep(Duration::from_millis(1500));
                });
            }
        });
        Self { addr }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// The `Sec-WebSocket-Key` of a request head.
pub fn request_key(req: &str) -> String {
    req.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// One test at a time within a test binary: each starts servers and loads on a small machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A JSON file's value; `Null` when it is missing or not JSON.
pub fn read_json(path: &Path) -> serde_json::Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// `program` run through `prefix` (e.g. `ip netns exec NS`), or alone when it is empty.
pub fn command(prefix: &[&str], program: impl AsRef<OsStr>) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Sets RLIMIT_NOFILE soft = hard = `n` in the child before exec.
pub fn limit_nofile(cmd: &mut Command, n: u64) {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where a built `ws-server` may be, in order: next to this test's `ws-loadgen` (the same
/// build), `$CARGO_TARGET_DIR/debug`, `<workspace>/target/debug`.
fn server_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = Path::new(bin()).parent() {
        v.push(d.join("ws-server"));
    }
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        v.push(PathBuf::from(d).join("debug/ws-server"));
    }
    v.push(workspace().join("target/debug/ws-server"));
    v
}

/// The server binary: `$WS_SERVER_BIN` (any implementation of the same routes, e.g. the
/// tokio baseline), else the first of [`server_candidates`] that exists, else built with
/// `cargo build -p ws-server --bin ws-server`.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(b) = std::env::var("WS_SERVER_BIN") {
            return PathBuf::from(b);
        }
        if let Some(p) = server_candidates().into_iter().find(|p| p.is_file()) {
            return p;
        }
        eprintln!(
            "note: no ws-server binary found (set WS_SERVER_BIN to use another); \
             building it with `cargo build -p ws-server --bin ws-server`"
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "ws-server", "--bin", "ws-server"])
            .current_dir(workspace())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cargo build -p ws-server failed");
        server_candidates()
            .into_iter()
            .find(|p| p.is_file())
            .expect("ws-server built but not found")
    })
    .clone()
}

/// The real server binary ([`server_bin`]) on a free port of 127.0.0.1, killed on drop.
pub struct WsServer {
    pub child: Child,
    pub addr: String,
    /// Its admin listener (`admin on ADDR`), unless `--admin-listen off`.
    pub admin: Option<String>,
    /// `--api-key`, if given.
    pub api_key: Option<String>,
}

impl WsServer {
    /// Starts `prefix... ws-server --listen 127.0.0.1:0 args...` (with RLIMIT_NOFILE
    /// `nofile`, if given) and waits for its `listening on ADDR` line.
    pub fn start(prefix: &[&str], args: &[&str], nofile: Option<u64>) -> Self {
        Self::start_cmd(command(prefix, server_bin()), args, nofile)
    }

    /// [`WsServer::start`] with a given binary (e.g. the tokio baseline).
    pub fn start_bin(bin: &Path, args: &[&str]) -> Self {
        Self::start_cmd(Command::new(bin), args, None)
    }

    /// [`WsServer::start`] listening on `listen` (e.g. an address inside a namespace).
    pub fn start_listen(prefix: &[&str], listen: &str, args: &[&str]) -> Self {
        Self::start_cmd_on(command(prefix, server_bin()), listen, args, None)
    }

    fn start_cmd(cmd: Command, args: &[&str], nofile: Option<u64>) -> Self {
        Self::start_cmd_on(cmd, "127.0.0.1:0", args, nofile)
    }

    fn start_cmd_on(mut cmd: Command, listen: &str, args: &[&str], nofile: Option<u64>) -> Self {
        cmd.args(["--listen", listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = nofile {
            limit_nofile(&mut cmd, n);
        }
        let mut child = cmd.spawn().expect("start the server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.trim().strip_prefix("listening on ") {
                        break a.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server exited without printing `listening on ADDR`");
                }
            }
        };
        let admin_off = args.windows(2).any(|w| w == ["--admin-listen", "off"]);
        let admin = (!admin_off).then(|| {
            let l = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            l.trim()
                .strip_prefix("admin on ")
                .unwrap_or_else(|| panic!("expected `admin on ADDR`, got {l:?}"))
                .to_string()
        });
        let api_key = args
            .windows(2)
            .find(|w| w[0] == "--api-key")
            .map(|w| w[1].to_string());
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            admin,
            api_key,
        }
    }

    /// `ws-loadgen URL(path) args... --admin-url ...`: a run that may push or scrape.
    pub fn run_loadgen(&self, path: &str, args: &[&str]) -> Run {
        let admin = self.admin_args();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(admin.iter().map(String::as_str));
        run_loadgen(&self.url(path), &all)
    }

    /// `--admin-url URL` (and `--api-key KEY` if the server has one) for ws-loadgen.
    pub fn admin_args(&self) -> Vec<String> {
        let mut v = vec![
            "--admin-url".to_string(),
            format!(
                "http://{}",
                self.admin.as_deref().expect("admin listener is off")
            ),
        ];
        if let Some(k) = &self.api_key {
            v.push("--api-key".into());
            v.push(k.clone());
        }
        v
    }

    /// The server on two executors where the machine has two cores (so cross-core paths
    /// are exercised), with `extra` arguments.
    pub fn start_on_two_cores(extra: &[&str]) -> Self {
        let cores = if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            "0,1"
        } else {
            "0"
        };
        Self::start(&[], &[&["--cores", cores], extra].concat(), None)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Sum of metric `name` over its labels (0 when absent).
    pub fn metric(&self, name: &str) -> u64 {
        let admin = self.admin.as_deref().expect("admin listener is off");
        metric_sum_with_key(admin, self.api_key.as_deref(), name)
            .expect("read the server's /metrics") as u64
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of metric `name` over its labels on `http://ADDR/metrics` (0 when absent), read with
/// the load generator's own scraper; None when the page cannot be had.
pub fn metric_sum(addr: &str, name: &str) -> Option<f64> {
    metric_sum_with_key(addr, None, name)
}

/// [`metric_sum`] with the admin listener's API key.
pub fn metric_sum_with_key(addr: &str, key: Option<&str>, name: &str) -> Option<f64> {
    let mut url =
        ws_loadgen::limits::metrics::MetricsUrl::parse(&format!("http://{addr}/metrics")).ok()?;
    url.authorization = key.map(|k| format!("Authorization: Bearer {k}"));
    let page = url.scrape(Duration::from_secs(10)).ok()?;
    Some(page.sum(name).unwrap_or(0.0))
}

/// An independent peer written in Python (`websockets`) from tests/peers/, killed on drop.
/// It prints `port N` once it listens; [`PyPeer::finish`] lets it end (SIGINT) and returns
/// what it printed after that line (its own counts).
pub struct PyPeer {
    child: Child,
    pub port: u16,
    out: Option<BufReader<std::process::ChildStdout>>,
}

impl PyPeer {
    pub fn start(script: &str, args: &[&str]) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .join(script);
        let mut child = Command::new("python3")
            .arg(path)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (with `pip install websockets`) runs the test peer");
        let mut out = BufReader::new(child.stdout.take().expect("peer stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("peer port line");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("{script} did not start (is Python `websockets` installed?): {line:?}")
            });
        Self {
            child,
            port,
            out: Some(out),
        }
    }

    /// Stops the peer with SIGINT and returns the rest of its stdout.
    pub fn finish(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        if let Some(mut out) = self.out.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        }
        let _ = self.child.wait();
        rest
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
