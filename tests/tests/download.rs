//! Real clients download from a real ftpd: curl and Python's ftplib, a 100 MiB
//! random file, SHA-256 compared.

use std::process::Command;

use ftpd_tests::{Server, python, random_file, run_ok, sha256_file};

const BIG: u64 = 100 << 20;

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    random_file(&dir.path().join("big.bin"), BIG);
    std::fs::create_dir(dir.path().join("pub")).expect("mkdir");
    std::fs::write(dir.path().join("pub/readme.txt"), b"hello\n").expect("write");
    dir
}

#[test]
fn curl_lists_and_downloads_100_mib() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let listing = run_ok(Command::new("curl").args(["-sS", "--max-time", "30", &server.url("/")]));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(
        lines[0].starts_with("-rw") && lines[0].ends_with(" big.bin") && lines[0].contains(&BIG.to_string()),
        "{listing}"
    );
    assert!(lines[1].starts_with('d') && lines[1].ends_with(" pub"), "{listing}");
    let names = run_ok(Command::new("curl").args(["-sS", "--list-only", &server.url("/pub/")]));
    // curl transfers listings in ASCII mode and turns CRLF into LF.
    assert_eq!(names, "readme.txt\n");

    let out = dir.path().join("got.bin");
    run_ok(Command::new("curl").args(["-sS", "--max-time", "120", "-o"]).arg(&out).arg(server.url("/big.bin")));
    assert_eq!(std::fs::metadata(&out).expect("downloaded").len(), BIG);
    assert_eq!(sha256_file(&out), sha256_file(&dir.path().join("big.bin")));
    // EPSV (curl's default) and PASV (--disable-epsv) both work.
    let small = run_ok(Command::new("curl").args(["-sS", "--disable-epsv", &server.url("/pub/readme.txt")]));
    assert_eq!(small, "hello\n");
}

#[test]
fn ftplib_lists_and_downloads_100_mib() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let out = dir.path().join("got.bin");
    let code = format!(
        r#"
import ftplib, hashlib
f = ftplib.FTP()
f.connect("{ip}", {port}, timeout=30)
print(f.login())
print(sorted(f.nlst()))
lines = []
f.retrlines("LIST", lines.append)
print(len(lines))
print(f.size("big.bin"))
h = hashlib.sha256()
with open("{out}", "wb") as o:
    def chunk(b):
        h.update(b); o.write(b)
    print(f.retrbinary("RETR big.bin", chunk, blocksize=1 << 20))
print(h.hexdigest())
f.cwd("pub")
print(f.pwd())
print(f.quit())
"#,
        ip = server.addr.ip(),
        port = server.addr.port(),
        out = out.display()
    );
    let got = python(&code);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "230 Login successful.");
    assert_eq!(lines[1], "['big.bin', 'pub']");
    assert_eq!(lines[2], "2");
    assert_eq!(lines[3], BIG.to_string());
    assert_eq!(lines[4], "226 Transfer complete.");
    assert_eq!(lines[5], sha256_file(&dir.path().join("big.bin")));
    assert_eq!(lines[6], "/pub");
    assert_eq!(lines[7], "221 Goodbye.");
    assert_eq!(sha256_file(&out), lines[5]);
}

#[test]
fn rest_resumes_a_download() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let full = std::fs::read(dir.path().join("big.bin")).expect("read");
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    c.cmd_ok("REST 104857000", 350);
    let (bytes, code, text) = c.transfer("RETR big.bin");
    assert_eq!(code, 226, "{text}");
    assert_eq!(bytes, &full[104_857_000..]);
    // REST applies to one transfer only.
    let (bytes, code, _) = c.transfer("RETR pub/readme.txt");
    assert_eq!((bytes.as_slice(), code), (&b"hello\n"[..], 226));
}

/// Segments a socket received and its receive MSS, from `TCP_INFO` (fields
/// at fixed offsets: the kernel only ever appends to `struct tcp_info`).
fn segments_in(sock: &std::net::TcpStream) -> (u32, u32) {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &raw mut len)
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    let at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().expect("4 bytes"));
    (at(140), at(20))
}

/// A big download goes out in full segments: a socket left uncorked between
/// sendfile calls sends each call's tail as a short segment of its own (on
/// loopback about 45 KB per segment instead of 64 KB, 1.7 times the
/// segments per GiB of ProFTPD, which corks).
#[test]
fn a_big_download_goes_out_in_full_segments() {
    use std::io::Read;
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let mut best = 0.0f64;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut data = c.pasv_connect();
        c.cmd_ok("RETR big.bin", 150);
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = data.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        let (segs, mss) = segments_in(&data);
        drop(data);
        let (code, text) = c.read_reply();
        assert_eq!(code, 226, "{text}");
        assert_eq!(got, BIG);
        let fill = got as f64 / f64::from(segs) / f64::from(mss);
        seen.push(format!("{segs} segments of MSS {mss}: {:.0} %", fill * 100.0));
        best = best.max(fill);
    }
    assert!(best >= 0.85, "segments {best:.2} full on average (best of 3): {seen:?}");
}
