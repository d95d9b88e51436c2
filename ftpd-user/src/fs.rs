//! The served tree: virtual paths, confinement and directory listings.
//!
//! Every file the server touches is opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` relative to a directory fd for the user's root. The
//! kernel then resolves `..`, absolute paths and symlinks as if that directory
//! were `/`, so no path a client sends can name a file outside it, whatever
//! races or symlinks exist on disk. Lexical normalisation (`VPath`) only makes
//! `PWD` readable; it is not what keeps clients inside.

use std::{
    ffi::OsStr,
    io,
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use rustix::fs::{Dir, FileType, Mode, OFlags, ResolveFlags, Stat};

/// Longest path a client may send; Linux's own `PATH_MAX`.
pub const MAX_PATH: usize = 4096;

/// An absolute path inside the user's root, normalised (`/`, `/pub/x`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VPath(Vec<u8>);

impl VPath {
    /// The root of the served tree.
    pub fn root() -> Self {
        Self(b"/".to_vec())
    }

    /// Resolves `arg` against `self` lexically: absolute arguments start at the
    /// root, `.` is dropped and `..` never climbs above `/`.
    pub fn join(&self, arg: &[u8]) -> Result<Self, FsError> {
        if arg.contains(&0) {
            return Err(FsError::BadName);
        }
        if arg.len() > MAX_PATH {
            return Err(FsError::BadName);
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        if !arg.starts_with(b"/") {
            parts.extend(self.0.split(|&b| b == b'/').filter(|p| !p.is_empty()));
        }
        for p in arg.split(|&b| b == b'/') {
            match p {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let mut out = Vec::with_capacity(arg.len() + self.0.len() + 1);
        for p in &parts {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Ok(Self(out))
    }

    /// The path as bytes, always starting with `/`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path relative to the root, as `openat2` wants it.
    fn relative(&self) -> &OsStr {
        let rel = &self.0[1..];
        OsStr::from_bytes(if rel.is_empty() { b"." } else { rel })
    }
}

/// Why a file operation failed; `session` maps each to a reply.
#[derive(Debug)]
pub enum FsError {
    /// NUL byte or overlong path.
    BadName,
    /// Not found, not permitted, wrong type: the client learns no more than that.
    Io(io::Error),
}

impl From<rustix::io::Errno> for FsError {
    fn from(e: rustix::io::Errno) -> Self {
        Self::Io(e.into())
    }
}

/// A user's root directory, held open for the life of the session.
#[derive(Debug)]
pub struct Root(OwnedFd);

impl Root {
    /// Opens `dir` as the root of a served tree.
    pub fn open(dir: &std::path::Path) -> io::Result<Self> {
        let fd = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self(fd))
    }

    fn open_at(&self, path: &VPath, flags: OFlags) -> Result<OwnedFd, FsError> {
        let fd = rustix::fs::openat2(
            &self.0,
            path.relative(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        Ok(fd)
    }

    /// Opens a regular file for reading; anything else is refused.
    pub fn open_file(&self, path: &VPath) -> Result<(OwnedFd, Stat), FsError> {
        let fd = self.open_at(path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::Io(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        Ok((fd, st))
    }

    /// Opens a directory (to list it, or to check that `CWD` may enter it).
    pub fn open_dir(&self, path: &VPath) -> Result<OwnedFd, FsError> {
        self.open_at(path, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// `stat` of whatever `path` names (a symlink's target, inside the root).
    pub fn stat(&self, path: &VPath) -> Result<Stat, FsError> {
        let fd = self.open_at(path, OFlags::PATH)?;
        Ok(rustix::fs::fstat(&fd)?)
    }
}

/// One entry of a listing.
pub struct Entry {
    /// File name (no directory part).
    pub name: Vec<u8>,
    /// `lstat` of the entry, so symlinks list as symlinks.
    pub stat: Stat,
    /// Target of a symlink, shown as `name -> target`.
    pub link: Option<Vec<u8>>,
}

/// Reads a directory's entries sorted by name, skipping `.` and `..` and, unless
/// `all`, names starting with a dot (as `ls` and vsftpd do).
pub fn read_dir(dir: &OwnedFd, all: bool) -> Result<Vec<Entry>, FsError> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for ent in Dir::read_from(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." || (!all && name.starts_with(b".")) {
            continue;
        }
        names.push(name.to_vec());
    }
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let os = OsStr::from_bytes(&name);
        // An entry that vanished between readdir and stat is simply left out.
        let Ok(stat) = rustix::fs::statat(dir.as_fd(), os, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let link = if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
            rustix::fs::readlinkat(dir.as_fd(), os, Vec::new()).ok().map(|t| t.into_bytes())
        } else {
            None
        };
        out.push(Entry { name, stat, link });
    }
    Ok(out)
}

/// Formats one `LIST` line the way vsftpd (and `ls -l`) does:
/// `-rw-r--r--    1 1000     1000         4096 Nov 24 04:52 name`.
pub fn list_line(e: &Entry, now: i64, out: &mut Vec<u8>) {
    let mode = e.stat.st_mode;
    let kind = match FileType::from_raw_mode(mode) {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharacterDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        _ => '-',
    };
    let mut perms = [b'-'; 9];
    for (i, ch) in b"rwxrwxrwx".iter().enumerate() {
        if mode & (0o400 >> i) != 0 {
            perms[i] = *ch;
        }
    }
    if mode & 0o4000 != 0 {
        perms[2] = if perms[2] == b'x' { b's' } else { b'S' };
    }
    if mode & 0o2000 != 0 {
        perms[5] = if perms[5] == b'x' { b's' } else { b'S' };
    }
    if mode & 0o1000 != 0 {
        perms[8] = if perms[8] == b'x' { b't' } else { b'T' };
    }
    let head = format!(
        "{kind}{} {:>4} {:<8} {:<8} {:>12} {} ",
        std::str::from_utf8(&perms).unwrap_or("?????????"),
        e.stat.st_nlink,
        e.stat.st_uid,
        e.stat.st_gid,
        e.stat.st_size,
        ls_date(e.stat.st_mtime, now),
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&e.name);
    if let Some(t) = &e.link {
        out.extend_from_slice(b" -> ");
        out.extend_from_slice(t);
    }
    out.extend_from_slice(b"\r\n");
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `ls` dates, in UTC: `Nov 24 04:52` within six months of now, else `Nov 24  2025`.
fn ls_date(t: i64, now: i64) -> String {
    let c = Civil::from_unix(t);
    let half_year = 182 * 86_400;
    if (now - t).abs() < half_year {
        format!("{} {:>2} {:02}:{:02}", MONTHS[c.month - 1], c.day, c.hour, c.min)
    } else {
        format!("{} {:>2}  {}", MONTHS[c.month - 1], c.day, c.year)
    }
}

/// `MDTM` format: `YYYYMMDDHHMMSS`, UTC.
pub fn mdtm(t: i64) -> String {
    let c = Civil::from_unix(t);
    format!("{:04}{:02}{:02}{:02}{:02}{:02}", c.year, c.month, c.day, c.hour, c.min, c.sec)
}

/// A UTC calendar time.
struct Civil {
    year: i64,
    month: usize,
    day: i64,
    hour: i64,
    min: i64,
    sec: i64,
}

impl Civil {
    /// Howard Hinnant's `civil_from_days`: exact for the whole proleptic Gregorian calendar.
    fn from_unix(t: i64) -> Self {
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month: usize::try_from(month).unwrap_or(1),
            day,
            hour: secs / 3600,
            min: secs % 3600 / 60,
            sec: secs % 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(base: &str, arg: &str) -> String {
        let b = VPath::root().join(base.as_bytes()).unwrap();
        String::from_utf8(b.join(arg.as_bytes()).unwrap().0).unwrap()
    }

    #[test]
    fn join_never_climbs_above_root() {
        assert_eq!(j("/", ".."), "/");
        assert_eq!(j("/a/b", "../../../../etc/passwd"), "/etc/passwd");
        assert_eq!(j("/a", "b/./c//d/.."), "/a/b/c");
        assert_eq!(j("/a", "/x"), "/x");
        assert_eq!(j("/a", ""), "/a");
    }

    #[test]
    fn nul_and_overlong_are_refused() {
        assert!(matches!(VPath::root().join(b"a\0b"), Err(FsError::BadName)));
        assert!(matches!(VPath::root().join(&vec![b'a'; MAX_PATH + 1]), Err(FsError::BadName)));
    }

    #[test]
    fn dates() {
        // 2026-11-24 04:52:27 UTC
        let t = 1_795_495_947;
        assert_eq!(mdtm(t), "20261124045227");
        assert_eq!(ls_date(t, t + 60), "Nov 24 04:52");
        assert_eq!(ls_date(t, t + 400 * 86_400), "Nov 24  2026");
        assert_eq!(mdtm(0), "19700101000000");
        assert_eq!(mdtm(951_782_400), "20000229000000");
    }
}
