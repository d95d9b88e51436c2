//! Who may log in and as whom: system accounts, PAM, the virtual users file,
//! password hashes.
//!
//! PAM is loaded with `dlopen` at the first local login, so ftpd builds and
//! runs without PAM's development files, and a host without PAM gets a clear
//! error instead of a missing-library crash.

use std::{
    collections::HashMap,
    ffi::{CStr, CString, c_char, c_int, c_void},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
};

/// Longest user name and password accepted (vsftpd's `VSFTP_USERNAME_MAX`).
pub const MAX_CREDENTIAL: usize = 128;

/// A system account, from the password database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
}

/// Looks a user up in the system's user database: `None` when there is no
/// such user, or when the lookup failed (see [`lookup`] to tell which).
pub fn account(name: &str) -> Option<Account> {
    lookup(name).ok().flatten()
}

/// Looks a user up with `getpwnam_r` (through nix), so every source that
/// nsswitch.conf names counts (files, LDAP, systemd-userdb), as for any
/// other program on the host. `Ok(None)`: no such user; `Err`: a source
/// failed to answer (its reason, for the operator).
pub fn lookup(name: &str) -> Result<Option<Account>, String> {
    let user = match nix::unistd::User::from_name(name) {
        Ok(user) => user,
        Err(e) if not_found(e) => None,
        Err(e) => return Err(format!("looking up user `{name}`: {e}")),
    };
    Ok(user.map(|u| Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
        shell: u.shell.to_string_lossy().into_owned(),
    }))
}

/// Whether a `getpw*_r`/`getgr*_r` error means "no such entry": POSIX says
/// that is a success with no result, but getpwnam(3) lists ENOENT, ESRCH,
/// EBADF and EPERM as what some NSS modules return instead.
pub fn not_found(e: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(e, Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM)
}

/// The user's supplementary groups (`getgrouplist`), primary group included;
/// just the primary group when the user database cannot say.
pub fn groups(acct: &Account) -> Vec<u32> {
    let Ok(cname) = CString::new(acct.name.as_str()) else { return vec![acct.gid] };
    nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(acct.gid))
        .map_or_else(|_| vec![acct.gid], |gids| gids.into_iter().map(nix::unistd::Gid::as_raw).collect())
}

/// Whether `shell` is listed in /etc/shells (`check_shell`).
pub fn shell_allowed(shell: &str) -> bool {
    std::fs::read_to_string("/etc/shells").is_ok_and(|t| t.lines().any(|l| l.trim() == shell))
}

/// Reads a one-name-per-line list (`userlist_file`, `chroot_list_file`,
/// `banned_email_file`). A missing file is an empty list.
pub fn read_list(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty() && !l.starts_with('#')).collect())
        .unwrap_or_default()
}

/// `virtual_users_file`: `user:hash` lines (ftpd extension).
#[derive(Debug)]
pub struct VirtualUsers {
    /// Each user's hash and the index of its cost class in `classes`.
    users: HashMap<String, (String, usize)>,
    /// One hash of each cost class (algorithm and parameters) in the file.
    /// A failed check costs one verification of every class, so that the
    /// time of a `530` is the same for an unknown name and for any user,
    /// whatever hashes the file mixes (see [`VirtualUsers::check`]).
    classes: Vec<String>,
}

/// Bounds on the cost of one hash in the users file. Checking a password is
/// done by the root master for every `PASS`, so a line may not make that
/// unbounded: one `t=4000000` entry used to freeze the master. Generous for
/// real use: `ftpd passwd` writes m=19456 KiB, t=2, p=1 (the argon2 crate's
/// default, OWASP's first choice); RFC 9106's second recommendation is
/// m=64 MiB, t=3, p=4; `openssl passwd -6` writes 5 000 rounds.
pub const ARGON2_MAX_M_KIB: u32 = 1024 * 1024;
/// Argon2 passes at most.
pub const ARGON2_MAX_T: u32 = 16;
/// Argon2 lanes at most.
pub const ARGON2_MAX_P: u32 = 16;
/// SHA-512-crypt `rounds=` at most (about 2 s of one core).
pub const SHA_CRYPT_MAX_ROUNDS: usize = 5_000_000;

