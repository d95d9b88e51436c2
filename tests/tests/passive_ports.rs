//! A small passive range serves many clients: a port is shared by sessions
//! of different client addresses, each data connection going to the session
//! that waits for its address; two sessions of one address never share a
//! port.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use ftpd_tests::{Ftp, Server, SocketSetup, pasv_addr, random_file, tcp_connect, tcp_connect_within};

/// Four ports, somewhere no other test's range is (`which`: this file's
/// tests run at once).
fn range(which: u16) -> (u16, u16) {
    let lo = 27_000 + u16::try_from(std::process::id() % 200).unwrap() * 8 + which * 4;
    (lo, lo + 3)
}

fn settings(lo: u16, hi: u16) -> Vec<String> {
    vec![format!("pasv_min_port={lo}"), format!("pasv_max_port={hi}"), "max_per_ip=0".into(), "max_clients=0".into()]
}

fn source(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 1 + u8::try_from(i / 250).unwrap(), 1 + u8::try_from(i % 250).unwrap()])
}

fn data_from(to: SocketAddr, from: IpAddr) -> std::net::TcpStream {
    let s = tcp_connect(to, SocketSetup { source: Some(from), ..SocketSetup::default() }).expect("data connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[test]
fn two_hundred_clients_transfer_at_once_through_four_ports() {
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("f.bin"), 256 * 1024);
    let want = std::fs::read(d.path().join("f.bin")).unwrap();
    let (lo, hi) = range(0);
    let s = settings(lo, hi);
    let refs: Vec<&str> = s.iter().map(String::as_str).collect();
    let server = Server::start(d.path(), &refs);
    // Every client asks for a port before any connects: 200 sessions wait
    // on 4 ports at once.
    let mut sessions = Vec::new();
    for i in 0..200 {
        let mut c = Ftp::connect_from(server.addr, source(i));
        assert_eq!(c.read_reply().0, 220);
        c.cmd("USER anonymous");
        c.cmd_ok("TYPE I", 200);
        let text = c.cmd_ok("PASV", 227);
        let at = SocketAddr::from(pasv_addr(&text).unwrap_or_else(|| panic!("{text}")));
        sessions.push((c, at));
    }
    let ports: HashSet<u16> = sessions.iter().map(|(_, at)| at.port()).collect();
    assert!(ports.iter().all(|p| (lo..=hi).contains(p)), "{ports:?}");
    assert_eq!(ports.len(), 4, "all four ports in use: {ports:?}");
    // All connect and download at once, each to the port it was given.
    let results: Vec<(usize, Vec<u8>, u16)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, (mut c, at))| {
                scope.spawn(move || {
                    let mut data = data_from(at, source(i));
                    c.send_raw(b"RETR f.bin\r\n").unwrap();
                    let (code, text) = c.read_reply();
                    assert_eq!(code, 150, "client {i}: {text}");
                    let mut got = Vec::new();
                    data.read_to_end(&mut got).unwrap();
                    (i, got, c.read_reply().0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    for (i, got, code) in &results {
        assert_eq!(*code, 226, "client {i}");
        assert!(*got == want, "client {i}: {} bytes, not the file", got.len());
    }
    let log = server.stop();
    assert_eq!(log.matches("download complete").count(), 200, "{log}");
}

#[test]
fn one_address_never_shares_a_port_with_itself_and_strangers_are_closed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f.txt"), b"hello\n").unwrap();
    let (lo, hi) = range(1);
    let s = settings(lo, hi);
    let refs: Vec<&str> = s.iter().map(String::as_str).collect();
    let server = Server::start(d.path(), &refs);
    let me = IpAddr::from([127, 0, 3, 1]);
    let mut mine = Vec::new();
    for _ in 0..4 {
        let mut c = Ftp::connect_from(server.addr, me);
        c.read_reply();
        c.cmd("USER anonymous");
        let text = c.cmd_ok("PASV", 227);
        mine.push((c, SocketAddr::from(pasv_addr(&text).unwrap())));
    }
    let ports: HashSet<u16> = mine.iter().map(|(_, at)| at.port()).collect();
    assert_eq!(ports.len(), 4, "four sessions of one address, four ports");
    let mut fifth = Ftp::connect_from(server.addr, me);
    fifth.read_reply();
    fifth.cmd("USER anonymous");
    assert_eq!(fifth.cmd("PASV").0, 425, "no port left that this address is not waiting on");
    // Another address shares a port with one of them.
    let other = IpAddr::from([127, 0, 3, 2]);
    let mut o = Ftp::connect_from(server.addr, other);
    o.read_reply();
    o.cmd("USER anonymous");
    let text = o.cmd_ok("PASV", 227);
    let shared = SocketAddr::from(pasv_addr(&text).unwrap());
    assert!(ports.contains(&shared.port()));
    // A stranger (no session waits for it) connecting to that port is
    // closed (or, with the kernel plane, its SYN dropped: no pinhole for
    // it), and neither waiting session is disturbed.
    let stranger = SocketSetup { source: Some(IpAddr::from([127, 0, 3, 9])), ..SocketSetup::default() };
    if let Ok(mut s) = tcp_connect_within(shared, stranger, Duration::from_secs(2)) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "closed");
    } else {
        assert!(server.kernel_plane(), "only XDP drops a stranger's SYN");
    }
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    for (i, (_, at)) in mine.iter().enumerate() {
        by_port.insert(at.port(), i);
    }
    let (mut c, at) = mine.swap_remove(by_port[&shared.port()]);
    for (ftp, addr, from) in [(&mut c, at, me), (&mut o, shared, other)] {
        let data = data_from(addr, from);
        let (bytes, code, _) = ftp.transfer_on(data, "RETR f.txt");
        assert_eq!((bytes.as_slice(), code), (&b"hello\n"[..], 226), "{from}");
    }
}

/// One port only: the attacks a hostile tester found.
fn one_port_server(d: &std::path::Path, which: u16) -> Server {
    let (lo, _) = range(which);
    let s = settings(lo, lo);
    let refs: Vec<&str> = s.iter().map(String::as_str).collect();
    Server::start(d, &refs)
}

fn pasv_session(server: &Server, from: IpAddr) -> (Ftp, SocketAddr) {
    let mut c = Ftp::connect_from(server.addr, from);
    c.read_reply();
    c.cmd("USER anonymous");
    let text = c.cmd_ok("PASV", 227);
    (c, SocketAddr::from(pasv_addr(&text).unwrap()))
}

#[test]
fn a_session_whose_data_connection_came_still_holds_its_port_against_its_own_address() {
    // A client connects its data connection right after PASV, before RETR
    // (as clients do): its session still holds the port, so a second
    // session of the same address gets no place there.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f.txt"), b"hello\n").unwrap();
    let server = one_port_server(d.path(), 2);
    let me = IpAddr::from([127, 0, 4, 1]);
    let (mut a, at) = pasv_session(&server, me);
    let data = data_from(at, me);
    std::thread::sleep(Duration::from_millis(200));
    let mut b = Ftp::connect_from(server.addr, me);
    b.read_reply();
    b.cmd("USER anonymous");
    assert_eq!(b.cmd("PASV").0, 425, "the one port is held by this address's other session");
    let (bytes, code, _) = a.transfer_on(data, "RETR f.txt");
    assert_eq!((bytes.as_slice(), code), (&b"hello\n"[..], 226));
}

#[test]
fn a_stranger_never_disturbs_a_session_on_a_shared_port() {
    // Two clients share the one port; one's data connection has come. A
    // stranger connecting then is closed, and the other session still gets
    // its own connection.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f.txt"), b"hello\n").unwrap();
    let server = one_port_server(d.path(), 3);
    let (x, y) = (IpAddr::from([127, 0, 5, 1]), IpAddr::from([127, 0, 5, 2]));
    let (mut cx, at) = pasv_session(&server, x);
    let (mut cy, at_y) = pasv_session(&server, y);
    assert_eq!(at, at_y, "one port, shared");
    let dy = data_from(at, y);
    std::thread::sleep(Duration::from_millis(200));
    let stranger = SocketSetup { source: Some(IpAddr::from([127, 0, 5, 9])), ..SocketSetup::default() };
    if let Ok(mut s) = tcp_connect_within(at, stranger, Duration::from_secs(2)) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "closed");
    }
    let dx = data_from(at, x);
    for (c, data, who) in [(&mut cx, dx, x), (&mut cy, dy, y)] {
        let (bytes, code, text) = c.transfer_on(data, "RETR f.txt");
        assert_eq!((bytes.as_slice(), code), (&b"hello\n"[..], 226), "{who}: {text}");
    }
}
