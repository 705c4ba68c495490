//! Listening sockets: one per core, all bound to the same port with SO_REUSEPORT so the
//! kernel spreads connections over the cores.
//!
//! Built by hand (socket2) rather than with glommio's `TcpListener::bind` because that one
//! hard-codes a backlog of 1024; ours honours `net.core.somaxconn`. Before binding, a probe
//! checks that no *other* process already listens on the port: with SO_REUSEPORT a stale
//! server would silently take part of the connections instead of failing.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// `net.core.somaxconn`, or 4096 if unreadable.
pub fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// Creates `n` listening sockets on `addr` (port 0: the first picks, the rest follow).
/// Returns the raw fds (non-blocking, close-on-exec) and the bound address.
/// `send_buffer` > 0 sets SO_SNDBUF on the listeners, which accepted sockets inherit (and
/// with it the lock that stops tcp_wmem autotuning from growing them to 4 MiB).
pub fn bind_all(
    addr: SocketAddr,
    n: usize,
    backlog: u32,
    send_buffer: usize,
) -> Result<(Vec<RawFd>, SocketAddr), String> {
    if addr.port() != 0 {
        refuse_if_held(addr)?;
    }
    let mut fds = Vec::with_capacity(n);
    let mut bound = addr;
    for _ in 0..n {
        let s =
            new_socket(bound).map_err(|e| format!("cannot create a socket for {bound}: {e}"))?;
        s.set_reuse_port(true)
            .map_err(|e| format!("SO_REUSEPORT: {e}"))?;
        s.set_reuse_address(true)
            .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        s.bind(&SockAddr::from(bound))
            .map_err(|e| format!("cannot bind {bound}: {e}"))?;
        s.listen(backlog.min(i32::MAX as u32) as i32)
            .map_err(|e| format!("cannot listen on {bound}: {e}"))?;
        s.set_nonblocking(true)
            .map_err(|e| format!("O_NONBLOCK: {e}"))?;
        // Accepted sockets inherit TCP_NODELAY from the listener: one setsockopt here
        // instead of one per connection.
        s.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        if send_buffer > 0 {
            s.set_send_buffer_size(send_buffer)
                .map_err(|e| format!("SO_SNDBUF: {e}"))?;
        }
        if bound.port() == 0 {
            bound = s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or("cannot read the bound address")?;
        }
        fds.push(s.into_raw_fd());
    }
    Ok((fds, bound))
}

fn new_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// Fails if another socket already listens on `addr`'s port, naming its process.
fn refuse_if_held(addr: SocketAddr) -> Result<(), String> {
    let probe = new_socket(addr).map_err(|e| format!("cannot create a socket for {addr}: {e}"))?;
    // SO_REUSEADDR so TIME_WAIT leftovers do not count; without SO_REUSEPORT, so any
    // listener on the port (ours from an earlier run included) makes bind fail.
    let _ = probe.set_reuse_address(true);
    match probe.bind(&SockAddr::from(addr)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let who = ws_common::metrics::holder_of_port(addr.port())
                .map(|(pid, comm)| format!("pid {pid} ({comm})"))
                .unwrap_or_else(|| "another process".to_string());
            Err(format!(
                "{addr} is already in use by {who}. Refusing to start: with SO_REUSEPORT the two \
                 servers would silently share the connections. Stop it or pick another --listen port."
            ))
        }
        Err(e) => Err(format!("cannot bind {addr}: {e}")),
    }
}
