//! Under systemd, ftpd logs to the journal with fields: when `JOURNAL_STREAM`
//! names its stderr, entries go to the journal socket as fields (`MESSAGE=`,
//! `SESSION=`, `PEER=` ...), from the root master and the unprivileged front
//! alike. A stand-in journal listens on the socket path, in a mount
//! namespace of the test's own.

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ftpd_tests::{free_port, ftpd_bin, run};

const JOURNAL: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('/run/systemd/journal/socket')
os.chmod('/run/systemd/journal/socket', 0o666)
s.settimeout(10)
out = open(sys.argv[1], 'ab', buffering=0)
while True:
    try:
        d = s.recv(1 << 20)
    except socket.timeout:
        break
    out.write(d + b'\n--\n')
"#;

#[test]
fn entries_reach_the_journal_with_fields() {
    if !ftpd_tests::root_or_skip(
        "journal::entries_reach_the_journal_with_fields",
        "a mount namespace for the stand-in journal socket",
    ) {
        return;
    }
    let served = tempfile::tempdir().unwrap();
    std::fs::set_permissions(served.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(served.path().join("f.txt"), b"journal\n").unwrap();
    let work = tempfile::tempdir().unwrap();
    let entries = work.path().join("entries");
    let stderr = work.path().join("stderr");
    let port = free_port();
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /run && mkdir -p /run/systemd/journal && \
         (python3 -c \"$JOURNAL\" '{entries}' &) && \
         while [ ! -S /run/systemd/journal/socket ]; do sleep 0.05; done && \
         exec 2>'{stderr}' && export JOURNAL_STREAM=$(stat -L -c '%d:%i' /proc/self/fd/2) && \
         exec '{bin}' --root '{root}' -oftpd_ebpf=off -olisten_port={port} -oftpd_metrics_listen=",
        entries = entries.display(),
        stderr = stderr.display(),
        bin = ftpd_bin().display(),
        root = served.path().display(),
    );
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("JOURNAL", JOURNAL)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let read = || entries_of(&std::fs::read(&entries).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !read().iter().any(|e| e.contains("MESSAGE=ftpd listening")) {
        assert!(Instant::now() < deadline, "no entry in the journal: {:?}", read());
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = run(Command::new("curl").args(["-sS", "--max-time", "10"]).arg(format!("ftp://127.0.0.1:{port}/f.txt")));
    assert_eq!(got.stdout, b"journal\n", "{}", String::from_utf8_lossy(&got.stderr));
    while !read().iter().any(|e| e.contains("MESSAGE=download complete")) {
        assert!(Instant::now() < deadline, "the front's entries are missing: {:?}", read());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let all = read();
    let download = all.iter().find(|e| e.contains("MESSAGE=download complete")).unwrap();
    for field in ["SYSLOG_IDENTIFIER=ftpd", "SESSION=1", "PEER=127.0.0.1:", "USER=anonymous", "BYTES=8", "PRIORITY="] {
        assert!(download.contains(field), "{field} missing in\n{download}");
    }
    // Nothing went to stderr as text meanwhile.
    let plain = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(!plain.contains("ftpd listening"), "{plain}");
}

/// Decodes the datagrams (journal native protocol: `NAME=value` lines, or
/// `NAME`, a little-endian u64 length and that many bytes) into one
/// `NAME=value` line per field, an entry per datagram.
fn entries_of(raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for dgram in split(raw, b"\n--\n") {
        let mut entry = String::new();
        let mut rest = dgram;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let line = &rest[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                entry.push_str(&String::from_utf8_lossy(&line[..eq]));
                entry.push('=');
                entry.push_str(&String::from_utf8_lossy(&line[eq + 1..]));
                rest = rest.get(nl + 1..).unwrap_or_default();
            } else {
                let after = rest.get(nl + 1..).unwrap_or_default();
                if after.len() < 8 {
                    break;
                }
                let len = usize::try_from(u64::from_le_bytes(after[..8].try_into().unwrap())).unwrap();
                let value = after.get(8..8 + len).unwrap_or_default();
                entry.push_str(&String::from_utf8_lossy(line));
                entry.push('=');
                entry.push_str(&String::from_utf8_lossy(value));
                rest = after.get(8 + len + 1..).unwrap_or_default();
            }
            entry.push('\n');
        }
        out.push(entry);
    }
    out
}

fn split<'a>(mut raw: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = raw.windows(sep.len()).position(|w| w == sep) {
        out.push(&raw[..i]);
        raw = &raw[i + sep.len()..];
    }
    out
}
