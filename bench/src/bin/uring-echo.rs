//! `uring-echo`: a bare io_uring TCP echo server (no WebSocket framing), one thread, one
//! ring, meant to be pinned with `taskset` and driven by `bare-tcp echo-client`.
//!
//! It answers one question of physical limits: how much server CPU per echoed message does
//! batching the sends of many connections into one `io_uring_enter` save, compared with a
//! `send()` syscall per message (`bare-tcp echo-server` does read + write per message)?
//!
//! - one multishot accept on the listener;
//! - one multishot receive per connection into a provided-buffer ring (`--buffers` x
//!   `--buf-size`): the kernel copies arriving bytes into a buffer it picks and posts a
//!   completion naming it;
//! - `--mode send-sqe`: each received chunk becomes an `IORING_OP_SEND` SQE of those very
//!   bytes; the buffer goes back to the kernel when the send's completion arrives (a short
//!   send is resubmitted for the rest). At most one send is in flight per connection, so
//!   bytes stay in order; later chunks wait in a small per-connection queue;
//! - `--mode send-syscall`: the same ring for receives, but a direct `send(2)` per chunk
//!   (falling back to an SQE for the rest of a short send), to isolate the batching effect;
//! - one `submit_and_wait(1)` per loop iteration, which submits every queued send and waits
//!   (and, with `--defer-taskrun`, runs the deferred task work). With `--wait-sends` it
//!   waits for this iteration's send completions plus one more event instead.
//!
//! The last line on stdout is one JSON object (`{"kind":"uring-echo",...}`). `msgs` is
//! echoed bytes divided by `--size` (the server cannot see message boundaries).

use std::collections::VecDeque;
use std::io::Write;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use serde_json::json;
use ws_bench::{
    close_fd as close, cpu_seconds, install_stop_signals, os_err, parse_duration, raise_nofile,
    set_int_opt, stopped,
};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// An IORING_OP_SEND SQE per received chunk, all submitted by the loop's one enter.
    SendSqe,
    /// A send(2) syscall per received chunk.
    SendSyscall,
}

#[derive(Parser)]
#[command(
    name = "uring-echo",
    version,
    about = "Bare io_uring TCP echo server (one thread): multishot accept, multishot recv into \
             provided buffers, sends batched as SQEs or sent with send(2)."
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:9102")]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value = "send-sqe")]
    mode: Mode,
    /// Add IORING_SETUP_DEFER_TASKRUN (task work runs only inside our io_uring_enter).
    #[arg(long)]
    defer_taskrun: bool,
    /// Provided buffers (a power of two, at most 32768). A connection can hold two at once
    /// (one being echoed, one just received), so 1024 runs short at 1000 connections.
    #[arg(long, default_value_t = 4096)]
    buffers: u16,
    /// Bytes per provided buffer.
    #[arg(long, default_value_t = 4096)]
    buf_size: usize,
    /// Submission queue entries (the completion queue gets 4x).
    #[arg(long, default_value_t = 4096)]
    entries: u32,
    /// Wait for the completions of this iteration's sends plus one more event, instead of
    /// any one event: the send completions (usually posted inline during the submit) then do
    /// not end the wait, so one enter both sends and collects the next receives.
    #[arg(long)]
    wait_sends: bool,
    /// Message size of the client, only to report `msgs` = bytes / size.
    #[arg(long, default_value_t = 64)]
    size: u64,
    /// Stop after this long (default: until SIGINT/SIGTERM).
    #[arg(short = 'd', long, value_parser = parse_duration)]
    duration: Option<Duration>,
}

type Res<T> = Result<T, String>;

