//! The server's Prometheus `/metrics`, scraped over plain HTTP/1.1 and parsed into the few
//! figures `doctor` and `ceiling` use (connections, accept errors by errno, descriptors, RSS).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::auth::Admin;
use crate::config::resolve_host;

/// Parsed Prometheus text: `name{labels} value` samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, value) = match line.rfind(' ') {
                Some(i) => (&line[..i], line[i + 1..].trim()),
                None => continue,
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.find('{') {
                Some(i) => (&head[..i], parse_labels(&head[i + 1..head.len() - 1])),
                None => (head.trim(), BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, v));
        }
        Self { samples }
    }

    /// Sum of every sample of `name` (over all label sets); None if absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut it = self.samples.iter().filter(|s| s.0 == name).peekable();
        it.peek()?;
        Some(it.map(|s| s.2).sum())
    }

    /// Sum of the samples of `name` whose label `k` equals `v`.
    pub fn sum_where(&self, name: &str, k: &str, v: &str) -> Option<f64> {
        let mut it = self
            .samples
            .iter()
            .filter(|s| s.0 == name && s.1.get(k).map(String::as_str) == Some(v))
            .peekable();
        it.peek()?;
        Some(it.map(|s| s.2).sum())
    }

    /// Distinct values of label `k` on samples of `name`.
    pub fn label_values(&self, name: &str, k: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.0 == name)
            .filter_map(|s| s.1.get(k).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for part in s.split(',') {
        if let Some((k, v)) = part.split_once('=') {
            m.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
    }
    m
}

/// Where to scrape the server's metrics.
#[derive(Debug, Clone)]
pub struct MetricsUrl {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    /// The `Authorization` line (`--api-key`), if any.
    pub authorization: Option<String>,
}

impl MetricsUrl {
    /// `http://HOST[:PORT]/PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| format!("bad metrics URL {s:?}: {e}"))?;
        if u.scheme() != "http" {
            return Err(format!("metrics URL {s:?} must be http://"));
        }
        let end = resolve_host(&u, 80, &format!("metrics URL {s}"))?;
        Ok(Self {
            addr: end.addr,
            host: end.host_header,
            path: u.path().to_string(),
            authorization: None,
        })
    }

    /// `--metrics-url` (`none`: do not ask), else `/metrics` on the admin listener; either
    /// way with the admin's API key.
    pub fn choose(given: Option<&str>, admin: &Admin) -> Result<Option<Self>, String> {
        let mut m = match given {
            Some("none") => return Ok(None),
            Some(u) => Self::parse(u)?,
            None => Self {
                addr: admin.addr,
                host: admin.host_header.clone(),
                path: "/metrics".into(),
                authorization: None,
            },
        };
        m.authorization = admin.authorization();
        Ok(Some(m))
    }

    /// GET the page within `timeout` (connect + whole answer) and parse it.
    pub fn scrape(&self, timeout: Duration) -> Result<Metrics, String> {
        let deadline = Instant::now() + timeout;
        let mut s = TcpStream::connect_timeout(&self.addr, timeout)
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let _ = s.set_write_timeout(Some(left()));
        let auth = self
            .authorization
            .as_deref()
            .map(|a| format!("{a}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\nUser-Agent: ws-loadgen\r\n\r\n",
            self.path, self.host
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut body = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            if Instant::now() >= deadline {
                return Err("no complete answer in time".into());
            }
            let _ = s.set_read_timeout(Some(left()));
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err("no complete answer in time".into())
                }
                Err(e) => return Err(format!("read: {e}")),
            }
            if body.len() > 16 << 20 {
                return Err("answer larger than 16 MiB".into());
            }
        }
        let text = String::from_utf8_lossy(&body);
        let (head, rest) = text.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status == "401" {
            return Err(format!(
                "HTTP status 401 from {}{}: the admin listener wants its API key (--api-key or WS_API_KEY)",
                self.host, self.path
            ));
        }
        if status != "200" {
            return Err(format!("HTTP status {status}"));
        }
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Ok(Metrics::parse(&body))
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// What the server's `/metrics` says about descriptors and connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerMetrics {
    pub connections_open: u64,
    pub pending: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub accept_emfile: u64,
    pub accept_enfile: u64,
    pub accept_enomem: u64,
    pub rejected_503: u64,
    pub cores: usize,
}

impl ServerMetrics {
    pub fn from(m: &Metrics) -> Self {
        let u = |v: Option<f64>| v.map(|x| x.max(0.0) as u64);
        Self {
            connections_open: u(m.sum("ws_connections_open")).unwrap_or(0),
            pending: u(m.sum("ws_pending_connections")).unwrap_or(0),
            open_fds: u(m.sum("process_open_fds")),
            max_fds: u(m.sum("process_max_fds")),
            rss_bytes: u(m.sum("process_resident_memory_bytes")),
            accept_emfile: u(m.sum_where("ws_accept_errors_total", "errno", "EMFILE")).unwrap_or(0),
            accept_enfile: u(m.sum_where("ws_accept_errors_total", "errno", "ENFILE")).unwrap_or(0),
            accept_enomem: u(m.sum_where("ws_accept_errors_total", "errno", "ENOMEM")).unwrap_or(0)
                + u(m.sum_where("ws_accept_errors_total", "errno", "ENOBUFS")).unwrap_or(0),
            rejected_503: u(m.sum_where("ws_handshake_rejections_total", "status", "503"))
                .unwrap_or(0),
            cores: m.label_values("ws_connections_open", "core").len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE x counter\nws_connections_open{core=\"0\"} 5\n\
             ws_connections_open{core=\"1\"} 7\nws_accept_errors_total{core=\"0\",errno=\"EMFILE\"} 3\n\
             ws_accept_errors_total{core=\"1\",errno=\"EMFILE\"} 2\n\
             ws_accept_errors_total{core=\"1\",errno=\"ENFILE\"} 1\n\
             ws_handshake_rejections_total{core=\"0\",reason=\"max_conns\",status=\"503\"} 9\n\
             process_open_fds 30\nprocess_max_fds 300\nprocess_resident_memory_bytes 9.2e6\n",
        );
        let s = ServerMetrics::from(&m);
        assert_eq!(s.connections_open, 12);
        assert_eq!(s.accept_emfile, 5);
        assert_eq!(s.accept_enfile, 1);
        assert_eq!(s.rejected_503, 9);
        assert_eq!(s.open_fds, Some(30));
        assert_eq!(s.max_fds, Some(300));
        assert_eq!(s.rss_bytes, Some(9_200_000));
        assert_eq!(s.cores, 2);
        assert_eq!(m.sum("absent"), None);
        assert_eq!(dechunk("5\r\nhello\r\n3\r\n ab\r\n0\r\n\r\n"), "hello ab");
    }
}
