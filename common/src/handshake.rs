//! The HTTP/1.1 Upgrade handshake (RFC 6455 §4), written by hand on httparse, sha1 and base64.
//!
//! Server side: [`parse_request`] takes whatever bytes have arrived so far and says "need
//! more", "here is a complete request" (with how many bytes it used, so a first frame sent
//! in the same packet is not lost), or "refuse with this status". [`check_upgrade`] then
//! validates a GET as a WebSocket upgrade. Both servers use these two functions so they
//! refuse the same requests with the same status.
//!
//! Client side: [`client_request`] builds request bytes and [`parse_response`] checks the
//! `101` and its `Sec-WebSocket-Accept`.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::limits::{MAX_HANDSHAKE_BYTES, MAX_HEADERS};

/// The GUID RFC 6455 appends to the client's key.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (base64 text, as sent).
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Why a request is refused; each maps to one HTTP status and one metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Unparseable request, or a missing/invalid Upgrade, Connection, Key or Host.
    BadRequest,
    /// A method other than the route allows.
    MethodNotAllowed,
    /// A `Sec-WebSocket-Version` other than 13.
    UpgradeRequired,
    /// Origin not in `--allow-origin`.
    Forbidden,
    /// Unknown path.
    NotFound,
    /// Request head over 8 KiB, or too many headers.
    HeadersTooLarge,
    /// `--max-conns` reached.
    Unavailable,
    /// Request body over `--max-body` or `--max-message-size`.
    PayloadTooLarge,
    /// A `Content-Length` repeated, or not plain decimal digits (`+3`, `-1`, `3 4`).
    BadContentLength,
    /// `Host` missing or repeated.
    BadHost,
    /// A line of the request head ends in a bare LF instead of CRLF.
    BareLf,
    /// A `%` escape that is not two hex digits, or one that decodes to invalid UTF-8.
    BadEncoding,
    /// `--token-secret` set and no token presented (`?token=` or `Authorization: Bearer`).
    TokenMissing,
    /// A token that is not an HS256 JWT signed with our secret (forged, malformed).
    TokenInvalid,
    /// A token past its `exp` (or before its `nbf`).
    TokenExpired,
    /// A token whose `rooms` claim does not include the room asked for.
    RoomForbidden,
    /// `?user=` sent to a server that takes identities only from tokens.
    UserParam,
    /// An admin request without the right `Authorization: Bearer` API key.
    ApiKey,
    /// An admin request from a web page (an `Origin` not in `--allow-origin`), or, with no
    /// API key, naming the server by a host name (DNS rebinding).
    AdminCrossSite,
    /// `--max-pending` connections of this core are already in their handshake.
    Busy,
}

impl Reject {
    /// Every reason, in a fixed order (for metrics).
    pub const ALL: [Reject; 20] = [
        Reject::BadRequest,
        Reject::MethodNotAllowed,
        Reject::UpgradeRequired,
        Reject::Forbidden,
        Reject::NotFound,
        Reject::HeadersTooLarge,
        Reject::Unavailable,
        Reject::PayloadTooLarge,
        Reject::BadContentLength,
        Reject::BadHost,
        Reject::BareLf,
        Reject::BadEncoding,
        Reject::TokenMissing,
        Reject::TokenInvalid,
        Reject::TokenExpired,
        Reject::RoomForbidden,
        Reject::UserParam,
        Reject::ApiKey,
        Reject::AdminCrossSite,
        Reject::Busy,
    ];

