//! The main thread of a run: checks the settings, starts one pinned worker per core,
//! merges their statistics deltas (per second, per stage, in total), shows progress,
//! handles SIGINT, and writes the report. Returns the process exit code.

pub mod args;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::RecvTimeoutError;
use ws_common::metrics::{cpu_seconds, raise_nofile_to_hard, resident_bytes};
use ws_common::payload::now_ns;

use super::{EXIT_CANNOT_RUN, EXIT_OK, EXIT_THRESHOLD};
use crate::config::{RunConfig, ScenarioKind};
use crate::engine::shared::Shared;
use crate::engine::stats::HistSummary;
use std::collections::BTreeMap;

use crate::config::script::Script;
use crate::config::Main;
use crate::engine::stats::Stats;
use crate::limits::metrics::MetricsUrl;
use crate::limits::sampler::{Sampler, Source};
use crate::report::aggregate::{latency_of, Agg};
use crate::report::hdr_log::HdrLog;
use crate::report::live::Live;
use crate::report::progress::{Progress, Tick};
use crate::report::run::{
    BroadcastReport, ClockSync, ConfigEcho, Connections, Heartbeat, Latency, LoopReport, Messages,
    Process, PushReport, Report, ScriptReport, StageReport, StepReport, TlsReport,
};
use crate::report::thresholds::Observed;
use crate::report::{write_file, write_json};
use crate::scenario::fanout::AllDelivered;
use args::RunArgs;

/// Broadcast: a message is settled (complete or not) this long after its send time...
pub const FANOUT_MAX_AGE_NS: u64 = 60_000_000_000;
/// ... or this long after it while more than `FANOUT_TRACKED_CAP` messages are tracked
/// (about 80 B each).
pub const FANOUT_MIN_AGE_NS: u64 = 5_000_000_000;
pub const FANOUT_TRACKED_CAP: usize = 200_000;

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn per_s(v: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        v as f64 / secs
    } else {
        0.0
    }
}

/// Where to sample the server from: `--metrics-url`, or with `--html` the admin listener.
fn server_sampler(cfg: &RunConfig, args: &RunArgs) -> Result<Option<MetricsUrl>, String> {
    if args.html.is_none() && args.metrics_url.is_none() {
        return Ok(None);
    }
    MetricsUrl::choose(args.metrics_url.as_deref(), &cfg.admin)
}

/// Longest wait for `--start-at`.
const MAX_START_WAIT_MS: u64 = 24 * 3600 * 1000;

/// Sleeps until Unix ms `at` (SIGINT ends the wait); returns how late we are if `at` had
/// passed already.
fn wait_until(at: u64, stop: &AtomicBool) -> Result<Option<f64>, String> {
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };
    let wait = at as f64 - now_ms();
    if wait > MAX_START_WAIT_MS as f64 {
        return Err(format!(
            "--start-at is {:.0} s away: more than a day (is the time right?)",
            wait / 1000.0
        ));
    }
    if wait <= 0.0 {
        if -wait >= 1.0 {
            eprintln!(
                "ws-loadgen: started {:.0} ms after --start-at (launched late, or this clock is behind)",
                -wait
            );
        }
        return Ok(Some(-wait));
    }
    eprintln!("ws-loadgen: waiting {:.1} s for --start-at", wait / 1000.0);
    while !stop.load(Ordering::Relaxed) {
        let left = at as f64 - now_ms();
        if left <= 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_secs_f64((left / 1000.0).min(0.1)));
    }
    Ok(Some((now_ms() - at as f64).max(0.0)))
}

/// Runs a load and returns the exit code.
pub fn run(args: &RunArgs) -> i32 {
    let nofile = raise_nofile_to_hard();
    let cfg = match args::build(args, nofile) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ws-loadgen: {e}");
            return EXIT_CANNOT_RUN;
        }
    };
    execute(cfg, args, super::stop_on_sigint())
}

