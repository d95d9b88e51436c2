//! FTPS (issue 14): explicit (AUTH TLS) and implicit TLS with real clients
//! (curl, lftp, Python's ftplib), session reuse bound to the control
//! connection, close_notify on every data connection, vsftpd's forced-TLS
//! replies, and certificate errors at startup.

use std::{net::SocketAddr, path::Path, process::Command};

use ftpd_tests::{Cert, Server, free_port, give_to_anon, make_writable, python, random_file, run, run_ok, sha256_file};

/// `a.txt`, `big.bin` (3 MiB random), `dir/` with two files; writable.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), b"alpha\n").expect("write");
    random_file(&dir.path().join("big.bin"), 3 << 20);
    std::fs::create_dir(dir.path().join("dir")).expect("mkdir");
    random_file(&dir.path().join("dir/one.bin"), 100_000);
    std::fs::write(dir.path().join("dir/two.txt"), b"two\n").expect("write");
    make_writable(dir.path());
    dir
}

const WRITABLE: &[&str] = &[
    "anon_umask=022",
    "write_enable=YES",
    "anon_upload_enable=YES",
    "anon_mkdir_write_enable=YES",
    "anon_other_write_enable=YES",
    "allow_anon_ssl=YES",
];

fn start(root: &Path, cert: &Cert, extra: &[&str]) -> Server {
    let mut all: Vec<String> = cert.settings();
    all.extend(WRITABLE.iter().map(|s| (*s).to_string()));
    all.extend(extra.iter().map(|s| (*s).to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    Server::start(root, &refs)
}

fn curl(server: &Server) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "-k", "--max-time", "60"]);
    let _ = server;
    c
}

/// Python preamble: `FTPS`, an FTP_TLS that resumes the control
/// connection's TLS session on each data connection (as FileZilla, curl and
/// lftp do), and `ctx`, a context that accepts the self-signed certificate.
fn py_prelude(server: &Server) -> String {
    format!(
        r#"import ftplib, ssl, hashlib, io, socket
HOST, PORT = {host:?}, {port}
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
class FTPS(ftplib.FTP_TLS):
    reuse_from = None
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            src = self.reuse_from or self
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=src.sock.session)
        return conn, size
def login(c=ctx):
    f = FTPS(context=c)
    f.connect(HOST, PORT, timeout=30)
    f.login()
    f.prot_p()
    return f
def sha(b): return hashlib.sha256(b).hexdigest()
def retr(f, name):
    out = io.BytesIO()
    f.retrbinary('RETR ' + name, out.write)
    return out.getvalue()
"#,
        host = server.addr.ip().to_string(),
        port = server.addr.port()
    )
}

#[test]
fn curl_explicit_ftps_retr_stor_list_on_tls12_and_tls13() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    let out = tempfile::tempdir().expect("tempdir");
    for (version, max) in [("--tlsv1.2", "1.2"), ("--tlsv1.3", "1.3")] {
        // Three transfers on one control connection: curl reuses it for
        // every URL of one command line.
        let a = out.path().join(format!("a-{max}"));
        let big = out.path().join(format!("big-{max}"));
        let listing = run_ok(
            curl(&server)
                .args(["--ssl-reqd", version, "--tls-max", max])
                .arg(server.url("a.txt"))
                .arg("-o")
                .arg(&a)
                .arg(server.url("big.bin"))
                .arg("-o")
                .arg(&big)
                .arg(server.url("dir/")),
        );
        assert!(listing.contains("one.bin") && listing.contains("two.txt"), "LIST over TLS: {listing}");
        assert_eq!(std::fs::read(&a).expect("a"), b"alpha\n");
        assert_eq!(sha256_file(&big), sha256_file(&dir.path().join("big.bin")), "RETR over TLS {max}");
        // Upload, then download again and compare.
        let up = dir.path().join("big.bin");
        run_ok(
            curl(&server)
                .args(["--ssl-reqd", version, "--tls-max", max, "-T"])
                .arg(&up)
                .arg(server.url(&format!("up-{max}.bin"))),
        );
        assert_eq!(sha256_file(&dir.path().join(format!("up-{max}.bin"))), sha256_file(&up), "STOR over TLS {max}");
    }
    let log = server.stop();
    assert!(log.contains("version=Some(TLSv1_2)"), "a TLS 1.2 control connection: {log}");
    assert!(log.contains("version=Some(TLSv1_3)"), "a TLS 1.3 control connection");
    assert!(!log.contains("did not resume"), "curl's data connections all resumed the control session");
}

