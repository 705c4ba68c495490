//! What a secured server asks of the load generator: a signed token per connection
//! (`--token-secret`), and its admin listener (`--admin-url`, `--api-key`) for push POSTs
//! and `/metrics`.
//!
//! The secret and the key are read from the environment as well (`WS_TOKEN_SECRET`,
//! `WS_API_KEY`, the server's names), so neither has to appear in a command line that
//! `ps` shows; `ceiling` hands them to its agents the same way.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ws_common::auth::{unix_now, TokenKey};

use crate::config::plan::parse_duration;
use crate::config::{resolve_host, Target};

/// Shortest secret accepted (the servers refuse shorter ones too).
pub const MIN_SECRET: usize = 16;

/// `--token-secret` and how the minted tokens look.
#[derive(Debug, Clone, Default, Args)]
pub struct TokenArgs {
    /// Present a signed identity: mint an HS256 JWT per connection with this secret (the
    /// server's --token-secret), `sub` = the connection's user id (u<sender>-<generation>,
    /// the id --scenario push registers), `exp` = now + --token-ttl.
    #[arg(
        long,
        env = "WS_TOKEN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token_secret: Option<String>,

    /// How the token travels: `header` (Authorization: Bearer) or `query` (?token=, what a
    /// browser's WebSocket has to do).
    #[arg(long, value_enum, default_value_t = TokenVia::Header)]
    pub token_via: TokenVia,

    /// Lifetime of the minted tokens (their `exp`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// A `rooms` claim for the tokens (comma list): the rooms they may join (default: no
    /// claim, any room).
    #[arg(long, value_delimiter = ',', value_name = "ROOM,...")]
    pub token_rooms: Option<Vec<String>>,
}

/// Where the server's admin listener is, and its key.
#[derive(Debug, Clone, Default, Args)]
pub struct AdminArgs {
    /// The server's admin listener, where push POSTs and /metrics go (default:
    /// http://HOST:PORT+1 of the URL, the servers' default --admin-listen).
    #[arg(long, value_name = "URL")]
    pub admin_url: Option<String>,

    /// The admin listener's API key (the server's --api-key), sent as Authorization:
    /// Bearer with push POSTs and /metrics scrapes.
    #[arg(long, env = "WS_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TokenVia {
    #[default]
    Header,
    Query,
}

/// Mints the per-connection tokens.
#[derive(Clone)]
pub struct Tokens {
    key: TokenKey,
    pub via: TokenVia,
    ttl_s: u64,
    rooms: Option<Vec<String>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("via", &self.via)
            .field("ttl_s", &self.ttl_s)
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// A token for user `sub`, valid from now for the configured lifetime.
    pub fn mint(&self, sub: &str) -> String {
        self.key
            .mint(sub, unix_now() + self.ttl_s, self.rooms.as_deref())
    }
}

/// The admin listener: where to connect, what to name it, and the key.
#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    pub host_header: String,
    pub api_key: Option<String>,
}

impl Admin {
    /// The `Authorization` header line (without CRLF), if a key is set.
    pub fn authorization(&self) -> Option<String> {
        self.api_key
            .as_ref()
            .map(|k| format!("Authorization: Bearer {k}"))
    }
}

impl TokenArgs {
    /// The token minter, if a secret was given.
    pub fn tokens(&self) -> Result<Option<Tokens>, String> {
        let Some(secret) = &self.token_secret else {
            return Ok(None);
        };
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "--token-secret (or WS_TOKEN_SECRET) has {} bytes; at least {MIN_SECRET} \
                 (the servers refuse shorter secrets)",
                secret.len()
            ));
        }
        if self.token_ttl.as_secs() == 0 {
            return Err("--token-ttl must be at least 1s".into());
        }
        if let Some(r) = &self.token_rooms {
            if r.iter().any(|r| r.is_empty()) {
                return Err("--token-rooms has an empty room name".into());
            }
        }
        Ok(Some(Tokens {
            key: TokenKey::new(secret.as_bytes()),
            via: self.token_via,
            ttl_s: self.token_ttl.as_secs(),
            rooms: self.token_rooms.clone(),
        }))
    }
}

