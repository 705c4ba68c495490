//! Command line of ws-server (clap derive). Every limit has a default that suits a ceiling
//! test; `--help` says what each one protects against.

use std::net::SocketAddr;

use clap::Parser;
use ws_common::limits;

/// Thread-per-core io_uring WebSocket server: the target of ws-ceiling runs.
///
/// One glommio executor per core, each with its own SO_REUSEPORT listener and sole owner of
/// its connections. Routes on --listen (public):
///   GET  /ws[?user=ID]                       echo every message back
///   GET  /broadcast[?room=NAME][&echo=false][&user=ID]
///                                            every message goes to the whole room, all cores
///   GET  /healthz
/// With --token-secret, the identity comes from a signed token instead of ?user=:
///   GET  /ws?token=JWT  (or Authorization: Bearer JWT; sub = user id, exp, rooms)
/// Routes on --admin-listen (default 127.0.0.1, public port + 1; needs --api-key if set):
///   POST /push/ID        (body = message)    to every connection of user ID; 200 + count, 404
///   POST /broadcast/NAME (body = message)    into room NAME; 200 + count
///   GET  /metrics                            Prometheus text
///   GET  /healthz
///
/// Examples:
///   ws-server                                  # 127.0.0.1:9001 (admin 127.0.0.1:9002), every core
///   ws-server --listen 0.0.0.0:9001 --cores 0-3 --max-conns 1000000
///   WS_API_KEY=... WS_TOKEN_SECRET=... ws-server --listen 0.0.0.0:443 --allow-origin https://app.example.com
///   ws-server --listen 0.0.0.0:443 --tls-cert chain.pem --tls-key key.pem   # wss://
#[derive(Parser, Debug, Clone)]
#[command(name = "ws-server", version, verbatim_doc_comment)]
pub struct Config {
    /// Address and port to listen on (port 0 picks a free port; the chosen address is
    /// printed as `listening on ADDR` on stdout).
    #[arg(long, default_value = limits::DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// Cores to run one executor each on, e.g. `0-3,6` (default: every core this process
    /// may use).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,

    /// Most WebSocket connections held at once, all cores together; the next upgrade gets 503.
    /// Default: no limit beyond the process's open-files limit.
    #[arg(long, value_name = "N")]
    pub max_conns: Option<u64>,

    /// Largest message after reassembly; a larger one closes the connection with 1009.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_MESSAGE_SIZE, value_name = "BYTES")]
    pub max_message_size: usize,

    /// Seconds between pings the server sends on each connection (0 disables pings).
    #[arg(long, default_value_t = limits::DEFAULT_PING_INTERVAL_SECS, value_name = "SECS")]
    pub ping_interval: u64,

    /// Seconds without any frame from the client (pongs count) before it is dropped
    /// (0 disables).
    #[arg(long, default_value_t = limits::DEFAULT_IDLE_TIMEOUT_SECS, value_name = "SECS")]
    pub idle_timeout: u64,

    /// Seconds a client has to complete the HTTP upgrade (slowloris guard).
    #[arg(long, default_value_t = limits::DEFAULT_HANDSHAKE_TIMEOUT_SECS, value_name = "SECS")]
    pub handshake_timeout: u64,

    /// Origin allowed to connect (repeatable). None given: any origin is allowed (development
    /// mode; the server says so at start-up).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,

    /// Seconds to wait on SIGINT/SIGTERM for clients to answer Close 1001 before exiting.
    #[arg(long, default_value_t = limits::DEFAULT_DRAIN_TIMEOUT_SECS, value_name = "SECS")]
    pub drain_timeout: u64,

    /// Bytes a connection may have queued and unsent (its outbound queue). Past it, the
    /// `--slow-consumer` policy applies, so one slow reader never grows memory or delays
    /// the others.
    #[arg(long, default_value_t = limits::DEFAULT_SEND_QUEUE_BYTES, value_name = "BYTES")]
    pub send_queue_bytes: usize,

    /// What to do with a connection whose outbound queue is full: `close` it with 1008, or
    /// `drop` the message for that connection only.
    #[arg(long, value_enum, default_value_t = SlowConsumer::Close)]
    pub slow_consumer: SlowConsumer,

    /// Listen backlog per core (default: net.core.somaxconn).
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,

