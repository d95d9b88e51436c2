//! Fuzz targets for everything in ftpd that reads bytes it did not write:
//! control lines, command arguments, config files, client paths and the
//! messages between ftpd's processes.
//!
//! Each target is a plain function of one input. It calls ftpd's own parser
//! and asserts properties of the result, not only that nothing panicked: a
//! parsed value rendered and parsed again is the same value, a normalised path
//! never leaves the root and normalising it again changes nothing, a config
//! error names its line. A failed assertion is a crash to the fuzzer.
//!
//! libFuzzer drives these functions from `libfuzzer/` (`cargo xtask fuzz`);
//! `tests/replay.rs` runs every saved input (`corpus/` seeds and
//! `regressions/` crashes) through them in a plain `cargo test`.

use std::{
    net::IpAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    pin::pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll, Waker},
};

use ftpd::{
    command::{AuthKind, Command, Eprt, Epsv, ListArgs, Prot, parse_eprt, split_mdtm_time},
    config::{Config, MAX_CONFIG_BYTES},
    control::{self, LineError, LineReader, MAX_LINE},
    fs::{self, FsError, MAX_PATH, Patterns, VPath},
    ipc::{self, MasterReply, MasterRequest, WorkerReply, WorkerRequest},
    proxy::{self, Parsed},
    worker,
};

/// A fuzz target: one input, properties asserted.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory and libFuzzer binary have.
pub const TARGETS: &[(&str, Target)] = &[
    ("command", command),
    ("config", config),
    ("user_config", user_config),
    ("vpath", vpath),
    ("port_args", port_args),
    ("tls_args", tls_args),
    ("ipc_master", ipc_master),
    ("ipc_worker", ipc_worker),
    ("proxy_header", proxy_header),
];

/// The control connection: line framing (`LineReader`), Telnet stripping and
/// the verb/argument split, then the arguments of LIST and MDTM.
pub fn command(data: &[u8]) {
    let (lines, end) = read_lines(data);
    let (want, want_end) = model_lines(data);
    assert_eq!(lines, want, "LineReader framed the input differently from CRLF/LF splitting");
    assert_eq!(end, want_end, "LineReader ended differently (closed vs line too long)");
    for line in &lines {
        assert!(line.len() < MAX_LINE && !line.contains(&b'\n'));
        let stripped = control::strip_telnet(line);
        assert!(line.ends_with(stripped), "strip_telnet returns a suffix");
        assert_eq!(control::strip_telnet(stripped), stripped, "strip_telnet is idempotent");
        let (verb, arg) = control::split_command(stripped);
        assert!(stripped.ends_with(arg), "the argument is the line's tail, unchanged");
        if verb.is_empty() {
            continue;
        }
        // Letters and digits (XSHA256), upper-cased.
        assert!(verb.len() <= 8 && verb.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "verb {verb:?}");
        assert!(stripped[..verb.len()].eq_ignore_ascii_case(verb.as_bytes()));
        let rendered = [verb.as_bytes(), b" ", arg].concat();
        assert_eq!(control::split_command(&rendered), (verb.clone(), arg), "render and split again");
        // The command table parses every line without panicking, and the
        // same way however the verb is cased.
        let parsed = format!("{:?}", Command::parse(stripped));
        let lower = [verb.to_ascii_lowercase().as_bytes(), &stripped[verb.len()..]].concat();
        assert_eq!(format!("{:?}", Command::parse(&lower)), parsed, "the verb's case changed the parse");
        match verb.as_str() {
            "LIST" | "NLST" | "STAT" => {
                let l = ListArgs::parse(arg);
                assert!(arg.ends_with(l.path) && !l.path.starts_with(b"-"));
            }
            "MDTM" => {
                if let Some((t, name)) = split_mdtm_time(arg) {
                    assert!(!name.is_empty() && arg.ends_with(name));
                    // Every accepted time is shown back as MDTM shows times,
                    // and that text reads back as the same time (leap seconds
                    // and day 31 of short months roll over, as in timegm).
                    let shown = fs::mdtm(t);
                    if shown.len() == 14 {
                        let again = [shown.as_bytes(), b" ", name].concat();
                        assert_eq!(split_mdtm_time(&again), Some((t, name)), "{shown}");
                    }
                }
            }
            _ => {}
        }
    }
}

