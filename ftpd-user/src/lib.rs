//! ftpd: an FTP server for mirror hosts, with an eBPF/XDP data plane.
//!
//! # Layout
//! The modules form layers, each using only the ones below it: wire format
//! and limits, config, file tree, process split, kernel plane, shared state,
//! session, command handlers, server. docs/ARCHITECTURE.md ("Module map")
//! has one line per module; `cargo xtask modules` prints the import graph and
//! `cargo xtask test` fails on a cycle or on a map that no longer matches.

pub mod access;
pub mod auth;
pub mod bans;
pub mod check;
pub mod ciphers;
pub mod cluster;
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
pub mod process;
pub mod proxy;
pub mod rates;
pub mod reply;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod settings;
pub mod shared;
pub mod slots;
pub mod stats;
pub mod tls;
pub mod worker;
pub mod xferlog;