#[test]
fn curl_ftp_ssl_control_keeps_data_clear() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    let out = tempfile::tempdir().expect("tempdir");
    let got = out.path().join("big");
    run_ok(curl(&server).arg("--ftp-ssl-control").arg(server.url("big.bin")).arg("-o").arg(&got));
    assert_eq!(sha256_file(&got), sha256_file(&dir.path().join("big.bin")));
    // The same with force_anon_data_ssl: the clear data connection is refused.
    let forced = start(dir.path(), &cert, &["force_anon_data_ssl=YES"]);
    let o = run(curl(&forced).arg("-v").arg("--ftp-ssl-control").arg(forced.url("a.txt")).arg("-o").arg(&got));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("522 Data connections must be encrypted."), "{err}");
}

#[test]
fn ftplib_tls_list_retr_stor_with_sha256() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    let want = sha256_file(&dir.path().join("big.bin"));
    let out = python(&format!(
        r#"{}f = login()
print(f.sendcmd('PBSZ 0'))
names = []
f.retrlines('LIST dir', names.append)
print('LIST', len(names), 'one.bin' in ' '.join(names))
print('RETR', sha(retr(f, 'big.bin')))
data = open({:?}, 'rb').read()
f.storbinary('STOR copy.bin', io.BytesIO(data))
print('STOR', sha(retr(f, 'copy.bin')))
print(f.prot_c())
print('CLEAR', sha(retr(f, 'big.bin')))
f.quit()
"#,
        py_prelude(&server),
        dir.path().join("big.bin").display().to_string()
    ));
    assert!(out.contains("200 PBSZ set to 0."), "{out}");
    assert!(out.contains("LIST 2 True"), "{out}");
    assert!(out.contains(&format!("RETR {want}")), "{out}");
    assert!(out.contains(&format!("STOR {want}")), "{out}");
    assert!(out.contains("200 PROT now Clear."), "{out}");
    assert!(out.contains(&format!("CLEAR {want}")), "{out}");
    assert_eq!(sha256_file(&dir.path().join("copy.bin")), want);
}

#[test]
fn two_hundred_data_connections_on_one_tls13_control_connection() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &["require_ssl_reuse=YES"]);
    let out = python(&format!(
        r#"{}ctx.minimum_version = ssl.TLSVersion.TLSv1_3
f = login()
print(f.sock.version())
ok = 0
for i in range(200):
    if retr(f, 'a.txt') == b'alpha\n':
        ok += 1
print('OK', ok)
f.quit()
"#,
        py_prelude(&server)
    ));
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("OK 200"), "{out}");
    let log = server.stop();
    assert_eq!(log.matches("download complete").count(), 200);
}

#[test]
fn data_connection_with_another_sessions_ticket_is_refused() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    let out = python(&format!(
        r#"{}for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = v
    c.maximum_version = v
    a = login(c)
    b = login(c)
    print('own', retr(b, 'a.txt'))
    b.reuse_from = a
    try:
        retr(b, 'a.txt')
        print('foreign accepted')
    except ftplib.error_perm as e:
        print('foreign', e)
    except (OSError, EOFError) as e:
        print('foreign', b.getresp() if False else e, b.getline())
    b.reuse_from = None
    print('again', retr(b, 'a.txt'))
    # A client that does not resume at all.
    class Fresh(FTPS):
        def ntransfercmd(self, cmd, rest=None):
            conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
            return self.context.wrap_socket(conn, server_hostname=self.host), size
    n = Fresh(context=c)
    n.connect(HOST, PORT, timeout=30)
    n.login()
    n.prot_p()
    try:
        retr(n, 'a.txt')
        print('fresh accepted')
    except ftplib.error_perm as e:
        print('fresh', e)
    except (OSError, EOFError) as e:
        print('fresh', e, n.getline())
"#,
        py_prelude(&server)
    ));
    assert_eq!(out.matches("own b'alpha\\n'").count(), 2, "{out}");
    assert_eq!(out.matches("again b'alpha\\n'").count(), 2, "{out}");
    assert!(!out.contains("accepted"), "{out}");
    assert_eq!(out.matches("522 SSL connection failed; session reuse required").count(), 4, "{out}");
    // require_ssl_reuse=NO: a full handshake is fine.
    let relaxed = start(dir.path(), &cert, &["require_ssl_reuse=NO"]);
    let out = python(&format!(
        r#"{}a = login()
b = login()
b.reuse_from = a
print('foreign', retr(b, 'a.txt'))
"#,
        py_prelude(&relaxed)
    ));
    assert!(out.contains("foreign b'alpha\\n'"), "{out}");
}

