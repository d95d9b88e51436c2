//! `seccomp_sandbox`: the system calls the front and the file workers may
//! make, as seccomp filters (docs/ARCHITECTURE.md, "seccomp").
//!
//! Both are allow-lists. Two calls fail with an errno instead: `clone3`
//! and unix sockets (see `no_clone3` and `unix_sockets_refused`).
//! Anything else outside the list kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`, seen by the master as SIGSYS): a process
//! that asks for a call it never makes has been taken over, and a clear
//! death the master logs and recovers from beats an error path nobody tested.
//! The lists were taken from the test suites run under `strace -f`, then
//! widened where a feature plausibly needs a neighbour of what was seen
//! (e.g. `pwritev` beside `pwrite64`).
//!
//! Not allowed in either: starting programs (`execve`, `execveat`), new
//! processes (`clone` without `CLONE_THREAD`, `fork`, `vfork`; `clone3`
//! returns `ENOSYS` so that the C library falls back to `clone`, whose flags
//! a filter can see), `ptrace` and `process_vm_*`, mounts and namespaces,
//! module and key management, `setuid` and the other credential changes,
//! and `kill` (the front signals nobody).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Which process a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The unprivileged network process (tokio, rustls, sendfile/splice).
    Front,
    /// A file worker (one identity's file operations).
    Worker,
}

impl Role {
    /// Used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Front => "front",
            Self::Worker => "file worker",
        }
    }
}

/// What every ftpd process running Rust's std, glibc and threads needs.
const COMMON: &[libc::c_long] = &[
    // Memory: the allocator, thread stacks, guard pages, malloc_trim.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // Threads (clone is allowed below, with CLONE_THREAD only) and their
    // synchronisation, signals used by the runtime and by glibc.
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Time and randomness (rustls, hash seeds, timers, log lines).
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_time,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_getrandom,
    // Descriptors in general.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_pipe2,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_readlinkat,
    libc::SYS_flock,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fadvise64,
    // The channels (seqpacket socketpairs, descriptors passed with
    // SCM_RIGHTS): `socketpair` itself for unix pairs only (`allow_list`).
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    // Who am I (logging, the anonymous fast path's credential check).
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_uname,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_getrusage,
    libc::SYS_sysinfo,
    libc::SYS_getcwd,
    // Thread names (PR_SET_NAME) and the like; privilege-raising prctls do
    // not exist once NO_NEW_PRIVS is set.
    libc::SYS_prctl,
    libc::SYS_umask,
];

/// The front: network servers, zero-copy transfers, eBPF map updates.
const FRONT: &[libc::c_long] = &[
    // The tokio reactor.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    // Sockets: passive listeners, active connections, data connections,
    // the master's port-20 sockets (bound by the master, connected here).
    // `socket` itself is allowed for Internet families only (`allow_list`).
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_recvmmsg,
    libc::SYS_sendmmsg,
    // Zero-copy downloads and uploads.
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_copy_file_range,
    // The metrics' process figures (open descriptors in /proc/self/fd).
    libc::SYS_getdents64,
    // Pinholes and connection counts in the kernel plane's maps (through
    // descriptors the master opened; no program is loaded here).
    libc::SYS_bpf,
];

/// A file worker: one identity's file operations inside its root.
const WORKER: &[libc::c_long] = &[
    libc::SYS_getdents64,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_fgetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_flistxattr,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_statfs,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_getsockname,
];

