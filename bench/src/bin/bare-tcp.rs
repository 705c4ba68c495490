//! `bare-tcp`: the physical-limit reference for `scripts/compare.sh`.
//!
//! Minimal single-threaded epoll programs written the way a C programmer would (libc only,
//! no runtime, no allocation per message), each meant to be pinned with `taskset`:
//!
//! - `accept` / `connect`: the bare TCP connect+accept rate of this box;
//! - `echo-server` / `echo-client`: the bare TCP echo rate (closed loop, one message in
//!   flight per connection). With `--ws` both speak minimal WebSocket (a fixed 101 computed
//!   from the key, then frames: client frames masked, server frames not), so `ws-loadgen`
//!   can drive the bare server and be compared with the bare client (load generator
//!   headroom). With `--ws --broadcast` the server is the bare broadcast floor: every data
//!   frame received goes to every open WebSocket connection, the sender included (one room,
//!   any request path), so `ws-loadgen --scenario broadcast` can drive it. The frames read
//!   in one epoll_wait round go out together, one write per connection: what a server does
//!   with messages that queue up for a connection, without which the closed-loop floor
//!   would sit far below the servers (one syscall per delivery).
//!
//! Progress goes to stderr once a second; the last line on stdout is one JSON object
//! (`{"kind":...}`) for scripts.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::mem::size_of;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{IntoRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::json;
use ws_bench::{
    accept_key, close_fd as close, cpu_seconds, ensure_fds, family, install_stop_signals, os_err,
    parse_duration, raise_nofile, set_int_opt, stopped, PerSecond,
};

#[derive(Parser)]
#[command(
    name = "bare-tcp",
    version,
    about = "Bare epoll TCP programs (one thread each): the physical limits ws-server is compared with."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept loop: prints accepts/s each second; JSON summary on SIGINT/SIGTERM or at the end.
    Accept {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
        /// Keep accepted sockets open (default: close each at once).
        #[arg(long)]
        hold: bool,
        /// Stop after this long (default: until SIGINT/SIGTERM).
        #[arg(short = 'd', long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Stop after this many accepts.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Opens N connections as fast as possible (non-blocking, bounded in flight) and prints
    /// connections/s.
    Connect {
        addr: SocketAddr,
        #[arg(short = 'c', long, default_value_t = 10_000)]
        connections: u64,
        /// Keep every connection open until all N are open (default: close each at once).
        #[arg(long)]
        hold: bool,
        /// With --hold: keep them this long after the last one opened.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        hold_for: Duration,
        /// Connects in flight at most.
        #[arg(long, default_value_t = 1024)]
        in_flight: u64,
    },
    /// Echo server: every byte comes back (with --ws: every frame comes back unmasked).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:9101")]
        listen: SocketAddr,
        /// Speak minimal WebSocket: answer the upgrade, echo frames, answer ping and close.
        #[arg(long)]
        ws: bool,
        /// With --ws: write every data frame received to every open WebSocket connection
        /// (the sender included) instead of echoing it to its sender alone; the frames of
        /// one epoll_wait round in one write per connection.
        #[arg(long, requires = "ws")]
        broadcast: bool,
        /// Stop after this long (default: until SIGINT/SIGTERM).
        #[arg(short = 'd', long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Closed-loop echo client: one message in flight per connection; prints msgs/s.
    EchoClient {
        addr: SocketAddr,
        #[arg(short = 'c', long, default_value_t = 1000)]
        connections: u64,
        /// Message size in bytes (with --ws: the frame payload).
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Upgrade each connection (GET /ws) and send masked binary frames.
        #[arg(long)]
        ws: bool,
        /// Request path for --ws.
        #[arg(long, default_value = "/ws")]
        path: String,
    },
}

fn main() {
    let cli = Cli::parse();
    install_stop_signals();
    let out = match cli.cmd {
        Cmd::Accept {
            listen,
            hold,
            duration,
            count,
        } => accept(listen, hold, duration, count),
        Cmd::Connect {
            addr,
            connections,
            hold,
            hold_for,
            in_flight,
        } => connect(addr, connections, hold, hold_for, in_flight),
        Cmd::EchoServer {
            listen,
            ws,
            broadcast,
            duration,
        } => echo_server(listen, ws, broadcast, duration),
        Cmd::EchoClient {
            addr,
            connections,
            size,
            duration,
            ws,
            path,
        } => echo_client(addr, connections, size, duration, ws, &path),
    };
    match out {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("bare-tcp: {e}");
            std::process::exit(1);
        }
    }
}