#[test]
fn forced_encryption_refuses_clear_logins_and_data() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &["force_anon_logins_ssl=YES", "local_enable=YES"]);
    let mut c = server.connect();
    let (code, text) = c.cmd("USER anonymous");
    assert_eq!((code, text.trim_end()), (530, "530 Anonymous sessions must use encryption."), "{text}");
    assert!(c.try_read_reply().is_none(), "the connection closes after the refusal");
    let mut c = server.connect();
    let (code, text) = c.cmd("USER somebody");
    assert_eq!((code, text.trim_end()), (530, "530 Non-anonymous sessions must use encryption."));
    // FEAT advertises FTPS; PBSZ and PROT need TLS first; unknown AUTH types.
    let mut c = server.connect();
    let (_, feat) = c.cmd("FEAT");
    for f in [" AUTH TLS", " PBSZ", " PROT"] {
        assert!(feat.contains(f), "FEAT lacks {f}: {feat}");
    }
    assert_eq!(c.cmd("PBSZ 0").1.trim_end(), "503 PBSZ needs a secure connection.");
    assert_eq!(c.cmd("PROT P").1.trim_end(), "503 PROT needs a secure connection.");
    assert_eq!(c.cmd("AUTH KERBEROS").1.trim_end(), "504 Unknown AUTH type.");
    // HELP needs a login, as in vsftpd (its list names AUTH CCC PBSZ PROT then).
    assert_eq!(c.cmd("HELP").1.trim_end(), "530 Please login with USER and PASS.");
    // allow_anon_ssl=NO: anonymous users may not use TLS at all.
    let noanon = {
        let mut all = cert.settings();
        all.push("allow_anon_ssl=NO".into());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        Server::start(dir.path(), &refs)
    };
    let out = python(&format!(
        r#"{}f = FTPS(context=ctx)
f.connect(HOST, PORT, timeout=30)
f.auth()
try:
    f.sendcmd('USER anonymous')
except ftplib.error_perm as e:
    print(e)
"#,
        py_prelude(&noanon)
    ));
    assert!(out.contains("530 Anonymous sessions may not use encryption."), "{out}");
    // force_anon_data_ssl: PROT C data refused with vsftpd's 522.
    let data = start(dir.path(), &cert, &["force_anon_data_ssl=YES"]);
    let out = python(&format!(
        r#"{}f = login()
f.prot_c()
try:
    retr(f, 'a.txt')
except ftplib.error_perm as e:
    print(e)
f.prot_p()
print(retr(f, 'a.txt'))
"#,
        py_prelude(&data)
    ));
    assert!(out.contains("522 Data connections must be encrypted."), "{out}");
    assert!(out.contains("b'alpha\\n'"), "{out}");
}

#[test]
fn upload_cut_without_close_notify_is_not_complete() {
    let dir = tree();
    let cert = Cert::new();
    std::fs::write(dir.path().join("keep.bin"), b"old contents\n").expect("write");
    make_writable(&dir.path().join("keep.bin"));
    // Owned by the anonymous account, so a replace goes through a temporary
    // file (else vsftpd's in-place overwrite applies).
    give_to_anon(&dir.path().join("keep.bin"));
    let xfer = cert.dir.path().join("xferlog");
    let x = format!("xferlog_file={}", xfer.display());
    let server =
        start(dir.path(), &cert, &["ftpd_atomic_uploads=YES", "xferlog_enable=YES", "xferlog_std_format=YES", &x]);
    let script = |server: &Server, name: &str| {
        format!(
            r#"{}# TLS 1.2: no post-handshake tickets left unread, so the close is a
# clean FIN, not a reset.
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
f = login()
conn = f.transfercmd('STOR {name}')
conn.sendall(b'x' * 100000)
# A bare TCP close: no close_notify (what a cut connection looks like).
conn.close()
try:
    print(f.voidresp())
except ftplib.all_errors as e:
    print(e)
"#,
            py_prelude(server)
        )
    };
    let out = python(&script(&server, "keep.bin"));
    assert!(out.contains("426"), "a truncated TLS upload fails: {out}");
    assert_eq!(std::fs::read(dir.path().join("keep.bin")).expect("read"), b"old contents\n", "the old file stays");
    let out = python(&script(&server, "new.bin"));
    assert!(out.contains("426"), "{out}");
    assert!(!dir.path().join("new.bin").exists(), "a cut new upload never appears under its name");
    let log = server.stop();
    assert!(!log.contains("upload complete"), "no upload was complete: {log}");
    assert!(log.contains("without sending TLS close_notify"), "failed for the missing close_notify: {log}");
    // xferlog marks both as incomplete (the last field: c complete, i incomplete).
    let xl = std::fs::read_to_string(&xfer).expect("xferlog");
    let lines: Vec<&str> = xl.lines().collect();
    assert_eq!(lines.len(), 2, "{xl}");
    assert!(lines[0].contains("/keep.bin") && lines[0].ends_with(" i"), "{xl}");
    assert!(lines[1].contains("/new.bin") && lines[1].ends_with(" i"), "{xl}");
    // strict_ssl_read_eof=NO (vsftpd's default) accepts the bare close.
    let lax = start(dir.path(), &cert, &["strict_ssl_read_eof=NO"]);
    let out = python(&script(&lax, "lax.bin"));
    assert!(out.contains("226"), "{out}");
    assert_eq!(std::fs::metadata(dir.path().join("lax.bin")).expect("lax").len(), 100_000);
}

