//! Forks and signals, in one place: the front's fork and `background=YES`'s,
//! the master's handlers that pass SIGTERM, SIGINT and SIGHUP on to the
//! front, SIGHUP held until a reload can be served, and the front's own
//! shutdown signals. Each of these depends on the others' timing (a front
//! forked with SIGHUP held, a signal that came while no front ran handed to
//! the next one), which is easier to keep right when it is read together.
//! The workers are not forked here: they are programs of their own
//! (`ftpd --ftpd-worker`), started with `Command`.

use std::{
    io,
    sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Which side of a fork the caller is on.
#[derive(Debug, PartialEq, Eq)]
pub enum Fork {
    /// The new process.
    Child,
    /// The caller, with the child's pid.
    Parent(i32),
}

/// Forks a front. The child starts with SIGHUP held (see [`hold_sighup`]:
/// a reload sent the moment it exists waits until it listens for one) and
/// with the default dispositions of the signals the master forwards (its
/// own handlers come with its runtime); the parent's mask is as it was.
///
/// The first front is forked before the master starts threads, a
/// replacement while they run: the child may only use memory it owns and
/// must not take a lock another thread of the parent may have held.
pub fn fork_front() -> io::Result<Fork> {
    // Holding stderr's lock across the fork means no other thread holds it
    // in the child (the log writer's lock is the one the child takes at once).
    let stderr = io::stderr().lock();
    let mask = hold_sighup();
    // SAFETY: the child only runs code that owns its memory (see above);
    // glibc resets its allocator's locks in the child.
    let forked = unsafe { libc::fork() };
    if forked != 0 {
        restore_sigmask(&mask);
    }
    drop(stderr);
    match forked {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // A replacement front inherits the master's handlers: a SIGHUP
            // before the front's own ones exist waits, held since the fork.
            // SAFETY: resetting dispositions to their defaults.
            unsafe {
                for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            Ok(Fork::Child)
        }
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `background=YES`: fork, let the parent exit, start a new session, and
/// leave the terminal's input and output (stderr stays where the operator
/// sent it, since it carries ftpd's log). Only before any thread exists,
/// since forking a multi-threaded process is unsafe.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: the caller has started no thread yet.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            rustix::process::setsid()?;
            let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
            rustix::stdio::dup2_stdin(&null)?;
            rustix::stdio::dup2_stdout(&null)?;
            Ok(())
        }
        _ => std::process::exit(0),
    }
}

/// Blocks SIGHUP in the calling thread and the threads it starts. Its
/// default action ends the process, and a front (or ftpd without privilege
/// separation) listens for it only once its accept loop starts: a reload
/// sent as ftpd or a replacement front started killed that front, with its
/// sessions. Held, the signal waits until [`listen_for_sighup`], and the
/// reload is done. Returns the mask before, for [`restore_sigmask`].
pub fn hold_sighup() -> SigSet {
    let mut old = SigSet::empty();
    // Cannot fail with a valid `how` and set.
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::from(Signal::SIGHUP)), Some(&mut old));
    old
}

/// Puts back the calling thread's signal mask from before [`hold_sighup`]
/// (the master's, once it has forked a front that starts with SIGHUP held).
pub fn restore_sigmask(old: &SigSet) {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

/// The front's SIGHUPs from now on, a held one first: the listener is made
/// before SIGHUP is let in again (on this thread, which the kernel then
/// picks for a held one), so that none is lost in between.
pub fn listen_for_sighup() -> io::Result<tokio::signal::unix::Signal> {
    let hup = signal(SignalKind::hangup());
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&SigSet::from(Signal::SIGHUP)), None);
    hup
}

/// The first SIGTERM or SIGINT (Ctrl-C) the front gets: the shutdown starts.
pub async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}

/// The next SIGTERM or SIGINT from now on (a new listener does not see
/// earlier ones); never, when they cannot be watched.
pub async fn next_stop_signal() {
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {},
                _ = i.recv() => {},
            }
        }
        _ => std::future::pending().await,
    }
}

