//! The command table: every verb ftpd knows, with its typed argument and
//! what the rest of the server derives from it (needs login, HELP, FEAT,
//! metrics label, `deny_file` check).
//!
//! Low layer: nothing here imports the session, server or handlers, so every
//! argument's parsing is tested below without a socket. A new command is a
//! [`Command`] variant with its row in [`VERBS`], a dispatch arm in
//! `session.rs`, and its handler.
//!
//! Argument errors whose reply must come after a check of the session's state
//! (PORT after `port_enable`, EPRT's 522 that names this connection's
//! protocols) are values of the argument, decided by the handler; the others
//! are a [`ParseError`], answered once login and `cmds_allowed` have passed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::{
    control::split_command,
    reply::{self, Reply},
};

/// A parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    User(&'a [u8]),
    /// The password, as sent.
    Pass(&'a [u8]),
    Quit,
    Feat,
    Opts(Opts),
    Host(&'a [u8]),
    /// `None`: a mechanism ftpd does not know (504).
    Auth(Option<AuthKind>),
    Pbsz,
    Prot(Prot),
    Ccc,
    Help,
    Abor,
    Rein,
    Smnt,
    Syst,
    Noop,
    Acct,
    Allo,
    Pwd,
    Cwd(&'a [u8]),
    Cdup,
    /// `true`: binary (`I`, `L 8`).
    Type(bool),
    /// Only `MODE S` parses.
    Mode,
    /// Only `STRU F` parses.
    Stru,
    Pasv,
    Epsv(Epsv),
    /// `None`: not six numbers of 0 to 255 (`500 Illegal PORT command.`,
    /// after `port_enable` is checked).
    Port(Option<SocketAddrV4>),
    Eprt(Eprt),
    Rest(u64),
    Size(&'a [u8]),
    Mdtm(Mdtm<'a>),
    /// `MFMT TIME FILE` (draft-somers-ftp-mfxx): the time as seconds since
    /// the epoch (UTC) and the file; `None`: not that form (501).
    Mfmt(Option<(i64, &'a [u8])>),
    Mlst(&'a [u8]),
    /// `None`: the server's status; else a listing of a path.
    Stat(Option<ListArgs<'a>>),
    List(ListArgs<'a>),
    Nlst(ListArgs<'a>),
    Mlsd(&'a [u8]),
    Retr(&'a [u8]),
    Stor(&'a [u8]),
    Appe(&'a [u8]),
    /// The name to start from; empty for ftpd's own.
    Stou(&'a [u8]),
    Mkd(&'a [u8]),
    Rmd(&'a [u8]),
    Dele(&'a [u8]),
    Rnfr(&'a [u8]),
    Rnto(&'a [u8]),
    Site(Site<'a>),
    /// A file's SHA-256 (as Serv-U and FileZilla Server name it).
    Xsha256(&'a [u8]),
    /// draft-bryan-ftpext-hash: the file's digest in the session's algorithm.
    Hash(&'a [u8]),
}

/// Why a command line is refused before its handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A NUL byte anywhere in the line (answered even before login).
    Nul,
    /// A verb ftpd does not know.
    Unknown,
    /// TYPE other than A, A N, I, L 8.
    BadType,
    /// MODE other than S.
    BadMode,
    /// STRU other than F.
    BadStru,
}

impl ParseError {
    /// vsftpd's reply.
    pub fn reply(self) -> Reply {
        match self {
            Self::Nul => reply::NUL_IN_COMMAND,
            Self::Unknown => reply::UNKNOWN_COMMAND,
            Self::BadType => reply::BAD_TYPE,
            Self::BadMode => reply::BAD_MODE,
            Self::BadStru => reply::BAD_STRU,
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reply().text)
    }
}

/// `AUTH` mechanisms (RFC 4217 and the older names vsftpd accepts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// `TLS`, `TLS-C`: the control connection only.
    Tls,
    /// `SSL`, `TLS-P`: data connections are protected too.
    Ssl,
}

/// `PROT` levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    Clear,
    Private,
    /// `S` and `E`: known, not supported (536).
    Unsupported,
    /// Anything else (504).
    Unknown,
}

/// `EPSV` arguments (RFC 2428).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epsv {
    /// `EPSV ALL`: PORT, EPRT and PASV are refused from now on.
    All,
    /// No argument: the control connection's protocol.
    Any,
    /// `1`: IPv4.
    V4,
    /// `2`: IPv6.
    V6,
    /// Anything else: answered with the usable protocols (522).
    Other,
}

/// What an EPRT argument says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eprt {
    Addr(SocketAddr),
    /// A protocol number other than 1 and 2 (RFC 2428 answers 522).
    Unsupported,
    /// No protocol number at all (vsftpd: `500 Bad EPRT protocol.`).
    BadProtocol,
    /// Anything else malformed (vsftpd: `500 Bad EPRT command.`).
    Bad,
}

/// `OPTS` arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opts {
    /// `OPTS UTF8 ON`.
    Utf8On,
    /// `OPTS MLST ...`: every fact is always sent.
    Mlst,
    /// `OPTS HASH`: show the session's algorithm.
    HashShow,
    /// `OPTS HASH <algorithm>`.
    HashSet(HashAlg),
    /// `OPTS HASH <algorithm ftpd lacks>`.
    HashUnknown,
    /// Anything else (501).
    Other,
}

/// Digest algorithms of HASH (draft-bryan-ftpext-hash names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HashAlg {
    #[default]
    Sha256,
    Sha512,
}

impl HashAlg {
    /// Every algorithm, in FEAT's order.
    pub const ALL: [Self; 2] = [Self::Sha256, Self::Sha512];

    /// The draft's (IANA's) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA-256",
            Self::Sha512 => "SHA-512",
        }
    }

    fn parse(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// `ls` options and path of LIST, NLST and STAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ListArgs<'a> {
    /// `-a`: dot files, `.` and `..`.
    pub all: bool,
    /// `-l`: NLST becomes a long listing (vsftpd).
    pub long: bool,
    /// `-R`: recursive (with `ls_recurse_enable`).
    pub recurse: bool,
    /// What follows the options.
    pub path: &'a [u8],
}

impl<'a> ListArgs<'a> {
    /// Splits `ls` options (`-la`) from the path; options are only at the
    /// start, each word after a `-`, as vsftpd reads them.
    pub fn parse(arg: &'a [u8]) -> Self {
        let mut rest = arg;
        let mut out = Self::default();
        while rest.starts_with(b"-") {
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            for &f in &rest[1..end] {
                match f {
                    b'a' => out.all = true,
                    b'l' => out.long = true,
                    b'R' => out.recurse = true,
                    _ => {}
                }
            }
            rest = rest[end..].strip_prefix(b" ").unwrap_or(&rest[end..]);
        }
        out.path = rest;
        out
    }
}

/// MDTM's argument, in both of vsftpd's readings: a file, or (with
/// `mdtm_write`, when the whole argument is no file) `TIME FILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mdtm<'a> {
    /// The whole argument, as a file name.
    pub whole: &'a [u8],
    /// `TIME FILE`: seconds since the epoch read as UTC, and the file.
    pub set: Option<(i64, &'a [u8])>,
}

/// `SITE` subcommands (vsftpd's set; none for anonymous users).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site<'a> {
    /// `SITE CHMOD MODE FILE`; `mode` is `None` unless octal up to 07777.
    Chmod {
        mode: Option<u32>,
        path: &'a [u8],
    },
    Umask(Umask),
    Help,
    Unknown,
}

/// `SITE UMASK` arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Umask {
    /// No argument: show it.
    Show,
    Set(u32),
    /// Not octal up to 0777.
    Bad,
}

/// When a verb is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Before login too.
    Open,
    /// Before login too, when FTPS is configured; otherwise as a
    /// post-login command (the handler answers it).
    Tls,
    /// After login only (`530` before).
    Login,
}

/// When a verb is shown in HELP, or its FEAT lines in FEAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Never,
    Always,
    /// With FTPS configured.
    Tls,
    /// With `port_enable`.
    PortEnable,
}

/// Which part of the argument `deny_file` is checked against before the
/// handler runs (vsftpd refuses such a path with one reply, whatever the
/// command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    No,
    /// The whole argument.
    Whole,
    /// A non-empty LIST/NLST/STAT argument's path, after its options.
    List,
    /// What follows the first word (MFMT's file, after its time).
    AfterWord,
}

/// One row of the command table.
pub struct Verb {
    /// The verb, upper-case.
    pub name: &'static str,
    pub access: Access,
    pub help: Shown,
    /// Lines FEAT shows, and when.
    pub feat: &'static [&'static str],
    pub feat_when: Shown,
    /// Counted under its own name in `ftpd_commands_total` (else `OTHER`).
    pub counted: bool,
    pub denied: Denied,
    /// Reads the argument (the bytes after the first space).
    parse: for<'a> fn(&'a [u8]) -> Result<Command<'a>, ParseError>,
}

const ROW: Verb = Verb {
    name: "",
    access: Access::Login,
    help: Shown::Always,
    feat: &[],
    feat_when: Shown::Always,
    counted: true,
    denied: Denied::No,
    parse: |_| Err(ParseError::Unknown),
};

/// Every verb. FEAT shows the `feat` lines in this order (vsftpd's order,
/// then ftpd's additions where they sort); HELP sorts the names itself.
#[rustfmt::skip]
pub static VERBS: &[Verb] = &[
    Verb { name: "AUTH", access: Access::Tls, help: Shown::Tls, feat: &["AUTH TLS", "AUTH SSL"], feat_when: Shown::Tls, counted: false, parse: |a| Ok(Command::Auth(auth_kind(a))), ..ROW },
    Verb { name: "EPRT", feat: &["EPRT"], feat_when: Shown::PortEnable, parse: |a| Ok(Command::Eprt(parse_eprt(a))), ..ROW },
    Verb { name: "EPSV", feat: &["EPSV"], parse: |a| Ok(Command::Epsv(epsv(a))), ..ROW },
    Verb { name: "HASH", feat: &["HASH SHA-256*;SHA-512"], denied: Denied::Whole, parse: |a| Ok(Command::Hash(a)), ..ROW },
    Verb { name: "HOST", access: Access::Open, feat: &["HOST"], parse: |a| Ok(Command::Host(a)), ..ROW },
    Verb { name: "MDTM", feat: &["MDTM"], denied: Denied::Whole, parse: |a| Ok(Command::Mdtm(Mdtm { whole: a, set: split_mdtm_time(a) })), ..ROW },
    Verb { name: "MFMT", feat: &["MFMT"], denied: Denied::AfterWord, parse: |a| Ok(Command::Mfmt(split_mdtm_time(a).filter(|_| is_mfmt_time(a)))), ..ROW },
    Verb { name: "MLST", feat: &["MLST type*;size*;modify*;perm*;unique*;"], denied: Denied::Whole, parse: |a| Ok(Command::Mlst(a)), ..ROW },
    Verb { name: "PASV", feat: &["PASV"], parse: |_| Ok(Command::Pasv), ..ROW },
    Verb { name: "CCC", access: Access::Tls, help: Shown::Tls, feat: &["CCC"], feat_when: Shown::Tls, counted: false, parse: |_| Ok(Command::Ccc), ..ROW },
    Verb { name: "PBSZ", access: Access::Tls, help: Shown::Tls, feat: &["PBSZ"], feat_when: Shown::Tls, counted: false, parse: |_| Ok(Command::Pbsz), ..ROW },
    Verb { name: "PROT", access: Access::Tls, help: Shown::Tls, feat: &["PROT"], feat_when: Shown::Tls, counted: false, parse: |a| Ok(Command::Prot(prot(a))), ..ROW },
    Verb { name: "REST", feat: &["REST STREAM"], parse: |a| Ok(Command::Rest(rest_offset(a))), ..ROW },
    Verb { name: "SIZE", feat: &["SIZE"], denied: Denied::Whole, parse: |a| Ok(Command::Size(a)), ..ROW },
    // Paths are one tree from the user's root, `/`-separated (RFC 3659 TVFS).
    Verb { name: "CWD", feat: &["TVFS"], denied: Denied::Whole, parse: |a| Ok(Command::Cwd(a)), ..ROW },
    // Names pass through unchanged, so UTF-8 ones too.
    Verb { name: "OPTS", access: Access::Open, feat: &["UTF8"], parse: |a| Ok(Command::Opts(opts(a))), ..ROW },
    Verb { name: "XSHA256", feat: &["XSHA256"], denied: Denied::Whole, parse: |a| Ok(Command::Xsha256(a)), ..ROW },
    Verb { name: "ABOR", parse: |_| Ok(Command::Abor), ..ROW },
    Verb { name: "ACCT", parse: |_| Ok(Command::Acct), ..ROW },
    Verb { name: "ALLO", parse: |_| Ok(Command::Allo), ..ROW },
    Verb { name: "APPE", denied: Denied::Whole, parse: |a| Ok(Command::Appe(a)), ..ROW },
    Verb { name: "CDUP", parse: |_| Ok(Command::Cdup), ..ROW },
    Verb { name: "DELE", denied: Denied::Whole, parse: |a| Ok(Command::Dele(a)), ..ROW },
    Verb { name: "FEAT", access: Access::Open, parse: |_| Ok(Command::Feat), ..ROW },
    Verb { name: "HELP", parse: |_| Ok(Command::Help), ..ROW },
    Verb { name: "LIST", denied: Denied::List, parse: |a| Ok(Command::List(ListArgs::parse(a))), ..ROW },
    Verb { name: "MKD", denied: Denied::Whole, parse: |a| Ok(Command::Mkd(a)), ..ROW },
    Verb { name: "MLSD", denied: Denied::Whole, parse: |a| Ok(Command::Mlsd(a)), ..ROW },
    Verb { name: "MODE", parse: |a| if a.eq_ignore_ascii_case(b"S") { Ok(Command::Mode) } else { Err(ParseError::BadMode) }, ..ROW },
    Verb { name: "NLST", denied: Denied::List, parse: |a| Ok(Command::Nlst(ListArgs::parse(a))), ..ROW },
    Verb { name: "NOOP", parse: |_| Ok(Command::Noop), ..ROW },
    Verb { name: "PASS", access: Access::Open, parse: |a| Ok(Command::Pass(a)), ..ROW },
    Verb { name: "PORT", parse: |a| Ok(Command::Port(port_target(a))), ..ROW },
    Verb { name: "PWD", parse: |_| Ok(Command::Pwd), ..ROW },
    Verb { name: "QUIT", access: Access::Open, parse: |_| Ok(Command::Quit), ..ROW },
    Verb { name: "REIN", help: Shown::Never, counted: false, parse: |_| Ok(Command::Rein), ..ROW },
    Verb { name: "RETR", denied: Denied::Whole, parse: |a| Ok(Command::Retr(a)), ..ROW },
    Verb { name: "RMD", denied: Denied::Whole, parse: |a| Ok(Command::Rmd(a)), ..ROW },
    Verb { name: "RNFR", denied: Denied::Whole, parse: |a| Ok(Command::Rnfr(a)), ..ROW },
    Verb { name: "RNTO", parse: |a| Ok(Command::Rnto(a)), ..ROW },
    Verb { name: "SITE", parse: |a| Ok(Command::Site(site(a))), ..ROW },
    Verb { name: "SMNT", help: Shown::Never, counted: false, parse: |_| Ok(Command::Smnt), ..ROW },
    Verb { name: "STAT", denied: Denied::List, parse: |a| Ok(Command::Stat((!a.is_empty()).then(|| ListArgs::parse(a)))), ..ROW },
    Verb { name: "STOR", denied: Denied::Whole, parse: |a| Ok(Command::Stor(a)), ..ROW },
    Verb { name: "STOU", parse: |a| Ok(Command::Stou(a)), ..ROW },
    Verb { name: "STRU", parse: |a| if a.eq_ignore_ascii_case(b"F") { Ok(Command::Stru) } else { Err(ParseError::BadStru) }, ..ROW },
    Verb { name: "SYST", parse: |_| Ok(Command::Syst), ..ROW },
    Verb { name: "TYPE", parse: type_arg, ..ROW },
    Verb { name: "USER", access: Access::Open, parse: |a| Ok(Command::User(a)), ..ROW },
    Verb { name: "XCUP", parse: |_| Ok(Command::Cdup), ..ROW },
    Verb { name: "XCWD", denied: Denied::Whole, parse: |a| Ok(Command::Cwd(a)), ..ROW },
    Verb { name: "XMKD", denied: Denied::Whole, parse: |a| Ok(Command::Mkd(a)), ..ROW },
    Verb { name: "XPWD", parse: |_| Ok(Command::Pwd), ..ROW },
    Verb { name: "XRMD", denied: Denied::Whole, parse: |a| Ok(Command::Rmd(a)), ..ROW },
];

impl Verb {
    /// The row of an upper-case verb.
    pub fn find(name: &str) -> Option<&'static Self> {
        VERBS.iter().find(|v| v.name == name)
    }

    /// The `command` label of `ftpd_commands_total`: a fixed set, so a
    /// client cannot grow the metrics with made-up verbs.
    pub fn label(verb: Option<&Self>) -> &'static str {
        verb.filter(|v| v.counted).map_or("OTHER", |v| v.name)
    }

    /// The part of `arg` that `deny_file` is checked against, if any.
    /// Whether a dead file worker is looked for before the command: not
    /// before those that only set up the next transfer (PASV, EPSV, TYPE,
    /// REST …), which a download sends before its RETR: the RETR (or any
    /// other command) that follows finds it.
    pub fn checks_worker(&self) -> bool {
        !matches!(self.name, "EPRT" | "EPSV" | "MODE" | "PASV" | "PORT" | "REST" | "STRU" | "TYPE")
    }

    pub fn denied_path<'a>(&self, arg: &'a [u8]) -> Option<&'a [u8]> {
        match self.denied {
            Denied::No => None,
            Denied::Whole => Some(arg),
            Denied::List if arg.is_empty() => None,
            Denied::List => Some(ListArgs::parse(arg).path),
            Denied::AfterWord => arg.iter().position(|&b| b == b' ').map(|i| &arg[i + 1..]),
        }
    }
}

fn shown(when: Shown, tls: bool, port_enable: bool) -> bool {
    match when {
        Shown::Never => false,
        Shown::Always => true,
        Shown::Tls => tls,
        Shown::PortEnable => port_enable,
    }
}

/// FEAT's lines (RFC 2389), from the table.
pub fn features(tls: bool, port_enable: bool) -> Vec<String> {
    VERBS
        .iter()
        .filter(|v| shown(v.feat_when, tls, port_enable))
        .flat_map(|v| v.feat.iter().map(|f| (*f).to_owned()))
        .collect()
}

/// HELP's lines: the names in vsftpd's layout (sorted, four columns wide,
/// fifteen to a line), then the FTPS ones on a line of their own.
pub fn help_lines(tls: bool) -> Vec<String> {
    let block = |when: Shown| {
        let mut names: Vec<&str> = VERBS.iter().filter(|v| v.help == when).map(|v| v.name).collect();
        names.sort_unstable();
        names
            .chunks(15)
            .map(|c| c.iter().map(|n| format!("{n:<4}")).collect::<Vec<_>>().join(" ").trim_end().to_owned())
            .collect::<Vec<_>>()
    };
    let mut lines = block(Shown::Always);
    if tls {
        lines.extend(block(Shown::Tls));
    }
    lines
}

impl<'a> Command<'a> {
    /// Parses a command line (Telnet commands already stripped, no line
    /// ending). The verb is case-insensitive; the argument is the raw bytes
    /// after the first space (file names may hold anything but NUL, CR, LF).
    ///
    /// # Errors
    /// A NUL byte, an unknown verb, or an argument vsftpd refuses outright.
    pub fn parse(line: &'a [u8]) -> Result<Self, ParseError> {
        if line.contains(&0) {
            return Err(ParseError::Nul);
        }
        let (verb, arg) = split_command(line);
        let verb = Verb::find(&verb).ok_or(ParseError::Unknown)?;
        (verb.parse)(arg)
    }
}

fn auth_kind(arg: &[u8]) -> Option<AuthKind> {
    match arg.to_ascii_uppercase().as_slice() {
        b"TLS" | b"TLS-C" => Some(AuthKind::Tls),
        b"SSL" | b"TLS-P" => Some(AuthKind::Ssl),
        _ => None,
    }
}

fn prot(arg: &[u8]) -> Prot {
    match arg.to_ascii_uppercase().as_slice() {
        b"C" => Prot::Clear,
        b"P" => Prot::Private,
        b"S" | b"E" => Prot::Unsupported,
        _ => Prot::Unknown,
    }
}

fn epsv(arg: &[u8]) -> Epsv {
    match arg.to_ascii_uppercase().as_slice() {
        b"ALL" => Epsv::All,
        b"" => Epsv::Any,
        b"1" => Epsv::V4,
        b"2" => Epsv::V6,
        _ => Epsv::Other,
    }
}

fn opts(arg: &[u8]) -> Opts {
    let upper = arg.to_ascii_uppercase();
    if upper == b"UTF8 ON" {
        Opts::Utf8On
    } else if upper.starts_with(b"MLST ") || upper == b"MLST" {
        Opts::Mlst
    } else if upper == b"HASH" {
        Opts::HashShow
    } else if let Some(name) = upper.strip_prefix(b"HASH ") {
        HashAlg::parse(name).map_or(Opts::HashUnknown, Opts::HashSet)
    } else {
        Opts::Other
    }
}

fn type_arg(arg: &[u8]) -> Result<Command<'_>, ParseError> {
    match arg.to_ascii_uppercase().as_slice() {
        b"I" | b"L 8" | b"L8" => Ok(Command::Type(true)),
        b"A" | b"A N" => Ok(Command::Type(false)),
        _ => Err(ParseError::BadType),
    }
}

/// vsftpd's reading of REST: the leading digits; anything else (a sign,
/// letters, nothing) counts as 0, so every REST is accepted.
fn rest_offset(arg: &[u8]) -> u64 {
    let digits = arg.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&arg[..digits]).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// `h1,h2,h3,h4,p1,p2` (RFC 959), spaces around the numbers allowed.
fn port_target(arg: &[u8]) -> Option<SocketAddrV4> {
    let n: Vec<u8> =
        std::str::from_utf8(arg).ok().and_then(|s| s.split(',').map(|n| n.trim().parse::<u8>().ok()).collect())?;
    let [a, b, c, d, hi, lo] = n[..] else { return None };
    Some(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from(hi) << 8 | u16::from(lo)))
}

/// Parses `|1|132.235.1.2|6275|` / `|2|::1|6275|` (RFC 2428); any delimiter.
/// The checks come in vsftpd's order, so a bad argument gets its reply.
pub fn parse_eprt(arg: &[u8]) -> Eprt {
    let Ok(s) = std::str::from_utf8(arg) else { return Eprt::Bad };
    let Some(d) = s.chars().next() else { return Eprt::BadProtocol };
    if d.is_ascii_alphanumeric() {
        return Eprt::Bad;
    }
    let parts: Vec<&str> = s.split(d).collect();
    // The number, not its spelling (`01`, `+1`), names the family, as
    // vsftpd reads it with atoi.
    let v4 = match parts.get(1).map(|p| p.parse::<u32>()) {
        Some(Ok(1)) => true,
        Some(Ok(2)) => false,
        Some(Ok(_)) => return Eprt::Unsupported,
        _ => return Eprt::BadProtocol,
    };
    if parts.len() != 5 || !parts[4].is_empty() {
        return Eprt::Bad;
    }
    let Ok(port) = parts[3].parse::<u16>() else { return Eprt::Bad };
    let ip: Option<IpAddr> =
        if v4 { parts[2].parse().ok().map(IpAddr::V4) } else { parts[2].parse().ok().map(IpAddr::V6) };
    ip.map_or(Eprt::Bad, |ip| Eprt::Addr(SocketAddr::new(ip, port)))
}

fn site(arg: &[u8]) -> Site<'_> {
    let (sub, rest) = split_command(arg);
    match sub.as_str() {
        "CHMOD" => {
            let (mode, path) = match rest.iter().position(|&b| b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            let mode =
                std::str::from_utf8(mode).ok().and_then(|m| u32::from_str_radix(m, 8).ok()).filter(|m| *m <= 0o7777);
            Site::Chmod { mode, path }
        }
        "UMASK" if rest.is_empty() => Site::Umask(Umask::Show),
        "UMASK" => Site::Umask(
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 8).ok())
                .filter(|m| *m <= 0o777)
                .map_or(Umask::Bad, Umask::Set),
        ),
        "HELP" => Site::Help,
        _ => Site::Unknown,
    }
}