#[test]
fn downloads_end_with_close_notify() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    // ftplib's retrbinary unwraps the data connection: it waits for the
    // server's close_notify and fails without it.
    let out = python(&format!(
        r#"{}f = login()
conn = f.transfercmd('RETR big.bin')
n = 0
while True:
    b = conn.recv(65536)
    if not b:
        break
    n += len(b)
# recv returning b'' means a close_notify arrived (a bare close raises in strict mode).
print('bytes', n)
conn.close()
print(f.voidresp())
"#,
        py_prelude(&server)
    ));
    assert!(out.contains(&format!("bytes {}", 3 << 20)), "{out}");
    assert!(out.contains("226"), "{out}");
}

#[test]
fn implicit_ftps_with_curl() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &["implicit_ssl=YES"]);
    let url = format!("ftps://{}/big.bin", server.addr);
    let out = tempfile::tempdir().expect("tempdir");
    let got = out.path().join("big");
    run_ok(curl(&server).arg(&url).arg("-o").arg(&got));
    assert_eq!(sha256_file(&got), sha256_file(&dir.path().join("big.bin")));
    run_ok(curl(&server).arg("-T").arg(dir.path().join("a.txt")).arg(format!("ftps://{}/imp.txt", server.addr)));
    assert_eq!(std::fs::read(dir.path().join("imp.txt")).expect("imp"), b"alpha\n");
    let listing = run_ok(curl(&server).arg(format!("ftps://{}/dir/", server.addr)));
    assert!(listing.contains("two.txt"), "{listing}");
}

#[test]
fn lftp_mirror_both_ways_over_tls() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &["force_anon_data_ssl=YES", "force_anon_logins_ssl=YES"]);
    let local = tempfile::tempdir().expect("tempdir");
    let down = local.path().join("down");
    let upsrc = local.path().join("upsrc");
    std::fs::create_dir(&upsrc).expect("mkdir");
    random_file(&upsrc.join("u1.bin"), 200_000);
    std::fs::write(upsrc.join("u2.txt"), b"upload two\n").expect("write");
    let script = format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:ssl-protect-list true; \
         set ssl:verify-certificate no; set net:max-retries 1; set net:timeout 20; \
         open -u anonymous,x ftp://{}:{}; mirror dir {}; mirror -R {} up",
        server.addr.ip(),
        server.addr.port(),
        down.display(),
        upsrc.display()
    );
    let out = run(Command::new("lftp").arg("-c").arg(&script));
    assert!(
        out.status.success(),
        "lftp: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["one.bin", "two.txt"] {
        assert_eq!(sha256_file(&down.join(f)), sha256_file(&dir.path().join("dir").join(f)), "mirror {f}");
    }
    for f in ["u1.bin", "u2.txt"] {
        assert_eq!(sha256_file(&dir.path().join("up").join(f)), sha256_file(&upsrc.join(f)), "mirror -R {f}");
    }
    let log = server.stop();
    assert!(log.contains("control connection encrypted"), "{log}");
    assert!(!log.contains("did not resume"), "lftp resumed the control session on data connections");
}