/// Runs `LineReader` over `data` as a client would send it.
fn read_lines(data: &[u8]) -> (Vec<Vec<u8>>, &'static str) {
    let mut r = data;
    let mut reader = LineReader::default();
    let mut lines = Vec::new();
    loop {
        // A byte slice is always ready: the future completes on its first poll.
        let fut = pin!(reader.read_line(&mut r));
        let Poll::Ready(result) = fut.poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("read_line waited on a byte slice");
        };
        match result {
            Ok(line) => lines.push(line.to_vec()),
            Err(LineError::Closed) => return (lines, "closed"),
            Err(LineError::TooLong) => return (lines, "too long"),
            Err(LineError::Io(e)) => panic!("I/O error from a byte slice: {e}"),
        }
    }
}

/// What `read_lines` must give: lines split at LF with one CR before it
/// dropped, a line of `MAX_LINE` bytes or more (LF included) ends the session,
/// and an unterminated tail is never a command.
fn model_lines(data: &[u8]) -> (Vec<Vec<u8>>, &'static str) {
    let mut lines = Vec::new();
    let mut rest = data;
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i < MAX_LINE => {
                let line = &rest[..i];
                lines.push(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
                rest = &rest[i + 1..];
            }
            Some(_) => return (lines, "too long"),
            None if rest.len() >= MAX_LINE => return (lines, "too long"),
            None => return (lines, "closed"),
        }
    }
}

/// A file name unique to this process and call: targets that need a real
/// file run in parallel fuzzing jobs and in parallel tests.
fn scratch(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ftpd-fuzz-{what}-{}-{n}", std::process::id()))
}

/// The main config file, read from disk as `ftpd` reads it (`apply_file`):
/// either every line applies, or the error names the file and, for a line's
/// fault, a line that exists and holds a setting. What loads survives the
/// master's hand-over to the front (`to_text`, read back), and `validate`
/// either refuses it or leaves a usable passive range.
pub fn config(data: &[u8]) {
    let path = scratch("conf");
    std::fs::write(&path, data).expect("writing the scratch config");
    let mut cfg = Config::default();
    let result = cfg.apply_file(&path);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(()) => {
            let text = std::str::from_utf8(data).expect("a config that loaded is UTF-8");
            assert!(data.len() as u64 <= MAX_CONFIG_BYTES);
            check_loaded(&cfg, text);
        }
        Err(e) => {
            assert_eq!(e.source, path.display().to_string());
            check_error_line(e.line, data, &e.reason);
        }
    }
}

/// A `user_config_dir` file, read and applied on top of a global config by
/// the login decision's own functions (`read_user_config`, `for_user`).
/// What it accepts must be as valid as a main config, since the session
/// runs with it; an error names the file, and a line unless it is about the
/// file as a whole (line 0: the settings do not go together).
pub fn user_config(data: &[u8]) {
    let dir = scratch("users");
    std::fs::create_dir(&dir).expect("creating the scratch user_config_dir");
    std::fs::write(dir.join("alice"), data).expect("writing the scratch user file");
    let mut global = Config::default();
    global.apply_text("<global>", GLOBAL_FOR_USERS).expect("the global config of the user target loads");
    global.user_config_dir = dir.display().to_string();
    let read = ftpd::login::read_user_config(&global, "alice");
    let _ = std::fs::remove_dir_all(&dir);
    let text = match read {
        Ok(Some(t)) => t,
        Ok(None) => panic!("the user file exists but was not read"),
        // Not UTF-8: the login is refused, nothing is applied.
        Err(_) => return assert!(std::str::from_utf8(data).is_err()),
    };
    let source = format!("{}/alice", global.user_config_dir);
    match global.for_user(&source, &text) {
        Ok(cfg) => {
            assert!(cfg.validate().is_ok(), "the login path accepted a config validate() refuses");
            check_loaded(&cfg, &text);
        }
        Err(e) => {
            assert_eq!(e.source, source);
            if e.line == 0 {
                let mut applied = global.clone();
                applied.apply_text(&source, &text).expect("a line error has a line number");
                assert_eq!(applied.validate(), Err(e.reason), "a whole-file error is validate()'s");
            } else {
                check_error_line(e.line, data, &e.reason);
            }
        }
    }
}

