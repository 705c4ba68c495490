//! Thin wrappers over the few Linux syscalls the engine uses: non-blocking TCP sockets,
//! `IP_BIND_ADDRESS_NO_PORT`, `SO_ERROR`, read/write and edge-triggered epoll.
//!
//! Errors come back as raw errno values so callers can classify them by name
//! (`ws_common::errno::errno_name`) without allocating an `io::Error` per failure.

use std::net::{IpAddr, SocketAddr};

use ws_common::net::sockaddr;

/// The calling thread's errno.
fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn setsockopt_int(fd: i32, level: i32, name: i32, v: i32) -> Result<(), i32> {
    // SAFETY: valid pointer to an int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// A non-blocking, close-on-exec TCP socket with `TCP_NODELAY`, for `dest`'s family.
pub fn tcp_socket(dest: &SocketAddr) -> Result<i32, i32> {
    let family = if dest.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    if let Err(e) = setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1) {
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Binds `fd` to source address `ip` with port 0 and `IP_BIND_ADDRESS_NO_PORT`, so the port
/// is chosen at connect time for the full 4-tuple: each source address gets its own
/// ephemeral port range towards the server instead of sharing one.
pub fn bind_source(fd: i32, ip: IpAddr) -> Result<(), i32> {
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
    let (ss, len) = sockaddr(&SocketAddr::new(ip, 0));
    // SAFETY: ss/len describe a valid sockaddr.
    let r = unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Starts a non-blocking connect: `Ok(true)` connected at once, `Ok(false)` in progress.
pub fn connect(fd: i32, dest: &SocketAddr) -> Result<bool, i32> {
    let (ss, len) = sockaddr(dest);
    // SAFETY: ss/len describe a valid sockaddr.
    let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
    if r == 0 {
        return Ok(true);
    }
    match errno() {
        libc::EINPROGRESS => Ok(false),
        e => Err(e),
    }
}

/// The pending error of a socket (`SO_ERROR`), 0 if none.
pub fn so_error(fd: i32) -> i32 {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: valid pointers.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut v as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 {
        v
    } else {
        errno()
    }
}

/// `read(2)`: `Ok(0)` is end of stream; `Err(EAGAIN)` means drained.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Asks the kernel to timestamp what arrives on `fd` (`SO_TIMESTAMPNS`): [`recv_stamped`]
/// then says when the bytes reached the socket, whenever the worker reads them.
pub fn enable_rx_timestamps(fd: i32) -> Result<(), i32> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// `recvmsg(2)` into `buf`: bytes read (`Ok(0)`: end of stream) and, when the socket has
/// receive timestamps on, the CLOCK_REALTIME ns at which the last of them arrived.
pub fn recv_stamped(fd: i32, buf: &mut [u8]) -> Result<(usize, Option<u64>), i32> {
    // Room for one SCM_TIMESTAMPNS control message (a timespec) with its header.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    loop {
        // SAFETY: an all-zero msghdr is valid; its pointers are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.0.len() as _;
        // SAFETY: msg points at a valid iovec and control buffer for the call.
        let r = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        if r < 0 {
            match errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
        let mut ts = None;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
        // msg_controllen; the timespec is read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let t: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    ts = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        return Ok((r as usize, ts));
    }
}

/// CLOCK_REALTIME ns (the clock of kernel receive timestamps).
pub fn realtime_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What the kernel knows of this clock's synchronisation (adjtimex, read only): whether
/// NTP (or PTP, chrony) keeps it synchronised, and its estimated and maximum error, µs.
pub fn clock_sync() -> Option<(bool, i64, i64)> {
    // SAFETY: a zeroed timex with modes 0 only reads the kernel's state.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: t is a valid timex.
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return None;
    }
    let synced = state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0;
    Some((synced, t.esterror as i64, t.maxerror as i64))
}

/// Sleeps until CLOCK_MONOTONIC reaches `mono_ns` (returns early on a signal).
pub fn sleep_until(mono_ns: u64) {
    let t = libc::timespec {
        tv_sec: (mono_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (mono_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: t is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &t,
            std::ptr::null_mut(),
        )
    };
}

/// `send(2)` without SIGPIPE: bytes written, or errno (`EAGAIN` when the buffer is full).
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let r = unsafe {
            libc::send(
                fd,
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Closes a descriptor (errors are ignored: nothing useful can be done with them).
pub fn close(fd: i32) {
    if fd >= 0 {
        // SAFETY: fd is owned by the caller and not used afterwards.
        unsafe { libc::close(fd) };
    }
}

/// An epoll instance; closed on drop.
pub struct Epoll {
    fd: i32,
}

/// Readiness flags used with [`Epoll::add`].
pub const EV_IN: u32 = libc::EPOLLIN as u32;
pub const EV_OUT: u32 = libc::EPOLLOUT as u32;
pub const EV_ERR: u32 = libc::EPOLLERR as u32;
pub const EV_HUP: u32 = libc::EPOLLHUP as u32;
pub const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
const EV_ET: u32 = libc::EPOLLET as u32;

impl Epoll {
    pub fn new() -> Result<Self, i32> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(Self { fd })
        }
    }

    /// Registers `fd` edge-triggered for input, output and hang-up, tagged with `token`.
    pub fn add(&self, fd: i32, token: u64) -> Result<(), i32> {
        let mut ev = libc::epoll_event {
            events: EV_IN | EV_OUT | EV_RDHUP | EV_ET,
            u64: token,
        };
        // SAFETY: valid pointer.
        let r = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }

    /// Waits up to `timeout_ns` for events (microsecond precision with `epoll_pwait2`, so
    /// a constant-rate schedule is not rounded to milliseconds; falls back to `epoll_wait`
    /// on kernels before 5.11). Returns how many of `events` were filled.
    pub fn wait_ns(&self, events: &mut [libc::epoll_event], timeout_ns: u64) -> usize {
        use std::sync::atomic::{AtomicBool, Ordering};
        static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
        if !NO_PWAIT2.load(Ordering::Relaxed) {
            let ts = libc::timespec {
                tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: events is valid for its length; ts is a valid timespec.
            let n = unsafe {
                libc::epoll_pwait2(
                    self.fd,
                    events.as_mut_ptr(),
                    events.len().min(i32::MAX as usize) as i32,
                    &ts,
                    std::ptr::null(),
                )
            };
            if n >= 0 {
                return n as usize;
            }
            if errno() != libc::ENOSYS {
                return 0;
            }
            NO_PWAIT2.store(true, Ordering::Relaxed);
        }
        let ms = timeout_ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
        self.wait(events, ms)
    }

    /// Waits up to `timeout_ms` for events; returns how many of `events` were filled.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: events is valid for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                events.as_mut_ptr(),
                events.len().min(i32::MAX as usize) as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            0 // EINTR (e.g. SIGINT): the caller's loop checks its flags and comes back
        } else {
            n as usize
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.fd);
    }
}

/// An empty event array for [`Epoll::wait`].
pub fn event_buffer(n: usize) -> Vec<libc::epoll_event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}