fn start_err(settings: &[String]) -> String {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut all = vec!["ftpd_ebpf=off".to_string(), format!("listen_port={port}"), "ftpd_metrics_listen=".to_string()];
    all.extend(settings.iter().cloned());
    match Server::spawn(None, root.path(), &all, SocketAddr::from(([127, 0, 0, 1], port))) {
        Ok(_) => panic!("ftpd started with {settings:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_certificate_settings_stop_startup_with_the_reason() {
    let cert = Cert::new();
    let other = Cert::new();
    let e = start_err(&["ssl_enable=YES".into(), "rsa_cert_file=/nonexistent/cert.pem".into()]);
    assert!(e.contains("rsa_cert_file=/nonexistent/cert.pem") && e.contains("cannot read"), "{e}");
    let e = start_err(&[
        "ssl_enable=YES".into(),
        format!("rsa_cert_file={}", cert.cert().display()),
        "rsa_private_key_file=/nonexistent/key.pem".into(),
    ]);
    assert!(e.contains("rsa_private_key_file=/nonexistent/key.pem") && e.contains("cannot read"), "{e}");
    let e = start_err(&[
        "ssl_enable=YES".into(),
        format!("rsa_cert_file={}", cert.cert().display()),
        format!("rsa_private_key_file={}", other.key().display()),
    ]);
    assert!(e.contains("does not match the certificate"), "{e}");
    // The key file given as the certificate: no certificate in it.
    let e = start_err(&["ssl_enable=YES".into(), format!("rsa_cert_file={}", cert.key().display())]);
    assert!(e.contains("rsa_cert_file") && e.contains("no CERTIFICATE"), "{e}");
    // No key option: read from the certificate file, as vsftpd; here it has none.
    let e = start_err(&["ssl_enable=YES".into(), format!("rsa_cert_file={}", cert.cert().display())]);
    assert!(e.contains("rsa_cert_file") && e.contains("private key"), "{e}");
    let e = start_err(&[
        "ssl_enable=YES".into(),
        format!("rsa_cert_file={}", cert.cert().display()),
        format!("rsa_private_key_file={}", cert.key().display()),
        "ssl_ciphers=DES-CBC3-SHA".into(),
    ]);
    assert!(e.contains("ssl_ciphers"), "{e}");
}

#[test]
fn certificate_and_key_in_one_file() {
    let dir = tree();
    let cert = Cert::new();
    let both = cert.dir.path().join("both.pem");
    let mut pem = std::fs::read(cert.cert()).expect("cert");
    pem.extend(std::fs::read(cert.key()).expect("key"));
    std::fs::write(&both, pem).expect("write");
    run_ok(Command::new("chmod").arg("600").arg(&both));
    let server = Server::start(
        dir.path(),
        &["ssl_enable=YES", &format!("rsa_cert_file={}", both.display()), "allow_anon_ssl=YES"],
    );
    let got = run_ok(curl(&server).arg("--ssl-reqd").arg(server.url("a.txt")));
    assert_eq!(got, "alpha\n");
}

#[test]
fn metrics_count_tls_sessions_transfers_and_handshake_failures() {
    let dir = tree();
    let cert = Cert::new();
    let maddr = format!("127.0.0.1:{}", free_port());
    let server = start(dir.path(), &cert, &[&format!("ftpd_metrics_listen={maddr}")]);
    let out = python(&format!(
        r#"{}f = login()
retr(f, 'a.txt')
f.storbinary('STOR m.txt', io.BytesIO(b'm'))
f.prot_c()
retr(f, 'a.txt')
b = login()
b.reuse_from = f
try:
    retr(b, 'a.txt')
except ftplib.error_perm as e:
    print(e)
except (OSError, EOFError) as e:
    print(e, b.getline())
# A client that speaks no TLS at all after AUTH.
s = socket.create_connection((HOST, PORT))
s.recv(100)
s.sendall(b'AUTH TLS\r\n')
s.recv(100)
s.sendall(b'GET / HTTP/1.0\r\n\r\n')
s.recv(100)
"#,
        py_prelude(&server)
    ));
    assert!(out.contains("522"), "{out}");
    let m = ftpd_tests::http_get(&maddr, "/metrics", "").raw;
    for want in [
        "ftpd_tls_sessions_total{tls=\"yes\"} 2",
        "ftpd_tls_transfers_total{direction=\"download\",tls=\"yes\"} 1",
        "ftpd_tls_transfers_total{direction=\"download\",tls=\"no\"} 1",
        "ftpd_tls_transfers_total{direction=\"upload\",tls=\"yes\"} 1",
        "ftpd_tls_handshake_failures_total{reason=\"no_session_reuse\"} 1",
        "ftpd_tls_handshake_failures_total{reason=\"protocol\"} 1",
        // This kernel has no CONFIG_TLS.
        "ftpd_ktls_available 0",
    ] {
        assert!(m.contains(want), "metrics lack {want}:\n{m}");
    }
}

#[test]
fn abor_during_a_tls_download() {
    let dir = tree();
    let cert = Cert::new();
    random_file(&dir.path().join("huge.bin"), 64 << 20);
    let server = start(dir.path(), &cert, &["anon_max_rate=2000000"]);
    let out = python(&format!(
        r#"{}f = login()
conn = f.transfercmd('RETR huge.bin')
assert len(conn.recv(65536)) > 0
f.sock.sendall(b'ABOR\r\n')
print(f.getline())
print(f.getline())
conn.close()
print(f.pwd())
"#,
        py_prelude(&server)
    ));
    assert!(out.contains("426 Failure writing network stream."), "{out}");
    assert!(out.contains("226 ABOR successful."), "{out}");
    assert!(out.trim_end().ends_with('/'), "the session goes on: {out}");
}

#[test]
fn rate_limit_holds_over_tls() {
    let dir = tree();
    let cert = Cert::new();
    random_file(&dir.path().join("four.bin"), 4_000_000);
    let server = start(dir.path(), &cert, &["anon_max_rate=2000000"]);
    let out = python(&format!(
        r#"{}import time
f = login()
t = time.monotonic()
d = retr(f, 'four.bin')
print('down', len(d), round(time.monotonic() - t, 2))
t = time.monotonic()
f.storbinary('STOR four-up.bin', io.BytesIO(d))
print('up', round(time.monotonic() - t, 2))
"#,
        py_prelude(&server)
    ));
    let secs = |tag: &str| -> f64 {
        out.lines()
            .find(|l| l.starts_with(tag))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{tag} in {out}"))
    };
    assert!(out.contains("down 4000000"), "{out}");
    // 4 MB at 2 MB/s: about 2 s (the first burst is free), far from the
    // milliseconds loopback takes unlimited.
    assert!(secs("down") > 1.2, "download over TLS is paced: {out}");
    assert!(secs("up") > 1.2, "upload over TLS is paced: {out}");
    assert_eq!(std::fs::metadata(dir.path().join("four-up.bin")).expect("up").len(), 4_000_000);
}

#[test]
fn ccc_returns_the_control_connection_to_clear_text() {
    let dir = tree();
    let cert = Cert::new();
    // curl drops its TLS session when the control connection leaves TLS, so
    // its data connections after CCC cannot resume it.
    let server = start(dir.path(), &cert, &["require_ssl_reuse=NO"]);
    let out = tempfile::tempdir().expect("tempdir");
    let got = out.path().join("big");
    let o =
        run(curl(&server).args(["-v", "--ssl-reqd", "--ftp-ssl-ccc"]).arg(server.url("big.bin")).arg("-o").arg(&got));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("200 Control connection now in clear text."), "{err}");
    assert_eq!(sha256_file(&got), sha256_file(&dir.path().join("big.bin")));
    let log = server.stop();
    assert!(log.contains("CCC"), "{log}");
    // Before login CCC is refused, so forced-TLS logins stay encrypted.
    let server = start(dir.path(), &cert, &[]);
    let o = python(&format!(
        r#"{}f = FTPS(context=ctx)
f.connect(HOST, PORT, timeout=30)
f.auth()
try:
    f.sendcmd('CCC')
except ftplib.error_perm as e:
    print(e)
"#,
        py_prelude(&server)
    ));
    assert!(o.contains("533 CCC is only allowed after login."), "{o}");
}

/// A CA and a client certificate it signed, for `require_cert`/`validate_cert`.
fn client_certs(dir: &Path) {
    let sh = format!(
        "set -e; cd {}; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null; \
         openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr 2>/dev/null; \
         printf 'extendedKeyUsage=clientAuth\\n' > ext; \
         openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem \
           -extfile ext 2>/dev/null; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=stranger -keyout stranger.key \
           -out stranger.pem 2>/dev/null",
        dir.display()
    );
    run_ok(Command::new("sh").arg("-c").arg(sh));
}

#[test]
fn client_certificates_required_and_validated() {
    let dir = tree();
    let cert = Cert::new();
    let certs = tempfile::tempdir().expect("tempdir");
    client_certs(certs.path());
    let c = |name: &str| certs.path().join(name).display().to_string();
    let get = |server: &Server, who: Option<&str>| {
        let mut cmd = curl(server);
        cmd.arg("--ssl-reqd");
        if let Some(w) = who {
            cmd.args(["--cert", &c(&format!("{w}.pem")), "--key", &c(&format!("{w}.key"))]);
        }
        // Two files: the second data connection resumes with the certificate.
        let out = run(cmd.arg(server.url("a.txt")).arg(server.url("dir/two.txt")));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // require_cert without validate_cert: any certificate, but one is needed.
    let any = start(dir.path(), &cert, &["require_cert=YES"]);
    assert_eq!(get(&any, None), None, "no certificate: refused");
    assert_eq!(get(&any, Some("stranger")).as_deref(), Some("alpha\ntwo\n"));
    // validate_cert: only certificates from ca_certs_file's CA.
    let ca = format!("ca_certs_file={}", c("ca.pem"));
    let strict = start(dir.path(), &cert, &["require_cert=YES", "validate_cert=YES", &ca]);
    assert_eq!(get(&strict, Some("stranger")), None, "a certificate from another CA: refused");
    assert_eq!(get(&strict, Some("client")).as_deref(), Some("alpha\ntwo\n"));
    let e = start_err(&[
        "ssl_enable=YES".into(),
        format!("rsa_cert_file={}", cert.cert().display()),
        format!("rsa_private_key_file={}", cert.key().display()),
        "require_cert=YES".into(),
        "validate_cert=YES".into(),
    ]);
    assert!(e.contains("ca_certs_file"), "{e}");
}

#[test]
fn implicit_ftps_refusal_is_readable() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &["implicit_ssl=YES", "max_per_ip=1"]);
    let out = python(&format!(
        r#"{}def open_one():
    s = ctx.wrap_socket(socket.create_connection((HOST, PORT), timeout=10), server_hostname=HOST)
    return s, s.recv(200).decode()
a, first = open_one()
print('first', first.strip())
b, second = open_one()
print('second', second.strip())
"#,
        py_prelude(&server)
    ));
    assert!(out.contains("first 220"), "{out}");
    assert!(out.contains("second 421"), "the refusal is sent over TLS: {out}");
}

