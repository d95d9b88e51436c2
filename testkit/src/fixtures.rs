//! Fixtures: random files, the modes and owners a served tree needs, and
//! comparisons that report where bytes differ instead of dumping them.

use std::{
    io::{Read, Write},
    path::Path,
    process::{Command, Stdio},
};

use sha2::{Digest, Sha256};

use crate::{ftpd_bin, is_root, run_ok};

/// Makes `dir` (not its contents) enterable and readable by everyone.
pub fn served_by_nobody(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(dir) {
        let mode = m.permissions().mode() | 0o755;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    }
}

/// Makes `dir` writable by everyone, for upload tests: anonymous sessions act
/// as `nobody` when the tests run as root, as vsftpd's act as `ftp`.
pub fn writable_by_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod 0777");
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts `got == want` without dumping megabytes: on a mismatch it reports
/// both lengths and the first differing offset.
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!("{what}: got {} bytes, want {}; first difference at offset {at}", got.len(), want.len());
    }
}

/// Asserts that the file at `path` holds exactly `want` (see [`assert_bytes`]).
pub fn assert_file(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: read {}: {e}", path.display()));
    assert_bytes(&got, want, &format!("{what} ({})", path.display()));
}

/// Writes `len` random bytes to `path` (from /dev/urandom).
pub fn random_file(path: &Path, len: u64) {
    let mut src = std::fs::File::open("/dev/urandom").expect("urandom").take(len);
    let mut dst = std::fs::File::create(path).expect("create");
    std::io::copy(&mut src, &mut dst).expect("copy random bytes");
}

/// The account anonymous sessions act as when ftpd starts as root: the
/// embedded default's `ftp_username=nobody` (vsftpd likewise runs anonymous
/// sessions as its `ftp_username`, never as root).
pub const ANON_USER: &str = "nobody";

/// Makes `path` and everything under it writable by everyone, so that an
/// anonymous session may change it whichever account it acts as.
pub fn make_writable(path: &Path) {
    run_ok(Command::new("chmod").arg("-R").arg("a+rwX").arg(path));
}

/// Gives `path` to [`ANON_USER`] and its login group when the tests run as
/// root, so that its owner permission bits are the ones an anonymous session
/// gets, and a replace can keep owner and group (else it is written in
/// place). Without root the server acts as the test's own user, who owns the
/// file already.
pub fn give_to_anon(path: &Path) {
    if is_root() {
        run_ok(Command::new("chown").arg(format!("{ANON_USER}:")).arg(path));
    }
}

/// Owner uid of a file on disk.
pub fn uid_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).uid()
}

/// Permission bits of a file or directory on disk.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode() & 0o7777
}

/// `len` random bytes (from /dev/urandom).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .take(len as u64)
        .read_to_end(&mut out)
        .expect("read random bytes");
    out
}

/// Names in a directory on disk, dot files included, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Adds `user` with `password` to the virtual users file `file` with
/// `ftpd passwd`, as an administrator would.
pub fn ftpd_passwd(file: &Path, user: &str, password: &str) {
    let mut p = Command::new(ftpd_bin())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ftpd passwd");
    writeln!(p.stdin.as_mut().expect("stdin"), "{password}").expect("password");
    let out = p.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed certificate and its key (`0600`, as a real key: the
/// unprivileged front could not open it), made with `openssl req` as the
/// README says. `dir` also holds whatever else a test keeps beside them.
pub struct Cert {
    /// Holds `cert.pem` and `key.pem`.
    pub dir: tempfile::TempDir,
}

impl Cert {
    /// For CN=localhost, valid for 2 days.
    pub fn new() -> Self {
        Self::make(&["-days", "2"])
    }

    /// For 127.0.0.1 and localhost (a subjectAltName), valid for a year: a
    /// TLS audit then finds only what self-signing causes.
    pub fn for_loopback() -> Self {
        Self::make(&["-days", "365", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
    }

    fn make(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        run_ok(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"])
                .args(extra)
                .arg("-keyout")
                .arg(dir.path().join("key.pem"))
                .arg("-out")
                .arg(dir.path().join("cert.pem")),
        );
        run_ok(Command::new("chmod").arg("600").arg(dir.path().join("key.pem")));
        Self { dir }
    }

    /// The certificate file.
    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The key file.
    pub fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }

    /// `ssl_enable=YES` with this certificate and key.
    pub fn settings(&self) -> Vec<String> {
        vec![
            "ssl_enable=YES".into(),
            format!("rsa_cert_file={}", self.cert().display()),
            format!("rsa_private_key_file={}", self.key().display()),
        ]
    }
}

impl Default for Cert {
    fn default() -> Self {
        Self::new()
    }
}
