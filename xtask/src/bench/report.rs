//! The summary: every repetition per workload, metric and server beside its
//! median (a repetition more than 2 × off flagged), the ratios the issues'
//! targets are stated in, and whether each target is met. Written
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
    /// `package version` of ProFTPD and Pure-FTPd.
    peers: Vec<String>,
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
    pub(super) fn collect(args: &Args, ftpd: &std::path::Path, peers: &[String]) -> Self {
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
            peers: peers.to_vec(),
        }
    }
}

/// One metric of one server: every repetition's value and their median.
#[derive(Clone)]
struct Cell {
    median: f64,
    /// (repetition, value), in repetition order.
    values: Vec<(usize, f64)>,
}

impl Cell {
    fn of(mut values: Vec<(usize, f64)>) -> Option<Self> {
        values.sort_by_key(|v| v.0);
        let mut v: Vec<f64> = values.iter().map(|v| v.1).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            n if n % 2 == 1 => v[n / 2],
            n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
        };
        Some(Self { median, values })
    }

    fn min(&self) -> f64 {
        self.values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min)
    }

    fn value(&self, rep: usize) -> Option<f64> {
        self.values.iter().find(|v| v.0 == rep).map(|v| v.1)
    }
}

/// Whether `v` is more than twice, or less than half, `median`: a
/// repetition that something else on the machine disturbed, or a server
/// that is not steady. A median of 0 makes any other value an outlier.
fn outlier(v: f64, median: f64) -> bool {
    if median == 0.0 {
        return v != 0.0;
    }
    let r = v / median;
    !(0.5..=2.0).contains(&r)
}

