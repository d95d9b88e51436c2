//! Login: USER, PASS, and the commands allowed before it (FEAT, OPTS, HOST, HELP).

use std::{io, sync::Arc};

use tracing::{info, warn};

use crate::{
    fs::VPath,
    login,
    session::{Phase, Session, User},
};

impl Session {
    pub(crate) async fn cmd_user(&mut self, arg: &[u8]) -> io::Result<()> {
        if let Phase::Ready(u) = &self.phase {
            // vsftpd's two texts: anonymous sessions are its "guest" ones.
            let text = if u.anonymous { "Can't change from guest user." } else { "Can't change to another user." };
            return self.reply(530, text).await;
        }
        self.phase = Phase::Greeted;
        if arg.is_empty() {
            // vsftpd asks for a password and refuses at PASS, so an empty
            // name looks like any other failed login.
            self.phase = Phase::NeedPass(String::new());
            return self.reply(331, "Please specify the password.").await;
        }
        let Some(user) = std::str::from_utf8(arg).ok().filter(|u| u.len() <= crate::auth::MAX_CREDENTIAL) else {
            return self.reply(530, "Login incorrect.").await;
        };
        if self.settings.tls.is_some() && !self.tls_login_allowed(user).await? {
            return Ok(());
        }
        let settings = self.shared.settings();
        if let Err(d) = login::check_user(&settings.cfg, &settings.userlist, user) {
            info!(session = self.id, peer = %self.peer, user, reason = %d.reason, "USER refused");
            return self.reply(530, &d.reply).await;
        }
        self.log_user = user.to_owned();
        let anonymous = login::is_anonymous(user) && self.shared.cfg().anonymous_enable;
        if anonymous && self.shared.cfg().no_anon_password {
            return self.login(user.to_owned(), Vec::new()).await;
        }
        self.phase = Phase::NeedPass(user.to_owned());
        self.reply(331, "Please specify the password.").await
    }

    /// vsftpd's TLS rules for USER, in its order and with its replies.
    /// `false`: refused (and, for a forced-encryption login in the clear,
    /// the connection closes after the reply, as in vsftpd).
    async fn tls_login_allowed(&mut self, user: &str) -> io::Result<bool> {
        let cfg = self.shared.cfg();
        // `ftp` and `anonymous` are anonymous logins only where those exist:
        // with anonymous_enable=NO they are accounts like any other, and
        // force_local_logins_ssl applies to them.
        let anonymous = login::is_anonymous(user) && cfg.anonymous_enable;
        let secure = self.control_secure();
        if !cfg.local_enable && !cfg.guest_enable && !anonymous {
            // check_user gives vsftpd's "anonymous only" reply.
            return Ok(true);
        }
        if anonymous && secure && !cfg.allow_anon_ssl && !cfg.force_anon_logins_ssl {
            self.reply(530, "Anonymous sessions may not use encryption.").await?;
            return Ok(false);
        }
        let text = match (anonymous, secure) {
            (false, false) if cfg.force_local_logins_ssl => "Non-anonymous sessions must use encryption.",
            (true, false) if cfg.force_anon_logins_ssl => "Anonymous sessions must use encryption.",
            _ => return Ok(true),
        };
        info!(session = self.id, peer = %self.peer, user, "login in clear text refused (force_*_logins_ssl)");
        self.reply(530, text).await?;
        self.closing = true;
        Ok(false)
    }

    pub(crate) async fn cmd_pass(&mut self, arg: &[u8]) -> io::Result<()> {
        match std::mem::replace(&mut self.phase, Phase::Greeted) {
            Phase::Greeted => self.reply(503, "Login with USER first.").await,
            ready @ Phase::Ready(_) => {
                self.phase = ready;
                self.reply(230, "Already logged in.").await
            }
            Phase::NeedPass(user) => self.login(user, arg.to_vec()).await,
        }
    }

