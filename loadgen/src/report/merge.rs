//! `ws-loadgen merge`: one run report from the reports of several load generators (hosts,
//! processes, Kubernetes pods). Exact where the reports carry the data: counters are summed
//! and HdrHistograms added (a merged p99 is the p99 of all samples, not an average of
//! p99s); per-second series are aligned on wall-clock time (each report's start); every
//! input becomes a row of the per-host table. Reports that cannot be combined (another
//! version, another scenario, another stage plan) are refused.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::engine::stats::{merge_map, new_hist, HistSummary};
use crate::report::run::{
    BroadcastReport, HostRow, LoopReport, PushReport, Report, ScriptReport, SecondReport,
    StageReport, StepReport,
};

fn hist(h: &HistSummary) -> Result<Histogram<u64>, String> {
    if h.count == 0 && h.encoded.is_empty() {
        return Ok(new_hist());
    }
    h.decode()
}

/// Adds histogram summaries exactly (decode, add, summarise again).
fn add(a: &HistSummary, b: &HistSummary) -> Result<HistSummary, String> {
    let mut h = hist(a)?;
    h.add(&hist(b)?)
        .map_err(|e| format!("histograms do not add: {e:?}"))?;
    Ok(HistSummary::of(&h))
}

fn add_opt(
    a: &Option<HistSummary>,
    b: &Option<HistSummary>,
) -> Result<Option<HistSummary>, String> {
    Ok(match (a, b) {
        (Some(x), Some(y)) => Some(add(x, y)?),
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    })
}

