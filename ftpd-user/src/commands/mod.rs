//! Command handlers, by topic. Each is a method on `Session` that writes its
//! own reply; `dispatch` reads the commands and decides which one runs.
//! Handler files never call into each other (`cargo xtask modules` checks
//! it): what several need is in the session layer, `session::*`.

pub mod auth;
pub mod dispatch;
pub mod download;
pub mod files;
pub mod listing;
pub mod tls;
pub mod upload;
