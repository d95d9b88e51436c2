//! The test kit: what the integration tests (`tests/`, crate `ftpd-tests`)
//! and the benchmark (`cargo xtask bench`) share to drive a real ftpd, so
//! that each has one FTP client, one way to start the server and one set of
//! guards instead of a copy per test file.
//!
//! Most functions panic with the reason, as a test wants. What the benchmark
//! calls also has a fallible form (`io::Result` or `Result<_, String>`) so
//! that it can report an error and keep the results measured so far.
//!
//! # Layout
//! - `server`: the `ftpd` binary and [`Server`], a running ftpd killed on drop
//!   (with the `FTPD_TEST_PLANE` choice of data plane).
//! - `client`: [`Ftp`], a raw control connection, and its data commands.
//! - `socket`: sockets set up before their handshake, PASV/PORT/EPRT
//!   arguments, and active-mode accepts.
//! - `http`: GET over plain TCP, for `/metrics` and the bench's ceiling server.
//! - `net`: network namespaces and veth pairs, deleted on drop.
//! - `cgroup`: cgroup v2 directories, emptied and removed on drop.
//! - `fixtures`: random files, modes and owners, byte comparisons, file names.
//! - `process`: running commands, process trees, waiting for a condition.
//! - `skip`: a test that cannot run here fails unless `FTPD_TEST_ALLOW_SKIP` lists it.
#![expect(clippy::missing_panics_doc, reason = "a test kit panics by design")]

mod cgroup;
mod client;
mod fixtures;
mod http;
mod net;
mod process;
mod server;
mod skip;
mod socket;

pub use cgroup::Cgroup;
pub use client::Ftp;
pub use fixtures::{
    ANON_USER, Cert, assert_bytes, assert_file, ftpd_passwd, give_to_anon, make_writable, mode_of, names, random_bytes,
    random_file, served_by_nobody, sha256_file, uid_of, writable_by_all,
};
pub use http::{Response, http_get, metric_samples};
pub use net::{NetPair, Netns};
pub use process::{
    alive, is_root, privileged, process_tree, python, run, run_ok, status_field, wait_file, wait_for, wait_until,
};
pub use server::{Launch, Listen, Server, ephemeral_ports, free_port, free_port_on, ftpd_bin, workspace};
pub use skip::{ALLOW_SKIP, SKIP_LOG, allowed as skip_allowed, cannot_run, root_or_skip};
pub use socket::{SocketSetup, accept_within, eprt_arg, pasv_addr, port_arg, tcp_connect, tcp_connect_within};