impl AdminArgs {
    /// The admin listener: `--admin-url`, or the URL's host on its port + 1.
    pub fn admin(&self, target: &Target) -> Result<Admin, String> {
        if let Some(k) = &self.api_key {
            if k.is_empty() || k.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(
                    "--api-key (or WS_API_KEY) must be non-empty, without spaces or \
                            control characters"
                        .into(),
                );
            }
        }
        let (addr, host_header) = match &self.admin_url {
            Some(s) => parse_admin_url(s)?,
            None => {
                let port = target.addr.port().checked_add(1).ok_or_else(|| {
                    format!(
                        "{}: port {} has no port + 1 for the admin listener; give --admin-url",
                        target.url,
                        target.addr.port()
                    )
                })?;
                let host = if target.host.contains(':') {
                    format!("[{}]", target.host)
                } else {
                    target.host.clone()
                };
                (
                    SocketAddr::new(target.addr.ip(), port),
                    format!("{host}:{port}"),
                )
            }
        };
        Ok(Admin {
            addr,
            host_header,
            api_key: self.api_key.clone(),
        })
    }
}

/// `http://HOST[:PORT][/]` → its address and Host header.
fn parse_admin_url(s: &str) -> Result<(SocketAddr, String), String> {
    let u = url::Url::parse(s).map_err(|e| format!("bad --admin-url {s:?}: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!(
            "--admin-url {s:?} must be http:// (the admin listener speaks plain HTTP)"
        ));
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() {
        return Err(format!(
            "--admin-url {s:?}: give only http://HOST:PORT; the paths (/push, /metrics) are the server's"
        ));
    }
    let end = resolve_host(&u, 80, &format!("--admin-url {s}"))?;
    Ok((end.addr, end.host_header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_target;

    fn args() -> AdminArgs {
        AdminArgs::default()
    }

    fn token_args() -> TokenArgs {
        TokenArgs {
            token_ttl: Duration::from_secs(3600),
            ..TokenArgs::default()
        }
    }

    #[test]
    fn admin_defaults_to_port_plus_one() {
        let t = parse_target("ws://127.0.0.1:9001/ws").unwrap();
        let a = args().admin(&t).unwrap();
        assert_eq!(a.addr.to_string(), "127.0.0.1:9002");
        assert_eq!(a.host_header, "127.0.0.1:9002");
        assert_eq!(a.authorization(), None);
        let t = parse_target("ws://[::1]:9001/ws").unwrap();
        assert_eq!(args().admin(&t).unwrap().host_header, "[::1]:9002");
        let t = parse_target("ws://127.0.0.1:65535/ws").unwrap();
        assert!(args().admin(&t).unwrap_err().contains("--admin-url"));
    }

    #[test]
    fn admin_url_and_key() {
        let t = parse_target("ws://127.0.0.1:9001/ws").unwrap();
        let mut a = args();
        a.admin_url = Some("http://127.0.0.1:7000".into());
        a.api_key = Some("k3y".into());
        let adm = a.admin(&t).unwrap();
        assert_eq!(adm.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(
            adm.authorization().as_deref(),
            Some("Authorization: Bearer k3y")
        );
        for bad in [
            "https://127.0.0.1:7000",
            "http://127.0.0.1:7000/metrics",
            "nope",
        ] {
            a.admin_url = Some(bad.into());
            assert!(a.admin(&t).is_err(), "{bad}");
        }
        a.admin_url = None;
        a.api_key = Some("a b".into());
        assert!(a.admin(&t).is_err());
    }

    #[test]
    fn minted_tokens_verify_with_the_server_code() {
        let mut a = token_args();
        assert!(a.tokens().unwrap().is_none());
        a.token_secret = Some("short".into());
        assert!(a.tokens().unwrap_err().contains("16"));
        a.token_secret = Some("0123456789abcdef".into());
        a.token_rooms = Some(vec!["r".into()]);
        let t = a.tokens().unwrap().unwrap();
        let tok = t.mint("u3-1");
        let c = TokenKey::new(b"0123456789abcdef")
            .verify(&tok, unix_now())
            .unwrap();
        assert_eq!(c.sub, "u3-1");
        assert!(c.may_join("r") && !c.may_join("s"));
        assert!(TokenKey::new(b"another secret!!")
            .verify(&tok, unix_now())
            .is_err());
    }
}