/// The allow-list filter for `role`.
fn allow_list(role: Role) -> Result<BpfProgram, String> {
    let extra = match role {
        Role::Front => FRONT,
        Role::Worker => WORKER,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON.iter().chain(extra).map(|&nr| (nr, Vec::new())).collect();
    // Threads only: a clone without CLONE_THREAD would be a new process.
    let thread = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )
    .and_then(|c| SeccompRule::new(vec![c]))
    .map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_clone, vec![thread]);
    // New sockets: the Internet families in the front, as vsftpd's filter;
    // netlink, packet and the rarer families are where many kernel bugs
    // are reached from. The channels to the master and the workers are
    // socketpairs. A unix socket passes here, for `unix_sockets_refused`
    // to answer.
    let mut families = vec![family(libc::AF_UNIX)?];
    if role == Role::Front {
        families.extend([family(libc::AF_INET)?, family(libc::AF_INET6)?]);
    }
    rules.insert(libc::SYS_socket, families);
    // Pairs run a family's socket code as much as `socket` does: unix only.
    rules.insert(libc::SYS_socketpair, vec![family(libc::AF_UNIX)?]);
    // Let through here; the first filter answers it with ENOSYS.
    rules.insert(libc::SYS_clone3, Vec::new());
    compile(rules, SeccompAction::KillProcess, SeccompAction::Allow)
}

/// A rule that matches when the first argument (a socket's family) is `af`.
fn family(af: libc::c_int) -> Result<SeccompRule, String> {
    SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, af as u64)
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(|e| e.to_string())
}

/// `clone3` keeps its flags in memory a filter cannot read: refuse it with
/// ENOSYS, and glibc creates threads with `clone`, whose flags it can.
fn no_clone3() -> Result<BpfProgram, String> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    compile(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32))
}

/// A unix socket fails with EACCES instead of killing, as in vsftpd's
/// filter with `text_userdb_names`: glibc opens one to ask nscd, sssd or
/// systemd's user database for a listing's owner names. The lookup then
/// goes on with the sources that need no socket (/etc/passwd), and an
/// owner only a socket could name shows as a number.
fn unix_sockets_refused() -> Result<BpfProgram, String> {
    let rules = BTreeMap::from([(libc::SYS_socket, vec![family(libc::AF_UNIX)?])]);
    compile(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EACCES as u32))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    SeccompFilter::new(rules, mismatch, matched, arch)
        .and_then(TryInto::try_into)
        .map_err(|e| format!("building the seccomp filter: {e}"))
}

/// Installs `role`'s filters in the calling thread, and so in every thread
/// it starts afterwards: call it before the process starts any thread.
/// Sets `PR_SET_NO_NEW_PRIVS` (the kernel requires it for an unprivileged
/// process to install a filter).
///
/// # Errors
/// The architecture has no filter here, or the kernel refused it.
pub fn install(role: Role) -> Result<(), String> {
    // Where filters disagree the kernel takes the strictest answer, and
    // an errno is stricter than allow: the allow-list lets `clone3` and
    // unix sockets through for the first two to refuse.
    for filter in [no_clone3()?, unix_sockets_refused()?, allow_list(role)?] {
        seccompiler::apply_filter(&filter)
            .map_err(|e| format!("installing the {} seccomp filter: {e}", role.name()))?;
    }
    Ok(())
}

/// The Landlock ABI (Linux 6.12) that takes from a process everything a
/// front acting as `ftp_username` could misuse where anonymous users may
/// write: opens for writing, creation, removal, rename and links (ABI 1),
/// truncation, even by an open for reading with `O_TRUNC` (ABI 3), and
/// signals to processes outside it, such as that user's file worker
/// (ABI 6). Below it the lock is partial.
const FULL_LOCK_ABI: i64 = 6;

/// The kernel's Landlock ABI version, 0 where Landlock is off. Asked once:
/// the answer cannot change while ftpd runs.
fn landlock_abi() -> i64 {
    static ABI: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *ABI.get_or_init(|| {
        // landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
        // answers the ABI version, or fails where Landlock is off.
        // SAFETY: a version query reads and writes no memory.
        let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
        abi.max(0)
    })
}

/// Whether this kernel gives [`forbid_fs_writes`] in full: what a front
/// acting as `ftp_username` while anonymous users may write needs.
pub fn can_forbid_fs_writes() -> bool {
    landlock_abi() >= FULL_LOCK_ABI
}

