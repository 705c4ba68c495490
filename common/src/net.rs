//! Socket addresses for the raw-socket code (the load generator's engine, the bare-TCP
//! bench) that calls `bind(2)`/`connect(2)` itself.

use std::net::SocketAddr;

/// A `sockaddr` built from a `SocketAddr`, with its length.
pub fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data and large enough for both families.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families() {
        let (ss, len) = sockaddr(&"127.0.0.1:9001".parse().unwrap());
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in>());
        assert_eq!(ss.ss_family, libc::AF_INET as libc::sa_family_t);
        // SAFETY: an AF_INET storage holds a sockaddr_in.
        let sin = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
        assert_eq!(u16::from_be(sin.sin_port), 9001);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [127, 0, 0, 1]);
        let (ss, len) = sockaddr(&"[::1]:80".parse().unwrap());
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(ss.ss_family, libc::AF_INET6 as libc::sa_family_t);
        // SAFETY: an AF_INET6 storage holds a sockaddr_in6.
        let sin6 = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
        assert_eq!(u16::from_be(sin6.sin6_port), 80);
        assert_eq!(
            sin6.sin6_addr.s6_addr,
            std::net::Ipv6Addr::LOCALHOST.octets()
        );
    }
}
