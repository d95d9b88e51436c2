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

    /// The parent directory and the last component; `None` for the root itself.
    pub fn split_last(&self) -> Option<(Self, &[u8])> {
        let i = self.0.iter().rposition(|&b| b == b'/')?;
        let name = &self.0[i + 1..];
        if name.is_empty() {
            return None;
        }
        let dir = if i == 0 { b"/".to_vec() } else { self.0[..i].to_vec() };
        Some((Self(dir), name))
    }

    /// The last component (empty for the root).
    pub fn file_name(&self) -> &[u8] {
        self.split_last().map_or(&[][..], |(_, n)| n)
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

impl AsFd for Root {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Root {
    /// Opens `dir` as the root of a served tree.
    pub fn open(dir: &std::path::Path) -> io::Result<Self> {
        let fd = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self(fd))
    }

    /// Wraps a directory fd opened by someone else (the master, for a worker).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self(fd)
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

    /// Whether `path` is a directory this user may open.
    pub fn is_dir(&self, path: &VPath) -> bool {
        self.open_dir(path).is_ok()
    }

    /// `stat` of whatever `path` names (a symlink's target, inside the root).
    pub fn stat(&self, path: &VPath) -> Result<Stat, FsError> {
        let fd = self.open_at(path, OFlags::PATH)?;
        Ok(rustix::fs::fstat(&fd)?)
    }

    /// `lstat`: the entry itself, a symlink as a symlink.
    pub fn lstat(&self, path: &VPath) -> Result<Stat, FsError> {
        let (dir, name) = self.parent(path)?;
        Ok(rustix::fs::statat(&dir, name.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Opens the directory that holds `path` and returns it with the last
    /// component. The component never contains `/`, so the `*at` calls made
    /// with it cannot leave the directory the kernel resolved inside the root.
    fn parent(&self, path: &VPath) -> Result<(OwnedFd, Vec<u8>), FsError> {
        let (dir, name) = path.split_last().ok_or(FsError::BadName)?;
        let fd = self.open_at(&dir, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok((fd, name.to_vec()))
    }

    /// Opens `path` for writing as `how` says, creating it with `mode` (the
    /// caller has already applied the umask).
    pub fn open_write(&self, path: &VPath, how: Create, mode: u32) -> Result<OwnedFd, FsError> {
        let base = OFlags::WRONLY | OFlags::NOCTTY | OFlags::CREATE;
        let flags = match how {
            Create::Exclusive => base | OFlags::EXCL,
            Create::Truncate => base | OFlags::TRUNC,
            Create::Keep => base,
            Create::Append => base,
            Create::Existing => OFlags::WRONLY | OFlags::NOCTTY,
        };
        let fd = rustix::fs::openat2(
            &self.0,
            path.relative(),
            flags | OFlags::CLOEXEC,
            // openat2 refuses a mode without O_CREAT.
            if how == Create::Existing { Mode::empty() } else { Mode::from_raw_mode(mode & 0o7777) },
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::Io(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        Ok(fd)
    }

    /// Creates a directory.
    pub fn mkdir(&self, path: &VPath, mode: u32) -> Result<(), FsError> {
        let (dir, name) = self.parent(path)?;
        Ok(rustix::fs::mkdirat(&dir, name.as_slice(), Mode::from_raw_mode(mode & 0o7777))?)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: &VPath) -> Result<(), FsError> {
        let (dir, name) = self.parent(path)?;
        Ok(rustix::fs::unlinkat(&dir, name.as_slice(), rustix::fs::AtFlags::REMOVEDIR)?)
    }

    /// Removes a file (a symlink itself, not its target).
    pub fn unlink(&self, path: &VPath) -> Result<(), FsError> {
        let (dir, name) = self.parent(path)?;
        if FileType::from_raw_mode(
            rustix::fs::statat(&dir, name.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
        ) == FileType::Directory
        {
            return Err(FsError::Io(io::Error::from_raw_os_error(libc::EISDIR)));
        }
        Ok(rustix::fs::unlinkat(&dir, name.as_slice(), rustix::fs::AtFlags::empty())?)
    }

    /// Renames within the root.
    pub fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        Ok(rustix::fs::renameat(&fdir, fname.as_slice(), &tdir, tname.as_slice())?)
    }

    /// Opens the part file of an atomic upload for this session, locked
    /// (`flock`, exclusive) for as long as the returned fd (the same open
    /// file, wherever it is passed to) stays open. Refused with `EBUSY` when
    /// another session is uploading it, and with `EPERM` when another user's
    /// upload left it: a part is resumed only by whoever wrote it. A fresh
    /// upload (`resume` false) empties it once it is ours. Stale parts in
    /// the directory are swept first (see [`PART_MAX_AGE`]), except this
    /// one: however old, the part a client resumes is what it resumes.
    pub fn open_part(&self, part: &VPath, resume: bool, mode: u32) -> Result<OwnedFd, FsError> {
        let (dir, name) = self.parent(part)?;
        self.sweep_stale(part, Some(&name));
        // Only retried when the part was renamed or removed between our
        // open and our lock, which a finishing upload does once.
        for _ in 0..4 {
            // Never O_TRUNC: that would cut another session's part before
            // the lock tells us it is in use.
            let fd = self.open_write(part, Create::Keep, mode)?;
            match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(FsError::Io(io::Error::from_raw_os_error(libc::EBUSY)));
                }
                Err(e) => return Err(e.into()),
            }
            let st = rustix::fs::fstat(&fd)?;
            // The lock is on the inode we opened: it must still be the one
            // under the part's name, not one just committed by its owner.
            let now = rustix::fs::statat(&dir, name.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
            if !now.is_ok_and(|n| (n.st_dev, n.st_ino) == (st.st_dev, st.st_ino)) {
                continue;
            }
            if st.st_uid != rustix::process::geteuid().as_raw() {
                return Err(FsError::Io(io::Error::from_raw_os_error(libc::EPERM)));
            }
            if !resume {
                rustix::fs::ftruncate(&fd, 0)?;
            }
            return Ok(fd);
        }
        Err(FsError::Io(io::Error::from_raw_os_error(libc::EBUSY)))
    }

    /// The part file a client may resume (SIZE): this user's, and not being
    /// uploaded right now; anything else is "not found".
    pub fn resumable_part(&self, part: &VPath) -> Result<(OwnedFd, Stat), FsError> {
        let (fd, st) = self.open_file(part)?;
        let not_found = || FsError::Io(io::Error::from_raw_os_error(libc::ENOENT));
        if st.st_uid != rustix::process::geteuid().as_raw() {
            return Err(not_found());
        }
        // A shared lock is refused while an upload holds its exclusive one.
        // Released at once: held while the front answers, it would refuse
        // the resume that usually follows.
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockShared).map_err(|_| not_found())?;
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::Unlock)?;
        Ok((fd, st))
    }

    /// Creates a temporary file beside `target` under a name nobody can
    /// guess (`.ftpd-tmp.NAME.RANDOM`), exclusively: concurrent uploads of
    /// one name each get their own.
    pub fn create_temp(&self, target: &VPath, mode: u32) -> Result<(OwnedFd, VPath), FsError> {
        self.sweep_stale(target, None);
        let (dir, name) = target.split_last().ok_or(FsError::BadName)?;
        let mut last = FsError::BadName;
        for _ in 0..8 {
            let mut rnd = [0u8; 8];
            rustix::rand::getrandom(&mut rnd, rustix::rand::GetRandomFlags::empty())?;
            let mut tmp_name = b".ftpd-tmp.".to_vec();
            // Room for the prefix and suffix within NAME_MAX (255).
            tmp_name.extend_from_slice(&name[..name.len().min(200)]);
            tmp_name.extend_from_slice(format!(".{:016x}", u64::from_le_bytes(rnd)).as_bytes());
            let tmp = dir.join(&tmp_name)?;
            match self.open_write(&tmp, Create::Exclusive, mode) {
                Ok(fd) => return Ok((fd, tmp)),
                Err(FsError::Io(e)) if e.raw_os_error() == Some(libc::EEXIST) => last = FsError::Io(e),
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Opens what replacing `target` is written to. Normally a temporary
    /// file (returned with its path) with the old file's owner, group and
    /// mode, renamed over it by [`Root::commit`]. When that cannot keep the
    /// file as it was (the user may write the file but not give a new one
    /// its owner, or the file has other hard links) the file itself, to be
    /// truncated and written in place as vsftpd does: the owner and links
    /// matter more than the atomicity. Fails unless the user may write the
    /// existing file (the permission an in-place write would have needed).
    pub fn open_replace(&self, target: &VPath) -> Result<(OwnedFd, Option<VPath>), FsError> {
        let file = self.open_write(target, Create::Existing, 0)?;
        let old = rustix::fs::fstat(&file)?;
        if old.st_nlink > 1 {
            return Ok((file, None));
        }
        let perm = old.st_mode & 0o7777;
        let (fd, tmp) = self.create_temp(target, perm)?;
        // chown first: it clears set-id bits, which the chmod restores.
        let _ = rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(old.st_uid)),
            Some(rustix::fs::Gid::from_raw(old.st_gid)),
        );
        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm));
        let new = rustix::fs::fstat(&fd)?;
        if (new.st_uid, new.st_gid, new.st_mode & 0o7777) == (old.st_uid, old.st_gid, perm) {
            return Ok((fd, Some(tmp)));
        }
        drop(fd);
        let _ = self.unlink(&tmp);
        Ok((file, None))
    }

    /// Publishes a complete upload written as `from` under the name `to`.
    /// Without `replace` (a user who may not overwrite) it never replaces
    /// anything: a file that appeared meanwhile stays, and `EEXIST` comes
    /// back. With it, a file there is replaced only if this user may write
    /// it now, whatever was there when the upload started.
    pub fn commit(&self, from: &VPath, to: &VPath, replace: bool) -> Result<(), FsError> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        if !replace {
            return match rustix::fs::renameat_with(
                &fdir,
                fname.as_slice(),
                &tdir,
                tname.as_slice(),
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                // A file system without RENAME_NOREPLACE: link(2) never replaces either.
                Err(rustix::io::Errno::INVAL) => {
                    rustix::fs::linkat(&fdir, fname.as_slice(), &tdir, tname.as_slice(), rustix::fs::AtFlags::empty())?;
                    Ok(rustix::fs::unlinkat(&fdir, fname.as_slice(), rustix::fs::AtFlags::empty())?)
                }
                r => Ok(r?),
            };
        }
        match rustix::fs::statat(&tdir, tname.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
                return Err(FsError::Io(io::Error::from_raw_os_error(libc::EEXIST)));
            }
            Ok(_) => drop(self.open_write(to, Create::Existing, 0)?),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(rustix::fs::renameat(&fdir, fname.as_slice(), &tdir, tname.as_slice())?)
    }

    /// Removes upload leftovers older than [`PART_MAX_AGE`] from the
    /// directory of `path`, at most once an hour per directory and process:
    /// part files of uploads nobody resumed, and temporary files a crash
    /// left. No client can list or delete them, so nothing else would.
    ///
    /// Only files this process could have made: owned by its uid and named
    /// exactly as ftpd names them ([`is_own_leftover_name`]). A file of
    /// another owner that looks like one (an admin's `.notes.ftpd-part` in a
    /// world-writable directory) is not an upload's leftover. `spare` is the
    /// part being opened, which is kept whatever its age.
    fn sweep_stale(&self, path: &VPath, spare: Option<&[u8]>) {
        use std::{collections::HashMap, sync::Mutex, time::Instant};
        static SWEPT: Mutex<Option<HashMap<(u64, u64), Instant>>> = Mutex::new(None);
        let Some((dir, _)) = path.split_last() else { return };
        let Ok(fd) = self.open_dir(&dir) else { return };
        let Ok(st) = rustix::fs::fstat(&fd) else { return };
        {
            let mut guard = SWEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let map = guard.get_or_insert_with(HashMap::new);
            let key = (st.st_dev, st.st_ino);
            if map.get(&key).is_some_and(|t| t.elapsed().as_secs() < 3600) {
                return;
            }
            if map.len() >= 4096 {
                map.clear();
            }
            map.insert(key, Instant::now());
        }
        let Ok(entries) = Dir::read_from(&fd) else { return };
        let oldest = now_secs() - PART_MAX_AGE;
        let me = rustix::process::geteuid().as_raw();
        for ent in entries.flatten() {
            let name = ent.file_name();
            if !is_own_leftover_name(name.to_bytes()) || spare == Some(name.to_bytes()) {
                continue;
            }
            let stale = rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_uid == me && st.st_mtime < oldest
            });
            if stale {
                let _ = rustix::fs::unlinkat(&fd, name, rustix::fs::AtFlags::empty());
            }
        }
    }

    /// Sets the access and modification times of the regular file `path`
    /// names (vsftpd's `MDTM` with a time), to `secs` since the epoch.
    pub fn set_mtime(&self, path: &VPath, secs: i64) -> Result<(), FsError> {
        let fd = self.open_at(path, OFlags::PATH)?;
        if !is_file(&rustix::fs::fstat(&fd)?) {
            return Err(FsError::Io(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 },
            last_modification: rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 },
        };
        // As for chmod: the /proc link names exactly the inode openat2 resolved.
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        Ok(rustix::fs::utimensat(rustix::fs::CWD, proc_path.as_str(), &t, rustix::fs::AtFlags::empty())?)
    }

    /// Changes permission bits of what `path` names (following symlinks inside
    /// the root only: the fd comes from `openat2`).
    pub fn chmod(&self, path: &VPath, mode: u32) -> Result<(), FsError> {
        let fd = self.open_at(path, OFlags::PATH)?;
        // fchmod() refuses O_PATH descriptors; the /proc link names exactly the
        // inode openat2 resolved, so the check above still holds.
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        Ok(rustix::fs::chmod(proc_path.as_str(), Mode::from_raw_mode(mode & 0o7777))?)
    }
}