    /// HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Reject::BadRequest => 400,
            Reject::MethodNotAllowed => 405,
            Reject::UpgradeRequired => 426,
            Reject::Forbidden => 403,
            Reject::NotFound => 404,
            Reject::HeadersTooLarge => 431,
            Reject::Unavailable => 503,
            Reject::PayloadTooLarge => 413,
            Reject::BadContentLength | Reject::BadHost | Reject::BareLf | Reject::BadEncoding => {
                400
            }
            Reject::UserParam => 400,
            Reject::TokenMissing | Reject::TokenInvalid | Reject::TokenExpired | Reject::ApiKey => {
                401
            }
            Reject::RoomForbidden | Reject::AdminCrossSite => 403,
            Reject::Busy => 503,
        }
    }

    /// Label used in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::BadRequest => "bad_request",
            Reject::MethodNotAllowed => "method_not_allowed",
            Reject::UpgradeRequired => "version",
            Reject::Forbidden => "origin",
            Reject::NotFound => "not_found",
            Reject::HeadersTooLarge => "headers_too_large",
            Reject::Unavailable => "max_conns",
            Reject::PayloadTooLarge => "payload_too_large",
            Reject::BadContentLength => "bad_content_length",
            Reject::BadHost => "bad_host",
            Reject::BareLf => "bare_lf",
            Reject::BadEncoding => "bad_percent_encoding",
            Reject::TokenMissing => "token_missing",
            Reject::TokenInvalid => "token_invalid",
            Reject::TokenExpired => "token_expired",
            Reject::RoomForbidden => "room_forbidden",
            Reject::UserParam => "user_param",
            Reject::ApiKey => "api_key",
            Reject::AdminCrossSite => "admin_cross_site",
            Reject::Busy => "max_pending",
        }
    }

    /// Index into [`Reject::ALL`].
    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The complete response to send before closing.
    pub fn response(self) -> Vec<u8> {
        let extra = match self.status() {
            426 => "Sec-WebSocket-Version: 13\r\n",
            401 => "WWW-Authenticate: Bearer\r\n",
            503 => "Retry-After: 1\r\n",
            _ => "",
        };
        http_response(self.status(), extra, "text/plain", self.label().as_bytes())
    }
}

/// Request method, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// A complete, syntactically valid request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// Bytes of the buffer the head used; anything after it is body or first frame.
    pub head_len: usize,
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// Query string without the `?` (empty if none).
    pub query: String,
    /// HTTP minor version (1 for HTTP/1.1).
    pub version: u8,
    /// `Host` header value (exactly one is required).
    pub host: String,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    key: Option<String>,
    ws_version: Option<String>,
    /// `Origin` header, if sent.
    pub origin: Option<String>,
    /// `Content-Length`, if sent and valid.
    pub content_length: Option<usize>,
    /// `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// `Sec-WebSocket-Extensions` was offered (we decline every extension).
    pub offered_extensions: bool,
}

/// Parses the request head in `buf` (everything received so far).
///
/// `Ok(None)`: incomplete, read more. `Err`: answer with that status and close.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HANDSHAKE_BYTES {
                Err(Reject::HeadersTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeadersTooLarge),
        Err(_) => return Err(Reject::BadRequest),
    };
    if head_len > MAX_HANDSHAKE_BYTES {
        return Err(Reject::HeadersTooLarge);
    }
    // httparse tolerates lines ending in a bare LF; a proxy in front may not split them the
    // same way (request smuggling), so refuse them.
    if buf[..head_len]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
    {
        return Err(Reject::BareLf);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let mut out = Request {
        head_len,
        method,
        path: path.to_string(),
        query: query.to_string(),
        version: req.version.unwrap_or(0),
        host: String::new(),
        upgrade_websocket: false,
        connection_upgrade: false,
        key: None,
        ws_version: None,
        origin: None,
        content_length: None,
        authorization: None,
        offered_extensions: false,
    };
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name;
        let value = match std::str::from_utf8(h.value) {
            Ok(v) => v.trim(),
            Err(_) => return Err(Reject::BadRequest),
        };
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            out.host = value.to_string();
        } else if name.eq_ignore_ascii_case("upgrade") {
            out.upgrade_websocket |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            out.connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            if out.key.is_some() {
                return Err(Reject::BadRequest);
            }
            out.key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.ws_version = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            // Digits only: `str::parse` would take `+3`; a repeat is refused even when equal
            // (RFC 9112 §6.3 allows a proxy to merge them, we are not one).
            if out.content_length.is_some()
                || value.is_empty()
                || value.len() > 18
                || !value.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(Reject::BadContentLength);
            }
            out.content_length = Some(value.parse().map_err(|_| Reject::BadContentLength)?);
        } else if name.eq_ignore_ascii_case("authorization") {
            if out.authorization.is_some() {
                return Err(Reject::BadRequest);
            }
            out.authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            out.offered_extensions = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are not supported on any route: refuse rather than misread.
            return Err(Reject::BadRequest);
        }
    }
    if hosts != 1 || out.host.is_empty() {
        return Err(Reject::BadHost);
    }
    Ok(Some(out))
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Request {
    /// Validates a GET as a WebSocket upgrade and returns the `Sec-WebSocket-Accept` value.
    /// `allowed_origins` empty means any origin is allowed.
    pub fn check_upgrade(&self, allowed_origins: &[String]) -> Result<String, Reject> {
        if self.method != Method::Get {
            return Err(Reject::MethodNotAllowed);
        }
        if self.version < 1 || !self.upgrade_websocket || !self.connection_upgrade {
            return Err(Reject::BadRequest);
        }
        let key = self.key.as_deref().ok_or(Reject::BadRequest)?;
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(k) if k.len() == 16 => {}
            _ => return Err(Reject::BadRequest),
        }
        match self.ws_version.as_deref() {
            Some("13") => {}
            Some(_) => return Err(Reject::UpgradeRequired),
            None => return Err(Reject::BadRequest),
        }
        if !allowed_origins.is_empty() {
            let ok = self
                .origin
                .as_deref()
                .is_some_and(|o| allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o)));
            if !ok {
                return Err(Reject::Forbidden);
            }
        }
        Ok(accept_key(key.as_bytes()))
    }

    /// The value of query parameter `name`, percent-decoded (`None` if absent).
    pub fn query_param(&self, name: &str) -> Result<Option<String>, Reject> {
        query_param(&self.query, name)
    }
}

