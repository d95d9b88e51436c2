//! The configuration with the values read from the files it names, as one
//! value that a reload replaces whole.

use std::{net::Ipv4Addr, sync::Arc};

use crate::{config::Config, fs::Patterns};

/// The configuration and what is derived from it by reading files or
/// resolving names. A reload builds a new one whole and swaps it in, so no
/// value computed from the old file survives a reload; a session takes the
/// one in force when it connects (and again when it logs in) and keeps it.
#[derive(Debug)]
pub struct Settings {
    /// The validated configuration.
    pub cfg: Arc<Config>,
    /// Contents of `banner_file`.
    pub banner: Option<String>,
    /// `deny_file` patterns.
    pub deny: Patterns,
    /// `hide_file` patterns.
    pub hide: Patterns,
    /// `pasv_address`, parsed or resolved.
    pub pasv_address: Option<Ipv4Addr>,
    /// `userlist_file` (with `userlist_enable`).
    pub userlist: Vec<String>,
    /// Users whose transfers get a `user` label (`ftpd_metrics_users`).
    pub metrics_users: Vec<String>,
    /// FTPS, from the certificate and key read by the root process.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// `ftpd_ban_allow`, parsed.
    pub ban_allow: crate::net::Allow,
    /// `ftpd_proxy_trusted`, parsed.
    pub proxy_trusted: crate::net::Allow,
}

impl Settings {
    /// Reads the files `cfg` names (except the TLS files, already in `tls`),
    /// or says which one is wrong and why.
    pub fn derive(cfg: Config, tls: Option<crate::tls::Tls>) -> Result<Self, String> {
        let banner = if cfg.banner_file.is_empty() {
            None
        } else {
            Some(
                std::fs::read_to_string(&cfg.banner_file)
                    .map_err(|e| format!("banner_file={}: {e}", cfg.banner_file))?,
            )
        };
        // Read again at each login (operators edit it live); checked here so a
        // wrong path stops startup instead of silently banning nobody.
        if cfg.deny_email_enable {
            std::fs::metadata(&cfg.banned_email_file).map_err(|e| {
                format!("banned_email_file={}: {e} (needed by deny_email_enable=YES)", cfg.banned_email_file)
            })?;
        }
        let pasv_address = match (cfg.pasv_address.as_str(), cfg.pasv_addr_resolve) {
            ("", _) => None,
            (a, false) => Some(a.parse().map_err(|_| format!("pasv_address={a:?} is not an IPv4 address"))?),
            (host, true) => Some(crate::config::resolve_v4(host)?),
        };
        let userlist = if cfg.userlist_enable { crate::auth::read_list(&cfg.userlist_file) } else { Vec::new() };
        let metrics_users =
            cfg.ftpd_metrics_users.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        let ban_allow = crate::net::Allow::parse("ftpd_ban_allow", &cfg.ftpd_ban_allow)?;
        let proxy_trusted = crate::net::Allow::parse("ftpd_proxy_trusted", &cfg.ftpd_proxy_trusted)?;
        Ok(Self {
            ban_allow,
            proxy_trusted,
            banner,
            deny: Patterns::parse(&cfg.deny_file),
            hide: Patterns::parse(&cfg.hide_file),
            pasv_address,
            userlist,
            metrics_users,
            tls: tls.map(Arc::new),
            cfg: Arc::new(cfg),
        })
    }
}
