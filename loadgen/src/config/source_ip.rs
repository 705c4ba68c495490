//! `--source-ip 127.0.0.2-127.0.0.40` or `127.0.0.2,127.0.0.3` (or both mixed): the local
//! addresses connections are bound to, round-robin.
//!
//! Each one gets its own ephemeral port range towards the server because sockets are bound
//! with `IP_BIND_ADDRESS_NO_PORT` (see [`crate::engine::sys::bind_source`]), so N addresses allow
//! about N × (size of `ip_local_port_range`) connections to one server address.

use std::net::IpAddr;

/// Most addresses a list may expand to (a typo such as `127.0.0.1-127.1.0.1` is refused).
pub const MAX_SOURCE_IPS: usize = 65_536;

/// Parses a comma-separated list of addresses and inclusive `first-last` ranges.
pub fn parse_source_ips(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out: Vec<IpAddr> = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty element in --source-ip {s:?}"));
        }
        match part.split_once('-') {
            None => out.push(parse_ip(part)?),
            Some((a, b)) => {
                let (a, b) = (parse_ip(a.trim())?, parse_ip(b.trim())?);
                let (lo, hi, v4) = match (a, b) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => {
                        (u32::from(a) as u128, u32::from(b) as u128, true)
                    }
                    (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), false),
                    _ => return Err(format!("range {part:?} mixes IPv4 and IPv6")),
                };
                if lo > hi {
                    return Err(format!("range {part:?} runs backwards"));
                }
                if hi - lo >= (MAX_SOURCE_IPS - out.len()) as u128 {
                    return Err(format!(
                        "range {part:?} has more than {MAX_SOURCE_IPS} addresses"
                    ));
                }
                for v in lo..=hi {
                    out.push(if v4 {
                        IpAddr::V4((v as u32).into())
                    } else {
                        IpAddr::V6(v.into())
                    });
                }
            }
        }
        if out.len() > MAX_SOURCE_IPS {
            return Err(format!(
                "--source-ip lists more than {MAX_SOURCE_IPS} addresses"
            ));
        }
    }
    Ok(out)
}

fn parse_ip(t: &str) -> Result<IpAddr, String> {
    t.parse::<IpAddr>()
        .map_err(|_| format!("{t:?} in --source-ip is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        let v = parse_source_ips("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(s, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"]);
        assert_eq!(parse_source_ips("127.0.0.255-127.0.1.0").unwrap().len(), 2);
        assert_eq!(parse_source_ips("::1").unwrap().len(), 1);
        assert_eq!(parse_source_ips("fd00::1-fd00::3").unwrap().len(), 3);
    }

    #[test]
    fn refusals() {
        assert!(parse_source_ips("").is_err());
        assert!(parse_source_ips("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_source_ips("127.0.0.1-::1").is_err());
        assert!(parse_source_ips("localhost").is_err());
        assert!(parse_source_ips("10.0.0.0-10.255.255.255").is_err());
        assert!(parse_source_ips("::-ffff::").is_err());
    }
}
