//! The summary: medians per workload, metric and server, the ratios the
//! issue's targets are stated in, and whether each target is met. Written
//! as Markdown for people and JSON (every raw sample too) for comparing runs.

use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use super::{Args, Kind, workloads::Metrics};
use crate::workspace_root;

/// One measurement: one workload, one server, one repetition.
pub(super) struct Sample {
    pub(super) workload: String,
    pub(super) kind: Kind,
    pub(super) rep: usize,
    pub(super) metrics: Metrics,
}

/// Where and on what a run happened.
pub(super) struct Meta {
    date: String,
    kernel: String,
    cpus: usize,
    reps: usize,
    login_secs: u64,
    commit: String,
    ftpd: String,
    vsftpd: String,
}

/// The first line a command prints, or "?" if it fails.
fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "?".into())
}

impl Meta {
    pub(super) fn collect(args: &Args, ftpd: &std::path::Path) -> Self {
        let root = workspace_root();
        let dirty = Command::new("git")
            .current_dir(root)
            .args(["status", "--porcelain"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        let commit = first_line(Command::new("git").current_dir(root).args(["rev-parse", "--short", "HEAD"]));
        Self {
            date: first_line(Command::new("date").arg("-u")),
            kernel: first_line(Command::new("uname").arg("-r")),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            reps: args.reps,
            login_secs: args.login_secs,
            commit: if dirty { format!("{commit} (with uncommitted changes)") } else { commit },
            ftpd: first_line(Command::new(ftpd).arg("--version")),
            vsftpd: first_line(Command::new("dpkg-query").args(["-W", "-f=${Version}\n", "vsftpd"])),
        }
    }
}

/// Median, min and max of one metric for one server.
#[derive(Clone, Copy)]
struct Cell {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Cell {
    fn of(mut v: Vec<f64>) -> Option<Self> {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let (min, max) = (*v.first()?, *v.last()?);
        let median = if n % 2 == 1 { v[n / 2] } else { f64::midpoint(v[n / 2 - 1], v[n / 2]) };
        Some(Self { median, min, max, n })
    }
}

/// What a target condition looks at.
#[derive(Clone, Copy)]
enum Side {
    /// The ratio of two servers' medians.
    Ratio(Kind, Kind),
    /// One server's median.
    Median(Kind),
    /// One server's worst (lowest) sample.
    Min(Kind),
}

/// `side` of `metric` (in the target's workload) compared with `value`.
struct Cond {
    metric: &'static str,
    side: Side,
    at_least: bool,
    value: f64,
}

/// A target from the issue, shown on the row of `workload`/`metric`.
struct Target {
    workload: &'static str,
    metric: &'static str,
    text: &'static str,
    conds: &'static [Cond],
}

const fn at_least(metric: &'static str, side: Side, value: f64) -> Cond {
    Cond { metric, side, at_least: true, value }
}

const fn at_most(metric: &'static str, side: Side, value: f64) -> Cond {
    Cond { metric, side, at_least: false, value }
}

use Kind::{Ceiling, Ftpd, Vsftpd};

const TARGETS: &[Target] = &[
    Target {
        workload: "download",
        metric: "MB/s",
        text: "ftpd/ceiling ≥ 0.95",
        conds: &[at_least("MB/s", Side::Ratio(Ftpd, Ceiling), 0.95)],
    },
    Target {
        workload: "download",
        metric: "MB per server CPU-s",
        text: "ftpd/vsftpd ≥ 1.15",
        conds: &[at_least("MB per server CPU-s", Side::Ratio(Ftpd, Vsftpd), 1.15)],
    },
    Target {
        workload: "upload",
        metric: "MB/s",
        text: "ftpd/ceiling ≥ 0.9, ftpd/vsftpd ≥ 1.5",
        conds: &[at_least("MB/s", Side::Ratio(Ftpd, Ceiling), 0.9), at_least("MB/s", Side::Ratio(Ftpd, Vsftpd), 1.5)],
    },
    Target {
        workload: "concurrent 256",
        metric: "aggregate MB/s",
        text: "ftpd/vsftpd ≥ 1.2",
        conds: &[at_least("aggregate MB/s", Side::Ratio(Ftpd, Vsftpd), 1.2)],
    },
    Target {
        workload: "concurrent 256",
        metric: "p99/p50",
        text: "ftpd ≤ 1.5",
        conds: &[at_most("p99/p50", Side::Median(Ftpd), 1.5)],
    },
    Target {
        workload: "sessions 10000",
        metric: "RSS KiB per session",
        text: "ftpd ≤ 4, all held",
        conds: &[at_most("RSS KiB per session", Side::Median(Ftpd), 4.0), at_least("held/N", Side::Min(Ftpd), 1.0)],
    },
    Target {
        workload: "list",
        metric: "listings/s",
        text: "ftpd/vsftpd ≥ 2",
        conds: &[at_least("listings/s", Side::Ratio(Ftpd, Vsftpd), 2.0)],
    },
    Target {
        workload: "retr",
        metric: "RETR/s",
        text: "ftpd/vsftpd ≥ 2",
        conds: &[at_least("RETR/s", Side::Ratio(Ftpd, Vsftpd), 2.0)],
    },
    Target {
        workload: "limited 1000",
        metric: "aggregate / (N × limit)",
        text: "ftpd within ±5 %",
        conds: &[
            at_least("aggregate / (N × limit)", Side::Median(Ftpd), 0.95),
            at_most("aggregate / (N × limit)", Side::Median(Ftpd), 1.05),
        ],
    },
    Target {
        workload: "limited 1000",
        metric: "server CPU-s per GB",
        text: "ftpd/vsftpd ≤ 0.3",
        conds: &[at_most("server CPU-s per GB", Side::Ratio(Ftpd, Vsftpd), 0.3)],
    },
    Target {
        workload: "login",
        metric: "server CPU µs per login",
        text: "ftpd ≤ 100",
        conds: &[at_most("server CPU µs per login", Side::Median(Ftpd), 100.0)],
    },
];

/// One line of the table.
struct Row {
    workload: String,
    metric: &'static str,
    cells: [Option<Cell>; 3],
    target: Option<&'static Target>,
    /// `None` when the target needs a workload or server that did not run.
    met: Option<bool>,
}

impl Row {
    fn cell(&self, kind: Kind) -> Option<Cell> {
        self.cells[kind as usize]
    }

    fn ratio(&self, a: Kind, b: Kind) -> Option<f64> {
        let r = self.cell(a)?.median / self.cell(b)?.median;
        r.is_finite().then_some(r)
    }
}

/// The rows, in the order workloads ran and metrics were reported.
fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut keys: Vec<(&str, &'static str)> = Vec::new();
    for s in samples {
        for (metric, _) in &s.metrics {
            if !keys.contains(&(s.workload.as_str(), *metric)) {
                keys.push((s.workload.as_str(), metric));
            }
        }
    }
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|(workload, metric)| {
            let cells = Kind::ALL.map(|kind| {
                Cell::of(
                    samples
                        .iter()
                        .filter(|s| s.workload == workload && s.kind == kind)
                        .flat_map(|s| s.metrics.iter().filter(|(m, _)| *m == metric).map(|(_, v)| *v))
                        .collect(),
                )
            });
            Row { workload: workload.to_owned(), metric, cells, target: None, met: None }
        })
        .collect();
    for target in TARGETS {
        let verdict: Option<bool> = target.conds.iter().try_fold(true, |all, c| {
            let row = rows.iter().find(|r| r.workload == target.workload && r.metric == c.metric)?;
            let v = match c.side {
                Side::Ratio(a, b) => row.ratio(a, b)?,
                Side::Median(k) => row.cell(k)?.median,
                Side::Min(k) => row.cell(k)?.min,
            };
            Some(all && if c.at_least { v >= c.value } else { v <= c.value })
        });
        if let Some(row) = rows.iter_mut().find(|r| r.workload == target.workload && r.metric == target.metric) {
            row.target = Some(target);
            row.met = verdict;
        }
    }
    rows
}

/// Decimals for numbers of `v`'s size: about three significant digits,
/// none for whole numbers (counts) or anything from 100 up.
fn decimals(v: f64) -> usize {
    let a = v.abs();
    if a >= 100.0 || v.fract() == 0.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    }
}

fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() { format!("{v:.decimals$}") } else { "—".into() }
}

