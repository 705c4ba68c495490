//! A scripted loop allocates nothing per message in steady state: rendering a templated
//! JSON message with a stamp into the send buffer, framing it, scanning a received
//! envelope for stamps, timing the echo and the delivery, sequence-checking the sender.
//! Counted by a global allocator in this test binary (per thread, so the harness's own
//! threads do not count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ws_common::payload::{now_ns, Stamp};
use ws_common::text_stamp;
use ws_loadgen::commands::run::args::{build, RunArgs};
use ws_loadgen::engine::conn::State;
use ws_loadgen::engine::io::Io;
use ws_loadgen::engine::scenario::Scenario;
use ws_loadgen::engine::shared::Shared;
use ws_loadgen::engine::sys::Epoll;
use ws_loadgen::scenario::script::Scripted;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[test]
fn steady_state_scripted_messages_allocate_nothing() {
    let dir = std::env::temp_dir().join(format!("ws-script-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("echo.toml");
    std::fs::write(
        &file,
        "url = \"ws://127.0.0.1:9/chat\"\n[loop]\nname = \"say\"\nrate = 10\n\
         send = '{\"type\":\"say\",\"room\":\"r{{conn % 10}}\",\"n\":{{seq}},\"text\":\"{{stamp}}\"}'\n",
    )
    .unwrap();
    let args = RunArgs::parse_words([
        "--script",
        file.to_str().unwrap(),
        "-c",
        "2",
        "--cores",
        "0",
    ])
    .unwrap();
    let cfg = build(&args, (20_000, 20_000)).unwrap();
    let start = now_ns();
    let sh = Arc::new(Shared::new(cfg, start, Arc::new(AtomicBool::new(false))));
    let mut io = Io::new(0, sh.clone(), Epoll::new().unwrap(), 2);
    let mut sc = Scripted::new(&sh.cfg, 0, 2).unwrap();
    // Two open connections (no socket: sends are framed and dropped at the write).
    for idx in 0..2 {
        io.conns[idx].state = State::Open;
        sc.on_open(&mut io, idx, start);
    }
    let mut msg = Vec::with_capacity(512);
    let mut t = start;
    // Text stamps carry wall-clock times.
    let wall = ws_loadgen::engine::sys::realtime_ns() as i64 - now_ns() as i64;
    let turn = |io: &mut Io, sc: &mut Scripted, i: u64, t: u64, msg: &mut Vec<u8>| {
        // Each connection's next message falls due.
        sc.timers(io, t);
        // What a chat server relays to connection 0: its own message and connection 1's,
        // each in the server's envelope.
        for (sender, seq) in [(0u32, i), (1u32, i)] {
            msg.clear();
            msg.extend_from_slice(br#"{"type":"msg","from":"u","data":{"text":""#);
            let stamp = Stamp {
                sender,
                seq,
                sent_ns: (t - 500_000).wrapping_add_signed(wall),
            };
            text_stamp::write(msg, stamp);
            msg.extend_from_slice(br#""},"ts":1733.5}"#);
            sc.on_message(io, 0, true, msg, t);
        }
    };
    // Warm up: buffers, histogram buckets, the sequence table reach their size.
    let at_start = allocs();
    for i in 0..200 {
        t += 100_000_000;
        turn(&mut io, &mut sc, i, t, &mut msg);
    }
    let before = allocs();
    // The counter counts: the warm-up allocated (the timer heap, the sequence table).
    assert!(before > at_start);
    let sent_before = io.stats.c.msgs_sent;
    for i in 200..10_200 {
        t += 100_000_000;
        turn(&mut io, &mut sc, i, t, &mut msg);
    }
    let n = allocs() - before;
    let sent = io.stats.c.msgs_sent - sent_before;
    assert!(sent >= 19_000, "the loop sent {sent}");
    assert_eq!(io.stats.c.script_deliveries, 10_200);
    assert_eq!(io.stats.c.script_gaps + io.stats.c.script_behind, 0);
    assert!(io.stats.h.rtt.len() >= 10_000);
    // 0.5 ms each, read back through the wall clock.
    let p50 = io.stats.h.rtt.value_at_quantile(0.5);
    assert!((450..=550).contains(&p50), "rtt p50 {p50} us");
    assert_eq!(
        n, 0,
        "{n} allocations for {sent} messages sent and 20000 received"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
