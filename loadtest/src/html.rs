//! `--html FILE.html`: the report as one self-contained page — tables and inline SVG
//! charts (routing latency over time, queue depth over time, service level per
//! interval), no script, no external file.

use crate::report::Report;

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart: `series` of (name, points (x, y)); x in hours.
fn chart(
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_max_hint: f64,
) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 260.0, 60.0, 30.0, 20.0, 150.0);
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(y_max_hint, f64::max)
        .max(1e-9);
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| top + (1.0 - y / y_max) * (h - top - bottom);
    let mut svg = format!(
        "<h3>{}</h3>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">\n",
        esc(title),
        esc(title)
    );
    // Axes and grid.
    for i in 0..=4 {
        let y = y_max * i as f64 / 4.0;
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>\n",
            w - right,
            py(y),
            py(y),
            left - 4.0,
            py(y) + 3.0,
            if y_max >= 100.0 { format!("{y:.0}") } else { format!("{y:.2}") }
        ));
    }
    for i in 0..=6 {
        let x = x_max * i as f64 / 6.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{x:.1} h</text>\n",
            px(x),
            h - bottom + 14.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"12\" y=\"{:.1}\" font-size=\"10\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>\n",
        h / 2.0,
        h / 2.0,
        esc(y_label)
    ));
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let d: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            d.join(" ")
        ));
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>\n",
            w - right + 10.0,
            top + 16.0 * i as f64,
            w - right + 24.0,
            top + 16.0 * i as f64 + 9.0,
            esc(name)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// The page.
pub fn render(report: &Report) -> String {
    let pct = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.1} %", v * 100.0));
    let secs = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>omniroute simulation: {}</title>\n<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}.bad{{color:#b00}}</style></head><body>\n<h1>Run: {}</h1>\n<p>Seed {}; {:.0} simulated seconds in {:.2} wall seconds ({:.0} interactions per wall second). Definitions: docs/SIMULATOR.md.</p>\n",
        esc(&report.scenario),
        esc(&report.scenario),
        report.seed,
        report.simulated_s,
        report.wall_s,
        report.interactions_per_wall_s
    );
    page.push_str(if report.violations.is_empty() {
        "<p>Checks: <b>no violation</b>.</p>\n"
    } else {
        "<p class=\"bad\">Checks: <b>violations</b> (listed at the end).</p>\n"
    });
    page.push_str("<h2>Queues</h2>\n<table><tr><th>queue</th><th>offered</th><th>answered</th><th>abandoned (short)</th><th>refused</th><th>still waiting</th><th>service level</th><th>target</th><th>threshold s</th><th>ASA s</th><th>wait p50 / p90 / p99 s</th><th>abandon rate</th><th>AHT s</th></tr>\n");
    for q in report.queues.iter().chain(std::iter::once(&report.overall)) {
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} / {:.1} / {:.1}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&q.queue),
            q.offered,
            q.answered,
            q.abandoned,
            q.short_abandoned,
            q.refused,
            q.still_waiting,
            pct(q.service_level),
            match (q.service_level_target, q.service_level_met) {
                (Some(t), Some(true)) => format!("{} met", pct(Some(t))),
                (Some(t), Some(false)) => format!("<b>{} missed</b>", pct(Some(t))),
                (Some(t), None) => pct(Some(t)),
                (None, _) => "—".to_string(),
            },
            q.service_level_threshold_s.map_or("own".to_string(), |t| format!("{t:.0}")),
            secs(q.average_speed_of_answer_s),
            q.answered_waits.p50_s,
            q.answered_waits.p90_s,
            q.answered_waits.p99_s,
            pct(q.abandon_rate),
            secs(q.average_handle_time_s)
        ));
    }
    page.push_str("</table>\n<h2>Agent groups</h2>\n<table><tr><th>group</th><th>agents</th><th>staffed h</th><th>handling h</th><th>busy h (with wrap-up)</th><th>occupied h</th><th>occupancy</th><th>at once</th></tr>\n");
    let at_once = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.2}"));
    for g in &report.groups {
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&g.group),
            g.agents,
            g.staffed_hours,
            g.handle_hours,
            g.busy_hours,
            g.occupied_hours,
            pct(g.occupancy),
            at_once(g.concurrency)
        ));
    }
    page.push_str("</table>\n<h2>Channels</h2>\n<table><tr><th>channel</th><th>offered</th><th>handling h</th><th>busy h (with wrap-up)</th><th>occupied h</th><th>staffed h (its agents)</th><th>occupancy</th><th>at once</th></tr>\n");
    for c in &report.channels {
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&c.channel),
            c.offered,
            c.handle_hours,
            c.busy_hours,
            c.occupied_hours,
            c.staffed_hours,
            pct(c.occupancy),
            at_once(c.concurrency)
        ));
    }
    let e = &report.engine;
    page.push_str(&format!(
        "</table>\n<h2>Engine</h2>\n<p>Routing latency (virtual time: each submit's wall-clock time; connect mode: due time → first offer at the agent, for customers who found an agent free), of {} samples: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs. Offers {}, rejected {}, timed out {}.</p>\n",
        e.routing_samples, e.routing_p50_us, e.routing_p90_us, e.routing_p99_us, e.routing_p999_us, e.routing_max_us, e.offers, e.rejected, e.timed_out
    ));
    let hours = |ms: u64| ms as f64 / 3.6e6;
    page.push_str(&chart(
        "Routing latency over time (p99 per sample: a simulated minute; a second in connect mode)",
        "µs",
        &[(
            "submit p99".to_string(),
            report
                .samples
                .iter()
                .map(|s| (hours(s.at_ms), s.routing_p99_us as f64))
                .collect(),
        )],
        1.0,
    ));
    // One series per queue.
    let per_queue = |points: &dyn Fn(usize) -> Vec<(f64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
        report
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.queue.clone(), points(i)))
            .collect()
    };
    let depth = per_queue(&|i| {
        report
            .samples
            .iter()
            .map(|s| {
                (
                    hours(s.at_ms),
                    s.waiting.get(i).copied().unwrap_or(0) as f64,
                )
            })
            .collect()
    });
    page.push_str(&chart(
        "Queue depth over time (waiting, at each sample)",
        "waiting",
        &depth,
        1.0,
    ));
    let mut sl = per_queue(&|i| {
        report
            .intervals
            .iter()
            .filter_map(|iv| {
                let v = iv.service_level.get(i).copied().flatten()?;
                Some((iv.start_s / 3_600.0, v * 100.0))
            })
            .collect()
    });
    // Each queue's target, as a flat line across the day.
    let last_h = report
        .intervals
        .last()
        .map_or(0.0, |iv| iv.start_s / 3_600.0);
    for q in &report.queues {
        if let Some(t) = q.service_level_target {
            sl.push((
                format!("{} target", q.queue),
                vec![(0.0, t * 100.0), (last_h, t * 100.0)],
            ));
        }
    }
    page.push_str(&chart(
        "Service level per 30-minute interval (by arrival time)",
        "%",
        &sl,
        100.0,
    ));
    if !report.violations.is_empty() {
        page.push_str("<h2 class=\"bad\">Violations</h2>\n<table><tr><th>kind</th><th>interaction</th><th>agent</th><th>at ms</th><th>detail</th></tr>\n");
        for v in report.violations.iter().take(1_000) {
            page.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&v.kind),
                v.interaction,
                esc(&v.agent),
                v.at_ms,
                esc(&v.detail)
            ));
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body></html>\n");
    page
}
