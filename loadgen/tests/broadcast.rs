//! `--scenario broadcast` and `--scenario push` against a real server binary.
//!
//! The server is only a program that serves the routes (`/broadcast?room=…&echo=…`,
//! `/ws?user=…`, `POST /push/ID`, `GET /metrics` with `ws_deliveries_total` and
//! `ws_push_hits_total`) and prints `listening on ADDR`: by default our `ws-server`, or any
//! other implementation given as `WS_SERVER_BIN` (e.g. the tokio baseline); how it is found
//! or built: `common::server_bin`. Assertions are on counts only, never on time.

mod common;

use common::{run_loadgen, Run, WsServer};

/// The checks every clean broadcast run must pass.
fn assert_clean_broadcast(r: &Run, srv: &WsServer, subscribers: u64) {
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(
        r.u("/connections/established"),
        subscribers,
        "{}",
        r.explain()
    );
    assert_eq!(r.u("/connections/drops"), 0, "{}", r.explain());
    let expected = r.u("/broadcast/deliveries_expected");
    let received = r.u("/broadcast/deliveries_received");
    assert!(received > 0, "{}", r.explain());
    assert_eq!(expected, received, "{}", r.explain());
    for k in [
        "deliveries_missing",
        "deliveries_late",
        "sequence_gaps",
        "sequence_lost",
        "out_of_order",
        "duplicates",
        "unexpected",
        "messages_incomplete",
        "messages_unmatched",
    ] {
        assert_eq!(r.u(&format!("/broadcast/{k}")), 0, "{k}\n{}", r.explain());
    }
    let published = r.u("/broadcast/published");
    assert_eq!(r.u("/messages/sent"), published);
    assert_eq!(
        r.u("/broadcast/messages_complete") + r.u("/broadcast/messages_no_subscriber"),
        published,
        "{}",
        r.explain()
    );
    // Deliveries of messages published during --warmup are counted but not timed.
    let untimed = r.u("/latency/warmup_excluded");
    let all_timed = r.u("/broadcast/all_delivered_latency/count");
    if untimed == 0 {
        assert_eq!(all_timed, r.u("/broadcast/messages_complete"));
    } else {
        assert!(all_timed < r.u("/broadcast/messages_complete"));
    }
    assert_eq!(r.u("/broadcast/fanout_latency/count") + untimed, received);
    assert_eq!(r.u("/latency/delivery/count") + untimed, received);
    // The server's own count of deliveries is exactly what the subscribers received.
    assert_eq!(
        srv.metric("ws_deliveries_total"),
        received,
        "{}",
        r.explain()
    );
}

#[test]
fn broadcast_every_subscriber_gets_every_message() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let r = run_loadgen(
        &srv.url("/broadcast?room=t1"),
        &[
            "--scenario",
            "broadcast",
            "-c",
            "50",
            "--publishers",
            "2",
            "--rate",
            "200",
            "-d",
            "3s",
        ],
    );
    assert_clean_broadcast(&r, &srv, 50);
    assert!(r.u("/broadcast/published") > 100, "{}", r.explain());
    let per: Vec<u64> = r.j()["broadcast"]["published_per_publisher"]
        .as_array()
        .expect("published_per_publisher")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(per.len(), 2);
    assert_eq!(per.iter().sum::<u64>(), r.u("/broadcast/published"));
    assert!(r.stdout.contains("all-delivered"), "{}", r.stdout);
    assert!(r.stdout.contains("Stages (fanout ms)"), "{}", r.stdout);
}

#[test]
fn broadcast_warmup_deliveries_are_counted_but_not_timed() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let r = run_loadgen(
        &srv.url("/broadcast?room=tw"),
        &[
            "--scenario",
            "broadcast",
            "-c",
            "20",
            "--publishers",
            "1",
            "--rate",
            "20",
            "-d",
            "3s",
            "--warmup",
            "1s",
        ],
    );
    assert_clean_broadcast(&r, &srv, 20);
    let received = r.u("/broadcast/deliveries_received");
    let excluded = r.u("/latency/warmup_excluded");
    let timed = r.u("/broadcast/fanout_latency/count");
    // 20 msgs/s to 20 subscribers: about 400 deliveries in the first second.
    assert!(excluded >= 200, "{}", r.explain());
    assert!(timed >= 400, "{}", r.explain());
    assert_eq!(timed + excluded, received, "{}", r.explain());
}

#[test]
fn broadcast_without_echo_expects_one_delivery_less_per_message() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let r = run_loadgen(
        &srv.url("/broadcast?room=t2&echo=false"),
        &[
            "--scenario",
            "broadcast",
            "-c",
            "30",
            "--publishers",
            "3",
            "--rate",
            "150",
            "-d",
            "2s",
            "--connect-rate",
            "0",
        ],
    );
    assert_clean_broadcast(&r, &srv, 30);
    // A message reaches the 29 others at most, never its publisher (and expecting it there
    // would show as missing deliveries above).
    let published = r.u("/broadcast/published");
    let received = r.u("/broadcast/deliveries_received");
    assert!(received <= published * 29, "{}", r.explain());
}