    /// Where `POST /push`, `POST /broadcast` and `/metrics` are served (the public listener
    /// answers them 404). Default: 127.0.0.1 on the public port + 1 (a free port when the
    /// public one is 0); the address is printed as `admin on ADDR`. `off`: no admin routes.
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse_admin)]
    pub admin_listen: Option<AdminListen>,

    /// Every admin request must carry `Authorization: Bearer KEY` (else 401, counted).
    /// Without it, admin requests are taken only for a Host that is an address or localhost.
    #[arg(long, env = "WS_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Clients must present an HS256 JWT signed with SECRET (`?token=` or `Authorization:
    /// Bearer`): `sub` is the user id, `exp` is enforced, `rooms` limits `/broadcast`.
    /// Missing, forged, expired or not-allowed tokens get 401/403; `?user=` is refused.
    #[arg(
        long,
        env = "WS_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,

    /// Connections per core still in their HTTP handshake (or POST body) at once; the next
    /// one gets 503 at once. Bounds what slow or idle sockets can hold before upgrading.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_PENDING, value_name = "N")]
    pub max_pending: u32,

    /// Largest POST body (`/push`, `/broadcast`); larger gets 413 before any body byte is read.
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub max_body: u64,

    /// A frame or fragmented message, once started, must be complete within this many
    /// seconds, or the connection is closed with 1008 (so a trickle of bytes cannot pin a
    /// partial message). 0 disables.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    pub message_timeout: u64,

    /// Bytes per core that partial messages and unsent output may hold together; past it,
    /// the largest holders are closed with 1008 (checked every second).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub memory_budget: u64,

    /// SO_SNDBUF of every connection's socket (the kernel doubles it), so data queued for a
    /// reader that does not read stays bounded in the kernel too (tcp_wmem's autotuning
    /// goes to 4 MiB). 0: leave it to the kernel.
    #[arg(long, default_value = "128KiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub socket_send_buffer: u64,

    /// Serve wss:// on --listen: PEM certificate chain (leaf first). Needs --tls-key.
    /// The admin listener stays plain (it is for the operator, on loopback by default).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// `--admin-listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    At(SocketAddr),
}

fn parse_admin(s: &str) -> Result<AdminListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminListen::Off);
    }
    s.parse()
        .map(AdminListen::At)
        .map_err(|_| format!("{s:?} is neither ADDR:PORT nor off"))
}

/// `65536`, `64KiB`, `64k`, `256MiB`, `1GiB` (binary multiples).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 65536, 64KiB, 256MiB)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `30` or `30s` or `2m`.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix('m') {
        (n, 60)
    } else {
        (t.strip_suffix('s').unwrap_or(t), 1)
    };
    num.parse::<u64>()
        .map(|n| n.saturating_mul(mul))
        .map_err(|_| format!("{s:?} is not a whole number of seconds (e.g. 30, 30s, 2m)"))
}

/// Policy for a connection that does not read fast enough.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Close it with 1008 (policy violation) and count it.
    Close,
    /// Drop the message for that connection and count it.
    Drop,
}

impl Config {
    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_size == 0 {
            return Err("--max-message-size must be at least 1".into());
        }
        if self.max_message_size > 1 << 30 {
            return Err("--max-message-size above 1 GiB is not supported".into());
        }
        if self.handshake_timeout == 0 {
            return Err("--handshake-timeout must be at least 1 second".into());
        }
        if self.send_queue_bytes < 1024 {
            return Err("--send-queue-bytes must be at least 1024".into());
        }
        if self.max_conns == Some(0) {
            return Err("--max-conns 0 would refuse every connection".into());
        }
        if self.max_pending == 0 {
            return Err("--max-pending 0 would refuse every connection".into());
        }
        if self.api_key.as_deref() == Some("") || self.token_secret.as_deref() == Some("") {
            return Err("--api-key and --token-secret must not be empty".into());
        }
        if self.token_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(
                "--token-secret must be at least 16 bytes (HS256 keys are guessable \
                 below that)"
                    .into(),
            );
        }
        if self.socket_send_buffer > i32::MAX as u64 / 2 {
            return Err("--socket-send-buffer above 1 GiB is not supported".into());
        }
        let one_message = self.send_queue_bound() as u64;
        if self.memory_budget < 2 * one_message {
            return Err(format!(
                "--memory-budget {} cannot hold two maximal messages ({} bytes each with \
                 --max-message-size {}): raise it or lower --max-message-size",
                self.memory_budget, one_message, self.max_message_size
            ));
        }
        Ok(())
    }

    /// The outbound queue bound both servers use: `--send-queue-bytes`, but never below one
    /// maximal message, so a single message up to `--max-message-size` always fits (its
    /// echo or delivery is never refused as a slow consumer).
    pub fn send_queue_bound(&self) -> usize {
        self.send_queue_bytes
            .max(self.max_message_size + ws_common::frame::MAX_HEADER_LEN)
    }

    /// Where the admin listener goes (`None`: off).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        match self.admin_listen {
            Some(AdminListen::Off) => None,
            Some(AdminListen::At(a)) => Some(a),
            None => {
                let port = match self.listen.port() {
                    0 => 0,
                    p => p.checked_add(1)?,
                };
                Some(SocketAddr::from(([127, 0, 0, 1], port)))
            }
        }
    }

    /// Who may do what, as `ws_common::route` applies it.
    pub fn policy(&self) -> ws_common::route::Policy {
        ws_common::route::Policy {
            allow_origin: self.allow_origin.clone(),
            api_key: self.api_key.as_ref().map(|k| k.as_bytes().to_vec()),
            tokens: self
                .token_secret
                .as_ref()
                .map(|s| ws_common::auth::TokenKey::new(s.as_bytes())),
            max_body: (self.max_body.min(usize::MAX as u64) as usize).min(self.max_message_size),
        }
    }
}
