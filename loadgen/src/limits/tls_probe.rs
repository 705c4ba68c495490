//! What a TLS handshake costs here, measured rather than guessed: `doctor` makes a few
//! hundred full handshakes (and, when the server issues tickets, resumed ones) to a
//! `wss://` server one after another and reads the CPU both ends spent: this thread's
//! (RUSAGE_THREAD) and, when the server runs on this box, the server process's
//! (/proc/PID/stat). The connect rate one core can sustain follows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConnection;
use serde::{Deserialize, Serialize};

use crate::config::tls::TlsClient;
use crate::config::Target;

/// The measured cost of handshakes of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeCost {
    pub handshakes: u64,
    /// Of those, how many were resumed (asked for, not always granted).
    pub resumed: u64,
    /// Load generator CPU per handshake, µs (TCP connect included).
    pub client_cpu_us: f64,
    /// Server CPU per handshake, µs, when the server is a local process.
    pub server_cpu_us: Option<f64>,
}

impl HandshakeCost {
    /// Handshakes per second one core sustains at this cost.
    pub fn per_core(cpu_us: f64) -> f64 {
        if cpu_us > 0.0 {
            1e6 / cpu_us
        } else {
            f64::INFINITY
        }
    }
}

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsProbe {
    pub full: HandshakeCost,
    pub resumed: Option<HandshakeCost>,
    /// Why a part could not be measured (the server refused, no tickets, ...).
    pub notes: Vec<String>,
}

fn thread_cpu_us() -> f64 {
    // SAFETY: an all-zero rusage is valid and getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of process `pid`, µs (clock-tick resolution).
pub fn proc_cpu_us(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: plain sysconf.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks * 1e6 / hz)
}

/// One TLS handshake on a fresh TCP connection; whether it was resumed.
fn handshake(
    target: &Target,
    config: &Arc<rustls::ClientConfig>,
    tls: &TlsClient,
) -> Result<bool, String> {
    let mut tcp = TcpStream::connect_timeout(&target.addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = tcp.set_nodelay(true);
    let mut conn = ClientConnection::new(config.clone(), tls.server_name.clone())
        .map_err(|e| crate::engine::tls::class(&e))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| {
            match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(t) => crate::engine::tls::class(t),
                None => format!("TLS handshake with {}: {e}", target.addr),
            }
        })?;
    }
    // TLS 1.3 tickets arrive after the handshake: read them so the next one can resume.
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 4096];
    if let Ok(n) = tcp.read(&mut buf) {
        let _ = conn.read_tls(&mut &buf[..n]);
        let _ = conn.process_new_packets();
    }
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    conn.send_close_notify();
    let mut out = Vec::new();
    let _ = conn.write_tls(&mut out);
    let _ = tcp.write_all(&out);
    Ok(resumed)
}

fn measure(
    target: &Target,
    tls: &TlsClient,
    config: Arc<rustls::ClientConfig>,
    n: u64,
    server_pid: Option<u32>,
) -> Result<HandshakeCost, String> {
    // One handshake first: a server that refuses us is said plainly, not averaged in.
    handshake(target, &config, tls)?;
    let (c0, s0) = (thread_cpu_us(), server_pid.and_then(proc_cpu_us));
    let mut resumed = 0;
    for _ in 0..n {
        resumed += u64::from(handshake(target, &config, tls)?);
    }
    let (c1, s1) = (thread_cpu_us(), server_pid.and_then(proc_cpu_us));
    Ok(HandshakeCost {
        handshakes: n,
        resumed,
        client_cpu_us: (c1 - c0) / n.max(1) as f64,
        server_cpu_us: match (s0, s1) {
            (Some(a), Some(b)) => Some((b - a) / n.max(1) as f64),
            _ => None,
        },
    })
}

/// Makes `n` full handshakes, then `n` that try to resume.
pub fn probe(target: &Target, tls: &TlsClient, n: u64, server_pid: Option<u32>) -> TlsProbe {
    let mut p = TlsProbe::default();
    match tls
        .config_with_resumption(false)
        .and_then(|c| measure(target, tls, c, n, server_pid))
    {
        Ok(c) => p.full = c,
        Err(e) => {
            p.notes.push(format!("full handshakes not measured: {e}"));
            return p;
        }
    }
    match tls
        .config_with_resumption(true)
        .and_then(|c| measure(target, tls, c, n, server_pid))
    {
        Ok(c) if c.resumed == 0 => p.notes.push(
            "resumed handshakes not measured: the server issued no usable session ticket".into(),
        ),
        Ok(c) => p.resumed = Some(c),
        Err(e) => p
            .notes
            .push(format!("resumed handshakes not measured: {e}")),
    }
    p
}
