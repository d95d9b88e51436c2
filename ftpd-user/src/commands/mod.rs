//! Command handlers, by topic. Each is a method on `Session` that writes its
//! own reply; `session::dispatch` decides which one runs.

pub mod auth;
pub mod files;
pub mod tls;
pub mod transfer;