/// How `open_write` treats an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Create {
    /// Fail if it exists (anonymous uploads without `anon_other_write_enable`).
    Exclusive,
    /// Create or truncate.
    Truncate,
    /// Create or open, keep the contents (resume with REST).
    Keep,
    /// Create or open for appending (APPE). Not O_APPEND: splice(2) refuses
    /// O_APPEND files, so the caller writes at the current size instead.
    Append,
    /// Only open an existing file (the write-permission probe before a replace).
    Existing,
}

/// One entry of a listing.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// File name (no directory part).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// `lstat` of the entry, so symlinks list as symlinks.
    #[serde(with = "wire_stat")]
    pub stat: Stat,
    /// Target of a symlink, shown as `name -> target`.
    #[serde(with = "serde_bytes")]
    pub link: Option<Vec<u8>>,
}

/// The names a listing shows, sorted: `.` and `..`, upload temporaries and,
/// unless `all`, dot files left out. Only names are held; the entries are
/// stat'ed later, a chunk at a time, as they are sent.
pub fn read_names(dir: &OwnedFd, all: bool) -> Result<Vec<Vec<u8>>, FsError> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for ent in Dir::read_from(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." || (!all && name.starts_with(b".")) || is_upload_temp(name) {
            continue;
        }
        names.push(name.to_vec());
    }
    names.sort_unstable();
    Ok(names)
}