/// The global config `user_config` layers its input on: Debian's sample,
/// the kind of file a real per-user file overrides.
const GLOBAL_FOR_USERS: &str = "listen=YES\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n\
pasv_min_port=50000\npasv_max_port=50100\nuser_config_dir=/nonexistent\n";

/// What every loaded config must give.
fn check_loaded(cfg: &Config, text: &str) {
    // The master hands a config to the front as a typed message (a grant or a
    // reload reply): it must arrive whole.
    let sent = MasterReply::Reloaded { config: Box::new(cfg.clone()), limits: Vec::new(), tls: None };
    let bytes = ipc::encode(&sent).unwrap_or_else(|e| panic!("a loaded config does not encode: {e}\nfrom:\n{text}"));
    match ipc::decode::<MasterReply>(&bytes) {
        Ok(MasterReply::Reloaded { config, .. }) => assert_eq!(&*config, cfg, "the hand-over lost a setting"),
        other => panic!("the hand-over decoded as {other:?}"),
    }
    if cfg.validate().is_ok()
        && let Some((lo, hi)) = cfg.pasv_range()
    {
        assert!(lo <= hi && lo > 0, "passive range {lo}-{hi}");
    }
}

/// A config error at line `line` must point at a line of `data` that holds
/// a setting (line 0: the whole file, which is not UTF-8 or too big).
fn check_error_line(line: usize, data: &[u8], reason: &str) {
    if line == 0 {
        assert!(
            std::str::from_utf8(data).is_err() || data.len() as u64 > MAX_CONFIG_BYTES,
            "whole-file error for a readable file: {reason}"
        );
        return;
    }
    let raw = data.split(|&b| b == b'\n').nth(line - 1).unwrap_or_else(|| panic!("line {line} does not exist"));
    assert!(!raw.is_empty() && !raw.starts_with(b"#"), "line {line} is blank or a comment: {reason}");
    assert!(!reason.is_empty());
}

/// Client paths: `VPath::join` from a working directory (the input up to
/// its first NUL) with an argument (the rest). A joined path is absolute,
/// has no empty, `.` or `..` component, normalises to itself, splits into
/// a directory and a name that join back to it; `..` climbs exactly one
/// level and never above `/`. The names ftpd derives from it (part files)
/// fit NAME_MAX and are recognised as its own; `deny_file` patterns match
/// without panicking.
pub fn vpath(data: &[u8]) {
    let (base, arg) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let root = VPath::root();
    let cwd = root.join(base).unwrap_or_else(|_| root.clone());
    check_vpath(&cwd);
    let joined = cwd.join(arg);
    if arg.contains(&0) || arg.len() > MAX_PATH {
        assert!(matches!(joined, Err(FsError::BadName)), "NUL or overlong argument accepted");
        return;
    }
    let p = joined.unwrap_or_else(|e| panic!("join refused a valid argument: {e:?}"));
    check_vpath(&p);
    if arg.starts_with(b"/") {
        assert_eq!(root.join(arg).ok().as_ref(), Some(&p), "an absolute argument ignores the cwd");
    } else if cwd.as_bytes().len() + 1 + arg.len() <= MAX_PATH {
        let whole = [cwd.as_bytes(), b"/", arg].concat();
        assert_eq!(root.join(&whole).ok().as_ref(), Some(&p), "relative = cwd + / + argument");
    }
    let parent = p.split_last().map_or_else(|| root.clone(), |(dir, _)| dir);
    assert_eq!(p.join(b"..").ok(), Some(parent), ".. climbs one level, never above /");
    if let Some(part) = fs::part_path(&p, "anonymous") {
        let name = part.file_name();
        assert!(name.len() <= 255, "part name of {} bytes", name.len());
        assert!(fs::is_own_leftover_name(name) && fs::is_upload_temp(name));
        assert_eq!(part.split_last().map(|(d, _)| d), p.split_last().map(|(d, _)| d), "part beside its file");
    } else {
        assert_eq!(p, root, "only the root has no part file");
    }
    let patterns = Patterns::parse(&String::from_utf8_lossy(base));
    let _ = patterns.matches_path(&p);
    let name = p.file_name();
    assert!(fs::glob(name, name) && fs::glob(b"*", name));
}