/// What a target condition looks at.
#[derive(Clone, Copy)]
enum Side {
    /// The ratio of two servers' medians.
    Ratio(Kind, Kind),
    /// The ratio of two servers' values in each repetition (the servers run
    /// interleaved, so a repetition's values were measured minutes apart at
    /// most); the worst of them is what counts.
    EveryRep(Kind, Kind),
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

/// A target from the issues.
struct Target {
    workload: &'static str,
    text: &'static str,
    conds: &'static [Cond],
}

const fn at_least(metric: &'static str, side: Side, value: f64) -> Cond {
    Cond { metric, side, at_least: true, value }
}

const fn at_most(metric: &'static str, side: Side, value: f64) -> Cond {
    Cond { metric, side, at_least: false, value }
}

use Kind::{Ceiling, Ftpd, FtpdAtomic, FtpdReadOnly, FtpdReadOnlyKernel, Proftpd, PureFtpd, Vsftpd};

/// Issue 24's single-stream download targets for one place, and the
/// earlier ceiling and efficiency targets.
macro_rules! download_targets {
    ($w:literal) => {
        [
            Target {
                workload: $w,
                text: "MB/s: ftpd ≥ 1.0 × proftpd in every repetition",
                conds: &[at_least("MB/s", Side::EveryRep(Ftpd, Proftpd), 1.0)],
            },
            Target {
                workload: $w,
                text: "CPU-s per GiB: ftpd ≤ proftpd in every repetition",
                conds: &[at_most("server CPU-s per GiB", Side::EveryRep(Ftpd, Proftpd), 1.0)],
            },
            Target {
                workload: $w,
                text: "MB/s: ftpd/ceiling ≥ 0.95",
                conds: &[at_least("MB/s", Side::Ratio(Ftpd, Ceiling), 0.95)],
            },
            Target {
                workload: $w,
                text: "MB per CPU-s: ftpd/vsftpd ≥ 1.15",
                conds: &[at_least("MB per server CPU-s", Side::Ratio(Ftpd, Vsftpd), 1.15)],
            },
        ]
    };
}

/// Issue 24's single-stream upload targets for one place, for ftpd as
/// configured and with atomic uploads.
macro_rules! upload_targets {
    ($w:literal) => {
        [
            Target {
                workload: $w,
                text: "MB/s: ftpd ≥ 1.5 × vsftpd and ≥ 0.9 × ceiling in every repetition",
                conds: &[
                    at_least("MB/s", Side::EveryRep(Ftpd, Vsftpd), 1.5),
                    at_least("MB/s", Side::EveryRep(Ftpd, Ceiling), 0.9),
                ],
            },
            Target {
                workload: $w,
                text: "MB/s: ftpd (atomic uploads) ≥ 1.5 × vsftpd and ≥ 0.9 × ceiling in every repetition",
                conds: &[
                    at_least("MB/s", Side::EveryRep(FtpdAtomic, Vsftpd), 1.5),
                    at_least("MB/s", Side::EveryRep(FtpdAtomic, Ceiling), 0.9),
                ],
            },
        ]
    };
}

const DOWNLOAD_TMPFS: [Target; 4] = download_targets!("download (tmpfs)");
const DOWNLOAD_DISK: [Target; 4] = download_targets!("download (disk)");
const UPLOAD_TMPFS: [Target; 2] = upload_targets!("upload (tmpfs)");
const UPLOAD_DISK: [Target; 2] = upload_targets!("upload (disk)");

const OTHER_TARGETS: &[Target] = &[
    Target {
        workload: "concurrent-upload 64 (tmpfs)",
        text: "aggregate MB/s: ftpd ≥ 1.3 × vsftpd; ftpd p99/p50 ≤ 1.5",
        conds: &[
            at_least("aggregate MB/s", Side::Ratio(Ftpd, Vsftpd), 1.3),
            at_most("p99/p50", Side::Median(Ftpd), 1.5),
        ],
    },
    Target {
        workload: "concurrent-upload 64 (tmpfs)",
        text: "aggregate MB/s: ftpd (atomic uploads) ≥ 1.3 × vsftpd; its p99/p50 ≤ 1.5",
        conds: &[
            at_least("aggregate MB/s", Side::Ratio(FtpdAtomic, Vsftpd), 1.3),
            at_most("p99/p50", Side::Median(FtpdAtomic), 1.5),
        ],
    },
    Target {
        workload: "concurrent 256",
        text: "aggregate MB/s: ftpd/vsftpd ≥ 1.2",
        conds: &[at_least("aggregate MB/s", Side::Ratio(Ftpd, Vsftpd), 1.2)],
    },
    Target {
        workload: "concurrent 256",
        text: "p99/p50: ftpd ≤ 1.5",
        conds: &[at_most("p99/p50", Side::Median(Ftpd), 1.5)],
    },
    Target {
        workload: "sessions 10000",
        text: "RSS KiB per session: ftpd ≤ 4, all held",
        conds: &[at_most("RSS KiB per session", Side::Median(Ftpd), 4.0), at_least("held/N", Side::Min(Ftpd), 1.0)],
    },
    Target {
        workload: "list",
        text: "listings/s: ftpd/vsftpd ≥ 2",
        conds: &[at_least("listings/s", Side::Ratio(Ftpd, Vsftpd), 2.0)],
    },
    Target {
        workload: "retr",
        text: "CPU µs per RETR: ftpd ≤ 0.8 × pure-ftpd",
        conds: &[at_most("server CPU µs per RETR", Side::Ratio(Ftpd, PureFtpd), 0.8)],
    },
    Target {
        workload: "retr",
        text: "CPU µs per RETR: ftpd (read-only mirror) ≤ 0.8 × pure-ftpd",
        conds: &[at_most("server CPU µs per RETR", Side::Ratio(FtpdReadOnly, PureFtpd), 0.8)],
    },
    Target {
        workload: "retr",
        text: "CPU µs per RETR: ftpd (read-only mirror, kernel plane) ≤ 0.8 × pure-ftpd",
        conds: &[at_most("server CPU µs per RETR", Side::Ratio(FtpdReadOnlyKernel, PureFtpd), 0.8)],
    },
    Target {
        workload: "retr",
        text: "RETR/s: ftpd/vsftpd ≥ 2",
        conds: &[at_least("RETR/s", Side::Ratio(Ftpd, Vsftpd), 2.0)],
    },
    Target {
        workload: "limited 1000",
        text: "aggregate / (N × limit): ftpd within ±5 %",
        conds: &[
            at_least("aggregate / (N × limit)", Side::Median(Ftpd), 0.95),
            at_most("aggregate / (N × limit)", Side::Median(Ftpd), 1.05),
        ],
    },
    Target {
        workload: "limited 1000",
        text: "CPU-s per GB: ftpd/vsftpd ≤ 0.3",
        conds: &[at_most("server CPU-s per GB", Side::Ratio(Ftpd, Vsftpd), 0.3)],
    },
    Target {
        workload: "login",
        text: "CPU µs per login: ftpd ≤ 100",
        conds: &[at_most("server CPU µs per login", Side::Median(Ftpd), 100.0)],
    },
];

/// Every target, in the order of the workloads.
fn targets() -> impl Iterator<Item = &'static Target> {
    DOWNLOAD_TMPFS.iter().chain(&DOWNLOAD_DISK).chain(&UPLOAD_TMPFS).chain(&UPLOAD_DISK).chain(OTHER_TARGETS)
}