#[test]
fn tls12_resumes_by_session_id_and_by_ticket_with_extended_master_secret() {
    // RFC 4217 clients on TLS 1.2 resume either way: with a ticket, or (a
    // client that refuses tickets) with the session id. Both must work under
    // require_ssl_reuse=YES, and report that they resumed.
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    let out = python(&format!(
        r#"{}for tickets in (True, False):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = c.maximum_version = ssl.TLSVersion.TLSv1_2
    if not tickets:
        c.options |= ssl.OP_NO_TICKET
    f = login(c)
    for i in range(3):
        assert retr(f, 'a.txt') == b'alpha\n'
    s = f.sock.session
    print('tickets' if tickets else 'session-id', f.sock.version(), 'ticket' if s.has_ticket else 'no-ticket', 'ok')
"#,
        py_prelude(&server)
    ));
    assert!(out.contains("tickets TLSv1.2 ticket ok"), "{out}");
    assert!(out.contains("session-id TLSv1.2 no-ticket ok"), "{out}");
    // rustls negotiates the extended master secret (RFC 7627) on every TLS
    // 1.2 handshake and refuses to resume a session without it.
    let log = server.stop();
    assert!(!log.contains("session reuse required"), "{log}");
}

#[test]
fn a_refused_data_handshake_leaves_a_file_replaced_in_place_untouched() {
    // A file the anonymous account may write but does not own is replaced
    // in place (its owner is kept, as in vsftpd). The truncation must wait
    // for the data connection's TLS handshake: a refused one changes nothing.
    let dir = tree();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"published before").expect("write");
    std::os::unix::fs::chown(&victim, Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o666)).expect("chmod");
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    let out = python(&format!(
        r#"{}class Fresh(FTPS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        return self.context.wrap_socket(conn, server_hostname=self.host), size
n = Fresh(context=ctx)
n.connect(HOST, PORT, timeout=30)
n.login()
n.prot_p()
try:
    n.storbinary('STOR victim.txt', io.BytesIO(b'replaced'))
    print('stored')
except ftplib.error_perm as e:
    print('refused', e)
except (OSError, EOFError) as e:
    print('refused', e, n.getline())
"#,
        py_prelude(&server)
    ));
    assert!(out.contains("refused") && out.contains("522"), "{out}");
    assert_eq!(std::fs::read(&victim).expect("read"), b"published before", "{out}");
}