/// The entry `name` in `dir` (`lstat`, and the target of a symlink); `None`
/// when it vanished since the directory was read, so it is simply left out.
pub fn entry(dir: &OwnedFd, name: &[u8]) -> Option<Entry> {
    let os = OsStr::from_bytes(name);
    let stat = rustix::fs::statat(dir.as_fd(), os, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
    let link = if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
        rustix::fs::readlinkat(dir.as_fd(), os, Vec::new()).ok().map(|t| t.into_bytes())
    } else {
        None
    };
    Some(Entry { name: name.to_vec(), stat, link })
}

/// How listings show owners and times.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListStyle {
    /// `hide_ids`: every owner and group shows as `ftp`.
    pub hide_ids: bool,
    /// `use_localtime`: times in the server's zone, not UTC.
    pub localtime: bool,
    /// `text_userdb_names`: owner and group names instead of numbers.
    pub names: bool,
}

/// A user or group name for listings, or the number when there is none.
///
/// From the system's user database (`getpwuid_r`/`getgrgid_r`), so names
/// from LDAP or systemd-userdb show as `ls -l` shows them. Cached, since a
/// listing asks for the same few ids again and again, and a network source
/// answers slowly; the lock is not held during a lookup.
fn id_name(id: u32, group: bool) -> String {
    use std::{collections::HashMap, sync::Mutex};
    static CACHE: Mutex<Option<HashMap<(u32, bool), String>>> = Mutex::new(None);
    let cache = || CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = cache().get_or_insert_with(HashMap::new).get(&(id, group)) {
        return n.clone();
    }
    let found = if group {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id)).map(|g| g.map(|g| g.name))
    } else {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id)).map(|u| u.map(|u| u.name))
    };
    let name = match found {
        Ok(Some(name)) => name,
        Ok(None) => id.to_string(),
        Err(e) if crate::auth::not_found(e) => id.to_string(),
        // A source that failed to answer: the number now, and not cached,
        // so the name shows once the source is back.
        Err(_) => return id.to_string(),
    };
    let mut cache = cache();
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() < 4096 {
        map.insert((id, group), name.clone());
    }
    name
}