/// A ratio: two decimals, or two significant digits when smaller than 0.1
/// (ftpd's RSS per session is a thousandth of vsftpd's).
fn ratio_text(r: Option<f64>) -> String {
    match r {
        None => "—".into(),
        Some(v) if v.abs() >= 0.1 || v == 0.0 => format!("{v:.2}"),
        Some(v) => {
            let decimals = (1.0 - v.abs().log10().floor()).clamp(2.0, 12.0) as usize;
            format!("{v:.decimals$}")
        }
    }
}

fn cell_text(c: Option<Cell>) -> String {
    match c {
        None => "n/a".into(),
        Some(c) => {
            // One precision for the whole cell, from the median, so that
            // "90.0 (90–100.0)" reads "90.0 (90.0–100.0)".
            let whole = [c.median, c.min, c.max].iter().all(|v| v.fract() == 0.0);
            let d = if whole { 0 } else { decimals(c.median) };
            if c.n == 1 {
                num(c.median, d)
            } else {
                format!("{} ({}–{})", num(c.median, d), num(c.min, d), num(c.max, d))
            }
        }
    }
}

fn markdown(meta: &Meta, rows: &[Row]) -> String {
    let mut md = format!(
        "# ftpd vs vsftpd vs the kernel ceiling\n\n\
         - date: {}\n- kernel: {}\n- CPUs: {}\n- repetitions: {} (interleaved); login workload {} s per sample\n\
         - ftpd: {} (commit {})\n- vsftpd: {}\n\n\
         Cells: median (min–max) over the repetitions. Ratios are of medians. \
         Loopback, one machine: client and servers share the CPUs.\n\n\
         | workload | metric | ftpd | vsftpd | ceiling | ftpd/vsftpd | ftpd/ceiling | target | met |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        meta.date, meta.kernel, meta.cpus, meta.reps, meta.login_secs, meta.ftpd, meta.commit, meta.vsftpd
    );
    for r in rows {
        let ratio = |a, b| ratio_text(r.ratio(a, b));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.metric,
            cell_text(r.cell(Ftpd)),
            cell_text(r.cell(Vsftpd)),
            cell_text(r.cell(Ceiling)),
            ratio(Ftpd, Vsftpd),
            ratio(Ftpd, Ceiling),
            r.target.map_or("", |t| t.text),
            match (r.target, r.met) {
                (None, _) => "",
                (Some(_), None) => "—",
                (Some(_), Some(true)) => "yes",
                (Some(_), Some(false)) => "no",
            }
        );
    }
    md
}

