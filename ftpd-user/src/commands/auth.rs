//! Login: USER, PASS, and the commands allowed before it (FEAT, OPTS, HOST, HELP).

use std::{io, sync::Arc};

use tracing::{info, warn};

use crate::{
    command::{self, Opts},
    fs::VPath,
    login,
    reply::{self, code},
    session::{LoggedIn, Phase, Session, User},
};

impl Session {
    pub(crate) async fn cmd_user(&mut self, arg: &[u8]) -> io::Result<()> {
        if let Phase::Ready(u) = &self.phase {
            // vsftpd's two texts: anonymous sessions are its "guest" ones.
            return self.send(if u.anonymous { reply::GUEST_CANNOT_CHANGE } else { reply::CANNOT_CHANGE_USER }).await;
        }
        self.phase = Phase::Greeted;
        if arg.is_empty() {
            // vsftpd asks for a password and refuses at PASS, so an empty
            // name looks like any other failed login.
            self.phase = Phase::NeedPass(String::new());
            return self.send(reply::NEED_PASSWORD).await;
        }
        let Some(user) = std::str::from_utf8(arg).ok().filter(|u| u.len() <= crate::auth::MAX_CREDENTIAL) else {
            return self.send(reply::LOGIN_INCORRECT).await;
        };
        if self.settings.tls.is_some() && !self.tls_login_allowed(user).await? {
            return Ok(());
        }
        let settings = self.shared.settings();
        if let Err(d) = login::check_user(&settings.cfg, &settings.userlist, user) {
            info!(session = self.id, peer = %self.names.peer, user, reason = %d.reason, "USER refused");
            return self.reply(code::NOT_LOGGED_IN, &d.reply).await;
        }
        self.names.log_user = user.to_owned();
        let anonymous = login::is_anonymous(user) && self.cfg().anonymous_enable;
        if anonymous && self.cfg().no_anon_password {
            return self.login(user.to_owned(), Vec::new()).await;
        }
        self.phase = Phase::NeedPass(user.to_owned());
        self.send(reply::NEED_PASSWORD).await
    }

    /// vsftpd's TLS rules for USER, in its order and with its replies.
    /// `false`: refused (and, for a forced-encryption login in the clear,
    /// the connection closes after the reply, as in vsftpd).
    async fn tls_login_allowed(&mut self, user: &str) -> io::Result<bool> {
        let cfg = self.cfg();
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
            self.send(reply::ANON_NO_TLS).await?;
            return Ok(false);
        }
        let refusal = match (anonymous, secure) {
            (false, false) if cfg.force_local_logins_ssl => reply::LOCAL_MUST_ENCRYPT,
            (true, false) if cfg.force_anon_logins_ssl => reply::ANON_MUST_ENCRYPT,
            _ => return Ok(true),
        };
        info!(session = self.id, peer = %self.names.peer, user, "login in clear text refused (force_*_logins_ssl)");
        self.send(refusal).await?;
        self.ctl.closing = true;
        Ok(false)
    }

    pub(crate) async fn cmd_pass(&mut self, arg: &[u8]) -> io::Result<()> {
        match std::mem::replace(&mut self.phase, Phase::Greeted) {
            Phase::Greeted => self.send(reply::LOGIN_WITH_USER_FIRST).await,
            ready @ Phase::Ready(_) => {
                self.phase = ready;
                self.send(reply::ALREADY_LOGGED_IN).await
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
                reply: reply::LOGIN_INCORRECT.text.into(),
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
                    warn!(session = self.id, peer = %self.names.peer, user = %user, reason = %d.reason, "login refused");
                } else {
                    info!(session = self.id, peer = %self.names.peer, user = %user, reason = %d.reason, "login refused");
                }
                self.shared.logs.event(&self.names.log_user, "FAIL LOGIN", &self.names.client, None);
                crate::metrics::Metrics::inc(&self.shared.metrics.logins, "result", "failed");
                self.login_fails += 1;
                if !d.config_error {
                    self.shared.login_failed(self.names.peer.ip());
                }
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(self.cfg().delay_failed_login))).await;
                return self.reply(code::NOT_LOGGED_IN, &d.reply).await;
            }
            Err(e) => {
                warn!(session = self.id, error = %e, "login task failed");
                return self.send(reply::LOGIN_INCORRECT).await;
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
        self.nav.umask = policy.umask;
        self.nav.cwd = VPath::root().join(&g.cwd).unwrap_or_else(|_| VPath::root());
        info!(session = self.id, peer = %self.names.peer, user = %g.name, uid = g.uid, root = %g.root_dir.display(), "login");
        self.names.xfer_user = if g.anonymous { email } else { g.name.clone() };
        self.names.log_user = if g.anonymous { cfg.ftp_username.clone() } else { g.name.clone() };
        self.shared.logs.event(&self.names.log_user, "OK LOGIN", &self.names.client, None);
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
        let owner = (g.name.clone(), g.anonymous);
        self.active = Some(LoggedIn::new(self.shared.metrics.active(class), &self.shared.rates, owner));
        let delay = std::time::Duration::from_secs(u64::from(cfg.delay_successful_login));
        self.phase = Phase::Ready(Box::new(User {
            name: g.name,
            anonymous: g.anonymous,
            root: Arc::new(logged.fs),
            cfg,
            policy,
        }));
        tokio::time::sleep(delay).await;
        let start = self.nav.cwd.clone();
        let mut lines = self.dir_message(&start);
        lines.push("Login successful.".into());
        self.reply_lines(code::LOGGED_IN, &lines).await
    }

    pub(crate) async fn cmd_feat(&mut self) -> io::Result<()> {
        let feats = command::features(self.settings.tls.is_some(), self.cfg().port_enable);
        self.reply_multi(code::SYSTEM_STATUS, "Features:", &feats, "End").await
    }

    pub(crate) async fn cmd_opts(&mut self, opts: Opts) -> io::Result<()> {
        match opts {
            Opts::Utf8On => self.send(reply::UTF8_OK).await,
            // All facts are always sent; the selection is acknowledged as RFC 3659 asks.
            Opts::Mlst => self.send(reply::MLST_OPTS).await,
            // draft-bryan-ftpext-hash: the reply names the algorithm in use.
            Opts::HashShow => self.reply(code::OK, self.hash_alg.name()).await,
            Opts::HashSet(alg) => {
                self.hash_alg = alg;
                self.reply(code::OK, alg.name()).await
            }
            Opts::HashUnknown => self.send(reply::HASH_UNKNOWN_ALGORITHM).await,
            Opts::Other => self.send(reply::OPTION_NOT_UNDERSTOOD).await,
        }
    }

    pub(crate) async fn cmd_host(&mut self, arg: &[u8]) -> io::Result<()> {
        // RFC 7151: HOST only before login. ftpd serves one site per listener, so
        // any host name is accepted and selects that one site.
        if !matches!(self.phase, Phase::Greeted) {
            return self.send(reply::HOST_AFTER_USER).await;
        }
        if arg.is_empty() {
            return self.send(reply::HOST_NEEDS_NAME).await;
        }
        self.send(reply::HOST_OK).await
    }

    pub(crate) async fn cmd_help(&mut self) -> io::Result<()> {
        let lines = command::help_lines(self.settings.tls.is_some());
        self.reply_multi(code::HELP, "The following commands are recognized.", &lines, "Help OK.").await
    }
}