/// Seconds to add to a UTC time to get the server's local time at `t`.
pub fn local_offset(t: i64) -> i64 {
    let tt = libc::time_t::try_from(t).unwrap_or(0);
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
        return 0;
    }
    tm.tm_gmtoff
}

/// Formats one `LIST` line the way vsftpd (and `ls -l`) does:
/// `-rw-r--r--    1 1000     1000         4096 Nov 24 04:52 name`.
pub fn list_line(e: &Entry, now: i64, style: ListStyle, out: &mut Vec<u8>) {
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
    // Written straight into `out`: a 10 000-entry listing is 10 000 of
    // these, and per-line Strings were a third of the front's listing CPU.
    use std::io::Write as _;
    let perms = std::str::from_utf8(&perms).unwrap_or("?????????");
    let _ = write!(out, "{kind}{perms} {:>4} ", e.stat.st_nlink);
    let _ = if style.hide_ids {
        write!(out, "{:<8} {:<8} ", "ftp", "ftp")
    } else if style.names {
        write!(out, "{:<8} {:<8} ", id_name(e.stat.st_uid, false), id_name(e.stat.st_gid, true))
    } else {
        write!(out, "{:<8} {:<8} ", e.stat.st_uid, e.stat.st_gid)
    };
    let shift = if style.localtime { local_offset(e.stat.st_mtime) } else { 0 };
    let _ = write!(out, "{:>8} ", e.stat.st_size);
    write_ls_date(out, e.stat.st_mtime + shift, now + shift);
    out.push(b' ');
    out.extend_from_slice(&e.name);
    if let Some(t) = &e.link {
        out.extend_from_slice(b" -> ");
        out.extend_from_slice(t);
    }
    out.extend_from_slice(b"\r\n");
}

