//! The same checks against any server given by URL, e.g. our `ws-server`:
//!
//! ```text
//! WS_LOADGEN_TEST_URL=ws://127.0.0.1:9001/ws \
//! WS_LOADGEN_TEST_METRICS=127.0.0.1:9001 cargo test -p ws-loadgen --test external
//! ```
//!
//! Without `WS_LOADGEN_TEST_URL` the test passes without doing anything (it says so on
//! stderr). With `WS_LOADGEN_TEST_METRICS` (HOST:PORT serving `GET /metrics`), the server's
//! own count of completed upgrades (`ws_upgraded_total`, summed over its labels; another name
//! via `WS_LOADGEN_TEST_UPGRADED_METRIC`) must grow by exactly the connections we established.

mod common;

use common::metric_sum;

#[test]
fn echo_against_the_server_under_test() {
    let Ok(url) = std::env::var("WS_LOADGEN_TEST_URL") else {
        eprintln!("WS_LOADGEN_TEST_URL not set: nothing to test against");
        return;
    };
    let metrics = std::env::var("WS_LOADGEN_TEST_METRICS").ok();
    let name = std::env::var("WS_LOADGEN_TEST_UPGRADED_METRIC")
        .unwrap_or_else(|_| "ws_upgraded_total".into());
    let before = metrics.as_deref().and_then(|m| metric_sum(m, &name));
    let r = common::run_loadgen(&url, &["-c", "100", "--rate", "1000", "-d", "2s"]);
    assert_eq!(r.code, 0, "{}", r.explain());
    let est = r.u("/connections/established");
    assert_eq!(est, 100, "{}", r.explain());
    assert_eq!(
        r.u("/messages/sent"),
        r.u("/messages/received") + r.u("/messages/lost")
    );
    assert_eq!(r.u("/messages/lost"), 0, "{}", r.explain());
    assert_eq!(r.u("/messages/unexpected"), 0, "{}", r.explain());
    if let (Some(m), Some(b)) = (metrics.as_deref(), before) {
        let after = metric_sum(m, &name).expect("metrics readable after the run");
        assert_eq!(
            (after - b) as u64,
            est,
            "server counted {} upgrades",
            after - b
        );
    }
}
