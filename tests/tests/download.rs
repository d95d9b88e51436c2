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