#[test]
fn a_data_connection_must_present_the_control_connections_certificate() {
    // With require_ssl_reuse=NO a data connection may make a full handshake,
    // but under require_cert it must be the same client: the certificate of
    // the control connection, not another one (vsftpd refuses it too).
    let dir = tree();
    let cert = Cert::new();
    let certs = tempfile::tempdir().expect("tempdir");
    client_certs(certs.path());
    let c = |name: &str| certs.path().join(name).display().to_string();
    let server = start(dir.path(), &cert, &["require_cert=YES", "require_ssl_reuse=NO"]);
    let out = python(&format!(
        r#"{}def ctx_with(name):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.load_cert_chain({dir:?} + '/' + name + '.pem', {dir:?} + '/' + name + '.key')
    return c
class Full(FTPS):
    data_ctx = None
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        return self.data_ctx.wrap_socket(conn, server_hostname=self.host), size
for data_name in ('client', 'stranger'):
    f = Full(context=ctx_with('client'))
    f.data_ctx = ctx_with(data_name)
    f.connect(HOST, PORT, timeout=30)
    f.login()
    f.prot_p()
    try:
        print(data_name, retr(f, 'a.txt'))
    except ftplib.error_perm as e:
        print(data_name, 'refused', e)
    except (OSError, EOFError) as e:
        print(data_name, 'refused', e, f.getline())
"#,
        py_prelude(&server),
        dir = c("").trim_end_matches('/').to_string()
    ));
    assert!(out.contains("client b'alpha\\n'"), "the same certificate: {out}");
    assert!(out.contains("stranger refused") && out.contains("522"), "another certificate: {out}");
}

