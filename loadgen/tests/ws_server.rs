//! ws-loadgen against the project's own server: the counts the load generator reports must
//! be the counts the server saw (its `/metrics`), for echo and for heartbeats, and drops by
//! the server must come back as reconnects. The independent-server versions of these checks
//! are in `run.rs`; this file makes sure the two programs of this project agree.

mod common;

use common::{run_loadgen, WsServer};

#[test]
fn echo_counts_match_the_servers_own() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&["--ping-interval", "0"]);
    let r = run_loadgen(
        &srv.url("/ws"),
        &[
            "-c",
            "150",
            "--rate",
            "1500",
            "-d",
            "2s",
            "--connect-rate",
            "0",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/connections/established"), 150, "{}", r.explain());
    assert_eq!(
        srv.metric("ws_upgraded_total"),
        150,
        "the server upgraded what the loadgen established"
    );
    let sent = r.u("/messages/sent");
    assert!(sent > 0, "{}", r.explain());
    assert_eq!(
        r.u("/messages/received") + r.u("/messages/lost"),
        sent,
        "{}",
        r.explain()
    );
    assert_eq!(r.u("/messages/lost"), 0, "{}", r.explain());
    assert_eq!(
        srv.metric("ws_messages_in_total"),
        sent,
        "every message sent reached the server"
    );
    assert_eq!(
        srv.metric("ws_messages_out_total"),
        r.u("/messages/received"),
        "every echo came back"
    );
}

#[test]
fn heartbeat_pings_are_the_servers_pongs() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&["--ping-interval", "0"]);
    let r = run_loadgen(
        &srv.url("/ws"),
        &[
            "--scenario",
            "hold",
            "-c",
            "100",
            "--ping-interval",
            "500ms",
            "-d",
            "2s",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let pings = r.u("/heartbeat/pings_sent");
    assert!(pings >= 100, "{}", r.explain());
    assert_eq!(r.u("/heartbeat/pongs_received"), pings, "{}", r.explain());
}

#[test]
fn drops_by_the_server_are_reconnected() {
    let _g = common::serial();
    // Idle timeout 1 s with no server pings and no client heartbeat: the server drops every
    // connection with 1001, and the load generator must reconnect them.
    let srv = WsServer::start_on_two_cores(&["--ping-interval", "0", "--idle-timeout", "1"]);
    let r = run_loadgen(
        &srv.url("/ws"),
        &[
            "--scenario",
            "hold",
            "-c",
            "20",
            "--ping-interval",
            "1h",
            "-d",
            "4s",
            "--reconnect-max-tries",
            "5",
        ],
    );
    assert!(r.u("/connections/drops") >= 20, "{}", r.explain());
    assert!(r.u("/connections/reconnects") >= 20, "{}", r.explain());
    assert!(r.u("/close_codes/1001") >= 20, "{}", r.explain());
    assert!(srv.metric("ws_idle_timeout_closes_total") >= 20);
}