/// Why `name` cannot be a virtual user, if it cannot: `ftpd passwd` and
/// the users file refuse the same names. A `/` or a `.`/`..` name would move
/// a `user_sub_token` root elsewhere; spaces would be part of the name.
pub fn bad_user_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty user name")
    } else if name.len() > MAX_CREDENTIAL {
        Some("user name longer than 128 bytes")
    } else if name == "." || name == ".." {
        Some("user name . or ..")
    } else if name.contains(['/', ':']) {
        Some("user name with '/' or ':'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("user name with a space or a control character")
    } else {
        None
    }
}

impl VirtualUsers {
    /// Loads and checks the whole file: the first bad line (malformed, a
    /// name `ftpd passwd` refuses, a duplicate, an unsupported, unusable or
    /// too costly hash) is an error naming the file, the line and the reason.
    /// Parses only: no password hash is computed, so loading is quick
    /// whatever the file holds.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut users: HashMap<String, (String, usize)> = HashMap::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        let mut kinds: Vec<HashClass> = Vec::new();
        let mut classes: Vec<String> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let at = |why: String| format!("{}:{}: {why}", path.display(), i + 1);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(at("expected user:hash (create entries with `ftpd passwd FILE USER`)".into()));
            };
            if let Some(why) = bad_user_name(user) {
                return Err(at(format!("{why}: {user:?}")));
            }
            if let Some(other) = lines.get(user) {
                return Err(at(format!("{user} is already defined on line {other}")));
            }
            if !is_supported_hash(hash) {
                return Err(at(format!("unsupported hash for {user} (use argon2 or $6$ SHA-512 crypt)")));
            }
            let kind = hash_class(hash).map_err(|why| at(format!("hash of {user}: {why}")))?;
            let class = match kinds.iter().position(|k| *k == kind) {
                Some(c) => c,
                None => {
                    kinds.push(kind);
                    classes.push(hash.to_owned());
                    classes.len() - 1
                }
            };
            lines.insert(user.to_owned(), i + 1);
            users.insert(user.to_owned(), (hash.to_owned(), class));
        }
        Ok(Self { users, classes })
    }

    /// Users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Different hash algorithms or parameters in the file: each makes a
    /// failed login cost one more hash.
    pub fn classes(&self) -> usize {
        self.classes.len()
    }

    /// Checks a password; unknown users and wrong passwords look the same.
    /// A failed check verifies the password against one hash of every cost
    /// class of the file (the user's own for its class): the same work for
    /// an unknown name as for any user, so the time of the answer does not
    /// tell which names exist, even when the file mixes algorithms.
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        let own = match self.users.get(user) {
            Some((h, class)) => {
                if verify(h, password) {
                    return true;
                }
                Some(*class)
            }
            None => None,
        };
        for (i, h) in self.classes.iter().enumerate() {
            if Some(i) != own {
                // Only the time matters: the result is not used.
                let _ = std::hint::black_box(verify(h, password));
            }
        }
        false
    }
}