fn add_map(
    a: &mut BTreeMap<String, HistSummary>,
    b: &BTreeMap<String, HistSummary>,
) -> Result<(), String> {
    for (k, v) in b {
        let merged = match a.get(k) {
            Some(x) => add(x, v)?,
            None => v.clone(),
        };
        a.insert(k.clone(), merged);
    }
    Ok(())
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The per-host rows of `r`: its own, or those it was merged from.
pub fn host_rows(r: &Report) -> Vec<HostRow> {
    if !r.hosts.is_empty() {
        return r.hosts.clone();
    }
    vec![HostRow {
        label: r.host_label.clone(),
        url: r.url.clone(),
        started_unix_ms: r.started_unix_ms,
        start_late_ms: r.start_late_ms,
        conn_offset: r.script.as_ref().map_or(0, |s| s.conn_offset),
        target: r.connections.target,
        established: r.connections.established,
        failed: r.connections.failed,
        drops: r.connections.drops,
        peak_open: r.connections.peak_open,
        msgs_sent: r.messages.sent,
        msgs_received: r.messages.received,
        error_rate: r.error_rate,
        cpu_seconds: r.process.cpu_seconds,
        rss_peak_bytes: r.process.rss_peak_bytes,
        exit_code: r.exit_code,
        clock: r.clock,
    }]
}

/// Why `b` cannot be merged into reports like `a`, if it cannot.
fn incompatible(a: &Report, b: &Report, name: &str) -> Option<String> {
    if a.tool != b.tool || a.version != b.version {
        return Some(format!(
            "{name} is from {} {}, the first report from {} {}: merge reports of one version",
            b.tool, b.version, a.tool, a.version
        ));
    }
    if a.scenario != b.scenario {
        return Some(format!(
            "{name} ran scenario {:?}, the first report {:?}: merge runs of one scenario",
            b.scenario, a.scenario
        ));
    }
    if a.config.stages.len() != b.config.stages.len()
        || a.config
            .stages
            .iter()
            .zip(&b.config.stages)
            .any(|(x, y)| x.duration_ms != y.duration_ms)
    {
        return Some(format!(
            "{name} has another stage plan (stage durations differ): merge runs of one plan"
        ));
    }
    let steps = |r: &Report| {
        r.script
            .as_ref()
            .map(|s| s.steps.iter().map(|x| x.name.clone()).collect::<Vec<_>>())
    };
    if steps(a) != steps(b) {
        return Some(format!(
            "{name} ran other script steps than the first report"
        ));
    }
    None
}

fn merge_seconds(
    out: &mut BTreeMap<u32, (SecondReport, Option<Histogram<u64>>)>,
    r: &Report,
    shift: u32,
) -> Result<(), String> {
    for s in &r.per_second {
        let t = s.t + shift;
        let h = if s.latency_hist.is_empty() {
            None
        } else {
            Some(crate::engine::stats::decode_hist(&s.latency_hist)?)
        };
        match out.get_mut(&t) {
            None => {
                let mut c = s.clone();
                c.t = t;
                out.insert(t, (c, h));
            }
            Some((m, mh)) => {
                m.open += s.open;
                m.pending += s.pending;
                m.established += s.established;
                m.failed += s.failed;
                m.drops += s.drops;
                m.msgs_sent += s.msgs_sent;
                m.msgs_received += s.msgs_received;
                m.bytes_received += s.bytes_received;
                match (mh.as_mut(), h) {
                    (Some(a), Some(b)) => a
                        .add(&b)
                        .map_err(|e| format!("second {t}: histograms do not add: {e:?}"))?,
                    // Without the histogram (an older report): the larger p99 bounds it.
                    _ => {
                        *mh = None;
                        m.latency_p99_us = m.latency_p99_us.max(s.latency_p99_us);
                    }
                }
            }
        }
    }
    Ok(())
}

fn merge_stage(a: &mut StageReport, b: &StageReport) -> Result<(), String> {
    a.target += b.target;
    a.duration_s = a.duration_s.max(b.duration_s);
    // Each host's own peak, summed: an upper bound of the peak at once.
    a.peak_open += b.peak_open;
    a.latency = add(&a.latency, &b.latency)?;
    a.msgs_per_s += b.msgs_per_s;
    a.bytes_per_s += b.bytes_per_s;
    a.failed_connects += b.failed_connects;
    a.counters.merge(&b.counters);
    a.error_rate = a.counters.error_rate();
    a.all_delivered = add_opt(&a.all_delivered, &b.all_delivered)?;
    add_map(&mut a.steps, &b.steps)?;
    Ok(())
}

fn merge_broadcast(a: &mut BroadcastReport, b: &BroadcastReport) -> Result<(), String> {
    a.publishers += b.publishers;
    a.subscribers_peak += b.subscribers_peak;
    a.published += b.published;
    a.published_per_publisher.extend(&b.published_per_publisher);
    a.deliveries_expected += b.deliveries_expected;
    a.deliveries_received += b.deliveries_received;
    a.deliveries_missing += b.deliveries_missing;
    a.deliveries_extra += b.deliveries_extra;
    a.deliveries_joined_in_flight += b.deliveries_joined_in_flight;
    a.deliveries_late += b.deliveries_late;
    a.deliveries_per_s += b.deliveries_per_s;
    a.peak_deliveries_per_s += b.peak_deliveries_per_s;
    a.sequence_gaps += b.sequence_gaps;
    a.sequence_lost += b.sequence_lost;
    a.out_of_order += b.out_of_order;
    a.duplicates += b.duplicates;
    a.unexpected += b.unexpected;
    a.skipped_backpressure += b.skipped_backpressure;
    a.messages_complete += b.messages_complete;
    a.messages_incomplete += b.messages_incomplete;
    a.messages_no_subscriber += b.messages_no_subscriber;
    a.messages_unmatched += b.messages_unmatched;
    a.all_delivered_ratio = ratio(
        a.messages_complete,
        a.messages_complete + a.messages_incomplete,
    );
    a.fanout_latency = add(&a.fanout_latency, &b.fanout_latency)?;
    a.all_delivered_latency = add(&a.all_delivered_latency, &b.all_delivered_latency)?;
    Ok(())
}

fn merge_push(a: &mut PushReport, b: &PushReport) -> Result<(), String> {
    a.users_peak += b.users_peak;
    a.pushes += b.pushes;
    a.pushes_per_s += b.pushes_per_s;
    merge_map(&mut a.statuses, &b.statuses);
    a.failed += b.failed;
    a.deliveries_expected += b.deliveries_expected;
    a.deliveries_received += b.deliveries_received;
    a.deliveries_per_s += b.deliveries_per_s;
    a.lost += b.lost;
    a.out_of_order += b.out_of_order;
    a.unexpected += b.unexpected;
    a.delivery_latency = add(&a.delivery_latency, &b.delivery_latency)?;
    a.http_rtt = add(&a.http_rtt, &b.http_rtt)?;
    Ok(())
}

fn merge_loop(a: &mut LoopReport, b: &LoopReport) -> Result<(), String> {
    a.sent += b.sent;
    a.rate_total = match (a.rate_total, b.rate_total) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    a.replies += b.replies;
    a.deliveries += b.deliveries;
    a.matched += b.matched;
    a.lost += b.lost;
    a.gaps += b.gaps;
    a.behind += b.behind;
    a.untracked += b.untracked;
    a.unexpected += b.unexpected;
    a.skipped_backpressure += b.skipped_backpressure;
    a.rtt = add(&a.rtt, &b.rtt)?;
    a.delivery = add(&a.delivery, &b.delivery)?;
    Ok(())
}

fn merge_script(a: &mut ScriptReport, b: &ScriptReport) -> Result<(), String> {
    for (x, y) in a.steps.iter_mut().zip(&b.steps) {
        merge_step(x, y)?;
    }
    a.ignored += b.ignored;
    match (&mut a.loop_, &b.loop_) {
        (Some(x), Some(y)) => merge_loop(x, y)?,
        (None, Some(y)) => a.loop_ = Some(y.clone()),
        _ => {}
    }
    Ok(())
}

fn merge_step(a: &mut StepReport, b: &StepReport) -> Result<(), String> {
    a.ok += b.ok;
    a.failed += b.failed;
    a.latency = add_opt(&a.latency, &b.latency)?;
    if a.unmatched_sample.is_none() {
        a.unmatched_sample.clone_from(&b.unmatched_sample);
    }
    Ok(())
}

/// Merges `reports` (named, for errors, by `names`). Thresholds and the exit code are the
/// caller's (they are evaluated on the merged figures).
pub fn merge(reports: &[Report], names: &[String]) -> Result<Report, String> {
    let Some(first) = reports.first() else {
        return Err("nothing to merge: give one or more JSON reports of ws-loadgen run".into());
    };
    for (r, n) in reports.iter().zip(names).skip(1) {
        if let Some(why) = incompatible(first, r, n) {
            return Err(why);
        }
    }
    let start = reports.iter().map(|r| r.started_unix_ms).min().unwrap_or(0);
    let mut m = first.clone();
    m.hosts = Vec::new();
    m.started_unix_ms = start;
    let mut seconds = BTreeMap::new();
    let mut hosts = Vec::new();
    let mut urls: Vec<String> = Vec::new();
    let mut end_s = 0.0f64;
    for (i, r) in reports.iter().enumerate() {
        hosts.extend(host_rows(r));
        if !urls.contains(&r.url) {
            urls.push(r.url.clone());
        }
        let offset_ms = r.started_unix_ms.saturating_sub(start);
        let shift = ((offset_ms + 500) / 1000) as u32;
        merge_seconds(&mut seconds, r, shift)?;
        end_s = end_s.max(offset_ms as f64 / 1000.0 + r.elapsed_s);
        if i == 0 {
            continue;
        }
        m.interrupted |= r.interrupted;
        let (c, d) = (&mut m.connections, &r.connections);
        c.target += d.target;
        c.attempted += d.attempted;
        c.established += d.established;
        c.failed += d.failed;
        c.open_at_end += d.open_at_end;
        c.drops += d.drops;
        c.reconnects += d.reconnects;
        c.retries += d.retries;
        c.gave_up += d.gave_up;
        c.established_per_s += d.established_per_s;
        merge_map(&mut m.failures, &r.failures);
        merge_map(&mut m.drop_classes, &r.drop_classes);
        merge_map(&mut m.close_codes, &r.close_codes);
        let (x, y) = (&mut m.messages, &r.messages);
        x.sent += y.sent;
        x.received += y.received;
        x.lost += y.lost;
        x.out_of_order += y.out_of_order;
        x.unexpected += y.unexpected;
        x.skipped_backpressure += y.skipped_backpressure;
        x.bytes_sent += y.bytes_sent;
        x.bytes_received += y.bytes_received;
        x.received_per_s += y.received_per_s;
        x.bytes_received_per_s += y.bytes_received_per_s;
        m.heartbeat.pings_sent += r.heartbeat.pings_sent;
        m.heartbeat.pongs_received += r.heartbeat.pongs_received;
        let (l, k) = (&mut m.latency, &r.latency);
        l.connect = add(&l.connect, &k.connect)?;
        l.handshake = add(&l.handshake, &k.handshake)?;
        l.rtt = add(&l.rtt, &k.rtt)?;
        l.pong = add(&l.pong, &k.pong)?;
        l.delivery = add_opt(&l.delivery, &k.delivery)?;
        l.http = add_opt(&l.http, &k.http)?;
        l.tls = add_opt(&l.tls, &k.tls)?;
        l.warmup_excluded += k.warmup_excluded;
        m.totals.merge(&r.totals);
        for (a, b) in m.stages.iter_mut().zip(&r.stages) {
            merge_stage(a, b)?;
        }
        let (p, q) = (&mut m.process, &r.process);
        p.workers += q.workers;
        p.cpu_seconds += q.cpu_seconds;
        p.rss_start_bytes += q.rss_start_bytes;
        p.rss_peak_bytes += q.rss_peak_bytes;
        p.slot_heap_bytes_at_end += q.slot_heap_bytes_at_end;
        match (&mut m.broadcast, &r.broadcast) {
            (Some(a), Some(b)) => merge_broadcast(a, b)?,
            (None, Some(b)) => m.broadcast = Some(b.clone()),
            _ => {}
        }
        match (&mut m.push, &r.push) {
            (Some(a), Some(b)) => merge_push(a, b)?,
            (None, Some(b)) => m.push = Some(b.clone()),
            _ => {}
        }
        match (&mut m.tls, &r.tls) {
            (Some(a), Some(b)) => {
                a.handshakes_full += b.handshakes_full;
                a.handshakes_resumed += b.handshakes_resumed;
            }
            (None, Some(b)) => m.tls = Some(b.clone()),
            _ => {}
        }
        match (&mut m.script, &r.script) {
            (Some(a), Some(b)) => merge_script(a, b)?,
            (None, Some(b)) => m.script = Some(b.clone()),
            _ => {}
        }
        if m.server_addr != r.server_addr && !m.server_addr.split(',').any(|s| s == r.server_addr) {
            m.server_addr = format!("{},{}", m.server_addr, r.server_addr);
        }
    }
    m.url = urls.join(" ");
    m.elapsed_s = end_s;
    m.host_label = format!("{} hosts", hosts.len());
    m.start_late_ms = None;
    m.per_second = seconds
        .into_values()
        .map(|(mut s, h)| {
            if let Some(h) = h.filter(|h| !h.is_empty()) {
                s.latency_p99_us = h.value_at_quantile(0.99);
            }
            s
        })
        .collect();
    let c = &mut m.connections;
    c.peak_open = m
        .per_second
        .iter()
        .map(|s| s.open)
        .max()
        .unwrap_or(0)
        .max(c.open_at_end);
    c.alive_at_end_ratio = ratio(c.open_at_end as u64, c.established);
    c.peak_established_per_s = m
        .per_second
        .iter()
        .map(|s| s.established)
        .max()
        .unwrap_or(0);
    m.heartbeat.survival_rate = ratio(m.heartbeat.pongs_received, m.heartbeat.pings_sent);
    m.error_rate = m.totals.error_rate();
    let peak = m.connections.peak_open;
    m.process.rss_per_open_conn_bytes = (peak > 0).then(|| {
        m.process
            .rss_peak_bytes
            .saturating_sub(m.process.rss_start_bytes) as f64
            / peak as f64
    });
    let labels: std::collections::BTreeSet<&str> = hosts.iter().map(|h| h.label.as_str()).collect();
    let deliveries = m.latency.delivery.as_ref().is_some_and(|d| d.count > 0);
    m.clock_note = (labels.len() > 1 && deliveries).then(|| {
        let clocks: Vec<_> = hosts.iter().filter_map(|h| h.clock).collect();
        let known = if clocks.len() < hosts.len() {
            "the hosts' clock errors are not all known".to_string()
        } else if clocks.iter().any(|c| !c.synced) {
            let n = clocks.iter().filter(|c| !c.synced).count();
            format!("{n} host(s) say their clock is NOT synchronised: cross-host deliveries are not to be trusted")
        } else {
            let worst = clocks.iter().map(|c| c.est_error_us).max().unwrap_or(0);
            format!("every host's clock is synchronised, the largest estimated error {worst} µs (kernel, adjtimex)")
        };
        format!(
            "delivery latency was measured on hosts other than the senders': it is receipt minus the \
             sender's intended send time in wall-clock time, so it is as exact as the hosts' clocks \
             agree; {known}; rtt rows are each one host's clock"
        )
    });
    m.hosts = hosts;
    m.thresholds = Vec::new();
    m.error = None;
    Ok(m)
}