type Res<T> = Result<T, String>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One non-blocking accept4; `Err(errno)` when nothing was accepted. On a full descriptor
/// table it says so and backs off 10 ms, so an accept loop cannot spin on EMFILE.
fn accept_one(lfd: i32, who: &str, soft: u64) -> Result<i32, i32> {
    // SAFETY: accept4 with null address pointers.
    let fd = unsafe {
        libc::accept4(
            lfd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd >= 0 {
        return Ok(fd);
    }
    let e = errno();
    if e == libc::EMFILE || e == libc::ENFILE {
        eprintln!("{who}: {} (limit {soft})", ws_common::errno::errno_name(e));
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(e)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A non-blocking listening socket (SO_REUSEADDR, backlog capped by net.core.somaxconn).
fn listen(addr: SocketAddr) -> Res<RawFd> {
    ws_bench::listen_on(addr, libc::SOCK_NONBLOCK)
}

fn announce(addr: SocketAddr) {
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
}

struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new(capacity: usize) -> Res<Self> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(os_err("epoll_create1"));
        }
        Ok(Self {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> bool {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: ev lives across the call.
        unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) == 0 }
    }

    /// Waits up to `timeout_ms`; returns how many events are in `self.events`.
    fn wait(&mut self, timeout_ms: i32) -> usize {
        // SAFETY: the buffer holds `len` events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

fn ev(e: &libc::epoll_event) -> (u32, u64) {
    (e.events, e.u64)
}

// ---------------------------------------------------------------------------------------
// accept / connect

fn accept(
    addr: SocketAddr,
    hold: bool,
    duration: Option<Duration>,
    count: Option<u64>,
) -> Res<String> {
    let (soft, _) = raise_nofile();
    let lfd = listen(addr)?;
    let mut ep = Epoll::new(64)?;
    ep.ctl(libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32, 0);
    announce(addr);
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut held: Vec<RawFd> = Vec::new();
    let mut accepted = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first, mut last) = (None::<(Instant, f64)>, None::<(Instant, f64)>);
    let mut tick = PerSecond::new("accepts");
    let deadline = duration.map(|d| start + d);
    let limit = count.unwrap_or(u64::MAX);
    while !stopped() && accepted < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let n = ep.wait(100);
        for _ in 0..n {
            loop {
                let fd = match accept_one(lfd, "bare-tcp accept", soft) {
                    Ok(fd) => fd,
                    Err(e) => {
                        if e != libc::EAGAIN && e != libc::EINTR {
                            *errors.entry(ws_common::errno::errno_name(e)).or_default() += 1;
                        }
                        break;
                    }
                };
                accepted += 1;
                let now = (Instant::now(), unix_now());
                first.get_or_insert(now);
                last = Some(now);
                if hold {
                    held.push(fd);
                } else {
                    close(fd);
                }
                if accepted >= limit {
                    break;
                }
            }
        }
        tick.tick(accepted);
    }
    let cpu = cpu_seconds() - cpu0;
    let span = match (first, last) {
        (Some(f), Some(l)) => l.0.duration_since(f.0).as_secs_f64(),
        _ => 0.0,
    };
    let v = json!({
        "kind": "accept",
        "accepted": accepted,
        "held": held.len(),
        "errors": errors,
        "first_unix": first.map(|f| f.1),
        "last_unix": last.map(|l| l.1),
        "span_s": span,
        "rate": if span > 0.0 { accepted as f64 / span } else { 0.0 },
        "cpu_s": cpu,
        "cpu_us_per_accept": if accepted > 0 { cpu * 1e6 / accepted as f64 } else { 0.0 },
    });
    eprintln!(
        "accepted {accepted} in {span:.3} s: {:.0}/s, {cpu:.3} CPU-s",
        v["rate"].as_f64().unwrap_or(0.0)
    );
    for fd in held {
        close(fd);
    }
    Ok(v.to_string())
}

fn connect(
    addr: SocketAddr,
    n: u64,
    hold: bool,
    hold_for: Duration,
    in_flight_max: u64,
) -> Res<String> {
    ensure_fds("bare-tcp connect", if hold { n } else { in_flight_max });
    let (ss, len) = ws_common::net::sockaddr(&addr);
    let mut ep = Epoll::new(1024)?;
    let mut held: Vec<RawFd> = Vec::with_capacity(if hold { n as usize } else { 0 });
    let (mut started, mut established, mut failed, mut in_flight) = (0u64, 0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = PerSecond::new("connections");
    let start_unix = unix_now();
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut last = start;
    let mut last_unix = start_unix;
    let done = |fd: RawFd, held: &mut Vec<RawFd>| {
        if hold {
            held.push(fd);
        } else {
            close(fd);
        }
    };
    while established + failed < n && !stopped() {
        while in_flight < in_flight_max && started < n {
            started += 1;
            // SAFETY: plain socket syscalls on descriptors we own; ss outlives connect.
            let fd = unsafe {
                libc::socket(
                    family(addr),
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            };
            if fd < 0 {
                return Err(os_err("socket"));
            }
            let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
            if r == 0 {
                established += 1;
                (last, last_unix) = (Instant::now(), unix_now());
                done(fd, &mut held);
            } else if errno() == libc::EINPROGRESS {
                let flags = (libc::EPOLLOUT | libc::EPOLLONESHOT) as u32;
                ep.ctl(libc::EPOLL_CTL_ADD, fd, flags, fd as u64);
                in_flight += 1;
            } else {
                *errors
                    .entry(ws_common::errno::errno_name(errno()))
                    .or_default() += 1;
                failed += 1;
                close(fd);
            }
        }
        let k = ep.wait(100);
        for i in 0..k {
            let (_, data) = ev(&ep.events[i]);
            let fd = data as RawFd;
            in_flight -= 1;
            let mut err: libc::c_int = 0;
            let mut l = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: err and l live across the call.
            unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut err as *mut _ as *mut libc::c_void,
                    &mut l,
                )
            };
            if err == 0 {
                established += 1;
                (last, last_unix) = (Instant::now(), unix_now());
                done(fd, &mut held);
            } else {
                *errors.entry(ws_common::errno::errno_name(err)).or_default() += 1;
                failed += 1;
                close(fd);
            }
        }
        tick.tick(established);
    }
    let cpu = cpu_seconds() - cpu0;
    let elapsed = last.duration_since(start).as_secs_f64();
    let rate = if elapsed > 0.0 {
        established as f64 / elapsed
    } else {
        0.0
    };
    eprintln!("established {established} (failed {failed}) in {elapsed:.3} s: {rate:.0}/s");
    let v = json!({
        "kind": "connect",
        "connections": n,
        "established": established,
        "failed": failed,
        "errors": errors,
        "start_unix": start_unix,
        "last_unix": last_unix,
        "elapsed_s": elapsed,
        "rate": rate,
        "cpu_s": cpu,
    });
    if hold {
        let until = Instant::now() + hold_for;
        while Instant::now() < until && !stopped() {
            std::thread::sleep(Duration::from_millis(50));
        }
        for fd in held {
            close(fd);
        }
    }
    Ok(v.to_string())
}

// ---------------------------------------------------------------------------------------
// echo server

#[derive(Default)]
struct ServerConn {
    /// Bytes of an incomplete request or frame (WebSocket only).
    inbuf: Vec<u8>,
    /// Bytes the kernel refused.
    out: Vec<u8>,
    upgraded: bool,
    /// We sent Close: drop input, close on EOF.
    closing: bool,
}

const MAX_REQUEST: usize = 8192;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Appends an unmasked frame header for `len` payload bytes.
fn frame_header(out: &mut Vec<u8>, b0: u8, len: usize) {
    out.push(b0);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

enum Parsed {
    /// Consumed this many bytes.
    Used(usize),
    /// Needs more bytes.
    More,
    /// Protocol error: close the connection.
    Bad,
}

/// Handles the upgrade request at the start of `buf`: writes the 101 to `tx`.
fn ws_upgrade(buf: &[u8], tx: &mut Vec<u8>) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_REQUEST {
            Parsed::Bad
        } else {
            Parsed::More
        };
    };
    let head = &buf[..end];
    let key = head.split(|&b| b == b'\n').find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        name.eq_ignore_ascii_case(b"sec-websocket-key")
            .then(|| value[1..].trim_ascii())
    });
    let Some(key) = key else {
        return Parsed::Bad;
    };
    tx.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    tx.extend_from_slice(accept_key(key).as_bytes());
    tx.extend_from_slice(b"\r\n\r\n");
    Parsed::Used(end + 4)
}