fn main() {
    let cli = Cli::parse();
    install_stop_signals();
    match run(&cli) {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("uring-echo: {e}");
            std::process::exit(1);
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A listening socket (SO_REUSEADDR, backlog capped by net.core.somaxconn).
fn listen(addr: SocketAddr) -> Res<RawFd> {
    ws_bench::listen_on(addr, 0)
}

// ---------------------------------------------------------------------------------------
// user_data: kind in the top byte; the rest depends on the kind.

const K_ACCEPT: u64 = 1;
/// Receive: generation (24 bits) and fd (32 bits).
const K_RECV: u64 = 2;
/// Send: the provided buffer id (its state says which connection).
const K_SEND: u64 = 3;
const K_TICK: u64 = 4;
const K_IGNORE: u64 = 5;

fn recv_token(gen: u32, fd: RawFd) -> u64 {
    (K_RECV << 56) | (((gen & 0xFF_FFFF) as u64) << 32) | fd as u32 as u64
}

// ---------------------------------------------------------------------------------------
// provided-buffer ring

struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    size: usize,
    tail: u16,
    dirty: bool,
    memory: Vec<u8>,
}

const GROUP: u16 = 0;

impl BufRing {
    fn new(entries: u16, size: usize) -> Res<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err("--buffers must be a power of two, at most 32768".into());
        }
        let ring_bytes = entries as usize * size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping; page aligned as the kernel requires.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        let mut b = BufRing {
            ring: ring as *mut BufRingEntry,
            ring_bytes,
            entries,
            size,
            tail: 0,
            dirty: false,
            memory: vec![0x55u8; entries as usize * size],
        };
        for bid in 0..entries {
            b.push(bid);
        }
        b.publish();
        Ok(b)
    }

    fn addr(&self, bid: u16) -> *const u8 {
        // SAFETY: bid < entries, so the offset is inside `memory`.
        unsafe { self.memory.as_ptr().add(bid as usize * self.size) }
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: idx < entries; the entry is ours to write until the tail is published.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(self.addr(bid) as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.dirty = true;
    }

    /// Makes the pushed buffers visible to the kernel (once per loop iteration).
    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        // SAFETY: the tail field lives in the first entry; the kernel reads it atomically.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
        self.dirty = false;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.ring as *mut libc::c_void, self.ring_bytes) };
    }
}

// ---------------------------------------------------------------------------------------
// server state

struct Conn {
    gen: u32,
    /// The multishot receive is armed.
    recv_armed: bool,
    /// A send (SQE) of this connection is in flight.
    sending: bool,
    /// Received buffers waiting for the send in flight.
    queue: VecDeque<u16>,
}

/// What a provided buffer holds while the application owns it.
#[derive(Clone, Copy, Default)]
struct Chunk {
    fd: RawFd,
    gen: u32,
    off: u32,
    len: u32,
}

#[derive(Default)]
struct Stats {
    accepted: u64,
    closed: u64,
    recv_cqes: u64,
    bytes: u64,
    send_sqes: u64,
    send_syscalls: u64,
    short_sends: u64,
    enobufs: u64,
    errors: u64,
    enters: u64,
}

struct Server {
    ring: IoUring,
    bufs: BufRing,
    mode: Mode,
    conns: Vec<Option<Conn>>,
    chunks: Vec<Chunk>,
    /// Connections whose multishot receive ended (e.g. ENOBUFS) and must be re-armed.
    rearm: Vec<(RawFd, u32)>,
    /// Send SQEs queued since the last enter.
    new_sends: usize,
    next_gen: u32,
    st: Stats,
}

