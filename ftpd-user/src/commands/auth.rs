//! Login: USER, PASS, and the commands allowed before it (FEAT, OPTS, HOST, HELP).

use std::{io, sync::Arc};

use tracing::{info, warn};

use crate::{
    fs::{Root, VPath},
    session::{Phase, Session, User},
};

/// Longest user name and password accepted (vsftpd's `VSFTP_USERNAME_MAX`).
pub const MAX_CREDENTIAL: usize = 128;

impl Session {
    pub(crate) async fn cmd_user(&mut self, arg: &[u8]) -> io::Result<()> {
        if matches!(self.phase, Phase::Ready(_)) {
            return self.reply(530, "Can't change to another user.").await;
        }
        self.phase = Phase::Greeted;
        if arg.len() > MAX_CREDENTIAL {
            return self.reply(530, "Login incorrect.").await;
        }
        let anon = arg.eq_ignore_ascii_case(b"anonymous") || arg.eq_ignore_ascii_case(b"ftp");
        if !anon {
            return self.reply(530, "This FTP server is anonymous only.").await;
        }
        if !self.shared.cfg.anonymous_enable {
            return self.reply(530, "Login incorrect.").await;
        }
        if self.shared.cfg.no_anon_password {
            return self.login_anonymous().await;
        }
        self.phase = Phase::NeedAnonPass;
        self.reply(331, "Please specify the password.").await
    }

    pub(crate) async fn cmd_pass(&mut self, arg: &[u8]) -> io::Result<()> {
        match self.phase {
            Phase::Greeted => self.reply(503, "Login with USER first.").await,
            Phase::Ready(_) => self.reply(230, "Already logged in.").await,
            Phase::NeedAnonPass => {
                let cfg = &self.shared.cfg;
                if arg.len() > MAX_CREDENTIAL
                    || (cfg.deny_email_enable && self.shared.banned_emails.iter().any(|b| b.as_bytes() == arg))
                {
                    self.phase = Phase::Greeted;
                    info!(session = self.id, peer = %self.peer, "anonymous login refused (banned password)");
                    return self.reply(530, "Login incorrect.").await;
                }
                self.login_anonymous().await
            }
        }
    }

    async fn login_anonymous(&mut self) -> io::Result<()> {
        match Root::open(&self.shared.anon_root) {
            Ok(root) => {
                let cfg = Arc::new(self.shared.cfg.clone());
                self.umask = cfg.anon_umask;
                self.phase = Phase::Ready(Box::new(User { name: "anonymous".into(), anonymous: true, root, cfg }));
                self.cwd = VPath::root();
                info!(session = self.id, peer = %self.peer, user = "anonymous", "login");
                self.reply(230, "Login successful.").await
            }
            Err(e) => {
                warn!(session = self.id, root = %self.shared.anon_root.display(), error = %e, "cannot open the anonymous root");
                self.phase = Phase::Greeted;
                self.reply(500, "OOPS: cannot change directory.").await
            }
        }
    }

    pub(crate) async fn cmd_feat(&mut self) -> io::Result<()> {
        let mut feats: Vec<String> = Vec::new();
        if self.shared.cfg.port_enable {
            feats.push("EPRT".into());
        }
        feats.extend(
            [
                "EPSV",
                "HOST",
                "MDTM",
                "MLST type*;size*;modify*;perm*;unique*;",
                "PASV",
                "REST STREAM",
                "SIZE",
                "TVFS",
                "UTF8",
            ]
            .map(String::from),
        );
        self.reply_multi(211, "Features:", &feats, "End").await
    }

    pub(crate) async fn cmd_opts(&mut self, arg: &[u8]) -> io::Result<()> {
        let upper = arg.to_ascii_uppercase();
        if upper == b"UTF8 ON" || upper == b"UTF8" {
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
        self.reply_multi(214, "The following commands are recognized.", &lines, "Help OK.").await
    }
}