/// The invariants of a normalised path.
fn check_vpath(p: &VPath) {
    let b = p.as_bytes();
    assert!(b.starts_with(b"/"), "not absolute: {b:?}");
    assert!(!b.contains(&0));
    if b != b"/" {
        for c in b[1..].split(|&c| c == b'/') {
            assert!(!c.is_empty() && c != b"." && c != b"..", "component {c:?} in {b:?}");
        }
    }
    // `join` bounds the argument, not the result: a long cwd and a long
    // argument make a path the kernel refuses (ENAMETOOLONG), and that
    // path is refused as an argument too.
    if b.len() <= MAX_PATH {
        assert_eq!(VPath::root().join(b).ok().as_ref(), Some(p), "normalising twice changes the path");
    }
    assert_eq!(p.join(b"").ok().as_ref(), Some(p));
    assert_eq!(p.join(b".").ok().as_ref(), Some(p));
    if let Some((dir, name)) = p.split_last() {
        assert!(!name.is_empty() && !name.contains(&b'/'));
        assert_eq!(dir.join(name).ok().as_ref(), Some(p), "split_last then join");
        assert_eq!(p.file_name(), name);
    } else {
        assert_eq!(b, b"/");
    }
}

/// PORT, EPRT and EPSV arguments, through the command table. An accepted
/// address rendered in the command's own syntax parses back to itself;
/// EPRT's protocol number and the address family agree; EPSV is
/// case-insensitive.
pub fn port_args(data: &[u8]) {
    let line = |verb: &str, arg: &[u8]| [verb.as_bytes(), b" ", arg].concat();
    if let Ok(Command::Port(Some(v4))) = Command::parse(&line("PORT", data)) {
        let o = v4.ip().octets();
        let shown = format!("{},{},{},{},{},{}", o[0], o[1], o[2], o[3], v4.port() >> 8, v4.port() & 0xff);
        assert!(
            matches!(Command::parse(&line("PORT", shown.as_bytes())), Ok(Command::Port(Some(again))) if again == v4)
        );
        assert_eq!(data.iter().filter(|&&b| b == b',').count(), 5);
    }
    match parse_eprt(data) {
        Eprt::Addr(to) => {
            let proto = if to.is_ipv4() { 1 } else { 2 };
            for d in ['|', '!', '#'] {
                let shown = format!("{d}{proto}{d}{}{d}{}{d}", to.ip(), to.port());
                assert_eq!(parse_eprt(shown.as_bytes()), Eprt::Addr(to), "{shown}");
            }
            // The protocol field says which family the address is.
            let text = std::str::from_utf8(data).expect("an accepted EPRT is UTF-8");
            let delim = text.chars().next().expect("an accepted EPRT is not empty");
            let field = text.split(delim).nth(1).expect("an accepted EPRT has a protocol field");
            let named = field.parse::<u32>().expect("an accepted EPRT has a numeric protocol");
            assert_eq!(named, proto, "EPRT {text:?}: protocol {named} with an address of family {proto}");
            assert!(matches!(to.ip(), IpAddr::V4(_)) == (proto == 1));
        }
        Eprt::Unsupported | Eprt::BadProtocol | Eprt::Bad => {}
    }
    let epsv = |arg: &[u8]| match Command::parse(&line("EPSV", arg)) {
        Ok(Command::Epsv(e)) => Some(e),
        _ => None,
    };
    let e = epsv(data);
    assert_eq!(epsv(&data.to_ascii_lowercase()), e, "EPSV is case-insensitive");
    let canonical: &[u8] = match e {
        Some(Epsv::All) => b"ALL",
        Some(Epsv::Any) => b"",
        Some(Epsv::V4) => b"1",
        Some(Epsv::V6) => b"2",
        Some(Epsv::Other) | None => return,
    };
    assert!(data.trim_ascii().eq_ignore_ascii_case(canonical), "EPSV {data:?} read as {canonical:?}");
}

