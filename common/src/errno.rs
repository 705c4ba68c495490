//! Errno names, so error classes read `EMFILE` rather than "os error 24".

/// The symbolic name of an errno value (`"EMFILE"`), or `"E<n>"` for ones not listed.
pub fn errno_name(e: i32) -> String {
    let s = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::EPIPE => "EPIPE",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTO => "EPROTO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ECANCELED => "ECANCELED",
        _ => return format!("E{e}"),
    };
    s.to_string()
}

/// The errno name of an `io::Error`, or `"other"` when it carries no errno.
pub fn io_error_name(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(errno_name)
        .unwrap_or_else(|| "other".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::errno_name(libc::EMFILE), "EMFILE");
        assert_eq!(super::errno_name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(super::errno_name(9999), "E9999");
    }
}