#[test]
fn accounts_named_ftp_are_forced_to_tls_when_anonymous_logins_are_off() {
    // With anonymous_enable=NO, `ftp` and `anonymous` are ordinary accounts
    // (here virtual users): their passwords must not cross in clear text
    // under force_local_logins_ssl, whether or not local_enable is on.
    let dir = tree();
    let cert = Cert::new();
    let users = tempfile::tempdir().expect("tempdir");
    let file = users.path().join("users");
    for name in ["ftp", "anonymous", "alice"] {
        let mut child = Command::new(ftpd_tests::ftpd_bin())
            .arg("passwd")
            .arg(&file)
            .arg(name)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ftpd passwd");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), b"secret1\n").expect("password");
        assert!(child.wait().expect("wait").success());
    }
    let vfile = format!("virtual_users_file={}", file.display());
    let root = format!("local_root={}", dir.path().display());
    for local in ["local_enable=YES", "local_enable=NO"] {
        let server = start(
            dir.path(),
            &cert,
            &[
                "anonymous_enable=NO",
                local,
                "guest_enable=YES",
                "guest_username=nobody",
                &vfile,
                &root,
                "allow_writeable_chroot=YES",
            ],
        );
        for name in ["ftp", "anonymous", "alice"] {
            let mut c = server.connect();
            let (code, text) = c.cmd(&format!("USER {name}"));
            assert_eq!(
                (code, text.trim_end()),
                (530, "530 Non-anonymous sessions must use encryption."),
                "{local}, USER {name}"
            );
        }
    }
}

#[test]
fn a_data_handshake_that_never_starts_is_a_data_timeout() {
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &["data_connection_timeout=2"]);
    let out = python(&format!(
        r#"{}import time, re
f = login()
host, port = ftplib.parse227(f.sendcmd('PASV'))
raw = socket.create_connection((host, port), timeout=30)
f.putcmd('RETR a.txt')
print('first', f.getresp() if False else f.getline())
t0 = time.time()
line = f.getline()
print('then', line, round(time.time() - t0, 1))
"#,
        py_prelude(&server)
    ));
    let secs: f64 = out.split_whitespace().last().and_then(|s| s.parse().ok()).unwrap_or(99.0);
    assert!(out.contains("first 150") && out.contains("then 522"), "{out}");
    assert!(secs < 10.0, "the handshake waited {secs} s, data_connection_timeout is 2: {out}");
}

#[test]
fn ccc_with_the_clients_close_notify_on_tls12_and_tls13() {
    // A client that answers CCC with its own close_notify, as RFC 4217 asks
    // (Python's unwrap()): on TLS 1.3 the alert is wrapped in a record that
    // looks like application data. The next clear-text command must work.
    let dir = tree();
    let cert = Cert::new();
    let server = start(dir.path(), &cert, &[]);
    let out = python(&format!(
        r#"{}for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = c.maximum_version = v
    f = FTPS(context=c)
    f.connect(HOST, PORT, timeout=10)
    f.login()
    print(v.name, f.sendcmd('CCC'))
    f.sock = f.sock.unwrap()
    f.file = f.sock.makefile('r', encoding='latin-1')
    print(v.name, f.sendcmd('NOOP'))
    print(v.name, f.sendcmd('PWD'))
"#,
        py_prelude(&server)
    ));
    for v in ["TLSv1_2", "TLSv1_3"] {
        assert!(out.contains(&format!("{v} 200 NOOP ok.")), "{out}");
        assert!(out.contains(&format!("{v} 257 \"/\"")), "{out}");
    }
}