/// Takes from the calling thread, and every thread and process it starts
/// afterwards, the right to change any file through a path: no open for
/// writing, no truncation, creation, removal, rename or link, whatever the
/// file permissions say (Landlock, with no rule granting any of it); and
/// signals to and abstract unix sockets of processes outside, such as
/// `ftp_username`'s own file worker. Files opened before, and descriptors
/// received (a worker's upload file), keep what they were opened for.
/// Landlock has no rights for a file's mode, owner, times or extended
/// attributes: [`forbid_attribute_changes`] takes those. Call it before any
/// thread starts. Irreversible. `Ok(true)`: all of it holds; `Ok(false)`:
/// the kernel's Landlock is older than [`FULL_LOCK_ABI`] and holds part.
///
/// # Errors
/// The kernel has no Landlock, or refused the ruleset.
pub fn forbid_fs_writes() -> Result<bool, String> {
    use landlock::{ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus, Scope};
    let abi = ABI::V6;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_write(abi))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    match status.ruleset {
        RulesetStatus::NotEnforced => Err("Landlock is not enforced by this kernel".into()),
        RulesetStatus::PartiallyEnforced => Ok(false),
        RulesetStatus::FullyEnforced => Ok(landlock_abi() >= FULL_LOCK_ABI),
    }
}

/// The calls that change a file's mode, owner, times or extended
/// attributes, which Landlock does not cover. The last three have no name
/// in the C library bindings yet; their numbers are shared by every
/// architecture (the unified table, Linux 6.13 and 6.17).
const ATTRIBUTE_CALLS: &[libc::c_long] = &[
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lchown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utime,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utimes,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_futimesat,
    463, // setxattrat
    466, // removexattrat
    469, // file_setattr
];

/// A seccomp filter that refuses ([`ATTRIBUTE_CALLS`], `EPERM`) what
/// [`forbid_fs_writes`] cannot: changing a file's mode, owner, times or
/// extended attributes, which `ftp_username` may do to every file it owns
/// (its anonymous uploads among them). Also unix sockets (`EACCES`, as with
/// `seccomp_sandbox`): those `ftp_username` may reach are not the front's.
/// Installed for a front acting as `ftp_username` even with
/// `seccomp_sandbox=NO` (which turns the allow-list off, and which a
/// vsftpd.conf often has because vsftpd's own filter fails on a newer C
/// library). The front never makes these calls; the workers do.
///
/// # Errors
/// The architecture has no filter here, or the kernel refused it.
pub fn forbid_attribute_changes() -> Result<(), String> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = ATTRIBUTE_CALLS.iter().map(|&nr| (nr, Vec::new())).collect();
    let attributes = compile(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32))?;
    for filter in [attributes, unix_sockets_refused()?] {
        seccompiler::apply_filter(&filter).map_err(|e| format!("installing the attribute filter: {e}"))?;
    }
    Ok(())
}