fn execute(cfg: RunConfig, args: &RunArgs, stop: Arc<AtomicBool>) -> i32 {
    let rss_start = resident_bytes();
    let cpu_start = cpu_seconds();
    let late = match cfg.start_at_unix_ms {
        Some(at) => match wait_until(at, &stop) {
            Ok(late) => late,
            Err(e) => {
                eprintln!("ws-loadgen: {e}");
                return EXIT_CANNOT_RUN;
            }
        },
        None => None,
    };
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = cfg.cores.len();
    let stage_count = cfg.plan.stages.len();
    let total_s = cfg.plan.total_ns() as f64 / 1e9;
    let sampler = match server_sampler(&cfg, args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ws-loadgen: {e}");
            return EXIT_CANNOT_RUN;
        }
    };
    let mut shared = Shared::new(cfg, now_ns(), stop.clone());
    shared.start_late_ms = late;
    let sh = Arc::new(shared);
    let sampling = sampler.map(|m| Sampler::start(Source::Metrics(m), sh.start_ns));
    let live = match args.metrics_listen {
        Some(addr) => match Live::serve(addr) {
            Ok((l, bound)) => {
                eprintln!("ws-loadgen: metrics on http://{bound}/metrics");
                Some(l)
            }
            Err(e) => {
                eprintln!("ws-loadgen: {e}");
                stop.store(true, Ordering::Relaxed);
                None
            }
        },
        None => None,
    };
    let step_names: Vec<String> = sh
        .cfg
        .script
        .as_deref()
        .map(|s| s.open.iter().map(|st| st.name.clone()).collect())
        .unwrap_or_default();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        match crate::scenario::worker(i, sh.clone(), tx.clone()) {
            Ok(w) => workers.push(w),
            Err(e) => {
                eprintln!("ws-loadgen: cannot start worker {i}: {e}");
                return EXIT_CANNOT_RUN;
            }
        }
    }
    drop(tx);
    let mut handles = Vec::with_capacity(n);
    for (i, w) in workers.into_iter().enumerate() {
        let core = sh.cfg.cores[i];
        let h = std::thread::Builder::new()
            .name(format!("ws-loadgen-{i}"))
            .spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: core });
                w();
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("ws-loadgen: cannot spawn worker thread: {e}");
                stop.store(true, Ordering::Relaxed);
                return EXIT_CANNOT_RUN;
            }
        }
    }

    let (main, latency_name) = sh.cfg.main_latency();
    let hdr = args
        .hdr_log
        .is_some()
        .then(|| match sh.cfg.script.as_deref() {
            Some(s) => HdrLog::scripted(
                s.open.iter().map(|st| st.name.clone()).collect(),
                s.lp.as_ref().map(|l| l.name.as_str()),
            ),
            None => HdrLog::default(),
        });
    let mut agg = Agg::new(n, stage_count, hdr, main);
    if sh.cfg.scenario == ScenarioKind::Broadcast {
        let publishers = sh.cfg.publishers;
        // Messages are settled a minute after their send time, or 5 s (at least twice the
        // drain) when many are tracked.
        let min_age = FANOUT_MIN_AGE_NS.max(sh.cfg.drain_ns.saturating_mul(2));
        let mut fan = AllDelivered::new(publishers, min_age, FANOUT_MAX_AGE_NS, FANOUT_TRACKED_CAP);
        fan.timed_from_ns = sh.start_ns + sh.cfg.warmup_ns;
        agg.fan = Some(fan);
    }
    let progress = Progress::new(args.progress, total_s);
    let mut rss_peak = rss_start;
    let mut next_tick = now_ns() + 1_000_000_000;
    let mut last_tick = (now_ns(), 0u64, 0u64); // (time, established, received)
                                                // The load phase ends at the plan's end, or when SIGINT is first seen.
    let mut load_end_ns = sh.start_ns.saturating_add(sh.cfg.plan.total_ns());
    let mut stop_seen = false;
    loop {
        if !stop_seen && stop.load(Ordering::Relaxed) {
            stop_seen = true;
            load_end_ns = load_end_ns.min(now_ns());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => agg.add(r, stage_count),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = now_ns();
        if now >= next_tick {
            next_tick = now + 1_000_000_000;
            rss_peak = rss_peak.max(resident_bytes());
            let dt = (now - last_tick.0) as f64 / 1e9;
            let est = agg.total.c.connects_established;
            let rec = agg.total.c.msgs_received;
            let lat = agg.latency(&agg.total);
            let tick = Tick {
                elapsed_s: now.saturating_sub(sh.start_ns) as f64 / 1e9,
                total_s,
                open: agg.latest_open.iter().sum(),
                target: sh.cfg.plan.max_target(),
                pending: agg.latest_pending.iter().sum(),
                established_per_s: (est - last_tick.1) as f64 / dt,
                failed: agg.total.c.connects_failed,
                drops: agg.total.c.drops,
                msgs_per_s: (rec - last_tick.2) as f64 / dt,
                latency_name: latency_name.clone(),
                p99: crate::fmt::opt_us((!lat.is_empty()).then(|| lat.value_at_quantile(0.99))),
            };
            progress.tick(&tick);
            last_tick = (now, est, rec);
            if let Some(l) = &live {
                l.set(crate::report::live::page(
                    &sh.cfg.host_label,
                    &agg.total,
                    tick.open,
                    tick.pending,
                    &step_names,
                ));
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let server_samples = sampling.map(Sampler::finish).unwrap_or_default();
    progress.finish();
    rss_peak = rss_peak.max(resident_bytes());
    agg.finalize_seconds(true);
    let load_s = load_end_ns.min(now_ns()).saturating_sub(sh.start_ns) as f64 / 1e9;
    let interrupted = stop.load(Ordering::Relaxed);

    let mut report = build_report(
        &sh,
        args,
        agg,
        started_unix,
        load_s,
        interrupted,
        (rss_start, rss_peak),
        cpu_seconds() - cpu_start,
    );
    report.server_samples = server_samples;
    if let Some(path) = &args.json {
        write_json("ws-loadgen", path, "the JSON report", &report);
    }
    if let Some(path) = &args.html {
        write_file("ws-loadgen", path, crate::report::run_html::page(&report));
    }
    print!("{}", report.to_text());
    report.exit_code
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    sh: &Shared,
    args: &RunArgs,
    mut agg: Agg,
    started_unix: Duration,
    load_s: f64,
    interrupted: bool,
    rss: (u64, u64),
    cpu: f64,
) -> Report {
    let cfg = &sh.cfg;
    // Broadcast: settle the messages still tracked; their shortfalls are missing deliveries,
    // errors of the stage they were published in.
    let fan = agg.fan.take().map(|mut f| {
        f.finish();
        for (&stage, &missing) in &f.missing_by_stage {
            if let Some(s) = agg.stages.get_mut(stage as usize) {
                s.c.fanout_missing += missing;
            }
            agg.total.c.fanout_missing += missing;
        }
        f
    });
    let t = &agg.total;
    let c = &t.c;
    let (_, latency_name) = cfg.main_latency();
    let stages = cfg
        .plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let s = &agg.stages[i];
            let start = cfg.plan.start_ns(i) as f64 / 1e9;
            let end = (cfg.plan.start_ns(i + 1) as f64 / 1e9).min(load_s.max(start));
            let dur = (end - start).max(0.0);
            StageReport {
                index: i,
                target: st.target,
                duration_s: dur,
                peak_open: agg.stage_peak[i],
                latency: HistSummary::of(agg.latency(s)),
                steps: script_rows(cfg, s),
                msgs_per_s: per_s(s.c.msgs_received, dur),
                bytes_per_s: per_s(s.c.bytes_received, dur),
                error_rate: s.c.error_rate(),
                failed_connects: s.c.connects_failed,
                counters: s.c.clone(),
                all_delivered: fan.as_ref().map(|f| {
                    f.by_stage
                        .get(i)
                        .map(HistSummary::of)
                        .unwrap_or_else(|| HistSummary::of(&crate::engine::stats::new_hist()))
                }),
            }
        })
        .collect();
    let per_conn =
        (agg.peak_open > 0).then(|| rss.1.saturating_sub(rss.0) as f64 / agg.peak_open as f64);
    let hdr = agg.hdr.take();
    let peak_received_per_s = agg
        .done_seconds
        .iter()
        .map(|s| s.msgs_received)
        .max()
        .unwrap_or(0);
    let broadcast = fan.map(|f| BroadcastReport {
        room: cfg.room.clone(),
        echo: cfg.echo_self,
        publishers: cfg.publishers,
        subscribers_peak: agg.peak_open,
        published: c.msgs_sent,
        published_per_publisher: f.per_publisher.clone(),
        deliveries_expected: f.expected_total,
        deliveries_received: c.msgs_received,
        deliveries_missing: c.fanout_missing,
        deliveries_extra: f.extra,
        deliveries_joined_in_flight: c.fanout_joined,
        deliveries_late: f.late,
        deliveries_per_s: per_s(c.msgs_received, load_s),
        peak_deliveries_per_s: peak_received_per_s,
        sequence_gaps: c.fanout_gaps,
        sequence_lost: c.fanout_gaps.saturating_sub(c.msgs_out_of_order),
        out_of_order: c.msgs_out_of_order,
        duplicates: c.fanout_duplicates,
        unexpected: c.msgs_unexpected,
        skipped_backpressure: c.sends_skipped_backpressure,
        messages_complete: f.complete,
        messages_incomplete: f.incomplete,
        messages_no_subscriber: f.no_subscriber,
        messages_unmatched: f.unmatched,
        all_delivered_ratio: ratio(f.complete, f.complete + f.incomplete),
        fanout_latency: HistSummary::of(&t.h.delivery),
        all_delivered_latency: HistSummary::of(&f.hist),
    });
    let push = (sh.cfg.scenario == ScenarioKind::Push).then(|| PushReport {
        users_peak: agg.peak_open,
        pushes: c.msgs_sent,
        pushes_per_s: per_s(c.msgs_sent, load_s),
        statuses: t.push_status.clone(),
        failed: c.push_failed,
        deliveries_expected: c.push_deliveries_expected,
        deliveries_received: c.msgs_received,
        deliveries_per_s: per_s(c.msgs_received, load_s),
        lost: c.msgs_lost,
        out_of_order: c.msgs_out_of_order,
        unexpected: c.msgs_unexpected,
        delivery_latency: HistSummary::of(&t.h.delivery),
        http_rtt: HistSummary::of(&t.h.http),
    });
    let mut report = Report {
        tool: "ws-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        url: cfg.target.url.clone(),
        server_addr: cfg.target.addr.to_string(),
        scenario: cfg.scenario,
        main_latency: latency_name,
        config: ConfigEcho {
            stages: cfg.plan.stages.clone(),
            connect_rate: cfg.connect_rate,
            rate: cfg.rate,
            payload: cfg.payload,
            ping_interval_ms: cfg.ping_interval_ns / 1_000_000,
            reconnect_max_tries: cfg.reconnect_max_tries,
            cores: cfg.cores.clone(),
            source_ips: cfg.source_ips.iter().map(|i| i.to_string()).collect(),
            headers: cfg.headers.clone(),
            origin: cfg.origin.clone(),
            connect_timeout_ms: cfg.connect_timeout_ns / 1_000_000,
            handshake_timeout_ms: cfg.handshake_timeout_ns / 1_000_000,
            drain_timeout_ms: cfg.drain_ns / 1_000_000,
            warmup_ms: cfg.warmup_ns / 1_000_000,
            tick_us: cfg.tick_ns / 1_000,
            nofile_soft: cfg.nofile.0,
            nofile_hard: cfg.nofile.1,
        },
        started_unix_ms: started_unix.as_millis() as u64,
        elapsed_s: load_s,
        interrupted,
        connections: Connections {
            target: cfg.plan.max_target(),
            attempted: c.connects_attempted,
            established: c.connects_established,
            failed: c.connects_failed,
            peak_open: agg.peak_open,
            open_at_end: agg.open_at_end,
            alive_at_end_ratio: ratio(agg.open_at_end as u64, c.connects_established),
            drops: c.drops,
            reconnects: c.reconnects,
            retries: c.retries,
            gave_up: c.gave_up,
            established_per_s: per_s(c.connects_established, load_s),
            peak_established_per_s: agg
                .done_seconds
                .iter()
                .map(|s| s.established)
                .max()
                .unwrap_or(0),
        },
        failures: t.failures.clone(),
        drop_classes: t.drop_classes.clone(),
        close_codes: t.close_codes.clone(),
        messages: Messages {
            sent: c.msgs_sent,
            received: c.msgs_received,
            lost: c.msgs_lost,
            out_of_order: c.msgs_out_of_order,
            unexpected: c.msgs_unexpected,
            skipped_backpressure: c.sends_skipped_backpressure,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            received_per_s: per_s(c.msgs_received, load_s),
            bytes_received_per_s: per_s(c.bytes_received, load_s),
        },
        heartbeat: Heartbeat {
            pings_sent: c.pings_sent,
            pongs_received: c.pongs_received,
            survival_rate: ratio(c.pongs_received, c.pings_sent),
        },
        latency: Latency {
            warmup_excluded: c.latency_warmup_excluded,
            ..Latency::of(&t.h)
        },
        error_rate: c.error_rate(),
        totals: c.clone(),
        stages,
        per_second: std::mem::take(&mut agg.done_seconds),
        process: Process {
            workers: agg.workers,
            cpu_seconds: cpu,
            rss_start_bytes: rss.0,
            rss_peak_bytes: rss.1,
            rss_per_open_conn_bytes: per_conn,
            slot_heap_bytes_at_end: agg.slot_heap,
        },
        thresholds: Vec::new(),
        exit_code: EXIT_OK,
        error: None,
        broadcast,
        push,
        tls: cfg.tls.as_ref().map(|t| TlsReport {
            server_name: t.server_name.to_str().into_owned(),
            insecure: t.insecure,
            roots: t.roots_from.clone(),
            client_cert: t.has_client_cert(),
            resume: t.resume,
            handshakes_full: c.tls_full,
            handshakes_resumed: c.tls_resumed,
        }),
        script: cfg.script.as_deref().map(|sc| script_report(cfg, sc, t)),
        host_label: cfg.host_label.clone(),
        start_at_unix_ms: cfg.start_at_unix_ms,
        start_late_ms: sh.start_late_ms,
        hosts: Vec::new(),
        clock: crate::engine::sys::clock_sync().map(|(synced, est, max)| ClockSync {
            synced,
            est_error_us: est,
            max_error_us: max,
        }),
        clock_note: None,
        server_samples: Vec::new(),
    };
    // Thresholds on the report's own rows, as `merge` checks them.
    report.thresholds = args
        .thresholds
        .thresholds()
        .evaluate(&Observed::of(&report));
    let (exit_code, error) = if c.connects_established == 0 {
        let why = if t.failures.is_empty() {
            "no connection was attempted".to_string()
        } else {
            t.failures
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        (
            EXIT_CANNOT_RUN,
            Some(format!(
                "no connection could be established to {} ({}): {why}{}",
                cfg.target.url,
                cfg.target.addr,
                refusal_hint(cfg, &t.failures)
            )),
        )
    } else if report.thresholds.iter().any(|o| !o.pass) {
        (EXIT_THRESHOLD, None)
    } else {
        (EXIT_OK, None)
    };
    if let Some(e) = &error {
        eprintln!("ws-loadgen: {e}");
    }
    for o in report.thresholds.iter().filter(|o| !o.pass) {
        eprintln!(
            "ws-loadgen: threshold {} failed: limit {}, actual {}",
            o.name, o.limit, o.actual
        );
    }
    report.exit_code = exit_code;
    report.error = error;
    if let (Some(path), Some(log)) = (&args.hdr_log, hdr) {
        match log.finish(started_unix.as_secs_f64()) {
            Ok(b) => write_file("ws-loadgen", path, b),
            Err(e) => eprintln!("ws-loadgen: cannot encode the interval log: {e}"),
        }
    }
    report
}

/// A script's latency rows in `s`, by name (empty for other scenarios).
fn script_rows(cfg: &RunConfig, s: &Stats) -> BTreeMap<String, HistSummary> {
    let Some(sc) = cfg.script.as_deref() else {
        return BTreeMap::new();
    };
    let mut m = BTreeMap::new();
    for (i, st) in sc.open.iter().enumerate() {
        if st.expect.is_some() {
            m.insert(
                st.name.clone(),
                HistSummary::of(latency_of(Main::Step(i), s)),
            );
        }
    }
    if let Some(l) = &sc.lp {
        m.insert(format!("{} rtt", l.name), HistSummary::of(&s.h.rtt));
        m.insert(
            format!("{} delivery", l.name),
            HistSummary::of(&s.h.delivery),
        );
    }
    m
}

fn script_report(cfg: &RunConfig, sc: &Script, t: &Stats) -> ScriptReport {
    let c = &t.c;
    let steps = sc
        .open
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let f = t.steps.get(i);
            StepReport {
                name: st.name.clone(),
                ok: f.map_or(0, |f| f.ok),
                failed: f.map_or(0, |f| f.failed),
                latency: st
                    .expect
                    .is_some()
                    .then(|| HistSummary::of(latency_of(Main::Step(i), t))),
                unmatched_sample: f.and_then(|f| f.unmatched.clone()),
            }
        })
        .collect();
    let step_matches: u64 = t
        .steps
        .iter()
        .zip(&sc.open)
        .filter(|(_, st)| st.expect.is_some())
        .map(|(f, _)| f.ok)
        .sum();
    let replies = c
        .msgs_received
        .saturating_sub(c.script_deliveries + c.script_matched + step_matches);
    ScriptReport {
        file: sc.path.display().to_string(),
        conn_offset: cfg.conn_offset,
        data_rows: sc.data.as_ref().map_or(0, |d| d.rows.len()),
        steps,
        loop_: sc.lp.as_ref().map(|l| LoopReport {
            name: l.name.clone(),
            sent: c.msgs_sent.saturating_sub(
                t.steps
                    .iter()
                    .zip(&sc.open)
                    .filter(|(_, st)| st.send.is_some())
                    .map(|(f, _)| f.ok)
                    .sum(),
            ),
            rate_per_connection: if cfg.rate > 0.0 { None } else { l.rate },
            rate_total: (cfg.rate > 0.0).then_some(cfg.rate),
            echo: l.echo,
            replies,
            deliveries: c.script_deliveries,
            matched: c.script_matched,
            lost: c.msgs_lost,
            gaps: c.script_gaps,
            behind: c.script_behind,
            untracked: c.script_untracked,
            unexpected: c.msgs_unexpected,
            skipped_backpressure: c.sends_skipped_backpressure,
            rtt: HistSummary::of(&t.h.rtt),
            delivery: HistSummary::of(&t.h.delivery),
        }),
        ignored: c.script_ignored,
    }
}

/// What to try when every upgrade was refused for who we are (401/403).
fn refusal_hint(cfg: &RunConfig, failures: &std::collections::BTreeMap<String, u64>) -> String {
    if failures.contains_key("http_401") {
        if cfg.tokens.is_none() {
            " (401: the server wants a signed token; give --token-secret or WS_TOKEN_SECRET, \
             the server's secret)"
                .into()
        } else {
            " (401: the server does not accept our tokens; is --token-secret the server's, and \
             are both clocks right?)"
                .into()
        }
    } else if failures.contains_key("http_403") {
        " (403: the Origin (--origin) or the token's rooms (--token-rooms) are not allowed)".into()
    } else if failures.contains_key("http_400") && cfg.tokens.is_some() {
        " (400: a server with a secret refuses user= in the URL)".into()
    } else {
        String::new()
    }
}