/// One line of the results: one metric of one workload for one server.
struct Row {
    workload: String,
    metric: &'static str,
    kind: Kind,
    cell: Cell,
}

/// The rows, in the order workloads ran and metrics were reported, each
/// metric's servers in [`Kind::ALL`] order.
fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut keys: Vec<(&str, &'static str)> = Vec::new();
    for s in samples {
        for (metric, _) in &s.metrics {
            if !keys.contains(&(s.workload.as_str(), *metric)) {
                keys.push((s.workload.as_str(), metric));
            }
        }
    }
    let mut rows = Vec::new();
    for (workload, metric) in keys {
        for kind in Kind::ALL {
            let values = samples
                .iter()
                .filter(|s| s.workload == workload && s.kind == kind)
                .flat_map(|s| s.metrics.iter().filter(|(m, _)| *m == metric).map(|(_, v)| (s.rep, *v)))
                .collect();
            if let Some(cell) = Cell::of(values) {
                rows.push(Row { workload: workload.to_owned(), metric, kind, cell });
            }
        }
    }
    rows
}

fn find<'a>(rows: &'a [Row], workload: &str, metric: &str, kind: Kind) -> Option<&'a Cell> {
    rows.iter().find(|r| r.workload == workload && r.metric == metric && r.kind == kind).map(|r| &r.cell)
}

/// A target's verdict: what each condition measured (`None` when a
/// workload or server it needs did not run) and whether all hold.
struct Verdict {
    target: &'static Target,
    measured: Vec<Option<f64>>,
    met: Option<bool>,
}

fn judge(rows: &[Row]) -> Vec<Verdict> {
    targets()
        .filter(|t| rows.iter().any(|r| r.workload == t.workload))
        .map(|target| {
            let measured: Vec<Option<f64>> = target
                .conds
                .iter()
                .map(|c| {
                    let cell = |k| find(rows, target.workload, c.metric, k);
                    let v = match c.side {
                        Side::Ratio(a, b) => cell(a)?.median / cell(b)?.median,
                        Side::EveryRep(a, b) => {
                            let (a, b) = (cell(a)?, cell(b)?);
                            let ratios = a.values.iter().filter_map(|&(rep, v)| Some(v / b.value(rep)?));
                            // The worst repetition: the lowest ratio for an
                            // "at least", the highest for an "at most".
                            if c.at_least {
                                ratios.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))))?
                            } else {
                                ratios.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))?
                            }
                        }
                        Side::Median(k) => cell(k)?.median,
                        Side::Min(k) => cell(k)?.min(),
                    };
                    v.is_finite().then_some(v)
                })
                .collect();
            let met = target.conds.iter().zip(&measured).try_fold(true, |all, (c, v)| {
                let v = (*v)?;
                Some(all && if c.at_least { v >= c.value } else { v <= c.value })
            });
            Verdict { target, measured, met }
        })
        .collect()
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