/// One RFC 3659 fact line (MLSD, MLST): `type=file;size=3;modify=…;perm=r;unique=…; name`.
/// `perm` is worked out by the caller from what the session may do.
pub fn mlsx_line(name: &[u8], stat: &Stat, perm: &str, out: &mut Vec<u8>) {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => "dir",
        FileType::RegularFile => "file",
        _ => "OS.unix=special",
    };
    let head = format!(
        "type={kind};size={};modify={};perm={perm};unique={:x}g{:x}; ",
        stat.st_size,
        mdtm(stat.st_mtime),
        stat.st_dev,
        stat.st_ino
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(b"\r\n");
}

/// Whether `stat` names a directory.
pub fn is_dir(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Directory
}

/// Whether `stat` names a regular file.
pub fn is_file(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// vsftpd's listing dates (`%b %d %H:%M`, else `%b %d  %Y`), in UTC: the
/// time for the last 182 days, the year for older and for future times.
fn write_ls_date(out: &mut Vec<u8>, t: i64, now: i64) {
    use std::io::Write as _;
    let c = Civil::from_unix(t);
    let half_year = 182 * 86_400;
    let _ = if t <= now && now - t <= half_year {
        write!(out, "{} {:02} {:02}:{:02}", MONTHS[c.month - 1], c.day, c.hour, c.min)
    } else {
        write!(out, "{} {:02}  {}", MONTHS[c.month - 1], c.day, c.year)
    };
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

/// A `Stat` as its bytes, for the messages between processes (`Entry`,
/// the worker's replies): the other end, the same binary, reads it back.
pub mod wire_stat {
    use rustix::fs::Stat;
    use serde::{Deserializer, Serializer, de};

    /// Writes the bytes of `st`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(st: &Stat, s: S) -> Result<S::Ok, S::Error> {
        // SAFETY: `Stat` is a plain C struct of integers (padding is spelled
        // out as fields); viewing it as bytes is sound.
        let bytes =
            unsafe { std::slice::from_raw_parts(std::ptr::from_ref(st).cast::<u8>(), std::mem::size_of::<Stat>()) };
        s.serialize_bytes(bytes)
    }

    /// Reads a `Stat` back; any length but its size is an error.
    ///
    /// # Errors
    /// The wrong number of bytes, or the deserializer's.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Stat, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Stat;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} bytes of struct stat", std::mem::size_of::<Stat>())
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Stat, E> {
                if b.len() != std::mem::size_of::<Stat>() {
                    return Err(E::invalid_length(b.len(), &self));
                }
                // SAFETY: the length matches, and every bit pattern is a
                // valid `Stat` (integers only).
                Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Stat>()) })
            }
        }
        d.deserialize_bytes(Bytes)
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
        let date = |now| {
            let mut v = Vec::new();
            write_ls_date(&mut v, t, now);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(date(t + 60), "Nov 24 04:52");
        assert_eq!(date(t + 400 * 86_400), "Nov 24  2026");
        assert_eq!(date(t - 60), "Nov 24  2026", "a future time shows the year");
        let mut feb = Vec::new();
        write_ls_date(&mut feb, 1_612_325_106, 1_612_325_166);
        assert_eq!(feb, b"Feb 03 04:05", "days are zero-padded");
        assert_eq!(mdtm(0), "19700101000000");
        assert_eq!(mdtm(951_782_400), "20000229000000");
    }
}