/// The value of query parameter `name` in `query` (no leading `?`), percent-decoded; the
/// first occurrence wins.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, Reject> {
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if k == name {
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

/// Decodes `%XX` escapes exactly (RFC 3986): a `%` not followed by two hex digits, or bytes
/// that are not UTF-8, are refused rather than replaced, so two different spellings can never
/// name the same user or room. `+` is a literal plus (it means a space only in HTML form
/// bodies; a client that means a space sends `%20`).
pub fn percent_decode(s: &str) -> Result<String, Reject> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => return Err(Reject::BadEncoding),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Reject::BadEncoding)
}

/// The `101 Switching Protocols` response.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn http_response(status: u16, extra_headers: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\n{extra_headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Standard reason phrase.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

/// A random 16-byte key, base64-encoded (24 bytes of text).
pub fn encode_key(raw: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Client request bytes. `extra_headers` are full lines without CRLF (`Name: value`).
pub fn client_request(
    host: &str,
    path_and_query: &str,
    key: &str,
    origin: Option<&str>,
    extra_headers: &[String],
) -> Vec<u8> {
    let mut s = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(o) = origin {
        s.push_str("Origin: ");
        s.push_str(o);
        s.push_str("\r\n");
    }
    for h in extra_headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Why a server's handshake response was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// A complete response with a status other than 101.
    Status(u16),
    /// 101 but a wrong or missing `Sec-WebSocket-Accept`.
    BadAccept,
    /// Not parseable as HTTP, or missing Upgrade/Connection.
    Malformed,
    /// Response head larger than we accept.
    TooLarge,
}

/// Parses a server's response. `Ok(Some(n))`: upgraded, `n` bytes of head (frames may follow).
pub fn parse_response(
    buf: &[u8],
    expected_accept: &str,
) -> Result<Option<usize>, ClientHandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HANDSHAKE_BYTES {
                Err(ClientHandshakeError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(_) => return Err(ClientHandshakeError::Malformed),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(ClientHandshakeError::Status(code));
    }
    let mut accept_ok = false;
    let mut upgrade = false;
    let mut connection = false;
    for h in resp.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok = v == expected_accept;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = has_token(v, "websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection = has_token(v, "upgrade");
        }
    }
    if !upgrade || !connection {
        return Err(ClientHandshakeError::Malformed);
    }
    if !accept_ok {
        return Err(ClientHandshakeError::BadAccept);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /ws?user=7&room=a%20b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn good_request_and_leftover() {
        let mut buf = GOOD.as_bytes().to_vec();
        buf.extend_from_slice(&[0x81, 0x80]);
        let r = parse_request(&buf).unwrap().unwrap();
        assert_eq!(r.head_len, GOOD.len());
        assert_eq!(r.path, "/ws");
        assert_eq!(r.query_param("user"), Ok(Some("7".into())));
        assert_eq!(r.query_param("room"), Ok(Some("a b".into())));
        assert_eq!(
            r.check_upgrade(&[]).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn partial_needs_more() {
        for cut in 0..GOOD.len() {
            assert!(
                parse_request(&GOOD.as_bytes()[..cut]).unwrap().is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn rejections() {
        let r = |s: &str| parse_request(s.as_bytes()).and_then(|r| r.unwrap().check_upgrade(&[]));
        assert_eq!(
            r(&GOOD.replace("GET", "PUT")),
            Err(Reject::MethodNotAllowed)
        );
        assert_eq!(
            r(&GOOD.replace("Version: 13", "Version: 8")),
            Err(Reject::UpgradeRequired)
        );
        assert_eq!(r(&GOOD.replace("Host: x\r\n", "")), Err(Reject::BadHost));
        assert_eq!(
            r(&GOOD.replace("Upgrade: websocket", "Upgrade: h2c")),
            Err(Reject::BadRequest)
        );
        assert_eq!(
            r(&GOOD.replace("keep-alive, Upgrade", "close")),
            Err(Reject::BadRequest)
        );
        assert_eq!(
            r(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")),
            Err(Reject::BadRequest)
        );
        assert_eq!(r("GARBAGE\r\n\r\n").err(), Some(Reject::BadRequest));
        let big = GOOD.replace(
            "Host: x",
            &format!("Host: x\r\nX-Big: {}", "a".repeat(9000)),
        );
        assert_eq!(
            parse_request(big.as_bytes()).err(),
            Some(Reject::HeadersTooLarge)
        );
        let origin = GOOD.replace("Host: x", "Host: x\r\nOrigin: http://evil");
        let req = parse_request(origin.as_bytes()).unwrap().unwrap();
        assert_eq!(
            req.check_upgrade(&["http://good".into()]),
            Err(Reject::Forbidden)
        );
        assert!(req.check_upgrade(&["http://EVIL".into()]).is_ok());
    }

    #[test]
    fn client_roundtrip() {
        let key = encode_key([7; 16]);
        let req = client_request("h:1", "/ws?x=1", &key, Some("http://o"), &["X-A: b".into()]);
        let parsed = parse_request(&req).unwrap().unwrap();
        let accept = parsed.check_upgrade(&[]).unwrap();
        let resp = switching_protocols(&accept);
        assert_eq!(parse_response(&resp, &accept), Ok(Some(resp.len())));
        assert_eq!(
            parse_response(&resp, "nope"),
            Err(ClientHandshakeError::BadAccept)
        );
        assert_eq!(
            parse_response(&Reject::Forbidden.response(), &accept),
            Err(ClientHandshakeError::Status(403))
        );
        assert_eq!(parse_response(&resp[..10], &accept), Ok(None));
    }

    #[test]
    fn strict_http() {
        let r = |s: &str| parse_request(s.as_bytes()).map(|r| r.is_some());
        let post = |cl: &str| format!("POST /push/a HTTP/1.1\r\nHost: x\r\n{cl}\r\n");
        assert_eq!(r(&post("Content-Length: 3\r\n")), Ok(true));
        for bad in [
            "Content-Length: 3\r\nContent-Length: 4\r\n",
            "Content-Length: 3\r\nContent-Length: 3\r\n",
            "Content-Length: +3\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 3 4\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 99999999999999999999\r\n",
        ] {
            assert_eq!(r(&post(bad)), Err(Reject::BadContentLength), "{bad:?}");
        }
        assert_eq!(
            r(&GOOD.replace("Host: x", "Host: x\r\nHost: y")),
            Err(Reject::BadHost)
        );
        assert_eq!(r(&GOOD.replace("Host: x", "Host:")), Err(Reject::BadHost));
        assert_eq!(
            r(&GOOD.replace("Host: x\r\n", "Host: x\n")),
            Err(Reject::BareLf)
        );
        assert_eq!(r(&GOOD.replace("\r\n", "\n")), Err(Reject::BareLf));
    }

    #[test]
    fn exact_percent_decoding() {
        assert_eq!(percent_decode("a%20b"), Ok("a b".into()));
        assert_eq!(percent_decode("a+b"), Ok("a+b".into()));
        assert_eq!(percent_decode("%C3%A9"), Ok("é".into()));
        assert_eq!(percent_decode("%FF"), Err(Reject::BadEncoding));
        assert_eq!(percent_decode("%FE"), Err(Reject::BadEncoding));
        assert_eq!(percent_decode("%4"), Err(Reject::BadEncoding));
        assert_eq!(percent_decode("%zz"), Err(Reject::BadEncoding));
        assert_eq!(percent_decode("100%"), Err(Reject::BadEncoding));
        assert_eq!(query_param("u=%FF", "u"), Err(Reject::BadEncoding));
        assert_eq!(query_param("a=1&u=x&u=y", "u"), Ok(Some("x".into())));
        assert_eq!(query_param("a=1", "u"), Ok(None));
    }
}