/// The users of `path`, read again only when the file changed. A file that
/// became bad (or unreadable) keeps the users read before, and the reason is
/// logged (once per change); without users read before, it is an error.
pub fn virtual_users(path: &Path) -> Result<std::sync::Arc<VirtualUsers>, String> {
    use std::os::unix::fs::MetadataExt;
    type Stamp = (u64, u64, u64, i64, i64, i64, i64);
    struct Cached {
        path: PathBuf,
        good: Option<(Stamp, std::sync::Arc<VirtualUsers>)>,
        bad: Option<Stamp>,
    }
    static CACHE: std::sync::Mutex<Option<Cached>> = std::sync::Mutex::new(None);
    let stamp = std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
        .unwrap_or_default();
    let mut guard = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cached = match guard.as_mut() {
        Some(c) if c.path == path => c,
        _ => guard.insert(Cached { path: path.to_path_buf(), good: None, bad: None }),
    };
    if let Some((at, users)) = &cached.good
        && *at == stamp
    {
        return Ok(std::sync::Arc::clone(users));
    }
    match VirtualUsers::load(path) {
        Ok(users) => {
            if users.is_empty() {
                tracing::warn!("virtual_users_file: {} has no users: no virtual user can log in", path.display());
            }
            if users.classes() > 1 {
                tracing::warn!(
                    "virtual_users_file: {} mixes {} hash algorithms or parameters: a failed login costs one hash \
                     of each (so that its time does not tell which names exist); re-hash the passwords with \
                     `ftpd passwd` to make them alike",
                    path.display(),
                    users.classes()
                );
            }
            let users = std::sync::Arc::new(users);
            cached.good = Some((stamp, std::sync::Arc::clone(&users)));
            cached.bad = None;
            Ok(users)
        }
        Err(e) => match &cached.good {
            Some((_, old)) => {
                if cached.bad != Some(stamp) {
                    tracing::warn!("virtual_users_file: {e}; keeping the users read before");
                    cached.bad = Some(stamp);
                }
                Ok(std::sync::Arc::clone(old))
            }
            None => Err(e),
        },
    }
}

/// What a check of `hash` costs: its algorithm and parameters. Entries of
/// one class cost the same to verify.
#[derive(Debug, PartialEq, Eq)]
enum HashClass {
    /// Algorithm, version, m, t, p, output length.
    Argon2(String, u32, u32, u32, u32, usize),
    /// Rounds.
    ShaCrypt(usize),
}

/// Parses `hash` completely and checks its cost against the bounds above:
/// an entry that can never match (no output) or that would make each
/// check unbounded is refused when the file is read, not found at login.
fn hash_class(hash: &str) -> Result<HashClass, String> {
    if hash.starts_with("$argon2") {
        let h = PasswordHash::new(hash).map_err(|e| format!("malformed argon2 hash: {e}"))?;
        let algorithm = argon2::Algorithm::try_from(h.algorithm).map_err(|e| format!("argon2 hash: {e}"))?;
        let version = match h.version {
            Some(v) => argon2::Version::try_from(v).map_err(|e| format!("argon2 hash: {e}"))?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&h).map_err(|e| format!("argon2 hash: {e}"))?;
        let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
        if m > ARGON2_MAX_M_KIB || t > ARGON2_MAX_T || p > ARGON2_MAX_P {
            return Err(format!(
                "argon2 cost m={m},t={t},p={p} too high (at most m={ARGON2_MAX_M_KIB},t={ARGON2_MAX_T},p={ARGON2_MAX_P})"
            ));
        }
        if h.salt.is_none() {
            return Err("argon2 hash without a salt".into());
        }
        let Some(output) = h.hash else { return Err("argon2 hash without its output (after the salt)".into()) };
        Ok(HashClass::Argon2(algorithm.as_str().to_owned(), u32::from(version), m, t, p, output.len()))
    } else if let Some(rest) = hash.strip_prefix("$6$") {
        let (rounds, rest) = match rest.strip_prefix("rounds=") {
            Some(r) => {
                let (n, rest) = r.split_once('$').ok_or("$6$ hash: rounds= without a salt")?;
                (n.parse::<usize>().map_err(|_| format!("$6$ hash: bad rounds={n}"))?, rest)
            }
            None => (sha_crypt::ROUNDS_DEFAULT, rest),
        };
        if !(sha_crypt::ROUNDS_MIN..=SHA_CRYPT_MAX_ROUNDS).contains(&rounds) {
            return Err(format!(
                "$6$ hash: rounds={rounds} out of range ({} to {SHA_CRYPT_MAX_ROUNDS})",
                sha_crypt::ROUNDS_MIN
            ));
        }
        let (salt, out) = rest.split_once('$').ok_or("$6$ hash without its output (after the salt)")?;
        let crypt64 = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
        if salt.is_empty() || salt.contains('$') {
            return Err("$6$ hash with a bad salt".into());
        }
        if out.len() != 86 || !out.chars().all(crypt64) {
            return Err("$6$ hash output is not 86 crypt characters".into());
        }
        Ok(HashClass::ShaCrypt(rounds))
    } else {
        Err("unsupported hash".into())
    }
}