    /// Asks the authority (the master, or this process) and sets up the session.
    async fn login(&mut self, user: String, password: Vec<u8>) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let rhost = self.peer_ip().to_string();
        let email = String::from_utf8_lossy(&password)
            .chars()
            .filter(|c| !c.is_whitespace() && !c.is_control())
            .collect::<String>();
        let name = user.clone();
        let outcome = match shared.authority.login_cached(&shared.cfg(), &name) {
            _ if name.is_empty() => Ok(Err(login::Denial {
                reply: "Login incorrect.".into(),
                reason: "empty user name".into(),
                config_error: false,
            })),
            Some(l) => Ok(Ok(l)),
            // PAM can block for seconds (failure delays): keep it off the async threads.
            None => {
                tokio::task::spawn_blocking(move || {
                    shared.authority.login(&shared.cfg(), &shared.anon_root, &name, &password, &rhost)
                })
                .await
            }
        };
        let logged = match outcome {
            Ok(Ok(l)) => l,
            Ok(Err(d)) => {
                if d.config_error {
                    warn!(session = self.id, peer = %self.peer, user = %user, reason = %d.reason, "login refused");
                } else {
                    info!(session = self.id, peer = %self.peer, user = %user, reason = %d.reason, "login refused");
                }
                self.shared.logs.event(&self.log_user, "FAIL LOGIN", &self.client, None);
                crate::metrics::Metrics::inc(&self.shared.metrics.logins, "result", "failed");
                self.login_fails += 1;
                if !d.config_error {
                    self.shared.login_failed(self.peer.ip());
                }
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(self.shared.cfg().delay_failed_login)))
                    .await;
                return self.reply(530, &d.reply).await;
            }
            Err(e) => {
                warn!(session = self.id, error = %e, "login task failed");
                return self.reply(530, "Login incorrect.").await;
            }
        };
        let mut g = logged.grant;
        // The session keeps the settings in force at its login.
        self.settings = self.shared.settings();
        // Sessions share the global settings; only a per-user config file
        // gives a session its own copy (a Config is a few KiB per session),
        // read and validated by the master: the front never parses it.
        let cfg: Arc<crate::config::Config> = match g.config.take() {
            None => Arc::clone(&self.settings.cfg),
            Some(own) => Arc::from(own),
        };
        let policy = g.policy;
        self.umask = policy.umask;
        self.cwd = VPath::root().join(&g.cwd).unwrap_or_else(|_| VPath::root());
        info!(session = self.id, peer = %self.peer, user = %g.name, uid = g.uid, root = %g.root_dir.display(), "login");
        self.xfer_user = if g.anonymous { email } else { g.name.clone() };
        self.log_user = if g.anonymous { cfg.ftp_username.clone() } else { g.name.clone() };
        self.shared.logs.event(&self.log_user, "OK LOGIN", &self.client, None);
        crate::metrics::Metrics::inc(&self.shared.metrics.logins, "result", "ok");
        if self.settings.tls.is_some() {
            let tls = if self.control_secure() { "yes" } else { "no" };
            crate::metrics::Metrics::inc(&self.shared.metrics.tls_sessions, "tls", tls);
        }
        let class = if g.anonymous {
            "anonymous"
        } else if cfg.guest_enable {
            "virtual"
        } else {
            "local"
        };
        let gauge = self.shared.metrics.active(class);
        gauge.inc();
        self.active = Some(gauge);
        self.shared.rates.login(&(g.name.clone(), g.anonymous));
        let delay = std::time::Duration::from_secs(u64::from(cfg.delay_successful_login));
        self.phase = Phase::Ready(Box::new(User {
            name: g.name,
            anonymous: g.anonymous,
            root: Arc::new(logged.fs),
            cfg,
            policy,
        }));
        tokio::time::sleep(delay).await;
        let start = self.cwd.clone();
        let mut lines = self.dir_message(&start);
        lines.push("Login successful.".into());
        self.reply_lines(230, &lines).await
    }

    pub(crate) async fn cmd_feat(&mut self) -> io::Result<()> {
        let mut feats: Vec<String> = Vec::new();
        let tls = self.settings.tls.is_some();
        if tls {
            feats.extend(["AUTH TLS", "AUTH SSL"].map(String::from));
        }
        if self.shared.cfg().port_enable {
            feats.push("EPRT".into());
        }
        feats.extend(["EPSV", "HOST", "MDTM", "MLST type*;size*;modify*;perm*;unique*;", "PASV"].map(String::from));
        if tls {
            feats.extend(["CCC", "PBSZ", "PROT"].map(String::from));
        }
        feats.extend(["REST STREAM", "SIZE", "TVFS", "UTF8"].map(String::from));
        self.reply_multi(211, "Features:", &feats, "End").await
    }

    pub(crate) async fn cmd_opts(&mut self, arg: &[u8]) -> io::Result<()> {
        let upper = arg.to_ascii_uppercase();
        if upper == b"UTF8 ON" {
            self.reply(200, "Always in UTF8 mode.").await
        } else if upper.starts_with(b"MLST ") || upper == b"MLST" {
            // All facts are always sent; the selection is acknowledged as RFC 3659 asks.
            self.reply(200, "MLST OPTS type;size;modify;perm;unique;").await
        } else {
            self.reply(501, "Option not understood.").await
        }
    }

    pub(crate) async fn cmd_host(&mut self, arg: &[u8]) -> io::Result<()> {
        // RFC 7151: HOST only before login. ftpd serves one site per listener, so
        // any host name is accepted and selects that one site.
        if !matches!(self.phase, Phase::Greeted) {
            return self.reply(503, "HOST must come before USER.").await;
        }
        if arg.is_empty() {
            return self.reply(501, "HOST needs a host name.").await;
        }
        self.reply(220, "Host accepted.").await
    }

    pub(crate) async fn cmd_help(&mut self) -> io::Result<()> {
        let lines = [
            "ABOR ACCT ALLO APPE CDUP CWD  DELE EPRT EPSV FEAT HELP HOST LIST MDTM MKD",
            "MLSD MLST MODE NLST NOOP OPTS PASS PASV PORT PWD  QUIT REST RETR RMD  RNFR",
            "RNTO SITE SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD",
        ]
        .map(String::from);
        let mut lines = lines.to_vec();
        if self.settings.tls.is_some() {
            lines.push("AUTH CCC  PBSZ PROT".into());
        }
        self.reply_multi(214, "The following commands are recognized.", &lines, "Help OK.").await
    }
}
