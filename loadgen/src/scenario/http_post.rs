//! HTTP `POST /push/ID` requests from the worker's own epoll loop (the push scenario's
//! sender).
//!
//! The server answers one request per TCP connection and then closes, so each push is a
//! short-lived non-blocking connection: `socket` + `connect`, write the request when
//! writable, read the answer (`200` with the number of deliveries as the body, `404` when
//! the user has no connection, `413` when the body is over the server's message limit),
//! close. At most `--push-concurrency` are in flight per worker; their slots live in a
//! small `Vec` of their own, tagged in epoll with [`SIDE_BIT`] so their events never reach
//! the WebSocket slots. Each has a deadline (the handshake timeout) kept in a FIFO, since the
//! delay is constant.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use ws_common::errno::errno_name;

use crate::engine::conn::token;
use crate::engine::scenario::SIDE_BIT;
use crate::engine::sys::{self, Epoll, EV_ERR, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};

/// Largest answer head accepted.
const MAX_RESPONSE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PostState {
    Free,
    Connecting,
    Sending,
    Reading,
}

#[derive(Debug)]
struct Post {
    fd: i32,
    gen: u32,
    state: PostState,
    /// The WebSocket slot (and its generation) the push is addressed to.
    conn: (u32, u32),
    started_ns: u64,
    req: Vec<u8>,
    written: usize,
    resp: Vec<u8>,
}

/// How a POST ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The WebSocket slot and generation the push was addressed to.
    pub conn: (u32, u32),
    /// `connect()` to the answer read (or to the failure).
    pub elapsed_ns: u64,
    /// `Ok((status, deliveries))` (deliveries: the decimal body, 0 if it is not one), or
    /// the failure class (errno name, `timeout`, `malformed_response`, ...).
    pub result: Result<(u16, u64), String>,
}

/// A parsed (or not yet complete) HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Incomplete,
    Done { status: u16, count: u64 },
    Bad(&'static str),
}

/// Parses an HTTP/1.x answer from `buf`; `eof` says the peer has closed.
pub fn parse_answer(buf: &[u8], eof: bool) -> Answer {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_RESPONSE {
            return Answer::Bad("response_too_large");
        }
        return if eof {
            Answer::Bad(if buf.is_empty() {
                "closed_without_answer"
            } else {
                "malformed_response"
            })
        } else {
            Answer::Incomplete
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Answer::Bad("malformed_response");
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Answer::Bad("malformed_response");
    };
    let mut length = None;
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            if n.trim().eq_ignore_ascii_case("content-length") {
                match v.trim().parse::<usize>() {
                    Ok(n) => length = Some(n),
                    Err(_) => return Answer::Bad("malformed_response"),
                }
            }
        }
    }
    let body = &buf[head_end + 4..];
    let body = match length {
        Some(n) if body.len() >= n => &body[..n],
        Some(_) if eof => return Answer::Bad("truncated_response"),
        Some(n) if n > MAX_RESPONSE => return Answer::Bad("response_too_large"),
        Some(_) => return Answer::Incomplete,
        None if eof => body,
        None => return Answer::Incomplete,
    };
    let count = std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Answer::Done { status, count }
}

