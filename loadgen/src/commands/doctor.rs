//! `ws-loadgen doctor URL --connections N`: before a run, which limit of this box (and of
//! the server process, when it is local or its /metrics answer) stops N connections first,
//! the largest N that fits, and how to raise each limit that is too low. The arithmetic is
//! [`crate::limits::bounds`]; the text is [`crate::report::doctor`].

use std::path::PathBuf;

use clap::Args;

use crate::config::auth::AdminArgs;
use crate::config::parse::{parse_count, parse_source_ips_arg, SourceIps};
use crate::config::tls::TlsArgs;
use crate::limits::bounds::{
    measured_from_report, Diagnosis, GatherOpts, Inputs, Limits, ACCEPT_RATE_PER_CORE,
    KERNEL_BYTES_PER_SOCKET, LOADGEN_BYTES_PER_CONN, SERVER_BYTES_PER_CONN,
};
use crate::limits::metrics::MetricsUrl;
use crate::limits::tls_probe::{probe, HandshakeCost};
use crate::limits::{self};

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Server URL: ws://HOST[:PORT]/PATH or wss://... (with --script: in the file)
    #[arg(required_unless_present = "script")]
    pub url: Option<String>,

    /// A scenario file (as for `run --script`): its URL, and its connections unless -c.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,

    /// Connections to plan for (100k, 1M, 1_000_000 accepted; with --script, default the
    /// script's connections).
    #[arg(short = 'c', long, value_parser = parse_count, value_name = "N")]
    pub connections: Option<u64>,

    /// Source addresses the load generator spreads over (as for `run`).
    #[arg(long, value_parser = parse_source_ips_arg, value_name = "LIST")]
    pub source_ip: Option<SourceIps>,

    /// The server's pid, to read its /proc/PID/limits and open descriptors (default: the
    /// local process listening on the URL's port, if any).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Where the server's Prometheus metrics are (default: /metrics on the admin listener,
    /// see --admin-url; `none` to not ask).
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,

    /// Planned connects per second (accept queue vs accept rate; 0: unpaced).
    #[arg(long, default_value_t = 5000.0, value_name = "PER_SEC")]
    pub connect_rate: f64,

    /// Connection ends on this box: 2 when server and load generator both run here,
    /// 1 when the server is elsewhere (default: 2 if the URL's address is local).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub ends: Option<u32>,

    /// Load generator processes the connections are spread over: a number (a `run` is
    /// one process), or `auto`: as many as N needs, as `ceiling` does.
    #[arg(long, default_value = "1", value_parser = parse_processes, value_name = "P|auto")]
    pub loadgen_processes: u64,

    /// Cores the load generator runs workers on (default: all this process may use).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,

    /// Accepts per second the server sustains, all cores together (default: 12000 per
    /// server core, measured here).
    #[arg(long, value_name = "PER_SEC")]
    pub server_accept_rate: Option<f64>,

    /// Take the measured bytes per connection (server, load generator, kernel) from a
    /// `ws-loadgen ceiling --json` report instead of the built-in figures.
    #[arg(long, value_name = "FILE")]
    pub from_report: Option<PathBuf>,

    /// User-space bytes per connection in the server.
    #[arg(long, value_name = "BYTES")]
    pub server_bytes_per_conn: Option<f64>,

    /// User-space bytes per connection in the load generator.
    #[arg(long, value_name = "BYTES")]
    pub loadgen_bytes_per_conn: Option<f64>,

    /// Kernel bytes per TCP socket.
    #[arg(long, value_name = "BYTES")]
    pub kernel_bytes_per_socket: Option<f64>,

    /// Also write the bounds as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// wss://: full handshakes (and as many resumed ones) to make to the server, to measure
    /// what a handshake costs both ends (0: do not measure).
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub tls_probe: u64,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `auto` (0) or a positive count.
pub fn parse_processes(s: &str) -> Result<u64, String> {
    match s.trim() {
        "auto" => Ok(0),
        t => match t.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{s:?} is not a positive count or `auto`")),
        },
    }
}

