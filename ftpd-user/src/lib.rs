//! ftpd: an FTP server for mirror hosts, with an eBPF/XDP data plane.
//!
//! # Layout
//! - `config`: the option table (vsftpd.conf names and defaults) and its reader.
//! - `server`: accept loop, connection limits, shared state.
//! - `session`: one control connection: state, read loop, dispatch.
//! - `commands`: the command handlers, by topic.
//! - `control`: line framing and reply encoding for the control connection.
//! - `data`: passive listeners and zero-copy sends.
//! - `tls`: FTPS: rustls configuration, per-session resumption, TLS streams.
//! - `ciphers`: `ssl_ciphers` read into rustls's suites (below `config` and `tls`).
//! - `fs`: confinement to the user's root (`openat2`) and listings.
//! - `dataplane`: the eBPF programs (the only module that uses aya).
//! - `privsep`: the master, the front, the file workers; `sandbox`: their seccomp filters.

pub mod access;
pub mod auth;
pub mod check;
pub mod ciphers;
pub mod commands;
pub mod config;
pub mod control;
pub mod data;
pub mod dataplane;
pub mod fs;
pub mod ipc;
pub mod login;
pub mod manual;
pub mod metrics;
pub mod privsep;
pub mod rates;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;
pub mod worker;
pub mod xferlog;