/// AUTH and PROT arguments through the command table (PBSZ's is ignored,
/// as vsftpd ignores it): case-insensitive, and only the RFC 4217 /
/// RFC 2228 words are accepted.
pub fn tls_args(data: &[u8]) {
    let parse = |verb: &str, arg: &[u8]| format!("{:?}", Command::parse(&[verb.as_bytes(), b" ", arg].concat()));
    for verb in ["AUTH", "PROT"] {
        assert_eq!(parse(verb, &data.to_ascii_lowercase()), parse(verb, &data.to_ascii_uppercase()), "{verb}");
    }
    if let Ok(Command::Auth(Some(kind))) = Command::parse(&[b"AUTH ", data].concat()) {
        let word = data.trim_ascii().to_ascii_uppercase();
        assert!(matches!(word.as_slice(), b"TLS" | b"TLS-C" | b"SSL" | b"TLS-P"), "AUTH {word:?}");
        assert_eq!(kind == AuthKind::Ssl, matches!(word.as_slice(), b"SSL" | b"TLS-P"));
    }
    if let Ok(Command::Prot(p)) = Command::parse(&[b"PROT ", data].concat())
        && p != Prot::Unknown
    {
        assert_eq!(data.trim_ascii().len(), 1, "PROT {data:?} read as {p:?}");
    }
}

/// The PROXY protocol header a balancer prefixes to a control connection
/// (`proxy::parse`, which the front runs on peeked bytes before it consumes
/// exactly the header). A header is recognised only whole and keeps its
/// length whatever follows it, so nothing after it is ever consumed; a
/// verdict of "not a header" never changes with more bytes, so rejecting
/// early is safe; "incomplete" never lasts past the size bound.
pub fn proxy_header(data: &[u8]) {
    let first = proxy::parse(data);
    let more = [data, b"\r\nUSER x\r\n\x16\x03\x01".as_slice()].concat();
    match &first {
        Parsed::Header { len, .. } => {
            assert!(*len > 0 && *len <= data.len(), "length {len} of {} bytes", data.len());
            assert_eq!(proxy::parse(&data[..*len]), first, "the header alone reads the same");
            assert_eq!(proxy::parse(&more), first, "bytes after a header do not change it");
            for cut in [len - 1, len / 2, 1.min(len - 1)] {
                assert_eq!(proxy::parse(&data[..cut]), Parsed::Incomplete, "a header cut at {cut} of {len}");
            }
        }
        Parsed::Invalid(_) => {
            assert!(matches!(proxy::parse(&more), Parsed::Invalid(_)), "rejected, then accepted with more bytes");
        }
        Parsed::Incomplete => assert!(data.len() < 1024, "incomplete past the bound: {} bytes", data.len()),
    }
}