/// The flag on a repetition more than 2 × off its median.
const OUTLIER: &str = "⚠";

/// The median and each repetition's value (`n/a` for a repetition that has
/// none), at one precision from the median, outliers flagged.
fn cell_texts(c: &Cell, reps: usize) -> (String, Vec<String>) {
    let whole = c.values.iter().all(|v| v.1.fract() == 0.0) && c.median.fract() == 0.0;
    let d = if whole { 0 } else { decimals(c.median) };
    let each = (1..=reps)
        .map(|rep| match c.value(rep) {
            None => "n/a".into(),
            Some(v) if outlier(v, c.median) => format!("{} {OUTLIER}", num(v, d)),
            Some(v) => num(v, d),
        })
        .collect();
    (num(c.median, d), each)
}

fn markdown(meta: &Meta, rows: &[Row], verdicts: &[Verdict]) -> String {
    let reps = rows.iter().flat_map(|r| r.cell.values.iter().map(|v| v.0)).max().unwrap_or(0);
    let mut md = format!(
        "# ftpd vs vsftpd, ProFTPD, Pure-FTPd and the kernel ceiling\n\n\
         - date: {}\n- kernel: {}\n- CPUs: {}\n- repetitions: {} (interleaved); login workload {} s per sample\n\
         - ftpd: {} (commit {})\n- vsftpd: {}\n- peers: {}\n\n\
         Loopback, one machine: client and servers share the CPUs.\n\n## Targets\n\n\
         Measured: per condition, the ratio or value it judges (for \"in every repetition\", the worst \
         repetition's ratio).\n\n\
         | workload | target | measured | met |\n| --- | --- | --- | --- |\n",
        meta.date,
        meta.kernel,
        meta.cpus,
        meta.reps,
        meta.login_secs,
        meta.ftpd,
        meta.commit,
        meta.vsftpd,
        meta.peers.join(", ")
    );
    for v in verdicts {
        let measured: Vec<String> = v.measured.iter().map(|m| ratio_text(*m)).collect();
        let met = match v.met {
            None => "—",
            Some(true) => "yes",
            Some(false) => "no",
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", v.target.workload, v.target.text, measured.join(", "));
    }
    let _ = write!(
        md,
        "\n## Results\n\nEvery repetition's value; {OUTLIER} marks one more than 2 × off (above or below) its \
         median. ftpd ÷ server: ftpd's median over this server's.\n\n| workload | metric | server | median |"
    );
    for rep in 1..=reps {
        let _ = write!(md, " rep {rep} |");
    }
    md.push_str(" ftpd ÷ server |\n| --- | --- | --- | --- |");
    md.push_str(&" --- |".repeat(reps + 1));
    md.push('\n');
    for r in rows {
        let (median, each) = cell_texts(&r.cell, reps);
        let ftpd = find(rows, &r.workload, r.metric, Ftpd).map(|c| c.median / r.cell.median);
        let ratio = if r.kind == Ftpd { String::new() } else { ratio_text(ftpd.filter(|v| v.is_finite())) };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {median} | {} | {ratio} |",
            r.workload,
            r.metric,
            r.kind.name(),
            each.join(" | ")
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

fn json(meta: &Meta, samples: &[Sample], rows: &[Row], verdicts: &[Verdict]) -> String {
    let peers: Vec<String> = meta.peers.iter().map(|p| jstr(p)).collect();
    let mut j = format!(
        "{{\n  \"date\": {},\n  \"kernel\": {},\n  \"cpus\": {},\n  \"reps\": {},\n  \"login_secs\": {},\n  \
         \"commit\": {},\n  \"ftpd\": {},\n  \"vsftpd\": {},\n  \"peers\": [{}],\n  \"samples\": [",
        jstr(&meta.date),
        jstr(&meta.kernel),
        meta.cpus,
        meta.reps,
        meta.login_secs,
        jstr(&meta.commit),
        jstr(&meta.ftpd),
        jstr(&meta.vsftpd),
        peers.join(", ")
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
        let values: Vec<String> = r.cell.values.iter().map(|(rep, v)| format!("[{rep}, {}]", jnum(*v))).collect();
        let outliers: Vec<String> =
            r.cell.values.iter().filter(|(_, v)| outlier(*v, r.cell.median)).map(|(rep, _)| rep.to_string()).collect();
        let _ = write!(
            j,
            "{}\n    {{\"workload\": {}, \"metric\": {}, \"server\": {}, \"median\": {}, \"values\": [{}], \
             \"outlier_reps\": [{}]}}",
            if i > 0 { "," } else { "" },
            jstr(&r.workload),
            jstr(r.metric),
            jstr(r.kind.name()),
            jnum(r.cell.median),
            values.join(", "),
            outliers.join(", ")
        );
    }
    j.push_str("\n  ],\n  \"targets\": [");
    for (i, v) in verdicts.iter().enumerate() {
        let measured: Vec<String> = v.measured.iter().map(|m| m.map_or_else(|| "null".into(), jnum)).collect();
        let _ = write!(
            j,
            "{}\n    {{\"workload\": {}, \"target\": {}, \"measured\": [{}], \"met\": {}}}",
            if i > 0 { "," } else { "" },
            jstr(v.target.workload),
            jstr(v.target.text),
            measured.join(", "),
            v.met.map_or_else(|| "null".into(), |m| m.to_string())
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
    let verdicts = judge(&rows);
    let md = markdown(meta, &rows, &verdicts);
    let js = json(meta, samples, &rows, &verdicts);
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

    fn sample(workload: &str, kind: Kind, rep: usize, metrics: Metrics) -> Sample {
        Sample { workload: workload.into(), kind, rep, metrics }
    }

    #[test]
    fn medians_and_targets() {
        let samples = vec![
            sample("download (tmpfs)", Ftpd, 1, vec![("MB/s", 96.0)]),
            sample("download (tmpfs)", Proftpd, 1, vec![("MB/s", 90.0)]),
            sample("download (tmpfs)", Ftpd, 2, vec![("MB/s", 90.0)]),
            sample("download (tmpfs)", Proftpd, 2, vec![("MB/s", 95.0)]),
            sample("download (tmpfs)", Ftpd, 3, vec![("MB/s", 99.0)]),
            sample("download (tmpfs)", Proftpd, 3, vec![("MB/s", 80.0)]),
            sample("download (tmpfs)", Ceiling, 1, vec![("MB/s", 100.0)]),
            sample("login", Ftpd, 1, vec![("server CPU µs per login", 120.0)]),
        ];
        let rows = rows(&samples);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].cell.median, 96.0);
        assert_eq!(rows[0].kind, Ftpd);
        assert_eq!(rows[1].kind, Proftpd);
        let verdicts = judge(&rows);
        let verdict = |text: &str| verdicts.iter().find(|v| v.target.text.starts_with(text)).expect(text);
        // Medians: ftpd 96 ≥ proftpd 90, but repetition 2 is 90 < 95.
        let every = verdict("MB/s: ftpd ≥ 1.0 × proftpd");
        assert_eq!(every.met, Some(false));
        assert_eq!(every.measured, vec![Some(90.0 / 95.0)]);
        assert_eq!(verdict("MB/s: ftpd/ceiling").met, Some(true));
        assert_eq!(verdict("CPU-s per GiB").met, None);
        assert_eq!(verdict("CPU µs per login").met, Some(false));
    }

    #[test]
    fn outliers() {
        assert!(!outlier(200.0, 100.0));
        assert!(outlier(201.0, 100.0));
        assert!(!outlier(50.0, 100.0));
        assert!(outlier(49.0, 100.0));
        assert!(outlier(1.0, 0.0));
        let cell = Cell::of(vec![(2, 10.0), (1, 100.0), (3, 11.0)]).expect("values");
        let (median, each) = cell_texts(&cell, 4);
        assert_eq!(median, "11");
        assert_eq!(each, ["100 ⚠", "10", "11", "n/a"]);
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