/// Echoes one client frame at the start of `buf` into `tx`, or, a data frame, into `bc`
/// (broadcast) when given.
fn ws_frame(
    buf: &[u8],
    tx: &mut Vec<u8>,
    bc: Option<&mut Vec<u8>>,
    frames: &mut u64,
    closing: &mut bool,
) -> Parsed {
    if buf.len() < 2 {
        return Parsed::More;
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 == 0 {
        return Parsed::Bad; // client frames must be masked
    }
    let (len, mut at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return Parsed::More,
        l => (l as usize, 2),
    };
    if len > 16 << 20 {
        return Parsed::Bad;
    }
    if buf.len() < at + 4 + len {
        return Parsed::More;
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = &buf[at..at + len];
    let opcode = b0 & 0x0F;
    let reply_b0 = match opcode {
        OP_PING => 0x80 | OP_PONG,
        OP_PONG => return Parsed::Used(at + len),
        OP_CLOSE => {
            *closing = true;
            0x80 | OP_CLOSE
        }
        _ => {
            *frames += 1;
            b0
        }
    };
    let out = match bc {
        Some(bc) if opcode != OP_PING && opcode != OP_CLOSE => bc,
        _ => tx,
    };
    frame_header(out, reply_b0, len);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    Parsed::Used(at + len)
}

/// Processes received bytes for a WebSocket connection; replies go to `tx` (the 101, echoed
/// frames, pong, close), except that with `bc` the data frames go to `bc` (for every
/// connection) instead. Returns false on a protocol error.
fn ws_input(
    c: &mut ServerConn,
    data: &[u8],
    tx: &mut Vec<u8>,
    mut bc: Option<&mut Vec<u8>>,
    frames: &mut u64,
) -> bool {
    let buffered = !c.inbuf.is_empty();
    if buffered {
        c.inbuf.extend_from_slice(data);
    }
    let buf: &[u8] = if buffered { &c.inbuf } else { data };
    let mut at = 0;
    while at < buf.len() && !c.closing {
        let r = if c.upgraded {
            ws_frame(&buf[at..], tx, bc.as_deref_mut(), frames, &mut c.closing)
        } else {
            let r = ws_upgrade(&buf[at..], tx);
            if let Parsed::Used(_) = r {
                c.upgraded = true;
            }
            r
        };
        match r {
            Parsed::Used(k) => at += k,
            Parsed::More => break,
            Parsed::Bad => return false,
        }
    }
    if c.closing {
        c.inbuf = Vec::new();
    } else if buffered {
        c.inbuf.drain(..at);
        if c.inbuf.is_empty() {
            c.inbuf = Vec::new();
        }
    } else if at < data.len() {
        c.inbuf.extend_from_slice(&data[at..]);
    }
    true
}

/// Writes `data` (after anything already queued). Returns false if the socket is dead.
fn send_or_queue(ep: &Epoll, fd: RawFd, c: &mut ServerConn, data: &[u8]) -> bool {
    if !c.out.is_empty() {
        c.out.extend_from_slice(data);
        return true;
    }
    let mut at = 0;
    while at < data.len() {
        // SAFETY: writing from a live slice.
        let w = unsafe {
            libc::write(
                fd,
                data[at..].as_ptr() as *const libc::c_void,
                data.len() - at,
            )
        };
        if w < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            if e == libc::EAGAIN {
                break;
            }
            return false;
        }
        at += w as usize;
    }
    if at < data.len() {
        c.out.extend_from_slice(&data[at..]);
        let flags = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
        ep.ctl(libc::EPOLL_CTL_MOD, fd, flags, fd as u64);
    }
    true
}

fn echo_server(
    addr: SocketAddr,
    ws: bool,
    broadcast: bool,
    duration: Option<Duration>,
) -> Res<String> {
    let (soft, _) = raise_nofile();
    let lfd = listen(addr)?;
    let mut ep = Epoll::new(1024)?;
    const LISTENER: u64 = u64::MAX;
    ep.ctl(libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32, LISTENER);
    announce(addr);
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let cpu0 = cpu_seconds();
    let mut conns: Vec<Option<Box<ServerConn>>> = Vec::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut tx: Vec<u8> = Vec::with_capacity(128 * 1024);
    // --broadcast: the data frames of one epoll_wait round, then written to every connection.
    let mut bc: Vec<u8> = Vec::with_capacity(if broadcast { 128 * 1024 } else { 0 });
    let (mut accepted, mut frames, mut bytes, mut errors) = (0u64, 0u64, 0u64, 0u64);
    // --broadcast: frames written (or queued) to connections, the sender's own included;
    // how many of them found that connection's kernel buffer full and were queued.
    let (mut deliveries, mut queued) = (0u64, 0u64);
    let mut tick = PerSecond::new(match (ws, broadcast) {
        (_, true) => "deliveries",
        (true, false) => "frames",
        (false, false) => "bytes",
    });
    let drop_conn = |conns: &mut Vec<Option<Box<ServerConn>>>, fd: RawFd| {
        conns[fd as usize] = None;
        close(fd);
    };
    while !stopped() && deadline.is_none_or(|d| Instant::now() < d) {
        let n = ep.wait(100);
        let bc_frames0 = frames;
        for i in 0..n {
            let (flags, data) = ev(&ep.events[i]);
            if data == LISTENER {
                while let Ok(fd) = accept_one(lfd, "bare-tcp echo-server", soft) {
                    accepted += 1;
                    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
                    if conns.len() <= fd as usize {
                        conns.resize_with(fd as usize + 1, || None);
                    }
                    conns[fd as usize] = Some(Box::default());
                    ep.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, fd as u64);
                }
                continue;
            }
            let fd = data as RawFd;
            let Some(c) = conns.get_mut(fd as usize).and_then(|c| c.as_deref_mut()) else {
                continue;
            };
            if flags & libc::EPOLLOUT as u32 != 0 && !c.out.is_empty() {
                let out = std::mem::take(&mut c.out);
                if !send_or_queue(&ep, fd, c, &out) {
                    errors += 1;
                    drop_conn(&mut conns, fd);
                    continue;
                }
                if c.out.is_empty() {
                    ep.ctl(libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32, fd as u64);
                }
            }
            if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 == 0 {
                continue;
            }
            // SAFETY: reading into our scratch buffer.
            let r =
                unsafe { libc::read(fd, scratch.as_mut_ptr() as *mut libc::c_void, scratch.len()) };
            if r == 0 || (r < 0 && errno() != libc::EAGAIN && errno() != libc::EINTR) {
                drop_conn(&mut conns, fd);
                continue;
            }
            if r < 0 {
                continue;
            }
            let got = &scratch[..r as usize];
            bytes += got.len() as u64;
            let ok = if ws {
                if c.closing {
                    true // after our Close: discard, wait for EOF
                } else {
                    tx.clear();
                    let ok = ws_input(c, got, &mut tx, broadcast.then_some(&mut bc), &mut frames);
                    ok && (tx.is_empty() || send_or_queue(&ep, fd, c, &tx))
                }
            } else {
                send_or_queue(&ep, fd, c, got)
            };
            if !ok {
                errors += 1;
                drop_conn(&mut conns, fd);
            }
        }
        if !bc.is_empty() {
            // --broadcast: the data frames read in this round go to every open WebSocket
            // connection, the senders included, in one write each (as a server coalesces
            // what queued up for a connection). send_or_queue appends to a connection's
            // unsent bytes, so a frame is never written into the middle of another.
            let k = frames - bc_frames0;
            for fd in 0..conns.len() {
                let Some(o) = conns[fd].as_deref_mut() else {
                    continue;
                };
                if !o.upgraded || o.closing {
                    continue;
                }
                if send_or_queue(&ep, fd as RawFd, o, &bc) {
                    deliveries += k;
                    queued += if o.out.is_empty() { 0 } else { k };
                } else {
                    errors += 1;
                    drop_conn(&mut conns, fd as RawFd);
                }
            }
            bc.clear();
        }
        tick.tick(match (ws, broadcast) {
            (_, true) => deliveries,
            (true, false) => frames,
            (false, false) => bytes,
        });
    }
    let cpu = cpu_seconds() - cpu0;
    let elapsed = start.elapsed().as_secs_f64();
    let v = json!({
        "kind": "echo-server",
        "ws": ws,
        "broadcast": broadcast,
        "accepted": accepted,
        "frames": frames,
        "deliveries": deliveries,
        "queued_deliveries": queued,
        "bytes": bytes,
        "errors": errors,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
    });
    Ok(v.to_string())
}

