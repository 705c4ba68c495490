//! Small helpers shared by the reference programs of `scripts/compare.sh`:
//! descriptor limit, CPU time, resident memory, a stop flag set by SIGINT/SIGTERM,
//! duration parsing, and the raw socket calls every bare program makes. Nothing here is on a
//! hot path.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Descriptors kept free for stdio, epoll, the listener and whatever the runtime opens.
pub const FD_MARGIN: u64 = 32;

// Process figures and the handshake's accept key are the project's own (`ws-common`), so
// every program measures and answers the same way.
pub use ws_common::handshake::accept_key;
pub use ws_common::metrics::{
    cpu_seconds, raise_nofile_to_hard as raise_nofile, resident_bytes as rss_bytes,
};

/// Raises the descriptor limit and refuses (exit 2, with the reason) when `n` sockets
/// plus a small margin do not fit in it.
pub fn ensure_fds(prog: &str, n: u64) {
    let (soft, hard) = raise_nofile();
    if n + FD_MARGIN > soft {
        eprintln!(
            "{prog}: {n} connections need {} file descriptors, but this process may open \
             {soft} (RLIMIT_NOFILE soft {soft}, hard {hard}). Use -c {} or less, or raise the \
             hard limit (ulimit -Hn, /etc/security/limits.conf, systemd LimitNOFILE).",
            n + FD_MARGIN,
            soft.saturating_sub(FD_MARGIN)
        );
        std::process::exit(2);
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set the stop flag instead of killing the process, so it can print its
/// final report. SIGPIPE is ignored (writes to a reset socket return EPIPE).
pub fn install_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(v) = t.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 10s, 500ms, 2m)"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Prints a progress line once a second on stderr: `label: N/s (total T)`.
pub struct PerSecond {
    label: &'static str,
    next: Instant,
    last_count: u64,
    last_at: Instant,
}

impl PerSecond {
    pub fn new(label: &'static str) -> Self {
        let now = Instant::now();
        Self {
            label,
            next: now + Duration::from_secs(1),
            last_count: 0,
            last_at: now,
        }
    }

    /// Prints when a second has passed since the last line.
    pub fn tick(&mut self, count: u64) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        let dt = now.duration_since(self.last_at).as_secs_f64();
        eprintln!(
            "{}: {:.0}/s (total {count})",
            self.label,
            (count - self.last_count) as f64 / dt
        );
        self.last_count = count;
        self.last_at = now;
        self.next = now + Duration::from_secs(1);
    }
}

/// "what: <the last OS error>".
pub fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// setsockopt of one int option (errors ignored: these are tuning options).
pub fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) {
    // SAFETY: the option value is a c_int that lives across the call.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub fn close_fd(fd: RawFd) {
    // SAFETY: closing a descriptor the caller owns.
    unsafe { libc::close(fd) };
}

pub fn family(addr: SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// A listening socket (SO_REUSEADDR, backlog capped by net.core.somaxconn); `flags` are
/// extra socket type flags such as SOCK_NONBLOCK.
pub fn listen_on(addr: SocketAddr, flags: libc::c_int) -> Result<RawFd, String> {
    // SAFETY: plain socket syscalls on a descriptor we own.
    unsafe {
        let fd = libc::socket(
            family(addr),
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        );
        if fd < 0 {
            return Err(os_err("socket"));
        }
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        let (ss, len) = ws_common::net::sockaddr(&addr);
        if libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) != 0 {
            let e = os_err(&format!("bind {addr}"));
            libc::close(fd);
            return Err(e);
        }
        if libc::listen(fd, 65535) != 0 {
            let e = os_err("listen");
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn rfc6455_accept_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