/// The messages between the front and the privileged master, from both
/// sides: what decodes (bounded, never panicking) re-encodes to bytes that
/// decode to the same message.
pub fn ipc_master(data: &[u8]) {
    if let Ok(req) = ipc::decode::<MasterRequest>(data) {
        let again = ipc::encode(&req).expect("a decoded request encodes");
        let back = ipc::decode::<MasterRequest>(&again).expect("a re-encoded request decodes");
        assert_eq!(format!("{back:?}"), format!("{req:?}"), "request round trip");
    }
    if let Ok(rep) = ipc::decode::<MasterReply>(data) {
        let again = ipc::encode(&rep).expect("a decoded reply encodes");
        let back = ipc::decode::<MasterReply>(&again).expect("a re-encoded reply decodes");
        assert_eq!(format!("{back:?}"), format!("{rep:?}"), "reply round trip");
    }
}

/// The file worker's request loop (`worker::serve`), on a real root: the
/// input is a sequence of requests (each a u16 length and its bytes), as a
/// broken or hostile front could send them. The worker answers each with a
/// reply the front can read, or stops on one it cannot parse; and nothing
/// outside its root changes, whatever the paths and symlinks. The front's
/// decoders of listing chunks and replies read the same input too.
pub fn ipc_worker(data: &[u8]) {
    let _ = ipc::decode::<WorkerReply>(data);
    let _ = ipc::decode::<WorkerRequest>(data);

    let mut msgs = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest
        && msgs.len() < 32
    {
        let n = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        msgs.push(&tail[..n]);
        rest = &tail[n..];
    }
    let base = scratch("worker");
    let guard = Scratch(base.clone());
    let root_dir = base.join("root");
    std::fs::create_dir_all(root_dir.join("pub")).expect("creating the scratch root");
    std::fs::write(base.join("outside"), b"not yours").expect("creating the file outside the root");
    std::fs::write(root_dir.join("pub/file"), b"data").expect("creating a file in the root");
    std::os::unix::fs::symlink("../outside", root_dir.join("escape")).expect("creating an escaping symlink");
    std::os::unix::fs::symlink("/", root_dir.join("slash")).expect("creating a symlink to /");
    let before = snapshot(&base.join("outside"));

    let root = fs::Root::open(&root_dir).expect("opening the scratch root");
    let (front, worker_end) = ipc::pair().expect("socketpair");
    for m in &msgs {
        // Raw bytes, as a broken front could send them (an empty datagram
        // reads as the channel's end, as the front closing it).
        rustix::net::send(&front, m, rustix::net::SendFlags::empty()).expect("queueing a request");
    }
    rustix::net::shutdown(&front, rustix::net::Shutdown::Write).expect("shutdown");
    // Requests are all queued and the channel then ends, so this returns.
    let _ = worker::serve(&worker_end, &root);
    drop(worker_end);
    let mut buf = Vec::new();
    while let Ok(Some(_fd)) = ipc::recv(front.as_fd(), &mut buf) {
        let reply = ipc::decode::<WorkerReply>(&buf);
        assert!(reply.is_ok(), "a worker reply the front cannot read: {reply:?}");
    }
    assert_eq!(snapshot(&base.join("outside")), before, "the worker changed a file outside its root");
    let mut names: Vec<_> =
        std::fs::read_dir(&base).expect("listing the scratch base").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    assert_eq!(names, ["outside", "root"], "the worker created or removed something outside its root");
    drop(guard);
}

/// What can change about a file.
fn snapshot(p: &Path) -> Option<(Vec<u8>, u32, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).ok()?;
    Some((std::fs::read(p).ok()?, m.mode(), m.mtime(), m.nlink()))
}

/// A scratch directory, removed when dropped (also when an assertion fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.0).is_err() {
            // A request may have made a directory unreadable to us (when not
            // root): give everything back its permissions and try again.
            let _ = std::process::Command::new("chmod").arg("-R").arg("u+rwx").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