/// vsftpd's `deny_file` / `hide_file` patterns: `{*.iso,private,?.tmp}`, where
/// `*` and `?` are wildcards. A path matches if any of its components does, so
/// a denied directory cannot be entered either.
#[derive(Clone, Debug, Default)]
pub struct Patterns(Vec<Vec<u8>>);

impl Patterns {
    /// Parses the option value; empty means nothing matches.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        let s = s.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(s);
        Self(s.split(',').filter(|p| !p.is_empty()).map(|p| p.as_bytes().to_vec()).collect())
    }

    /// Whether a single name matches.
    pub fn matches_name(&self, name: &[u8]) -> bool {
        self.0.iter().any(|p| glob(p, name))
    }

    /// Whether any component of `path` matches.
    pub fn matches_path(&self, path: &VPath) -> bool {
        !self.0.is_empty() && path.as_bytes().split(|&b| b == b'/').any(|c| !c.is_empty() && self.matches_name(c))
    }
}

/// `*` matches any run of bytes, `?` one byte; iterative, no recursion.
pub fn glob(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        // A `*` first: compared as a byte with a `*` in the name, it would
        // not be remembered for backtracking.
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pat.len() && (pat[p] == b'?' || pat[p] == name[n]) {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Seconds after its last write that an upload's part or temporary file
/// counts as abandoned and is removed (see [`Root::open_part`]): a day, so
/// that a client can still resume an upload interrupted overnight.
pub const PART_MAX_AGE: i64 = 24 * 3600;

/// Names ftpd uses for uploads in progress; never listed, never served.
/// Deliberately wider than what ftpd makes (see [`is_own_leftover_name`]):
/// hiding a name too many costs nothing.
pub fn is_upload_temp(name: &[u8]) -> bool {
    name.starts_with(b".ftpd-tmp.") || (name.starts_with(b".") && name.ends_with(b".ftpd-part"))
}

/// Hex digits of the random suffix of a temporary file and of the hashes in
/// a part file's name.
const TAG_HEX: usize = 16;

/// Whether `s` ends with `.` and [`TAG_HEX`] lowercase hex digits, after at
/// least one other byte; returns what comes before the `.`.
fn strip_tag(s: &[u8]) -> Option<&[u8]> {
    let cut = s.len().checked_sub(TAG_HEX + 1).filter(|&c| c > 0)?;
    let (head, tag) = s.split_at(cut);
    (tag[0] == b'.' && tag[1..].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))).then_some(head)
}

