//! Test helpers: an independent WebSocket server that is not our code (tungstenite, one
//! std thread per connection) and a runner for the real `ws-loadgen` binary.
//!
//! The server under test is only ever a URL to [`run_loadgen`], so the same tests can be
//! pointed at `ws-server` by starting it and passing its URL.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