/// Runs `doctor`: exit 0 when N fits under every known limit, 1 when not, 2 bad usage.
pub fn run(a: &DoctorArgs) -> i32 {
    let (url, target, script) =
        match crate::config::script::url_or_script(a.url.as_deref(), a.script.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ws-loadgen doctor: {e}");
                return 2;
            }
        };
    let Some(n) = a
        .connections
        .or(script.as_ref().and_then(|s| s.connections.map(u64::from)))
    else {
        eprintln!("ws-loadgen doctor: give --connections N (how many to plan for)");
        return 2;
    };
    let metrics = match a
        .admin
        .admin(&target)
        .and_then(|adm| MetricsUrl::choose(a.metrics_url.as_deref(), &adm))
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ws-loadgen doctor: {e}");
            return 2;
        }
    };
    if let Some(pid) = a.server_pid {
        if limits::proc_nofile(pid).is_none() {
            eprintln!("ws-loadgen doctor: --server-pid {pid}: cannot read /proc/{pid}/limits");
            return 2;
        }
    }
    let cores = match ws_common::cores::resolve_cores(a.cores.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ws-loadgen doctor: {e}");
            return 2;
        }
    };
    if !a.connect_rate.is_finite() || a.connect_rate < 0.0 {
        eprintln!("ws-loadgen doctor: --connect-rate must be 0 or more");
        return 2;
    }
    let (mut sb, mut lb, mut kb) = (None, None, None);
    if let Some(p) = &a.from_report {
        match measured_from_report(p) {
            Ok(v) => (sb, lb, kb) = v,
            Err(e) => {
                eprintln!("ws-loadgen doctor: --from-report {e}");
                return 2;
            }
        }
    }
    let tls = match a.tls.client_for(&target, &url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ws-loadgen doctor: {e}");
            return 2;
        }
    };
    let (limits, _) = Limits::gather(&GatherOpts {
        target: target.addr,
        server_pid: a.server_pid,
        metrics,
        loadgen_workers: cores.len() as u64,
    });
    let local = limits::is_local_ip(target.addr.ip());
    let ends = a.ends.unwrap_or(if local { 2 } else { 1 });
    let server_cores = limits.server.as_ref().map_or(1, |s| s.cores.max(1));
    let inputs = Inputs {
        n,
        source_ips: a.source_ip.as_ref().map_or(1, |s| s.0.len().max(1) as u64),
        connect_rate: a.connect_rate,
        ends,
        loadgen_processes: a.loadgen_processes,
        server_accept_rate: a
            .server_accept_rate
            .unwrap_or(ACCEPT_RATE_PER_CORE * server_cores as f64),
        server_bytes_per_conn: a
            .server_bytes_per_conn
            .or(sb)
            .unwrap_or(SERVER_BYTES_PER_CONN),
        loadgen_bytes_per_conn: a
            .loadgen_bytes_per_conn
            .or(lb)
            .unwrap_or(LOADGEN_BYTES_PER_CONN),
        kernel_bytes_per_socket: a
            .kernel_bytes_per_socket
            .or(kb)
            .unwrap_or(KERNEL_BYTES_PER_SOCKET),
    };
    let probe = tls.as_ref().filter(|_| a.tls_probe > 0).map(|t| {
        let pid = limits.server.as_ref().and_then(|s| s.pid);
        probe(&target, t, a.tls_probe, pid)
    });
    let mut inputs = inputs;
    if let Some(us) = probe.as_ref().and_then(|p| p.full.server_cpu_us) {
        // A server that handshakes TLS accepts no faster than its cores handshake.
        let tls_rate = HandshakeCost::per_core(us) * server_cores as f64;
        if a.server_accept_rate.is_none() && tls_rate < inputs.server_accept_rate {
            inputs.server_accept_rate = tls_rate;
        }
    }
    let mut d = Diagnosis::new(url.clone(), target.addr, limits, inputs);
    d.tls = probe;
    print!("{}", d.to_text());
    if let Some(path) = &a.json {
        crate::report::write_json("ws-loadgen doctor", path, "JSON", &d);
    }
    if d.feasible {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes() {
        assert!(parse_processes("auto").is_ok() && parse_processes("0").is_err());
    }
}