// ---------------------------------------------------------------------------------------
// echo client

/// xorshift64*: the masks of client frames.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Builds the next message into `buf`: `size` raw bytes, or a masked binary frame.
fn client_message(buf: &mut Vec<u8>, payload: &[u8], ws: bool, rng: &mut Rng) {
    buf.clear();
    if !ws {
        buf.extend_from_slice(payload);
        return;
    }
    let len = payload.len();
    buf.push(0x82);
    if len < 126 {
        buf.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        buf.push(0x80 | 126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(0x80 | 127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = (rng.next() as u32).to_ne_bytes();
    buf.extend_from_slice(&mask);
    buf.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Bytes of the reply to one message.
fn reply_len(size: usize, ws: bool) -> usize {
    match (ws, size) {
        (false, s) => s,
        (true, s) if s < 126 => s + 2,
        (true, s) if s <= 0xFFFF => s + 4,
        (true, s) => s + 10,
    }
}

/// Blocking connect (+ upgrade with --ws), then non-blocking with TCP_NODELAY.
fn client_open(addr: SocketAddr, ws: bool, path: &str) -> Res<RawFd> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    if ws {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        let mut b = [0u8; 1];
        // Byte by byte so nothing after the response head is consumed.
        while !resp.ends_with(b"\r\n\r\n") {
            let k = s.read(&mut b).map_err(|e| format!("upgrade: {e}"))?;
            if k == 0 || resp.len() > MAX_REQUEST {
                return Err("upgrade: connection closed or response too large".into());
            }
            resp.push(b[0]);
        }
        if !resp.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&resp);
            return Err(format!(
                "upgrade refused: {}",
                line.lines().next().unwrap_or("")
            ));
        }
        if !resp
            .windows(28)
            .any(|w| w == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        {
            return Err("upgrade: wrong Sec-WebSocket-Accept".into());
        }
    }
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s.into_raw_fd())
}

fn echo_client(
    addr: SocketAddr,
    n: u64,
    size: usize,
    d: Duration,
    ws: bool,
    path: &str,
) -> Res<String> {
    ensure_fds("bare-tcp echo-client", n);
    if size == 0 {
        return Err("--size must be at least 1".into());
    }
    let mut ep = Epoll::new(1024)?;
    let mut fds = Vec::with_capacity(n as usize);
    for i in 0..n {
        let fd = client_open(addr, ws, path)?;
        ep.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, i);
        fds.push(fd);
    }
    let payload = vec![b'x'; size];
    let want = reply_len(size, ws);
    let mut remaining = vec![want; n as usize];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64);
    let mut msg = Vec::with_capacity(want + 8);
    let mut scratch = vec![0u8; 64 * 1024];
    let (mut msgs, mut errors, mut surplus) = (0u64, 0u64, 0u64);
    let mut alive = n;
    let send = |fd: RawFd, msg: &[u8]| -> bool {
        // SAFETY: writing from a live slice.
        let w = unsafe { libc::write(fd, msg.as_ptr() as *const libc::c_void, msg.len()) };
        w == msg.len() as isize
    };
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    for &fd in &fds {
        client_message(&mut msg, &payload, ws, &mut rng);
        if !send(fd, &msg) {
            return Err(os_err("first write"));
        }
    }
    let mut tick = PerSecond::new("msgs");
    let end = start + d;
    while Instant::now() < end && !stopped() && alive > 0 {
        let k = ep.wait(10);
        for i in 0..k {
            let (_, data) = ev(&ep.events[i]);
            let idx = data as usize;
            let fd = fds[idx];
            // SAFETY: reading into our scratch buffer.
            let r =
                unsafe { libc::read(fd, scratch.as_mut_ptr() as *mut libc::c_void, scratch.len()) };
            if r <= 0 {
                if r == 0 || (errno() != libc::EAGAIN && errno() != libc::EINTR) {
                    errors += 1;
                    alive -= 1;
                    ep.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
                }
                continue;
            }
            let r = r as usize;
            if r > remaining[idx] {
                surplus += (r - remaining[idx]) as u64;
                remaining[idx] = 0;
            } else {
                remaining[idx] -= r;
            }
            if remaining[idx] == 0 {
                msgs += 1;
                remaining[idx] = want;
                client_message(&mut msg, &payload, ws, &mut rng);
                if !send(fd, &msg) {
                    errors += 1;
                }
            }
        }
        tick.tick(msgs);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    for fd in fds {
        close(fd);
    }
    let rate = msgs as f64 / elapsed;
    eprintln!("{msgs} messages in {elapsed:.2} s: {rate:.0} msgs/s, {cpu:.2} CPU-s");
    Ok(json!({
        "kind": "echo-client",
        "ws": ws,
        "connections": n,
        "size": size,
        "msgs": msgs,
        "elapsed_s": elapsed,
        "rate": rate,
        "errors": errors,
        "surplus_bytes": surplus,
        "cpu_s": cpu,
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_and_echo_frames() {
        let mut c = ServerConn::default();
        let mut tx = Vec::new();
        let mut frames = 0;
        let req =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert!(ws_input(&mut c, &req[..20], &mut tx, None, &mut frames));
        assert!(tx.is_empty() && !c.upgraded);
        assert!(ws_input(&mut c, &req[20..], &mut tx, None, &mut frames));
        assert!(c.upgraded && c.inbuf.is_empty());
        assert!(String::from_utf8_lossy(&tx).contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));

        let mut rng = Rng(7);
        let mut msg = Vec::new();
        client_message(&mut msg, b"hello", true, &mut rng);
        let mut two = msg.clone();
        client_message(&mut msg, &[1u8; 300], true, &mut rng);
        two.extend_from_slice(&msg);
        tx.clear();
        // Split mid-frame: the second frame is completed by the next read.
        assert!(ws_input(&mut c, &two[..10], &mut tx, None, &mut frames));
        assert!(ws_input(&mut c, &two[10..], &mut tx, None, &mut frames));
        assert_eq!(frames, 2);
        assert_eq!(&tx[..7], b"\x82\x05hello");
        assert_eq!(tx.len(), 7 + reply_len(300, true));
        assert_eq!(&tx[7..11], &[0x82, 126, 1, 44]);

        // Close is answered, then input is ignored.
        tx.clear();
        assert!(ws_input(
            &mut c,
            &[0x88, 0x82, 0, 0, 0, 0, 3, 232],
            &mut tx,
            None,
            &mut frames
        ));
        assert_eq!(tx, [0x88, 2, 3, 232]);
        assert!(c.closing);
        // Unmasked client frames are refused.
        let mut d = ServerConn {
            upgraded: true,
            ..Default::default()
        };
        assert!(!ws_input(
            &mut d,
            &[0x82, 0x01, 0],
            &mut tx,
            None,
            &mut frames
        ));
    }

    #[test]
    fn broadcast_takes_data_frames_only() {
        let mut c = ServerConn {
            upgraded: true,
            ..Default::default()
        };
        let (mut tx, mut bc, mut frames) = (Vec::new(), Vec::new(), 0);
        let mut rng = Rng(9);
        let mut msg = Vec::new();
        let mut input = vec![0x89, 0x80, 1, 2, 3, 4]; // ping, empty
        client_message(&mut msg, b"hi", true, &mut rng);
        input.extend_from_slice(&msg);
        input.extend_from_slice(&[0x81, 0x81, 0, 0, 0, 0, b'!']); // text "!"
        assert!(ws_input(
            &mut c,
            &input,
            &mut tx,
            Some(&mut bc),
            &mut frames
        ));
        assert_eq!(frames, 2);
        assert_eq!(bc, b"\x82\x02hi\x81\x01!");
        assert_eq!(tx, b"\x8a\x00"); // the pong only
    }
}
