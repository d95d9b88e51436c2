//! Privileged: the real XDP program, loaded by ftpd inside its own network
//! namespace, on a veth whose other end is a client namespace. Run by
//! `cargo xtask test` as root (`--ignored`); each test builds and removes its
//! own namespaces, also when it fails.

use std::{process::Command, time::Duration};

use ftpd_tests::{NetPair, privileged, random_file, run_ok, sha256_file};

const PRIV: &str = "privileged: creates network namespaces and loads eBPF (cargo xtask test as root)";

/// The counters from STAT, as `name -> value`.
fn counters(pair: &NetPair) -> std::collections::HashMap<String, u64> {
    let (line, counters) = pair.counters(pair.client_ip);
    assert!(line.contains(&pair.server_if), "attached to the wrong interface: {line}");
    counters
}

fn xdp_attached(pair: &NetPair) -> bool {
    let out = run_ok(Command::new("ip").args(["-n", &pair.server_ns, "link", "show", "dev", &pair.server_if]));
    out.contains("xdp")
}

#[test]
#[ignore = "privileged: cargo xtask test as root"]
fn xdp_counts_a_download_from_another_namespace() {
    assert!(privileged(), "{PRIV}");
    let dir = tempfile::tempdir().unwrap();
    random_file(&dir.path().join("f.bin"), 20 << 20);
    let pair = NetPair::new();
    let names = (pair.server_ns.clone(), pair.client_ns.clone());
    {
        let server = pair.start_server(None, dir.path(), &[]);
        assert!(server.log().contains("eBPF data plane loaded"), "{}", server.log());
        assert!(xdp_attached(&pair), "no XDP program on {}", pair.server_if);
        let before = counters(&pair);

        let out = dir.path().join("got.bin");
        run_ok(pair.client_cmd("curl").args(["-sS", "--max-time", "60", "-o"]).arg(&out).arg(server.url("/f.bin")));
        assert_eq!(sha256_file(&out), sha256_file(&dir.path().join("f.bin")));

        let after = counters(&pair);
        // The download's ACKs go to the passive port, its commands to 2121.
        let moved = |k: &str| after[k] - before[k];
        assert!(moved("pasv_packets") >= 50, "pasv_packets moved by {}: {after:?}", moved("pasv_packets"));
        assert!(moved("pasv_bytes") >= 50 * 52, "{after:?}");
        // A STAT session and the curl session: at least the 3-way handshakes and commands.
        assert!(moved("control_packets") >= 10, "{after:?}");

        let log = server.stop();
        assert!(log.contains("Data plane: eBPF on"), "{log}");
        // A clean exit detaches the program.
        assert!(!xdp_attached(&pair), "XDP still attached after SIGTERM");
    }
    drop(pair);
    assert!(!NetPair::exists(&names.0) && !NetPair::exists(&names.1), "namespaces left behind");
}

#[test]
#[ignore = "privileged: cargo xtask test as root"]
fn sigkill_leaves_no_program_attached() {
    assert!(privileged(), "{PRIV}");
    let dir = tempfile::tempdir().unwrap();
    let pair = NetPair::new();
    let server = pair.start_server(None, dir.path(), &[]);
    assert!(xdp_attached(&pair));
    let pid = server.pid();
    run_ok(Command::new("kill").args(["-KILL", &pid.to_string()]));
    // The bpf_link dies with its last fd, i.e. with the process.
    let mut attached = true;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        attached = xdp_attached(&pair);
        if !attached {
            break;
        }
    }
    assert!(!attached, "XDP still attached 5 s after SIGKILL");
    drop(server);
}

#[test]
#[ignore = "privileged: cargo xtask test as root"]
fn namespaces_are_removed_when_a_test_fails() {
    assert!(privileged(), "{PRIV}");
    let names = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let pair = NetPair::new();
        *names.lock().unwrap() = Some((pair.server_ns.clone(), pair.client_ns.clone()));
        panic!("simulated failure");
    });
    assert!(result.is_err());
    let (s, c) = names.lock().unwrap().take().unwrap();
    assert!(!NetPair::exists(&s) && !NetPair::exists(&c), "namespaces survived a failing test");
}

#[test]
#[ignore = "privileged: cargo xtask test as root"]
fn a_wildcard_listener_attaches_to_every_interface_that_is_up_and_says_how() {
    assert!(privileged(), "{PRIV}");
    let dir = tempfile::tempdir().unwrap();
    let pair = NetPair::new();
    // An interface with an address that is down: nothing to guard there.
    // And one that is up whose driver has no native XDP (a bridge): generic.
    for step in [
        vec!["link", "add", "ftpddown0", "type", "veth", "peer", "name", "ftpddown1"],
        vec!["addr", "add", "10.99.77.1/24", "dev", "ftpddown0"],
        vec!["link", "add", "ftpdbr0", "type", "bridge"],
        vec!["addr", "add", "10.99.78.1/24", "dev", "ftpdbr0"],
        vec!["link", "set", "ftpdbr0", "up"],
    ] {
        run_ok(Command::new("ip").args(["-n", &pair.server_ns]).args(&step));
    }
    let server = pair.start_server(None, dir.path(), &["listen_address=0.0.0.0"]);
    let log = server.log();
    // veth has native XDP; lo only generic.
    assert!(
        log.lines().any(|l| l.contains("XDP attached") && l.contains(&pair.server_if) && l.contains("mode=native")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("XDP attached") && l.contains("interface=lo") && l.contains("mode=generic")),
        "{log}"
    );
    assert!(!log.lines().any(|l| l.contains("XDP attached") && l.contains("ftpddown0")), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("XDP attached") && l.contains("interface=ftpdbr0") && l.contains("mode=generic")),
        "native XDP refused by the driver falls back to generic: {log}"
    );
    assert!(xdp_attached(&pair), "no XDP program on {}", pair.server_if);
    let down = run_ok(Command::new("ip").args(["-n", &pair.server_ns, "link", "show", "dev", "ftpddown0"]));
    assert!(!down.contains("xdp"), "XDP on an interface that is down: {down}");
    // The wildcard still serves through the veth.
    let code = format!(
        "import ftplib\nf=ftplib.FTP()\nf.connect('{}',2121,timeout=10)\nf.login()\nprint(f.sendcmd('NOOP'))",
        pair.server_ip
    );
    assert!(run_ok(pair.client_cmd("python3").arg("-c").arg(&code)).starts_with("200"));
    drop(server);

    // ftpd_xdp_interfaces narrows a wildcard listener to the interfaces named.
    let xdp_on = |dev: &str| {
        run_ok(Command::new("ip").args(["-n", &pair.server_ns, "link", "show", "dev", dev])).contains("xdp")
    };
    assert!(!xdp_on("lo") && !xdp_on("ftpdbr0"), "XDP left behind by the stopped server");
    let server = pair.start_server(
        None,
        dir.path(),
        &["listen_address=0.0.0.0", &format!("ftpd_xdp_interfaces={}", pair.server_if)],
    );
    let log = server.log();
    assert!(xdp_on(&pair.server_if), "{log}");
    assert!(!xdp_on("lo") && !xdp_on("ftpdbr0"), "XDP outside ftpd_xdp_interfaces: {log}");
    assert_eq!(log.matches("XDP attached").count(), 1, "{log}");
    assert!(run_ok(pair.client_cmd("python3").arg("-c").arg(&code)).starts_with("200"));
    drop(server);
}
