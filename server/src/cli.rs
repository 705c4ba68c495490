//! Command line of ws-server (clap derive). Every limit has a default that suits a ceiling
//! test; `--help` says what each one protects against.

use std::net::SocketAddr;

use clap::Parser;
use ws_common::limits;

/// Thread-per-core io_uring WebSocket server: the target of ws-ceiling runs.
///
/// One glommio executor per core, each with its own SO_REUSEPORT listener and sole owner of
/// its connections. Routes:
///   GET  /ws[?user=ID]                       echo every message back
///   GET  /broadcast[?room=NAME][&echo=false][&user=ID]
///                                            every message goes to the whole room, all cores
///   POST /push/ID        (body = message)    to every connection of user ID; 200 + count, 404
///   POST /broadcast/NAME (body = message)    into room NAME; 200 + count
///   GET  /metrics                            Prometheus text
///   GET  /healthz
///
/// Examples:
///   ws-server                                  # 127.0.0.1:9001, every core
///   ws-server --listen 0.0.0.0:9001 --cores 0-3 --max-conns 1000000
///   ws-server --allow-origin https://app.example.com --idle-timeout 120
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
        Ok(())
    }
}
