//! ftpd: an FTP server for mirror hosts, with an eBPF/XDP data plane.
//!
//! # Layout
//! - `config`: the option table (vsftpd.conf names and defaults) and its reader.
//! - `server`: accept loop, connection limits, shared state.
//! - `bans`: failed logins per client network, bans, and what a client network is.
//! - `session`: one control connection: state, read loop, dispatch.
//! - `commands`: the command handlers, by topic.
//! - `control`: line framing and reply encoding for the control connection.
//! - `command`: the command table: verbs, their typed arguments, HELP/FEAT/metrics facts.
//! - `reply`: every fixed reply (code and vsftpd's text) by name.
//! - `data`: passive listeners and zero-copy sends.
//! - `tls`: FTPS: rustls configuration, per-session resumption, TLS streams.
//! - `ciphers`: `ssl_ciphers` read into rustls's suites (below `config` and `tls`).
//! - `policy`: which limit and which permission rules a session gets.
//! - `ipc`: the typed messages between the master, the front and the file workers.
//! - `fs`: confinement to the user's root (`openat2`) and listings.
//! - `dataplane`: the eBPF programs (the only module that uses aya).
//! - `privsep`: the master, the front, the file workers; `sandbox`: their seccomp filters.

pub mod access;
pub mod auth;
pub mod bans;
pub mod check;
pub mod ciphers;
pub mod command;
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
pub mod net;
pub mod policy;
pub mod privsep;
pub mod rates;
pub mod reply;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod settings;
pub mod shared;
pub mod stats;
pub mod tls;
pub mod worker;
pub mod xferlog;