/// Whether `name` is exactly of a form ftpd itself creates: a part file
/// (`.NAME.<16 hex>.ftpd-part`) or a replace's temporary file
/// (`.ftpd-tmp.NAME.<16 hex>`). Only these are ever swept: a file that
/// merely looks like one (`.notes.ftpd-part`, `.ftpd-tmp.notes`) is someone
/// else's and stays.
pub fn is_own_leftover_name(name: &[u8]) -> bool {
    // Both forms are checked: the part of a file called `ftpd-tmp.x` also
    // starts with `.ftpd-tmp.`.
    let temp = name.strip_prefix(b".ftpd-tmp.").and_then(strip_tag).is_some();
    temp || name.strip_prefix(b".").and_then(|n| n.strip_suffix(b".ftpd-part")).and_then(strip_tag).is_some()
}

/// 16 hex digits of SHA-256 of `bytes`: stable across restarts and
/// versions, so a part keeps its name until it is resumed.
fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d[..TAG_HEX / 2].iter().map(|b| format!("{b:02x}")).collect()
}

/// Longest file name (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// The part file of an atomic upload to `path` by the login `user`:
/// `.NAME.<hash of user>.ftpd-part` beside it.
///
/// A part belongs to a login name, not to a uid: every virtual user acts
/// as `guest_username` and every anonymous user as `ftp_username`, so the
/// uid alone would let one of them see (SIZE) and continue (REST) another's
/// interrupted upload. With the name in the part's name, each user resumes
/// only their own; anonymous users all log in as `anonymous` and share
/// theirs, as vsftpd's anonymous users share a partial file.
///
/// A name too long for that (over 227 bytes) is shortened to its first 200
/// bytes and a hash of the whole name, so it still fits `NAME_MAX`.
pub fn part_path(path: &VPath, user: &str) -> Option<VPath> {
    let (dir, name) = path.split_last()?;
    let suffix = format!(".{}.ftpd-part", short_hash(user.as_bytes()));
    let mut part = b".".to_vec();
    if 1 + name.len() + suffix.len() <= NAME_MAX {
        part.extend_from_slice(name);
    } else {
        part.extend_from_slice(&name[..200]);
        part.extend_from_slice(format!("~{}", short_hash(name)).as_bytes());
    }
    part.extend_from_slice(suffix.as_bytes());
    dir.join(&part).ok()
}

#[cfg(test)]
mod pattern_tests {
    use super::*;

