//! The "ceiling" server: what the kernel alone can do for one transfer,
//! the target for ftpd. Just enough HTTP/1.0 for curl and the bench client.
//!
//! `GET /NAME` is one `sendfile(2)` loop, `PUT /NAME` one `splice(2)` loop
//! through a pipe. One blocking thread per connection, no protocol state
//! beyond the request line, so what is left is the kernel's own cost of
//! moving the bytes.

use std::{
    fs::File,
    io::{self, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Component, Path, PathBuf},
    thread,
};

use anyhow::{Context, Result};

/// Where the ceiling server listens and what it serves.
#[derive(clap::Args)]
pub(crate) struct CeilingArgs {
    /// TCP port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Directory that request paths are relative to.
    #[arg(long)]
    dir: PathBuf,
}

/// Largest request head accepted; curl's is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes moved per splice call and the pipe size: big chunks keep the number
/// of system calls per GiB, and so the CPU cost, near the kernel's minimum.
const CHUNK: usize = 1 << 20;

/// Serves until killed.
///
/// # Errors
///
/// When the port cannot be bound.
pub(crate) fn run(args: &CeilingArgs) -> Result<()> {
    let listener =
        TcpListener::bind(("127.0.0.1", args.port)).with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    // std listens with a backlog of 128; the 256-client workload connects all
    // at once, and a dropped SYN costs a one-second retransmit that would be
    // charged to the "ceiling". Calling listen(2) again raises the backlog.
    // SAFETY: the fd is the listener's own, alive for this call.
    if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
        return Err(io::Error::last_os_error()).context("raising the listen backlog");
    }
    let dir = args.dir.clone();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let dir = dir.clone();
        thread::spawn(move || {
            if let Err(e) = serve(conn, &dir) {
                eprintln!("[ceiling] {e:#}");
            }
        });
    }
    Ok(())
}

/// One request on `conn`, then close.
fn serve(mut conn: TcpStream, dir: &Path) -> Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return reply(&mut conn, "400 Bad Request");
        }
        let n = conn.read(&mut buf).context("reading the request")?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (request.next().unwrap_or_default(), request.next().unwrap_or_default());
    let length: Option<u64> = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    });
    let Some(path) = resolve(dir, target) else { return reply(&mut conn, "400 Bad Request") };
    match (method, length) {
        ("GET", _) => get(&mut conn, &path),
        ("PUT", Some(length)) => put(&mut conn, &path, &head[end..], length),
        _ => reply(&mut conn, "400 Bad Request"),
    }
}

/// `target` as a path under `dir`, if it stays there.
fn resolve(dir: &Path, target: &str) -> Option<PathBuf> {
    let rel = Path::new(target.strip_prefix('/')?);
    rel.components().all(|c| matches!(c, Component::Normal(_))).then(|| dir.join(rel))
}

fn reply(conn: &mut TcpStream, status: &str) -> Result<()> {
    conn.write_all(format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).context("replying")
}

fn get(conn: &mut TcpStream, path: &Path) -> Result<()> {
    let Ok(file) = File::open(path) else { return reply(conn, "404 Not Found") };
    let size = file.metadata().with_context(|| format!("stat {}", path.display()))?.len();
    conn.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .context("sending the header")?;
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(0x7fff_f000);
        // SAFETY: both fds are open for the duration of the call; a null
        // offset means "use and advance the file's own offset".
        let n = unsafe { libc::sendfile(conn.as_raw_fd(), file.as_raw_fd(), std::ptr::null_mut(), want) };
        match n {
            0 => anyhow::bail!("{} ended early", path.display()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e).context("sendfile");
                }
            }
            // n > 0 here, and never more than asked.
            n => left -= n.unsigned_abs() as u64,
        }
    }
    Ok(())
}

fn put(conn: &mut TcpStream, path: &Path, early: &[u8], length: u64) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // Bytes that arrived with the head belong to the body and come first.
    let early = &early[..usize::try_from(length).unwrap_or(usize::MAX).min(early.len())];
    file.write_all(early).context("writing the body")?;
    let mut left = length - early.len() as u64;
    let (pipe_r, pipe_w) = pipe()?;
    // A bigger pipe lets one splice move a whole chunk; if the system's
    // pipe-max-size is lower this fails and the default size is used.
    // SAFETY: fcntl on a pipe fd we own.
    unsafe { libc::fcntl(pipe_w.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
        let mut n = splice(conn.as_raw_fd(), pipe_w.as_raw_fd(), want, flags).context("splice socket to pipe")?;
        if n == 0 {
            anyhow::bail!("client closed with {left} bytes of the body missing");
        }
        left -= n as u64;
        while n > 0 {
            let m = splice(pipe_r.as_raw_fd(), file.as_raw_fd(), n, flags).context("splice pipe to file")?;
            if m == 0 {
                anyhow::bail!("splice to {} wrote nothing", path.display());
            }
            n -= m;
        }
    }
    reply(conn, "201 Created")
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One splice(2) of up to `len` bytes between fds at their current offsets,
/// retried on EINTR.
fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> io::Result<usize> {
    loop {
        // SAFETY: both fds are open; null offsets use the fds' own positions.
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