/// The request for a push of `body` to `user`.
/// `authorization` is the whole header line (`--api-key`).
pub fn request(
    host_header: &str,
    authorization: Option<&str>,
    user: &str,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(
        format!("POST /push/{user} HTTP/1.1\r\nHost: {host_header}\r\n").as_bytes(),
    );
    if let Some(a) = authorization {
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
}

/// A worker's POSTs in flight.
#[derive(Debug)]
pub struct PushWorker {
    posts: Vec<Post>,
    free: Vec<u32>,
    timeouts: VecDeque<(u64, u32, u32)>,
    timeout_ns: u64,
    scratch: Vec<u8>,
}

impl PushWorker {
    pub fn new(capacity: u32, timeout_ns: u64) -> Self {
        let n = capacity.max(1);
        Self {
            posts: (0..n)
                .map(|_| Post {
                    fd: -1,
                    gen: 0,
                    state: PostState::Free,
                    conn: (0, 0),
                    started_ns: 0,
                    req: Vec::new(),
                    written: 0,
                    resp: Vec::new(),
                })
                .collect(),
            free: (0..n).rev().collect(),
            timeouts: VecDeque::new(),
            timeout_ns,
            scratch: vec![0; MAX_RESPONSE],
        }
    }

    /// Whether another POST may start.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.posts.len() - self.free.len()
    }

    /// The earliest deadline of a POST in flight.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timeouts.front().map(|t| t.0)
    }

    /// Starts a POST of the request in `req` (taken) to `dest`; an immediate failure is
    /// returned as its outcome.
    pub fn start(
        &mut self,
        ep: &Epoll,
        dest: &SocketAddr,
        src: Option<IpAddr>,
        req: &[u8],
        conn: (u32, u32),
        now: u64,
    ) -> Option<Outcome> {
        let Some(p) = self.free.pop() else {
            return Some(Outcome {
                conn,
                elapsed_ns: 0,
                result: Err("no_post_slot".into()),
            });
        };
        let i = p as usize;
        let post = &mut self.posts[i];
        post.state = PostState::Connecting;
        post.conn = conn;
        post.started_ns = now;
        post.req.clear();
        post.req.extend_from_slice(req);
        post.written = 0;
        post.resp.clear();
        let fd = match sys::tcp_socket(dest) {
            Ok(fd) => fd,
            Err(e) => return Some(self.fail(i, &errno_name(e), now)),
        };
        self.posts[i].fd = fd;
        if let Some(ip) = src {
            if let Err(e) = sys::bind_source(fd, ip) {
                return Some(self.fail(i, &errno_name(e), now));
            }
        }
        let done = match sys::connect(fd, dest) {
            Ok(d) => d,
            Err(e) => return Some(self.fail(i, &errno_name(e), now)),
        };
        let gen = self.posts[i].gen;
        if let Err(e) = ep.add(fd, token(SIDE_BIT | i, gen)) {
            return Some(self.fail(i, &errno_name(e), now));
        }
        self.timeouts.push_back((now + self.timeout_ns, p, gen));
        if done {
            self.posts[i].state = PostState::Sending;
            return self.write(i, now);
        }
        None
    }

    /// Readiness of POST slot `i` (token slot without [`SIDE_BIT`]).
    pub fn on_event(&mut self, i: usize, gen: u32, flags: u32, now: u64) -> Option<Outcome> {
        let post = self.posts.get(i)?;
        if post.gen != gen || post.fd < 0 {
            return None;
        }
        if post.state == PostState::Connecting {
            if flags & (EV_OUT | EV_ERR | EV_HUP) == 0 {
                return None;
            }
            match sys::so_error(post.fd) {
                0 => self.posts[i].state = PostState::Sending,
                e => return Some(self.fail(i, &errno_name(e), now)),
            }
        }
        if self.posts[i].state == PostState::Sending {
            if let Some(o) = self.write(i, now) {
                return Some(o);
            }
        }
        if self.posts[i].state == PostState::Reading
            && flags & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0
        {
            return self.read(i, now);
        }
        None
    }

    fn write(&mut self, i: usize, now: u64) -> Option<Outcome> {
        let post = &mut self.posts[i];
        while post.written < post.req.len() {
            match sys::write(post.fd, &post.req[post.written..]) {
                Ok(n) => post.written += n,
                Err(libc::EAGAIN) => return None,
                Err(e) => return Some(self.fail(i, &errno_name(e), now)),
            }
        }
        post.state = PostState::Reading;
        // The answer may already be there (edge-triggered: no new edge would announce it).
        self.read(i, now)
    }

    fn read(&mut self, i: usize, now: u64) -> Option<Outcome> {
        loop {
            let fd = self.posts[i].fd;
            let (eof, n) = match sys::read(fd, &mut self.scratch) {
                Ok(0) => (true, 0),
                Ok(n) => (false, n),
                Err(libc::EAGAIN) => return None,
                Err(e) => return Some(self.fail(i, &errno_name(e), now)),
            };
            let post = &mut self.posts[i];
            post.resp.extend_from_slice(&self.scratch[..n]);
            match parse_answer(&post.resp, eof) {
                Answer::Incomplete if !eof => continue,
                Answer::Incomplete => return Some(self.fail(i, "truncated_response", now)),
                Answer::Bad(class) => return Some(self.fail(i, class, now)),
                Answer::Done { status, count } => {
                    let o = Outcome {
                        conn: post.conn,
                        elapsed_ns: now.saturating_sub(post.started_ns),
                        result: Ok((status, count)),
                    };
                    self.release(i);
                    return Some(o);
                }
            }
        }
    }

    fn fail(&mut self, i: usize, class: &str, now: u64) -> Outcome {
        let post = &self.posts[i];
        let o = Outcome {
            conn: post.conn,
            elapsed_ns: now.saturating_sub(post.started_ns),
            result: Err(class.to_string()),
        };
        self.release(i);
        o
    }

    fn release(&mut self, i: usize) {
        let post = &mut self.posts[i];
        sys::close(post.fd);
        post.fd = -1;
        post.gen = post.gen.wrapping_add(1);
        post.state = PostState::Free;
        if post.resp.capacity() > MAX_RESPONSE {
            post.resp = Vec::new();
        }
        self.free.push(i as u32);
    }

    /// POSTs past their deadline fail with `timeout`.
    pub fn timers(&mut self, now: u64, out: &mut Vec<Outcome>) {
        while let Some(&(due, i, gen)) = self.timeouts.front() {
            if due > now {
                break;
            }
            self.timeouts.pop_front();
            let i = i as usize;
            if self.posts[i].gen == gen && self.posts[i].state != PostState::Free {
                out.push(self.fail(i, "timeout", now));
            }
        }
    }

    /// Abandons every POST in flight (end of run).
    pub fn close_all(&mut self) {
        for i in 0..self.posts.len() {
            if self.posts[i].state != PostState::Free {
                self.release(i);
            }
        }
        self.timeouts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n1\n";
        assert_eq!(
            parse_answer(ok, false),
            Answer::Done {
                status: 200,
                count: 1
            }
        );
        assert_eq!(parse_answer(&ok[..ok.len() - 1], false), Answer::Incomplete);
        assert_eq!(
            parse_answer(&ok[..ok.len() - 1], true),
            Answer::Bad("truncated_response")
        );
        assert_eq!(parse_answer(&ok[..20], false), Answer::Incomplete);
        assert_eq!(
            parse_answer(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n0\n",
                true
            ),
            Answer::Done {
                status: 404,
                count: 0
            }
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 413 Payload Too Large\r\n\r\n", false),
            Answer::Incomplete
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 413 Payload Too Large\r\n\r\n", true),
            Answer::Done {
                status: 413,
                count: 0
            }
        );
        assert_eq!(
            parse_answer(b"", true),
            Answer::Bad("closed_without_answer")
        );
        assert_eq!(
            parse_answer(b"garbage\r\n\r\n", false),
            Answer::Bad("malformed_response")
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Answer::Bad("malformed_response")
        );
        assert_eq!(
            parse_answer(&[b'a'; 5000], false),
            Answer::Bad("response_too_large")
        );
        let mut r = Vec::new();
        request("h:1", None, "u5-0", b"abc", &mut r);
        assert_eq!(
            r,
            b"POST /push/u5-0 HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nabc"
        );
        request(
            "h:1",
            Some("Authorization: Bearer k"),
            "u5-0",
            b"abc",
            &mut r,
        );
        assert!(r.starts_with(
            b"POST /push/u5-0 HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer k\r\nContent-Type"
        ));
        assert_eq!(crate::engine::user_id(1 << 20 | 3, 2), "u1048579-2");
    }
}