impl Server {
    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry references either no memory, a provided buffer we own
            // until its completion, or the long-lived timeout spec.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            // SQ full: hand what we have to the kernel and retry.
            let _ = self.ring.submit();
        }
    }

    fn arm_recv(&mut self, fd: RawFd, gen: u32) {
        let e = opcode::RecvMulti::new(types::Fd(fd), GROUP)
            .build()
            .user_data(recv_token(gen, fd));
        self.push(e);
    }

    fn conn(&mut self, fd: RawFd, gen: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(fd as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| c.gen == gen)
    }

    fn on_accept(&mut self, fd: RawFd) {
        self.st.accepted += 1;
        set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        if self.conns.len() <= fd as usize {
            self.conns.resize_with(fd as usize + 1, || None);
        }
        self.next_gen = self.next_gen.wrapping_add(1) & 0xFF_FFFF;
        let gen = self.next_gen;
        self.conns[fd as usize] = Some(Conn {
            gen,
            recv_armed: true,
            sending: false,
            queue: VecDeque::new(),
        });
        self.arm_recv(fd, gen);
    }

    /// Drops the connection: cancels its receive, recycles its queued buffers, closes it.
    /// A send still in flight keeps its buffer until its completion.
    fn close_conn(&mut self, fd: RawFd, gen: u32) {
        let Some(c) = self.conns.get_mut(fd as usize).and_then(|c| c.take()) else {
            return;
        };
        if c.gen != gen {
            self.conns[fd as usize] = Some(c);
            return;
        }
        self.st.closed += 1;
        for bid in c.queue {
            self.bufs.push(bid);
        }
        if c.recv_armed {
            let e = opcode::AsyncCancel::new(recv_token(gen, fd))
                .build()
                .user_data(K_IGNORE << 56);
            self.push(e);
        }
        // Hand queued SQEs naming this fd to the kernel before the number can be reused.
        let _ = self.ring.submit();
        close(fd);
    }

    fn send_sqe(&mut self, bid: u16) {
        let ch = self.chunks[bid as usize];
        // SAFETY: off <= len <= buf_size, inside buffer bid.
        let ptr = unsafe { self.bufs.addr(bid).add(ch.off as usize) };
        let e = opcode::Send::new(types::Fd(ch.fd), ptr, ch.len - ch.off)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data((K_SEND << 56) | bid as u64);
        self.push(e);
        self.st.send_sqes += 1;
        self.new_sends += 1;
    }

    /// Starts sending buffer `bid` (the connection has no send in flight).
    fn start_send(&mut self, bid: u16) {
        let Chunk { fd, gen, .. } = self.chunks[bid as usize];
        if self.mode == Mode::SendSyscall {
            loop {
                let ch = self.chunks[bid as usize];
                // SAFETY: sending from buffer bid, which we own until recycled.
                let w = unsafe {
                    libc::send(
                        fd,
                        self.bufs.addr(bid).add(ch.off as usize) as *const libc::c_void,
                        (ch.len - ch.off) as usize,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                self.st.send_syscalls += 1;
                if w < 0 {
                    let e = errno();
                    if e == libc::EINTR {
                        continue;
                    }
                    if e == libc::EAGAIN {
                        break; // the rest goes as an SQE, which waits for space
                    }
                    if e != libc::ECONNRESET && e != libc::EPIPE {
                        self.st.errors += 1;
                    }
                    self.bufs.push(bid);
                    self.close_conn(fd, gen);
                    return;
                }
                self.chunks[bid as usize].off += w as u32;
                if self.chunks[bid as usize].off == ch.len {
                    self.bufs.push(bid);
                    return;
                }
                self.st.short_sends += 1;
            }
        }
        if let Some(c) = self.conn(fd, gen) {
            c.sending = true;
        }
        self.send_sqe(bid);
    }

    fn on_recv(&mut self, fd: RawFd, gen: u32, res: i32, more: bool, bid: Option<u16>) {
        self.st.recv_cqes += 1;
        if self.conn(fd, gen).is_none() {
            // Stale (the connection is gone): give the buffer back.
            if let Some(b) = bid {
                self.bufs.push(b);
            }
            return;
        }
        if res <= 0 {
            if let Some(b) = bid {
                self.bufs.push(b);
            }
            if res == -libc::ENOBUFS && !more {
                // Out of buffers: re-arm once some have been recycled.
                self.st.enobufs += 1;
                if let Some(c) = self.conn(fd, gen) {
                    c.recv_armed = false;
                }
                self.rearm.push((fd, gen));
                return;
            }
            if res < 0 && res != -libc::ECONNRESET {
                self.st.errors += 1;
            }
            if let Some(c) = self.conn(fd, gen) {
                c.recv_armed = more;
            }
            self.close_conn(fd, gen);
            return;
        }
        let Some(bid) = bid else {
            self.st.errors += 1;
            self.close_conn(fd, gen);
            return;
        };
        self.st.bytes += res as u64;
        self.chunks[bid as usize] = Chunk {
            fd,
            gen,
            off: 0,
            len: res as u32,
        };
        let c = self.conn(fd, gen).expect("checked above");
        if !more {
            c.recv_armed = false;
        }
        if c.sending {
            c.queue.push_back(bid);
        } else {
            self.start_send(bid);
        }
        if !more {
            // The multishot receive ended with data (e.g. CQ overflow): re-arm it.
            if let Some(c) = self.conn(fd, gen) {
                c.recv_armed = true;
                self.arm_recv(fd, gen);
            }
        }
    }

    fn on_send(&mut self, bid: u16, res: i32) {
        let ch = self.chunks[bid as usize];
        if self.conn(ch.fd, ch.gen).is_none() {
            self.bufs.push(bid);
            return;
        }
        if res == -libc::EAGAIN || res == -libc::EINTR {
            self.send_sqe(bid);
            return;
        }
        if res < 0 {
            if res != -libc::ECONNRESET && res != -libc::EPIPE {
                self.st.errors += 1;
            }
            self.bufs.push(bid);
            self.close_conn(ch.fd, ch.gen);
            return;
        }
        let off = ch.off + res as u32;
        if off < ch.len {
            self.st.short_sends += 1;
            self.chunks[bid as usize].off = off;
            self.send_sqe(bid);
            return;
        }
        self.bufs.push(bid);
        let c = self.conn(ch.fd, ch.gen).expect("checked above");
        c.sending = false;
        if let Some(next) = c.queue.pop_front() {
            self.start_send(next);
        }
    }
}

fn run(cli: &Cli) -> Res<String> {
    let _ = raise_nofile();
    let lfd = listen(cli.listen)?;
    let cq_entries = cli.entries as usize * 4;
    let mut b = IoUring::builder();
    b.setup_cqsize(cq_entries as u32)
        .setup_single_issuer()
        .setup_coop_taskrun();
    if cli.defer_taskrun {
        b.setup_defer_taskrun();
    }
    let ring = b
        .build(cli.entries)
        .map_err(|e| format!("io_uring_setup: {e}"))?;
    let bufs = BufRing::new(cli.buffers, cli.buf_size)?;
    // SAFETY: the ring memory is page aligned, `entries` long, and lives (in `Server`) as
    // long as the io_uring.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring as u64, bufs.entries, GROUP, 0)
    }
    .map_err(|e| format!("register_buf_ring: {e}"))?;
    let mut s = Server {
        ring,
        bufs,
        mode: cli.mode,
        conns: Vec::new(),
        chunks: vec![Chunk::default(); cli.buffers as usize],
        rearm: Vec::new(),
        new_sends: 0,
        next_gen: 0,
        st: Stats::default(),
    };
    let accept = opcode::AcceptMulti::new(types::Fd(lfd))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(K_ACCEPT << 56);
    s.push(accept.clone());
    // A 100 ms timeout, re-armed when it fires, so the loop sees SIGINT and the deadline.
    let tick_ts = Box::new(types::Timespec::new().nsec(100_000_000));
    let tick = opcode::Timeout::new(&*tick_ts as *const types::Timespec)
        .build()
        .user_data(K_TICK << 56);
    s.push(tick.clone());

    println!("listening on {} (mode {})", cli.listen, mode_name(cli.mode));
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let deadline = cli.duration.map(|d| start + d);
    let cpu0 = cpu_seconds();
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(cli.entries as usize * 4);
    let mut next_print = start + Duration::from_secs(1);
    let mut last_bytes = 0u64;
    while !stopped() && deadline.is_none_or(|d| Instant::now() < d) {
        s.bufs.publish();
        for (fd, gen) in std::mem::take(&mut s.rearm) {
            if let Some(c) = s.conn(fd, gen) {
                c.recv_armed = true;
                s.arm_recv(fd, gen);
            }
        }
        s.st.enters += 1;
        let want = if cli.wait_sends {
            (s.new_sends + 1).min(cq_entries)
        } else {
            1
        };
        s.new_sends = 0;
        match s.ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
        done.clear();
        {
            let mut cq = s.ring.completion();
            cq.sync();
            done.extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
        }
        for &(ud, res, flags) in &done {
            let more = cqueue::more(flags);
            match ud >> 56 {
                K_ACCEPT => {
                    if res >= 0 {
                        s.on_accept(res);
                    } else {
                        s.st.errors += 1;
                    }
                    if !more {
                        s.push(accept.clone());
                    }
                }
                K_RECV => {
                    let gen = ((ud >> 32) & 0xFF_FFFF) as u32;
                    let fd = ud as u32 as RawFd;
                    s.on_recv(fd, gen, res, more, cqueue::buffer_select(flags));
                }
                K_SEND => s.on_send(ud as u16, res),
                K_TICK => s.push(tick.clone()),
                _ => {}
            }
        }
        let now = Instant::now();
        if now >= next_print {
            let b = s.st.bytes;
            eprintln!(
                "msgs: {:.0}/s (total {})",
                (b - last_bytes) as f64 / cli.size.max(1) as f64,
                b / cli.size.max(1)
            );
            last_bytes = b;
            next_print = now + Duration::from_secs(1);
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let elapsed = start.elapsed().as_secs_f64();
    let st = &s.st;
    let msgs = st.bytes / cli.size.max(1);
    let per = |x: u64| {
        if msgs > 0 {
            x as f64 / msgs as f64
        } else {
            0.0
        }
    };
    let v = json!({
        "kind": "uring-echo",
        "mode": mode_name(cli.mode),
        "defer_taskrun": cli.defer_taskrun,
        "wait_sends": cli.wait_sends,
        "accepted": st.accepted,
        "closed": st.closed,
        "bytes": st.bytes,
        "msgs": msgs,
        "recv_cqes": st.recv_cqes,
        "send_sqes": st.send_sqes,
        "send_syscalls": st.send_syscalls,
        "short_sends": st.short_sends,
        "enobufs": st.enobufs,
        "errors": st.errors,
        "enters": st.enters,
        "msgs_per_enter": msgs as f64 / st.enters.max(1) as f64,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "cpu_us_per_msg": per(1) * cpu * 1e6,
    });
    // The multishot accept holds a reference to the listener and the ring is torn down
    // asynchronously after exit: without shutdown() the port stays in LISTEN for a moment
    // and an immediate restart on it fails with EADDRINUSE.
    // SAFETY: plain syscalls on our listener.
    unsafe { libc::shutdown(lfd, libc::SHUT_RDWR) };
    close(lfd);
    Ok(v.to_string())
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::SendSqe => "send-sqe",
        Mode::SendSyscall => "send-syscall",
    }
}