    #[test]
    fn vsftpd_patterns() {
        let p = Patterns::parse("{*.iso,private,a?c}");
        assert!(
            p.matches_name(b"x.iso") && p.matches_name(b".iso") && p.matches_name(b"private") && p.matches_name(b"abc")
        );
        assert!(!p.matches_name(b"x.isox") && !p.matches_name(b"privat") && !p.matches_name(b"abbc"));
        let root = VPath::root();
        assert!(p.matches_path(&root.join(b"/pub/private/x").unwrap()));
        assert!(!p.matches_path(&root.join(b"/pub/x").unwrap()));
        assert!(!Patterns::parse("").matches_path(&root.join(b"/x").unwrap()));
        assert!(glob(b"*a*b*", b"xxaxxbxx") && !glob(b"*a*b", b"xxaxxbxx"));
    }

    #[test]
    fn a_star_in_the_name_does_not_dodge_a_wildcard() {
        // Found by the vpath fuzz target: the pattern's `*` was compared
        // with the name's `*` as a plain byte first, and never backtracked.
        assert!(glob(b"*", b"*.") && glob(b"*.iso", b"*x.iso") && glob(b"a*", b"a*b"));
        let p = Patterns::parse("{*.iso}");
        assert!(p.matches_path(&VPath::root().join(b"/pub/*x.iso").unwrap()));
    }

    #[test]
    fn part_names() {
        let p = part_path(&VPath::root().join(b"/d/file.iso").unwrap(), "alice").unwrap();
        // SHA-256("alice") starts 2bd806c97f0e00af.
        assert_eq!(p.as_bytes(), b"/d/.file.iso.2bd806c97f0e00af.ftpd-part");
        assert!(is_upload_temp(p.file_name()) && is_own_leftover_name(p.file_name()));
        let bob = part_path(&VPath::root().join(b"/d/file.iso").unwrap(), "bob").unwrap();
        assert_ne!(p, bob, "each login name has its own part");
        let long = VPath::root().join(&[b'x'; 255]).unwrap();
        let lp = part_path(&long, "alice").unwrap();
        assert!(lp.file_name().len() <= NAME_MAX && is_own_leftover_name(lp.file_name()));
        let other = VPath::root().join(&[&[b'x'; 254][..], b"y"].concat()).unwrap();
        assert_ne!(part_path(&other, "alice").unwrap(), lp, "long names differing after 200 bytes");
        let fits = VPath::root().join(&[b'x'; 227]).unwrap();
        assert_eq!(part_path(&fits, "a").unwrap().file_name().len(), NAME_MAX);
    }

    #[test]
    fn the_part_of_a_file_named_like_a_temporary_is_a_leftover() {
        // Found by the vpath fuzz target: the part of `ftpd-tmp.x` starts
        // `.ftpd-tmp.`, was judged as a temporary file only, and so was
        // never swept when abandoned.
        let p = part_path(&VPath::root().join(b"/d/ftpd-tmp.x").unwrap(), "alice").unwrap();
        assert!(is_own_leftover_name(p.file_name()), "{}", String::from_utf8_lossy(p.file_name()));
    }

    #[test]
    fn only_names_ftpd_makes_are_leftovers() {
        for own in [&b".ftpd-tmp.x.bin.0123456789abcdef"[..], b".a.0123456789abcdef.ftpd-part"] {
            assert!(is_own_leftover_name(own), "{}", String::from_utf8_lossy(own));
        }
        for other in [
            &b".opfile.ftpd-part"[..],
            b".ftpd-tmp.opnotes",
            b".ftpd-tmp.x.bin.1234",
            b"..0123456789abcdef.ftpd-part",
            b".ftpd-tmp..0123456789abcdef",
            b".a.0123456789ABCDEF.ftpd-part",
            b"a.0123456789abcdef.ftpd-part",
        ] {
            assert!(!is_own_leftover_name(other), "{}", String::from_utf8_lossy(other));
        }
    }
}