/// The front not yet reaped (0 before the first and between two fronts).
static FRONT_PID: AtomicI32 = AtomicI32::new(0);
/// Whether that front still serves: SIGHUP is passed to it only then.
static FRONT_SERVES: AtomicBool = AtomicBool::new(false);
/// Set by SIGTERM/SIGINT: the front's end is then a shutdown, not a death.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// SIGHUPs the master got, and how many of them a front's reload request
/// covered (it reads the files after the request). Any left over when a
/// front starts are its to do: they came with no front to take them
/// (before the first, or while a dead one was replaced), or went to a front
/// that died before it asked (a dead process not yet reaped takes signals
/// without a word).
static HUPS_SEEN: AtomicU64 = AtomicU64::new(0);
static HUPS_DONE: AtomicU64 = AtomicU64::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FRONT_PID.load(Ordering::SeqCst);
    if sig == libc::SIGHUP {
        HUPS_SEEN.fetch_add(1, Ordering::SeqCst);
        if FRONT_SERVES.load(Ordering::SeqCst) && pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, sig) };
        }
        return;
    }
    STOPPING.store(true, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The master's SIGTERM, SIGINT and SIGHUP handlers, which pass the signal
/// to the front. Installed before ftpd tells systemd it is ready (a
/// `systemctl reload` may follow at once: SIGHUP's default action would end
/// ftpd) and kept while fronts come and go.
pub fn install_master_signals() {
    // SAFETY: the handler only touches atomics and calls kill(2).
    unsafe {
        libc::signal(libc::SIGTERM, forward_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, forward_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, forward_signal as *const () as libc::sighandler_t);
    }
}

/// A new front runs: signals go to it from now on, and it gets those that
/// came while there was none. It holds SIGHUP until it listens for it, so a
/// reload sent this early waits instead of killing it.
pub fn front_started(pid: i32) {
    FRONT_PID.store(pid, Ordering::SeqCst);
    FRONT_SERVES.store(true, Ordering::SeqCst);
    if STOPPING.load(Ordering::SeqCst) {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if HUPS_SEEN.load(Ordering::SeqCst) > HUPS_DONE.load(Ordering::SeqCst) {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }
}

/// The front's channel ended: a reload from now on waits for the next front.
pub fn front_stopped_serving() {
    FRONT_SERVES.store(false, Ordering::SeqCst);
}

/// The front was reaped: its pid may be reused, so no signal goes to it.
pub fn front_reaped() {
    FRONT_PID.store(0, Ordering::SeqCst);
}

/// The front asked for a reload: every SIGHUP so far is covered, since it
/// reads the files after asking.
pub fn reloads_covered() {
    HUPS_DONE.store(HUPS_SEEN.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// Whether the master got SIGTERM or SIGINT: ftpd is stopping.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighup_held() -> bool {
        let mut now = SigSet::empty();
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut now));
        now.contains(Signal::SIGHUP)
    }

    #[test]
    fn a_front_is_forked_with_sighup_held_and_the_parent_keeps_its_mask() {
        let before = sighup_held();
        match fork_front().expect("fork") {
            Fork::Child => {
                // SAFETY: only async-signal-safe calls in the child of a
                // multi-threaded test process.
                let default = unsafe { libc::signal(libc::SIGHUP, libc::SIG_DFL) } == libc::SIG_DFL;
                unsafe { libc::_exit(if sighup_held() && default { 0 } else { 1 }) }
            }
            Fork::Parent(pid) => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child: {status:#x}");
                assert_eq!(sighup_held(), before, "the parent's mask is as it was");
            }
        }
    }

    /// The point of this module: no other one forks or sets a signal's
    /// handler or mask, so their timing is read in one place.
    #[test]
    fn no_other_module_forks_or_handles_signals() {
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).expect("src").flatten() {
                let p = e.path();
                if p.is_dir() {
                    sources(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 30, "{files:?}");
        for file in files.iter().filter(|f| !f.ends_with("process.rs")) {
            let text = std::fs::read_to_string(file).expect("read");
            for call in ["libc::fork(", "libc::signal(", "pthread_sigmask", "tokio::signal", "SignalKind", "setsid("] {
                assert!(!text.contains(call), "{} uses {call}: that belongs in process.rs", file.display());
            }
        }
    }
}
