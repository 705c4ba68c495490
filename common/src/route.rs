//! Which request may do what, on which listener: one function both servers call, so they
//! route, authenticate and refuse identically.
//!
//! The **public** listener serves `/ws` and `/broadcast` upgrades (and `/healthz`); the
//! **admin** listener serves `POST /push/ID`, `POST /broadcast/NAME` and `/metrics` (and
//! `/healthz`). Each answers the other's routes with 404, so a push API is never reachable
//! from where clients connect. Order of checks: path (404), then who asks (401/403), then
//! method and body (405, 400, 413), so an outsider learns nothing about a route's details.

use std::net::IpAddr;

use crate::auth::{bearer, constant_time_eq, TokenError, TokenKey};
use crate::handshake::{percent_decode, Method, Reject, Request};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Public,
    Admin,
}

/// What a request turned out to be, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A WebSocket upgrade.
    Upgrade(Upgrade),
    /// `POST /push/ID` with a body of `len` bytes.
    Push {
        user: String,
        len: usize,
    },
    /// `POST /broadcast/NAME` with a body of `len` bytes.
    Publish {
        room: String,
        len: usize,
    },
    Metrics,
    Healthz,
}

/// An allowed WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` for the 101.
    pub accept: String,
    /// `Some(room)` on `/broadcast` (empty name: the default room), `None` on `/ws`.
    pub room: Option<String>,
    /// `/broadcast?echo=false`: the sender does not get its own messages.
    pub echo: bool,
    /// The user id: a token's `sub` when a secret is set, else `?user=`.
    pub user: Option<String>,
}

/// The settings that decide who may do what.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `--allow-origin` (empty: any Origin may upgrade; admin requests never take one).
    pub allow_origin: Vec<String>,
    /// `--api-key`: admin requests need `Authorization: Bearer KEY`.
    pub api_key: Option<Vec<u8>>,
    /// `--token-secret`: identities come only from HS256 tokens.
    pub tokens: Option<TokenKey>,
    /// Largest POST body accepted (the smaller of `--max-body` and `--max-message-size`).
    pub max_body: usize,
}

impl Policy {
    /// Routes `req`, which arrived on `side`, at Unix time `now` (seconds, for `exp`).
    pub fn route(&self, req: &Request, side: Side, now: u64) -> Result<Route, Reject> {
        let path = req.path.as_str();
        if path == "/healthz" {
            return get_only(req).map(|()| Route::Healthz);
        }
        match side {
            Side::Public => match path {
                "/ws" | "/broadcast" => self.upgrade(req, path == "/broadcast", now),
                _ => Err(Reject::NotFound),
            },
            Side::Admin => {
                let post = |name: &str| -> Result<(String, usize), Reject> {
                    self.admin(req)?;
                    if req.method != Method::Post {
                        return Err(Reject::MethodNotAllowed);
                    }
                    let name = percent_decode(name)?;
                    if name.is_empty() {
                        return Err(Reject::NotFound);
                    }
                    let len = req.content_length.ok_or(Reject::BadRequest)?;
                    if len > self.max_body {
                        return Err(Reject::PayloadTooLarge);
                    }
                    Ok((name, len))
                };
                if path == "/metrics" {
                    self.admin(req)?;
                    get_only(req).map(|()| Route::Metrics)
                } else if let Some(user) = path.strip_prefix("/push/") {
                    post(user).map(|(user, len)| Route::Push { user, len })
                } else if let Some(room) = path.strip_prefix("/broadcast/") {
                    post(room).map(|(room, len)| Route::Publish { room, len })
                } else {
                    Err(Reject::NotFound)
                }
            }
        }
    }

    fn upgrade(&self, req: &Request, broadcast: bool, now: u64) -> Result<Route, Reject> {
        let accept = req.check_upgrade(&self.allow_origin)?;
        let room = if broadcast {
            Some(req.query_param("room")?.unwrap_or_default())
        } else {
            None
        };
        let echo = req.query_param("echo")?.as_deref() != Some("false");
        let asked_user = req.query_param("user")?;
        let user = match &self.tokens {
            None => asked_user.filter(|u| !u.is_empty()),
            Some(key) => {
                if asked_user.is_some() {
                    return Err(Reject::UserParam);
                }
                let token = match req.query_param("token")? {
                    Some(t) => t,
                    None => req
                        .authorization
                        .as_deref()
                        .and_then(bearer)
                        .map(str::to_string)
                        .ok_or(Reject::TokenMissing)?,
                };
                let claims = key.verify(&token, now).map_err(|e| match e {
                    TokenError::Expired => Reject::TokenExpired,
                    TokenError::Malformed | TokenError::BadSignature => Reject::TokenInvalid,
                })?;
                if let Some(r) = &room {
                    if !claims.may_join(r) {
                        return Err(Reject::RoomForbidden);
                    }
                }
                Some(claims.sub)
            }
        };
        Ok(Route::Upgrade(Upgrade {
            accept,
            room,
            echo,
            user,
        }))
    }

    /// An admin request: never from a web page, and with the API key if one is set; without
    /// one, only for a Host that is an address or `localhost` (a DNS-rebinding page names
    /// its own domain).
    fn admin(&self, req: &Request) -> Result<(), Reject> {
        if let Some(o) = &req.origin {
            if !self.allow_origin.iter().any(|a| a.eq_ignore_ascii_case(o)) {
                return Err(Reject::AdminCrossSite);
            }
        }
        match &self.api_key {
            Some(key) => {
                let given = req.authorization.as_deref().and_then(bearer).unwrap_or("");
                if constant_time_eq(given.as_bytes(), key) {
                    Ok(())
                } else {
                    Err(Reject::ApiKey)
                }
            }
            None if host_is_address(&req.host) => Ok(()),
            None => Err(Reject::AdminCrossSite),
        }
    }

