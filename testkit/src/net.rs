//! Network namespaces for the privileged tests and the flood benchmark:
//! a server and a client namespace joined by a veth pair ([`NetPair`]), or
//! one namespace alone ([`Netns`]). Both are deleted on drop, so a failing
//! test leaves nothing behind, and traffic never touches the machine's own
//! interfaces.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{Cgroup, Server, run, run_ok};

/// Runs `ip ARGS`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running ip: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces joined by a veth pair: a server at `10.77.N.1`, a
/// client at `10.77.N.2` (and a second client address `10.77.N.3`).
/// Deleting the namespaces on drop removes the veth pair with them, so a
/// failing test leaves nothing behind.
pub struct NetPair {
    /// Server namespace name.
    pub server_ns: String,
    /// Client namespace name.
    pub client_ns: String,
    /// Server address.
    pub server_ip: Ipv4Addr,
    /// Client address.
    pub client_ip: Ipv4Addr,
    /// A second address on the client side (a "foreign" client).
    pub other_ip: Ipv4Addr,
    /// Name of the server-side veth.
    pub server_if: String,
    /// Server IPv6 address (`fd77:N::1`).
    pub server_ip6: String,
    /// Client IPv6 address (`fd77:N::2`).
    pub client_ip6: String,
    /// A second client IPv6 address (`fd77:N::3`).
    pub other_ip6: String,
}

impl NetPair {
    /// Creates the pair. Panics (after cleaning up) if any step fails.
    pub fn new() -> Self {
        Self::try_new().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates the pair, or says which step failed (after cleaning up).
    ///
    /// # Errors
    /// An `ip` command failed, or the veth never came up.
    pub fn try_new() -> Result<Self, String> {
        let n = NETNS_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        let net = 100 + (id + n) % 150;
        let me = Self {
            server_ns: format!("ftpds-{id}-{n}"),
            client_ns: format!("ftpdc-{id}-{n}"),
            server_ip: Ipv4Addr::new(10, 77, net as u8, 1),
            client_ip: Ipv4Addr::new(10, 77, net as u8, 2),
            other_ip: Ipv4Addr::new(10, 77, net as u8, 3),
            server_if: format!("vs{id}x{n}"),
            server_ip6: format!("fd77:{net:x}::1"),
            client_ip6: format!("fd77:{net:x}::2"),
            other_ip6: format!("fd77:{net:x}::3"),
        };
        let client_if = format!("vc{id}x{n}");
        // From here on, Drop cleans up whatever was created.
        let (sns, cns, sif) = (me.server_ns.as_str(), me.client_ns.as_str(), me.server_if.as_str());
        ip(&["netns", "add", sns])?;
        ip(&["netns", "add", cns])?;
        ip(&["link", "add", sif, "netns", sns, "type", "veth", "peer", "name", &client_if, "netns", cns])?;
        let ns_steps: Vec<(&str, String)> = vec![
            (sns, format!("addr add {}/24 dev {sif}", me.server_ip)),
            (sns, format!("link set {sif} up")),
            (sns, "link set lo up".into()),
            (cns, format!("addr add {}/24 dev {client_if}", me.client_ip)),
            (cns, format!("addr add {}/24 dev {client_if}", me.other_ip)),
            (cns, format!("link set {client_if} up")),
            (cns, "link set lo up".into()),
            (sns, format!("-6 addr add {}/64 dev {sif} nodad", me.server_ip6)),
            (cns, format!("-6 addr add {}/64 dev {client_if} nodad", me.client_ip6)),
            (cns, format!("-6 addr add {}/64 dev {client_if} nodad", me.other_ip6)),
        ];
        for (ns, s) in ns_steps {
            let args: Vec<&str> = ["-n", ns].into_iter().chain(s.split(' ')).collect();
            ip(&args)?;
        }
        // Wait until both ends report carrier.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let up = |ns: &str, dev: &str| {
                Command::new("ip")
                    .args(["-n", ns, "-o", "link", "show", "dev", dev])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("state UP"))
            };
            if up(sns, sif) && up(cns, &client_if) {
                return Ok(me);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!("veth between {} and {} never came up", me.server_ns, me.client_ns))
    }

    /// Settings for ftpd serving in the server namespace on port 2121, the
    /// passive range 50000-50099 and the eBPF plane required, then `extra`.
    pub fn server_settings(&self, extra: &[&str]) -> Vec<String> {
        let mut settings = vec![
            format!("listen_address={}", self.server_ip),
            "listen_port=2121".to_string(),
            "pasv_min_port=50000".to_string(),
            "pasv_max_port=50099".to_string(),
            "ftpd_ebpf=on".to_string(),
        ];
        settings.extend(extra.iter().map(|s| (*s).to_string()));
        settings
    }

    /// A command run inside the client namespace.
    pub fn client_cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client_ns, program]);
        c
    }

    /// Whether a namespace of this pair still exists.
    pub fn exists(name: &str) -> bool {
        run(Command::new("ip").args(["netns", "list"]))
            .stdout
            .split(|&b| b == b'\n')
            .any(|l| l.starts_with(name.as_bytes()))
    }
}