fn is_supported_hash(h: &str) -> bool {
    h.starts_with("$argon2") || h.starts_with("$6$")
}

/// Verifies `password` against an argon2 PHC string or a `$6$` crypt hash.
pub fn verify(hash: &str, password: &[u8]) -> bool {
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok());
    }
    if hash.starts_with("$6$") {
        let Ok(pw) = std::str::from_utf8(password) else { return false };
        return sha_crypt::sha512_check(pw, hash).is_ok();
    }
    false
}

/// Hashes a new password with argon2id and a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rustix::rand::getrandom(&mut salt, rustix::rand::GetRandomFlags::empty()).map_err(|e| format!("getrandom: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password, &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// `ftpd passwd FILE USER`: adds or replaces USER's line, keeping the others.
pub fn set_virtual_password(file: &Path, user: &str, password: &[u8]) -> Result<(), String> {
    if let Some(why) = bad_user_name(user) {
        return Err(format!("invalid user name {user:?}: {why}"));
    }
    let hash = hash_password(password)?;
    let old = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let mut out = String::new();
    let mut replaced = false;
    for line in old.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u == user) {
            out.push_str(&format!("{user}:{hash}\n"));
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    // Write beside, then rename: a crash never leaves a half-written user file.
    let tmp = file.with_extension("ftpd-new");
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(out.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))
}

// ---- PAM, through dlopen ----

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int,
    appdata_ptr: *mut c_void,
}

type PamStart = unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type PamCall = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type PamSetItem = unsafe extern "C" fn(*mut c_void, c_int, *const c_void) -> c_int;

struct PamLib {
    start: PamStart,
    authenticate: PamCall,
    acct_mgmt: PamCall,
    end: PamCall,
    set_item: PamSetItem,
}

const PAM_SUCCESS: c_int = 0;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_RHOST: c_int = 4;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;