#[test]
fn broadcast_closed_loop_publishers_wait_for_their_own_messages() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let r = run_loadgen(
        &srv.url("/broadcast?room=t3"),
        &[
            "--scenario",
            "broadcast",
            "-c",
            "10",
            "--publishers",
            "2",
            "--rate",
            "0",
            "-d",
            "2s",
        ],
    );
    assert_clean_broadcast(&r, &srv, 10);
    assert!(r.u("/broadcast/published") > 10, "{}", r.explain());
}

#[test]
fn push_delivers_every_push_to_its_user() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let r = srv.run_loadgen(
        "/ws",
        &[
            "--scenario",
            "push",
            "-c",
            "20",
            "--rate",
            "100",
            "-d",
            "3s",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/connections/established"), 20, "{}", r.explain());
    let pushes = r.u("/push/pushes");
    assert!(pushes > 100, "{}", r.explain());
    assert_eq!(r.u("/push/statuses/200"), pushes, "{}", r.explain());
    assert_eq!(r.u("/push/failed"), 0, "{}", r.explain());
    assert_eq!(r.u("/push/deliveries_expected"), pushes, "{}", r.explain());
    assert_eq!(r.u("/push/deliveries_received"), pushes, "{}", r.explain());
    assert_eq!(r.u("/push/lost"), 0, "{}", r.explain());
    assert_eq!(r.u("/push/unexpected"), 0, "{}", r.explain());
    assert_eq!(r.u("/push/delivery_latency/count"), pushes);
    assert_eq!(r.u("/push/http_rtt/count"), pushes);
    assert_eq!(r.j()["error_rate"].as_f64(), Some(0.0), "{}", r.explain());
    assert_eq!(srv.metric("ws_push_hits_total"), pushes, "{}", r.explain());
    assert_eq!(srv.metric("ws_deliveries_total"), pushes, "{}", r.explain());
}

#[test]
fn push_over_the_server_message_limit_is_counted_as_413() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&["--max-message-size", "100"]);
    let r = srv.run_loadgen(
        "/ws",
        &[
            "--scenario",
            "push",
            "-c",
            "4",
            "--rate",
            "20",
            "-d",
            "1s",
            "--payload",
            "200",
            "--max-error-rate",
            "1%",
        ],
    );
    assert_eq!(r.code, 1, "the error-rate threshold fails\n{}", r.explain());
    let pushes = r.u("/push/pushes");
    assert!(pushes > 0, "{}", r.explain());
    assert_eq!(r.u("/push/statuses/413"), pushes, "{}", r.explain());
    assert_eq!(r.u("/push/failed"), pushes);
    assert_eq!(r.u("/push/deliveries_received"), 0);
    assert_eq!(r.u("/push/lost"), 0, "a refused push is failed, not lost");
    assert_eq!(srv.metric("ws_deliveries_total"), 0);
}

/// A server that joins a subscriber to the room while answering its upgrade (before
/// ws-loadgen has read the answer) delivers messages published in between to one more
/// subscriber than ws-loadgen counted open: `extra`. Each such delivery is attributed
/// (`deliveries_joined_in_flight`), none is missing or duplicated, and the report says so.
/// The peer is independent (Python `websockets`); it widens the window so that it is hit.
#[test]
fn broadcast_extra_deliveries_are_subscribers_the_server_joined_first() {
    let peer = common::PyPeer::start("bc_room.py", &["--join-delay", "0.05"]);
    let url = format!("ws://127.0.0.1:{}/broadcast?room=r", peer.port);
    let r = run_loadgen(
        &url,
        &[
            "--scenario",
            "broadcast",
            "-c",
            "12",
            "--publishers",
            "2",
            "--connect-rate",
            "20",
            "--rate",
            "100",
            "-d",
            "2s",
        ],
    );
    let sent: u64 = peer
        .finish()
        .lines()
        .find_map(|l| l.strip_prefix("sent ")?.trim().parse().ok())
        .expect("the peer prints its delivery count");
    assert_eq!(r.code, 0, "{}", r.explain());
    let extra = r.u("/broadcast/deliveries_extra");
    let joined = r.u("/broadcast/deliveries_joined_in_flight");
    assert!(extra > 0, "the window was hit: {}", r.explain());
    assert!(
        joined >= extra,
        "every extra delivery is explained: {}",
        r.explain()
    );
    assert_eq!(r.u("/broadcast/deliveries_missing"), 0, "{}", r.explain());
    assert_eq!(r.u("/broadcast/duplicates"), 0, "{}", r.explain());
    assert_eq!(
        r.u("/broadcast/deliveries_received"),
        sent,
        "{}",
        r.explain()
    );
    assert!(
        r.stdout.contains("the server had joined them to the room"),
        "{}",
        r.stdout
    );
}