/// Splits vsftpd's `MDTM TIME FILE`: `TIME` is `YYYYMMDD`, `YYYYMMDDHHMMSS`
/// or that with a fraction (ignored); returns the time as seconds since the
/// epoch read as UTC, and the file name. `None`: not that form.
pub fn split_mdtm_time(arg: &[u8]) -> Option<(i64, &[u8])> {
    let space = arg.iter().position(|&b| b == b' ')?;
    let (time, name) = (&arg[..space], &arg[space + 1..]);
    let digits = match time.len() {
        8 | 14 => time,
        n if n > 15 && time[14] == b'.' => &time[..14],
        _ => return None,
    };
    if name.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| std::str::from_utf8(digits.get(r)?).ok()?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = if digits.len() == 14 { (num(8..10)?, num(10..12)?, num(12..14)?) } else { (0, 0, 0) };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some((days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s), name))
}

/// MFMT's time is `YYYYMMDDHHMMSS`, optionally with a fraction; vsftpd's
/// MDTM also takes a bare date, MFMT does not.
fn is_mfmt_time(arg: &[u8]) -> bool {
    arg.get(8).is_some_and(u8::is_ascii_digit)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn v4(s: &str) -> SocketAddrV4 {
        s.parse().expect("test address")
    }

    fn list(all: bool, long: bool, recurse: bool, path: &[u8]) -> ListArgs<'_> {
        ListArgs { all, long, recurse, path }
    }

    /// One case per verb and per argument form, malformed ones included:
    /// `(line, parsed)`.
    #[test]
    fn every_verb_and_argument() {
        use Command as C;
        let cases: Vec<(&[u8], Result<Command<'_>, ParseError>)> = vec![
            (b"USER alice", Ok(C::User(b"alice"))),
            (b"user alice", Ok(C::User(b"alice"))),
            (b"USER", Ok(C::User(b""))),
            (b"PASS a b ", Ok(C::Pass(b"a b "))),
            (b"QUIT", Ok(C::Quit)),
            (b"QUIT now", Ok(C::Quit)),
            (b"FEAT x", Ok(C::Feat)),
            (b"OPTS UTF8 ON", Ok(C::Opts(Opts::Utf8On))),
            (b"OPTS utf8 on", Ok(C::Opts(Opts::Utf8On))),
            (b"OPTS UTF8 OFF", Ok(C::Opts(Opts::Other))),
            (b"OPTS UTF8", Ok(C::Opts(Opts::Other))),
            (b"OPTS MLST type;", Ok(C::Opts(Opts::Mlst))),
            (b"OPTS MLST", Ok(C::Opts(Opts::Mlst))),
            (b"OPTS MLSTX", Ok(C::Opts(Opts::Other))),
            (b"OPTS", Ok(C::Opts(Opts::Other))),
            (b"OPTS HASH", Ok(C::Opts(Opts::HashShow))),
            (b"OPTS HASH sha-512", Ok(C::Opts(Opts::HashSet(HashAlg::Sha512)))),
            (b"OPTS HASH SHA-256", Ok(C::Opts(Opts::HashSet(HashAlg::Sha256)))),
            (b"OPTS HASH CRC-37", Ok(C::Opts(Opts::HashUnknown))),
            (b"OPTS HASH ", Ok(C::Opts(Opts::HashUnknown))),
            (b"HOST ftp.example.org", Ok(C::Host(b"ftp.example.org"))),
            (b"HOST", Ok(C::Host(b""))),
            (b"AUTH TLS", Ok(C::Auth(Some(AuthKind::Tls)))),
            (b"AUTH tls-c", Ok(C::Auth(Some(AuthKind::Tls)))),
            (b"AUTH SSL", Ok(C::Auth(Some(AuthKind::Ssl)))),
            (b"AUTH TLS-P", Ok(C::Auth(Some(AuthKind::Ssl)))),
            (b"AUTH KERBEROS", Ok(C::Auth(None))),
            (b"AUTH", Ok(C::Auth(None))),
            (b"PBSZ 0", Ok(C::Pbsz)),
            (b"PROT C", Ok(C::Prot(Prot::Clear))),
            (b"PROT p", Ok(C::Prot(Prot::Private))),
            (b"PROT S", Ok(C::Prot(Prot::Unsupported))),
            (b"PROT E", Ok(C::Prot(Prot::Unsupported))),
            (b"PROT X", Ok(C::Prot(Prot::Unknown))),
            (b"PROT", Ok(C::Prot(Prot::Unknown))),
            (b"CCC", Ok(C::Ccc)),
            (b"HELP LIST", Ok(C::Help)),
            (b"ABOR", Ok(C::Abor)),
            (b"REIN", Ok(C::Rein)),
            (b"SMNT x", Ok(C::Smnt)),
            (b"SYST", Ok(C::Syst)),
            (b"NOOP x", Ok(C::Noop)),
            (b"ACCT x", Ok(C::Acct)),
            (b"ALLO 100", Ok(C::Allo)),
            (b"PWD", Ok(C::Pwd)),
            (b"XPWD", Ok(C::Pwd)),
            (b"CWD pub", Ok(C::Cwd(b"pub"))),
            (b"XCWD a b", Ok(C::Cwd(b"a b"))),
            (b"CWD", Ok(C::Cwd(b""))),
            (b"CDUP", Ok(C::Cdup)),
            (b"XCUP", Ok(C::Cdup)),
            (b"TYPE I", Ok(C::Type(true))),
            (b"TYPE i", Ok(C::Type(true))),
            (b"TYPE L 8", Ok(C::Type(true))),
            (b"TYPE L8", Ok(C::Type(true))),
            (b"TYPE A", Ok(C::Type(false))),
            (b"TYPE A N", Ok(C::Type(false))),
            (b"TYPE E", Err(ParseError::BadType)),
            (b"TYPE X", Err(ParseError::BadType)),
            (b"TYPE", Err(ParseError::BadType)),
            (b"TYPE A T", Err(ParseError::BadType)),
            (b"MODE S", Ok(C::Mode)),
            (b"MODE s", Ok(C::Mode)),
            (b"MODE B", Err(ParseError::BadMode)),
            (b"MODE", Err(ParseError::BadMode)),
            (b"STRU F", Ok(C::Stru)),
            (b"STRU R", Err(ParseError::BadStru)),
            (b"STRU", Err(ParseError::BadStru)),
            (b"PASV", Ok(C::Pasv)),
            (b"EPSV", Ok(C::Epsv(Epsv::Any))),
            (b"EPSV ALL", Ok(C::Epsv(Epsv::All))),
            (b"EPSV all", Ok(C::Epsv(Epsv::All))),
            (b"EPSV 1", Ok(C::Epsv(Epsv::V4))),
            (b"EPSV 2", Ok(C::Epsv(Epsv::V6))),
            (b"EPSV 3", Ok(C::Epsv(Epsv::Other))),
            (b"EPSV 01", Ok(C::Epsv(Epsv::Other))),
            (b"EPSV x", Ok(C::Epsv(Epsv::Other))),
            (b"PORT 127,0,0,1,156,64", Ok(C::Port(Some(v4("127.0.0.1:40000"))))),
            (b"PORT 127, 0,0,1 ,0,21", Ok(C::Port(Some(v4("127.0.0.1:21"))))),
            (b"PORT 127,0,0,1,300,1", Ok(C::Port(None))),
            (b"PORT 127,0,0,1,156", Ok(C::Port(None))),
            (b"PORT 127,0,0,1,156,64,1", Ok(C::Port(None))),
            (b"PORT x", Ok(C::Port(None))),
            (b"PORT", Ok(C::Port(None))),
            (b"PORT 127,0,0,1,-1,1", Ok(C::Port(None))),
            (b"EPRT |1|127.0.0.1|40000|", Ok(C::Eprt(Eprt::Addr(addr("127.0.0.1:40000"))))),
            (b"EPRT |2|::1|40000|", Ok(C::Eprt(Eprt::Addr(addr("[::1]:40000"))))),
            (b"EPRT !1!127.0.0.1!40000!", Ok(C::Eprt(Eprt::Addr(addr("127.0.0.1:40000"))))),
            (b"EPRT |1|127.0.0.1|0|", Ok(C::Eprt(Eprt::Addr(addr("127.0.0.1:0"))))),
            (b"EPRT |3|x|5000|", Ok(C::Eprt(Eprt::Unsupported))),
            (b"EPRT ||x|5000|", Ok(C::Eprt(Eprt::BadProtocol))),
            (b"EPRT", Ok(C::Eprt(Eprt::BadProtocol))),
            (b"EPRT |1|127.0.0.1|", Ok(C::Eprt(Eprt::Bad))),
            (b"EPRT |1|::1|20|", Ok(C::Eprt(Eprt::Bad))),
            (b"EPRT |1|10.0.0.1|70000|", Ok(C::Eprt(Eprt::Bad))),
            (b"EPRT 1|10.0.0.1|20|", Ok(C::Eprt(Eprt::Bad))),
            (b"EPRT x", Ok(C::Eprt(Eprt::Bad))),
            (b"EPRT \xff", Ok(C::Eprt(Eprt::Bad))),
            (b"REST 5", Ok(C::Rest(5))),
            (b"REST 12abc", Ok(C::Rest(12))),
            (b"REST abc", Ok(C::Rest(0))),
            (b"REST -1", Ok(C::Rest(0))),
            (b"REST", Ok(C::Rest(0))),
            (b"REST 99999999999999999999999", Ok(C::Rest(0))),
            (b"SIZE README", Ok(C::Size(b"README"))),
            (b"SIZE", Ok(C::Size(b""))),
            (b"MDTM README", Ok(C::Mdtm(Mdtm { whole: b"README", set: None }))),
            (
                b"MDTM 20200101000000 a b",
                Ok(C::Mdtm(Mdtm { whole: b"20200101000000 a b", set: Some((1_577_836_800, b"a b")) })),
            ),
            (b"MLST", Ok(C::Mlst(b""))),
            (b"MLST README", Ok(C::Mlst(b"README"))),
            (b"STAT", Ok(C::Stat(None))),
            (b"STAT pub/sub", Ok(C::Stat(Some(list(false, false, false, b"pub/sub"))))),
            (b"STAT -R .", Ok(C::Stat(Some(list(false, false, true, b"."))))),
            (b"LIST", Ok(C::List(list(false, false, false, b"")))),
            (b"LIST -la pub", Ok(C::List(list(true, true, false, b"pub")))),
            (b"LIST -a -R", Ok(C::List(list(true, false, true, b"")))),
            (b"LIST -x name with spaces", Ok(C::List(list(false, false, false, b"name with spaces")))),
            (b"LIST a -l", Ok(C::List(list(false, false, false, b"a -l")))),
            (b"NLST -l", Ok(C::Nlst(list(false, true, false, b"")))),
            (b"NLST *.txt", Ok(C::Nlst(list(false, false, false, b"*.txt")))),
            (b"MLSD -a", Ok(C::Mlsd(b"-a"))),
            (b"RETR name with spaces.txt", Ok(C::Retr(b"name with spaces.txt"))),
            (b"RETR  lead", Ok(C::Retr(b" lead"))),
            (b"STOR x", Ok(C::Stor(b"x"))),
            (b"APPE x", Ok(C::Appe(b"x"))),
            (b"STOU", Ok(C::Stou(b""))),
            (b"MKD x", Ok(C::Mkd(b"x"))),
            (b"XMKD x", Ok(C::Mkd(b"x"))),
            (b"RMD x", Ok(C::Rmd(b"x"))),
            (b"XRMD x", Ok(C::Rmd(b"x"))),
            (b"DELE x", Ok(C::Dele(b"x"))),
            (b"RNFR x", Ok(C::Rnfr(b"x"))),
            (b"RNTO y", Ok(C::Rnto(b"y"))),
            (b"SITE HELP", Ok(C::Site(Site::Help))),
            (b"SITE", Ok(C::Site(Site::Unknown))),
            (b"SITE FOO", Ok(C::Site(Site::Unknown))),
            (b"SITE CHMOD 644 README", Ok(C::Site(Site::Chmod { mode: Some(0o644), path: b"README" }))),
            (b"site chmod 7777 a b", Ok(C::Site(Site::Chmod { mode: Some(0o7777), path: b"a b" }))),
            (b"SITE CHMOD 10000 a", Ok(C::Site(Site::Chmod { mode: None, path: b"a" }))),
            (b"SITE CHMOD 9 a", Ok(C::Site(Site::Chmod { mode: None, path: b"a" }))),
            (b"SITE CHMOD 644", Ok(C::Site(Site::Chmod { mode: Some(0o644), path: b"" }))),
            (b"SITE UMASK", Ok(C::Site(Site::Umask(Umask::Show)))),
            (b"SITE UMASK 022", Ok(C::Site(Site::Umask(Umask::Set(0o22))))),
            (b"SITE UMASK 1000", Ok(C::Site(Site::Umask(Umask::Bad)))),
            (b"SITE UMASK x", Ok(C::Site(Site::Umask(Umask::Bad)))),
            (b"XSHA256 pub/big.iso", Ok(C::Xsha256(b"pub/big.iso"))),
            (b"xsha256", Ok(C::Xsha256(b""))),
            (b"HASH a file", Ok(C::Hash(b"a file"))),
            (b"XYZZY", Err(ParseError::Unknown)),
            (b"xyzzy plugh", Err(ParseError::Unknown)),
            (b"", Err(ParseError::Unknown)),
            (b" NOOP", Err(ParseError::Unknown)),
            (b"TOOLONGVERB", Err(ParseError::Unknown)),
            (b"NOOP\0x", Err(ParseError::Nul)),
            (b"CWD pub\0x", Err(ParseError::Nul)),
        ];
        for (line, want) in cases {
            assert_eq!(Command::parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn malformed_arguments_get_vsftpds_replies() {
        for (line, code, text) in [
            (&b"TYPE X"[..], 500, "Unrecognised TYPE command."),
            (b"MODE B", 504, "Bad MODE command."),
            (b"STRU R", 504, "Bad STRU command."),
            (b"XYZZY", 500, "Unknown command."),
            (b"NOOP\0", 501, "NUL byte in command."),
        ] {
            let r = Command::parse(line).expect_err("malformed").reply();
            assert_eq!((r.code, r.text), (code, text));
        }
    }

    #[test]
    fn every_verb_has_one_row_and_parses() {
        for (i, v) in VERBS.iter().enumerate() {
            assert!(VERBS[i + 1..].iter().all(|w| w.name != v.name), "{} twice", v.name);
            assert!(v.name.len() <= 8 && v.name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            assert!(Verb::find(v.name).is_some_and(|f| std::ptr::eq(f, v)));
            // A verb that split_command could not read would be unreachable.
            assert_eq!(split_command(v.name.to_ascii_lowercase().as_bytes()).0, v.name);
        }
    }

    #[test]
    fn help_keeps_vsftpds_layout() {
        let lines = help_lines(true);
        assert_eq!(
            lines,
            [
                "ABOR ACCT ALLO APPE CDUP CWD  DELE EPRT EPSV FEAT HASH HELP HOST LIST MDTM",
                "MFMT MKD  MLSD MLST MODE NLST NOOP OPTS PASS PASV PORT PWD  QUIT REST RETR",
                "RMD  RNFR RNTO SITE SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD",
                "XPWD XRMD XSHA256",
                "AUTH CCC  PBSZ PROT",
            ]
        );
        assert_eq!(help_lines(false).len(), 4);
    }

    #[test]
    fn feat_lines_in_order() {
        assert_eq!(
            features(false, true),
            [
                "EPRT",
                "EPSV",
                "HASH SHA-256*;SHA-512",
                "HOST",
                "MDTM",
                "MFMT",
                "MLST type*;size*;modify*;perm*;unique*;",
                "PASV",
                "REST STREAM",
                "SIZE",
                "TVFS",
                "UTF8",
                "XSHA256"
            ]
        );
        let tls = features(true, false);
        assert_eq!(tls[..2], ["AUTH TLS", "AUTH SSL"]);
        assert!(!tls.contains(&"EPRT".to_owned()));
        assert!(tls.contains(&"PBSZ".to_owned()) && tls.contains(&"CCC".to_owned()));
    }

    #[test]
    fn metrics_labels_are_the_table() {
        assert_eq!(Verb::label(Verb::find("RETR")), "RETR");
        assert_eq!(Verb::label(Verb::find("XSHA256")), "XSHA256");
        assert_eq!(Verb::label(Verb::find("AUTH")), "OTHER");
        assert_eq!(Verb::label(None), "OTHER");
    }

    #[test]
    fn deny_file_sees_the_path() {
        let f = |v: &str, a: &'static [u8]| Verb::find(v).expect("verb").denied_path(a);
        assert_eq!(f("RETR", b"a b"), Some(&b"a b"[..]));
        assert_eq!(f("LIST", b"-la pub"), Some(&b"pub"[..]));
        assert_eq!(f("LIST", b""), None);
        assert_eq!(f("STOU", b"x"), None);
    }

    #[test]
    fn mfmt_takes_a_full_time_and_a_file() {
        let p = |a: &[u8]| Command::parse(&[&b"MFMT "[..], a].concat()).map(|c| format!("{c:?}"));
        let ok = |c: Command<'_>| Ok(format!("{c:?}"));
        assert_eq!(p(b"20200101000000 a b"), ok(Command::Mfmt(Some((1_577_836_800, b"a b")))));
        assert_eq!(p(b"20210203040506.123 f"), ok(Command::Mfmt(Some((1_612_325_106, b"f")))));
        assert_eq!(p(b"20200101 f"), ok(Command::Mfmt(None)), "a bare date is MDTM's, not MFMT's");
        assert_eq!(p(b"20201301000000 f"), ok(Command::Mfmt(None)));
        assert_eq!(p(b"20200101000000"), ok(Command::Mfmt(None)));
        let row = Verb::find("MFMT").expect("MFMT is in the table");
        assert_eq!(row.denied_path(b"20200101000000 dir/x.txt"), Some(&b"dir/x.txt"[..]), "deny_file sees the file");
    }

    #[test]
    fn mdtm_times_parse_as_vsftpd_reads_them() {
        assert_eq!(split_mdtm_time(b"20200101000000 a b"), Some((1_577_836_800, &b"a b"[..])));
        assert_eq!(split_mdtm_time(b"20210203040506.123 f"), Some((1_612_325_106, &b"f"[..])));
        assert_eq!(split_mdtm_time(b"19700102 f"), Some((86_400, &b"f"[..])));
        assert_eq!(split_mdtm_time(b"2020010100000 f"), None, "13 digits");
        assert_eq!(split_mdtm_time(b"20201301000000 f"), None, "month 13");
        assert_eq!(split_mdtm_time(b"2020010100000x f"), None);
        assert_eq!(split_mdtm_time(b"20200101000000 "), None, "no file");
        assert_eq!(split_mdtm_time(b"file.txt"), None);
    }

    #[test]
    fn eprt_protocol_number_decides_the_family_however_written() {
        let v4: SocketAddr = "10.0.0.1:2000".parse().unwrap();
        assert_eq!(parse_eprt(b"|01|10.0.0.1|2000|"), Eprt::Addr(v4));
        assert_eq!(parse_eprt(b"|+1|10.0.0.1|2000|"), Eprt::Addr(v4));
        // Protocol 1 with an IPv6 address is not an IPv4 target.
        assert_eq!(parse_eprt(b"|+1|::1|2000|"), Eprt::Bad);
        assert_eq!(parse_eprt(b"|02|::1|2000|"), Eprt::Addr("[::1]:2000".parse().unwrap()));
    }
}