impl Default for NetPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

impl NetPair {
    /// Starts ftpd in the server namespace with [`NetPair::server_settings`]
    /// and `extra`. With a cgroup, ftpd joins it before entering the
    /// namespace, so that its sockets (and sock_ops) belong to it; that uses
    /// `nsenter`, not `ip netns exec`, which would hide /sys/fs/cgroup.
    pub fn start_server(&self, cgroup: Option<&Cgroup>, root: &Path, extra: &[&str]) -> Server {
        let settings = self.server_settings(extra);
        let addr = SocketAddr::from((self.server_ip, 2121));
        let started = match cgroup {
            Some(cg) => {
                let script = cg.enter_netns_script(&self.server_ns);
                Server::spawn(Some(&["sh", "-c", script.as_str()]), root, &settings, addr)
            }
            None => Server::spawn(Some(&["ip", "netns", "exec", self.server_ns.as_str()]), root, &settings, addr),
        };
        started.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The STAT line about the kernel data plane (`Data plane: eBPF on ...`)
    /// and its counters as `name -> value`, asked by ftplib from `source`
    /// in the client namespace.
    pub fn counters(&self, source: Ipv4Addr) -> (String, HashMap<String, u64>) {
        let code = format!(
            "import ftplib\nf=ftplib.FTP()\nf.connect('{}',2121,timeout=10,source_address=('{source}',0))\nf.login()\nprint(f.sendcmd('STAT'))\nf.quit()",
            self.server_ip
        );
        let stat = run_ok(self.client_cmd("python3").arg("-c").arg(&code));
        let line = stat
            .lines()
            .find(|l| l.contains("Data plane: eBPF on"))
            .unwrap_or_else(|| panic!("no eBPF line: {stat}"))
            .to_owned();
        let inner = &line[line.rfind('(').expect("(") + 1..line.rfind(')').expect(")")];
        let counters = inner
            .split(' ')
            .map(|kv| kv.split_once('=').unwrap_or_else(|| panic!("not name=value: {kv} in {line}")))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap_or_else(|_| panic!("not a number: {kv} in {line}", kv = v))))
            .collect();
        (line, counters)
    }
}

/// One network namespace with `lo` up, deleted on drop.
pub struct Netns {
    /// Its name (for `ip netns exec`).
    pub name: String,
}

impl Netns {
    /// Creates `name` and brings its `lo` up; panics (after cleaning up) if
    /// either fails.
    pub fn new(name: &str) -> Self {
        let me = Self { name: name.to_owned() };
        ip(&["netns", "add", name]).unwrap_or_else(|e| panic!("{e}"));
        ip(&["-n", name, "link", "set", "lo", "up"]).unwrap_or_else(|e| panic!("{e}"));
        me
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "delete", &self.name]));
    }
}