/// A JSON string literal.
fn jstr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (JSON has no NaN or infinity: those become null).
fn jnum(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { "null".into() }
}

fn json(meta: &Meta, samples: &[Sample], rows: &[Row]) -> String {
    let mut j = format!(
        "{{\n  \"date\": {},\n  \"kernel\": {},\n  \"cpus\": {},\n  \"reps\": {},\n  \"login_secs\": {},\n  \
         \"commit\": {},\n  \"ftpd\": {},\n  \"vsftpd\": {},\n  \"samples\": [",
        jstr(&meta.date),
        jstr(&meta.kernel),
        meta.cpus,
        meta.reps,
        meta.login_secs,
        jstr(&meta.commit),
        jstr(&meta.ftpd),
        jstr(&meta.vsftpd)
    );
    for (i, s) in samples.iter().enumerate() {
        let metrics: Vec<String> = s.metrics.iter().map(|(m, v)| format!("{}: {}", jstr(m), jnum(*v))).collect();
        let _ = write!(
            j,
            "{}\n    {{\"workload\": {}, \"server\": {}, \"rep\": {}, \"metrics\": {{{}}}}}",
            if i > 0 { "," } else { "" },
            jstr(&s.workload),
            jstr(s.kind.name()),
            s.rep,
            metrics.join(", ")
        );
    }
    j.push_str("\n  ],\n  \"rows\": [");
    for (i, r) in rows.iter().enumerate() {
        let cell = |k: Kind| {
            r.cell(k).map_or_else(
                || "null".into(),
                |c| {
                    format!(
                        "{{\"median\": {}, \"min\": {}, \"max\": {}, \"n\": {}}}",
                        jnum(c.median),
                        jnum(c.min),
                        jnum(c.max),
                        c.n
                    )
                },
            )
        };
        let ratio = |a, b| r.ratio(a, b).map_or_else(|| "null".into(), jnum);
        let _ = write!(
            j,
            "{}\n    {{\"workload\": {}, \"metric\": {}, \"ftpd\": {}, \"vsftpd\": {}, \"ceiling\": {}, \
             \"ftpd/vsftpd\": {}, \"ftpd/ceiling\": {}, \"target\": {}, \"met\": {}}}",
            if i > 0 { "," } else { "" },
            jstr(&r.workload),
            jstr(r.metric),
            cell(Ftpd),
            cell(Vsftpd),
            cell(Ceiling),
            ratio(Ftpd, Vsftpd),
            ratio(Ftpd, Ceiling),
            r.target.map_or_else(|| "null".into(), |t| jstr(t.text)),
            r.met.map_or_else(|| "null".into(), |m| m.to_string())
        );
    }
    j.push_str("\n  ]\n}\n");
    j
}