fn pam_lib() -> Result<&'static PamLib, String> {
    static LIB: OnceLock<Result<PamLib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols are cast
        // to the prototypes documented in pam_appl.h.
        unsafe {
            let h = libc::dlopen(c"libpam.so.0".as_ptr(), libc::RTLD_NOW);
            if h.is_null() {
                return Err("libpam.so.0 not found (install libpam0g) — local_enable needs PAM".into());
            }
            let sym = |n: &CStr| {
                let p = libc::dlsym(h, n.as_ptr());
                if p.is_null() { Err(format!("libpam lacks {}", n.to_string_lossy())) } else { Ok(p) }
            };
            Ok(PamLib {
                start: std::mem::transmute::<*mut c_void, PamStart>(sym(c"pam_start")?),
                authenticate: std::mem::transmute::<*mut c_void, PamCall>(sym(c"pam_authenticate")?),
                acct_mgmt: std::mem::transmute::<*mut c_void, PamCall>(sym(c"pam_acct_mgmt")?),
                end: std::mem::transmute::<*mut c_void, PamCall>(sym(c"pam_end")?),
                set_item: std::mem::transmute::<*mut c_void, PamSetItem>(sym(c"pam_set_item")?),
            })
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Answers every prompt with the password (PAM asks for it with echo off;
/// some modules ask for the name again with echo on).
extern "C" fn conversation(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    data: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(n) else { return PAM_CONV_ERR };
    if count == 0 || count > 32 {
        return PAM_CONV_ERR;
    }
    // SAFETY: PAM frees the responses with free(); allocate them with calloc.
    let out = unsafe { libc::calloc(count, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if out.is_null() {
        return PAM_BUF_ERR;
    }
    // SAFETY: `data` is the `CString` password passed to pam_start below.
    let password = unsafe { &*data.cast::<CString>() };
    for i in 0..count {
        // SAFETY: Linux-PAM passes an array of `n` message pointers.
        let style = unsafe { (**msgs.add(i)).msg_style };
        if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
            // SAFETY: strdup copies the NUL-terminated password into malloc'd memory PAM frees.
            unsafe { (*out.add(i)).resp = libc::strdup(password.as_ptr()) };
        }
    }
    // SAFETY: `resp` is PAM's out-pointer.
    unsafe { *resp = out };
    PAM_SUCCESS
}

/// Authenticates `user` with `password` through PAM service `service`, then
/// checks the account (expiry, `pam_nologin`, …).
pub fn pam_login(service: &str, user: &str, password: &[u8], rhost: &str) -> Result<(), String> {
    let lib = pam_lib()?;
    let service = CString::new(service).map_err(|_| "bad pam_service_name")?;
    let cuser = CString::new(user).map_err(|_| "bad user name")?;
    let pw = CString::new(password).map_err(|_| "NUL in password")?;
    let rhost = CString::new(rhost).map_err(|_| "bad host")?;
    let conv = PamConv { conv: conversation, appdata_ptr: (&raw const pw).cast_mut().cast() };
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: every pointer outlives the PAM transaction, which ends below.
    unsafe {
        let rc = (lib.start)(service.as_ptr(), cuser.as_ptr(), &conv, &mut handle);
        if rc != PAM_SUCCESS {
            return Err(format!("pam_start failed ({rc})"));
        }
        (lib.set_item)(handle, PAM_RHOST, rhost.as_ptr().cast());
        let mut rc = (lib.authenticate)(handle, 0);
        if rc == PAM_SUCCESS {
            rc = (lib.acct_mgmt)(handle, 0);
        }
        (lib.end)(handle, rc);
        if rc == PAM_SUCCESS { Ok(()) } else { Err(format!("PAM refused ({rc})")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip() {
        let h = hash_password(b"s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, b"s3cret") && !verify(&h, b"s3cret!"));
        // `openssl passwd -6 -salt saltsalt s3cret`
        let crypt = sha_crypt::sha512_simple("s3cret", &sha_crypt::Sha512Params::default()).unwrap();
        assert!(verify(&crypt, b"s3cret") && !verify(&crypt, b"nope"));
        assert!(!verify("plain", b"plain"));
    }

    #[test]
    fn virtual_users_file() {
        let dir = std::env::temp_dir().join(format!("ftpd-vu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        set_virtual_password(&f, "alice", b"pw1").unwrap();
        set_virtual_password(&f, "bob", b"pw2").unwrap();
        set_virtual_password(&f, "alice", b"pw3").unwrap();
        let vu = VirtualUsers::load(&f).unwrap();
        assert!(
            vu.check("alice", b"pw3")
                && !vu.check("alice", b"pw1")
                && vu.check("bob", b"pw2")
                && !vu.check("eve", b"x")
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 2);
        std::fs::write(&f, "broken line\n").unwrap();
        assert!(VirtualUsers::load(&f).unwrap_err().contains(":1:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn root_account_exists() {
        let root = account("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(groups(&root).contains(&0));
        assert!(account("no-such-user-ftpd").is_none());
        // A missing user is not a failed lookup (the messages differ).
        assert_eq!(lookup("no-such-user-ftpd"), Ok(None));
        assert_eq!(lookup("nul\0inside"), Ok(None));
    }
}