    /// What the server should print at start about who may connect.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if self.allow_origin.is_empty() {
            w.push("no --allow-origin given: any Origin is accepted (development mode)");
        }
        if self.tokens.is_none() {
            w.push(
                "no --token-secret given: identities are unauthenticated, ?user= is taken as \
                 claimed (development mode)",
            );
        }
        w
    }
}

fn get_only(req: &Request) -> Result<(), Reject> {
    if req.method == Method::Get {
        Ok(())
    } else {
        Err(Reject::MethodNotAllowed)
    }
}

/// `Host: 127.0.0.1:9002`, `[::1]:9002`, `localhost` — not `evil.example:9002`.
fn host_is_address(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::parse_request;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn get(target: &str, extra: &str) -> Request {
        let s = format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        parse_request(s.as_bytes()).unwrap().unwrap()
    }

    fn post(target: &str, host: &str, extra: &str) -> Request {
        let s =
            format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n{extra}\r\nhi");
        parse_request(s.as_bytes()).unwrap().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            max_body: 1024,
            ..Policy::default()
        }
    }

    #[test]
    fn each_listener_serves_only_its_routes() {
        let p = policy();
        let push = post("/push/alice", "127.0.0.1:2", "");
        assert_eq!(p.route(&push, Side::Public, 0), Err(Reject::NotFound));
        assert_eq!(
            p.route(&push, Side::Admin, 0),
            Ok(Route::Push {
                user: "alice".into(),
                len: 2
            })
        );
        let ws = get("/ws?user=bob", "");
        assert_eq!(p.route(&ws, Side::Admin, 0), Err(Reject::NotFound));
        match p.route(&ws, Side::Public, 0) {
            Ok(Route::Upgrade(u)) => assert_eq!(u.user.as_deref(), Some("bob")),
            other => panic!("{other:?}"),
        }
        let metrics = get("/metrics", "");
        assert_eq!(p.route(&metrics, Side::Public, 0), Err(Reject::NotFound));
        assert_eq!(p.route(&metrics, Side::Admin, 0), Ok(Route::Metrics));
    }

    #[test]
    fn admin_needs_the_key_and_no_foreign_origin() {
        let p = Policy {
            api_key: Some(b"k3y".to_vec()),
            ..policy()
        };
        let r = |extra: &str| p.route(&post("/broadcast/r", "h.example", extra), Side::Admin, 0);
        assert_eq!(r(""), Err(Reject::ApiKey));
        assert_eq!(r("Authorization: Bearer nope\r\n"), Err(Reject::ApiKey));
        assert!(r("Authorization: Bearer k3y\r\n").is_ok());
        assert_eq!(
            r("Authorization: Bearer k3y\r\nOrigin: http://evil\r\n"),
            Err(Reject::AdminCrossSite)
        );
        // Without a key: addresses only (DNS rebinding names the attacker's domain).
        let open = policy();
        for (host, ok) in [
            ("127.0.0.1:9002", true),
            ("[::1]:9002", true),
            ("localhost", true),
            ("evil.example:9002", false),
        ] {
            let got = open.route(&post("/push/a", host, ""), Side::Admin, 0);
            assert_eq!(got.is_ok(), ok, "{host}: {got:?}");
        }
    }

    #[test]
    fn tokens_decide_identity_and_rooms() {
        let key = TokenKey::new(b"s");
        let p = Policy {
            tokens: Some(key.clone()),
            ..policy()
        };
        let r = |target: &str, extra: &str| p.route(&get(target, extra), Side::Public, 100);
        assert_eq!(r("/ws", ""), Err(Reject::TokenMissing));
        assert_eq!(r("/ws?user=alice", ""), Err(Reject::UserParam));
        assert_eq!(r("/ws?token=x.y.z", ""), Err(Reject::TokenInvalid));
        let alice = key.mint("alice", 200, Some(&["r1".to_string()]));
        let expired = key.mint("alice", 50, None);
        let forged = TokenKey::new(b"other").mint("alice", 200, None);
        assert_eq!(
            r(&format!("/ws?token={expired}"), ""),
            Err(Reject::TokenExpired)
        );
        assert_eq!(
            r(&format!("/ws?token={forged}"), ""),
            Err(Reject::TokenInvalid)
        );
        match r("/ws", &format!("Authorization: Bearer {alice}\r\n")) {
            Ok(Route::Upgrade(u)) => assert_eq!(u.user.as_deref(), Some("alice")),
            other => panic!("{other:?}"),
        }
        assert!(r(&format!("/broadcast?room=r1&token={alice}"), "").is_ok());
        assert_eq!(
            r(&format!("/broadcast?room=r2&token={alice}"), ""),
            Err(Reject::RoomForbidden)
        );
    }

    #[test]
    fn bodies_and_names_are_bounded_and_exact() {
        let p = Policy {
            max_body: 1,
            ..policy()
        };
        assert_eq!(
            p.route(&post("/push/a", "127.0.0.1", ""), Side::Admin, 0),
            Err(Reject::PayloadTooLarge)
        );
        let p = policy();
        assert_eq!(
            p.route(&post("/push/%FF", "127.0.0.1", ""), Side::Admin, 0),
            Err(Reject::BadEncoding)
        );
        assert_eq!(
            p.route(&get("/ws?user=%FE", ""), Side::Public, 0),
            Err(Reject::BadEncoding)
        );
    }
}