/// The written summary.
pub(super) struct Written {
    pub(super) markdown: String,
    pub(super) md_path: PathBuf,
    pub(super) json_path: PathBuf,
}

/// Writes bench-results/bench-<unix time>.{md,json} and latest.{md,json}.
pub(super) fn write(meta: &Meta, samples: &[Sample]) -> Result<Written> {
    let rows = rows(samples);
    let md = markdown(meta, &rows);
    let js = json(meta, samples, &rows);
    let dir = workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let md_path = dir.join(format!("bench-{stamp}.md"));
    let json_path = dir.join(format!("bench-{stamp}.json"));
    for (path, text) in
        [(&md_path, &md), (&json_path, &js), (&dir.join("latest.md"), &md), (&dir.join("latest.json"), &js)]
    {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Written { markdown: md, md_path, json_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(workload: &str, kind: Kind, metrics: Metrics) -> Sample {
        Sample { workload: workload.into(), kind, rep: 1, metrics }
    }

    #[test]
    fn medians_ratios_and_targets() {
        let samples = vec![
            sample("download", Ftpd, vec![("MB/s", 96.0)]),
            sample("download", Ftpd, vec![("MB/s", 90.0)]),
            sample("download", Ftpd, vec![("MB/s", 99.0)]),
            sample("download", Ceiling, vec![("MB/s", 100.0)]),
            sample("login", Ftpd, vec![("server CPU µs per login", 120.0)]),
        ];
        let rows = rows(&samples);
        assert_eq!(rows.len(), 2);
        let dl = &rows[0];
        assert_eq!(dl.cell(Ftpd).map(|c| (c.median, c.min, c.max)), Some((96.0, 90.0, 99.0)));
        assert!(dl.cell(Vsftpd).is_none());
        assert_eq!(dl.met, Some(true));
        assert_eq!(rows[1].met, Some(false));
    }

    #[test]
    fn cells() {
        let cell = |median, min, max| Some(Cell { median, min, max, n: 3 });
        assert_eq!(cell_text(cell(90.0, 90.0, 100.0)), "90 (90–100)");
        assert_eq!(cell_text(cell(90.5, 90.0, 100.0)), "90.5 (90.0–100.0)");
        assert_eq!(cell_text(cell(0.22, 0.21, 0.3)), "0.220 (0.210–0.300)");
        assert_eq!(cell_text(None), "n/a");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio_text(Some(1.234)), "1.23");
        assert_eq!(ratio_text(Some(0.00048)), "0.00048");
        assert_eq!(ratio_text(Some(0.012)), "0.012");
        assert_eq!(ratio_text(None), "—");
    }

    #[test]
    fn json_strings_and_numbers() {
        assert_eq!(jstr("a\"b\\c\nµ\u{1}"), "\"a\\\"b\\\\c\\nµ\\u0001\"");
        assert_eq!(jnum(f64::NAN), "null");
        assert_eq!(jnum(1.5), "1.5");
    }
}