/// How a child's end reads in the master's log: "killed by seccomp
/// (SIGSYS, a system call outside its allow-list)" for the filter's kill.
pub fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGSYS) => {
            "was killed by seccomp (SIGSYS: a system call outside its allow-list; the kernel's audit log names it)"
                .into()
        }
        Some(sig) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        None => match status.code() {
            Some(101) => "exited with status 101 (a panic)".into(),
            Some(code) => format!("exited with status {code}"),
            None => format!("{status}"),
        },
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL: the OOM killer or an operator",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT: an abort",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    /// The lock a front acting as `ftp_username` takes: nothing written,
    /// created, removed or renamed through a path, whatever root or the
    /// permissions allow; reads, and a descriptor opened for writing
    /// before (an upload's file from the worker), still work. Landlock
    /// binds the thread that asks, so a test thread can take it alone.
    #[test]
    fn forbid_fs_writes_takes_every_file_change_but_keeps_reads_and_open_descriptors() {
        let dir = std::env::temp_dir().join(format!("ftpd-sandbox-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("mkdir");
        let old = dir.join("old");
        std::fs::write(&old, b"old").expect("write");
        let mut kept = std::fs::OpenOptions::new().append(true).open(&old).expect("open for writing");
        let dir_path = dir.clone();
        let outcome = std::thread::spawn(move || {
            if !super::can_forbid_fs_writes() {
                let r = super::forbid_fs_writes();
                assert!(!matches!(r, Ok(true)), "a partial or missing lock says so: {r:?}");
                return Err(format!("no full lock on this kernel: {r:?}"));
            }
            assert!(super::forbid_fs_writes().expect("the lock"), "all of it, where the kernel can");
            let denied = |what: &str, r: std::io::Result<()>| match r {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
                other => Err(format!("{what}: {other:?}")),
            };
            let old = dir_path.join("old");
            denied("create", std::fs::File::create(dir_path.join("new")).map(drop))?;
            denied("open for writing", std::fs::OpenOptions::new().write(true).open(&old).map(drop))?;
            denied("truncate", std::fs::OpenOptions::new().write(true).truncate(true).open(&old).map(drop))?;
            denied("remove", std::fs::remove_file(&old))?;
            denied("rename", std::fs::rename(&old, dir_path.join("moved")))?;
            denied("mkdir", std::fs::create_dir(dir_path.join("sub")))?;
            denied("symlink", std::os::unix::fs::symlink(&old, dir_path.join("link")))?;
            assert_eq!(std::fs::read(&old).map_err(|e| format!("read: {e}"))?, b"old");
            kept.write_all(b"+kept").map_err(|e| format!("a descriptor from before: {e}"))?;
            Ok(())
        })
        .join()
        .expect("the test thread");
        match outcome {
            Ok(()) => assert_eq!(std::fs::read(&old).expect("read"), b"old+kept"),
            Err(e) => assert!(!super::can_forbid_fs_writes(), "{e}"),
        }
        // Only the thread that asked is bound.
        std::fs::write(dir.join("after"), b"x").expect("this thread still writes");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// What Landlock leaves to `ftp_username` on the files it owns (an
    /// anonymous upload): mode, owner, times, extended attributes; and unix
    /// sockets. The filter binds the thread that installs it.
    #[test]
    fn forbid_attribute_changes_refuses_mode_owner_times_xattrs_and_unix_sockets() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("ftpd-attr-test-{}", std::process::id()));
        std::fs::write(&path, b"mine").expect("write");
        let p = path.clone();
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            // SAFETY: sets a flag of this thread only; the kernel needs it
            // for an unprivileged filter.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err("no_new_privs".into());
            }
            super::forbid_attribute_changes()?;
            let errno = |what: &str, r: std::io::Result<()>, want: i32| match r {
                Err(e) if e.raw_os_error() == Some(want) => Ok(()),
                other => Err(format!("{what}: {other:?}")),
            };
            let f = std::fs::File::open(&p).map_err(|e| format!("open: {e}"))?;
            errno("chmod", std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)), libc::EPERM)?;
            errno("fchmod", f.set_permissions(std::fs::Permissions::from_mode(0o666)), libc::EPERM)?;
            errno("chown", std::os::unix::fs::chown(&p, Some(0), Some(0)), libc::EPERM)?;
            errno("utimensat", f.set_modified(std::time::SystemTime::UNIX_EPOCH), libc::EPERM)?;
            let name = c"user.ftpd";
            let path_c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: valid C strings and a one-byte value.
            let r = unsafe { libc::setxattr(path_c.as_ptr(), name.as_ptr(), b"x".as_ptr().cast(), 1, 0) };
            errno("setxattr", if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }, libc::EPERM)?;
            errno("unix socket", std::os::unix::net::UnixDatagram::unbound().map(drop), libc::EACCES)?;
            assert_eq!(std::fs::read(&p).map_err(|e| format!("read: {e}"))?, b"mine");
            Ok(())
        })
        .join()
        .expect("the test thread");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        std::fs::remove_file(&path).expect("clean up");
        outcome.expect("every change refused");
        assert_ne!(mode & 0o777, 0o666, "the mode did not change");
    }
}
