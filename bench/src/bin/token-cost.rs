//! The cost of the servers' token check alone (`ws_common::auth::TokenKey::verify`: base64url,
//! HMAC-SHA256, JSON claims), and of ws-loadgen's minting, per call on one core. What a
//! handshake pays on top of the upgrade with `--token-secret`; `scripts/auth-cost.sh` measures
//! the whole handshake side by side.
//!
//! usage: token-cost [ITERATIONS]   (default 200000)

use std::hint::black_box;
use std::time::Instant;

use ws_common::auth::{unix_now, TokenKey};

fn main() {
    let n: u32 = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 200_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("token-cost: ITERATIONS must be a positive integer");
            std::process::exit(2);
        }
    };
    let key = TokenKey::new(b"a-secret-of-32-bytes-for-bench!!");
    let now = unix_now();
    let rooms = vec!["lobby".to_string(), "room-42".to_string()];
    for (what, tok) in [
        ("sub+exp", key.mint("u1048579-2", now + 3600, None)),
        (
            "sub+exp+rooms",
            key.mint("u1048579-2", now + 3600, Some(&rooms)),
        ),
    ] {
        let t = Instant::now();
        for _ in 0..n {
            black_box(key.verify(black_box(&tok), now).is_ok());
        }
        let verify = t.elapsed().as_nanos() as f64 / f64::from(n);
        let t = Instant::now();
        for i in 0..n {
            black_box(key.mint(black_box("u1048579-2"), now + u64::from(i & 1), None));
        }
        let mint = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!(
            "{what:14} token {} bytes: verify {verify:.0} ns, mint {mint:.0} ns per call",
            tok.len()
        );
    }
}
