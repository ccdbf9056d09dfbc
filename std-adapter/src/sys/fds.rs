//! Inherited descriptors: socket activation (`LISTEN_FDS`) and handing
//! listeners to a successor process.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// At most this many descriptors are handed to a successor.
const MAX_FDS: usize = 16;

/// Takes ownership of descriptor `fd`, which must be open, and sets
/// `FD_CLOEXEC` on it (as `sd_listen_fds` does), so that programs this
/// process runs do not inherit it.
///
/// The caller guarantees that nothing else in the process owns `fd` (the
/// public wrappers take each number at most once).
pub(crate) fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD reads the flags of a descriptor number; on a number
    // that is not open it fails with EBADF and touches nothing.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, on a descriptor we now know is open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open, and the caller guarantees it is owned by nothing
    // else in this process, so the OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes `name` from the environment (`sd_listen_fds(unset = 1)`).
///
/// Precondition (documented on the public caller): no other thread reads
/// the environment through libc (`getenv`) meanwhile; std's own accesses
/// take its environment lock.
pub(crate) fn unset_env(name: &str) {
    // SAFETY: std::env::remove_var is unsafe only because a concurrent
    // getenv from non-Rust code could read freed memory; the caller's
    // documented precondition is that activation is read at start-up,
    // before such threads exist.
    unsafe { std::env::remove_var(name) };
}

/// A program to start with descriptors at 3, 4, ... and `LISTEN_FDS`,
/// `LISTEN_PID` (the child's own pid, written in the child after fork) and
/// `LISTEN_FDNAMES` set, as a service manager starts a socket-activated
/// service. Everything is allocated before the fork; the child only
/// duplicates descriptors, writes digits into a prepared buffer and execs.
pub(crate) struct Successor {
    program: CString,
    argv: Vec<CString>,
    /// The environment; `env[pid_at]` is `LISTEN_PID=` followed by room.
    env: Vec<Vec<u8>>,
    pid_at: usize,
}

impl Successor {
    /// `program` with `args` (argv[0] first) and the current environment
    /// minus any old `LISTEN_*`, plus `LISTEN_FDS=n` and `LISTEN_FDNAMES`.
    pub(crate) fn new(
        program: &OsStr,
        args: impl IntoIterator<Item = std::ffi::OsString>,
        names: &[&str],
    ) -> io::Result<Self> {
        let c =
            |s: &[u8]| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
        let program = c(program.as_bytes())?;
        let argv = args.into_iter().map(|a| c(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let mut env: Vec<Vec<u8>> = std::env::vars_os()
            .filter(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_"))
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes(), b"\0"].concat())
            .filter(|e| e.iter().filter(|&&b| b == 0).count() == 1)
            .collect();
        env.push(format!("LISTEN_FDS={}\0", names.len()).into_bytes());
        env.push(format!("LISTEN_FDNAMES={}\0", names.join(":")).into_bytes());
        // Room for any pid (at most 10 digits) and the NUL.
        env.push([&b"LISTEN_PID="[..], &[0u8; 12]].concat());
        let pid_at = env.len() - 1;
        Ok(Self { program, argv, env, pid_at })
    }

    /// Forks and execs with `fds` at 3, 4, ...; returns the child's pid
    /// once the exec succeeded (an exec that fails is this call's error,
    /// and the child is reaped).
    ///
    /// Async-signal-safe calls only between fork and exec, so this is safe
    /// in a process with threads.
    pub(crate) fn spawn(mut self, fds: &[BorrowedFd<'_>]) -> io::Result<u32> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"));
        }
        let (status_read, status_write) = super::pipe()?;
        let argv: Vec<*const libc::c_char> =
            self.argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        let envp: Vec<*mut libc::c_char> = self
            .env
            .iter_mut()
            .map(|e| e.as_mut_ptr().cast())
            .chain([std::ptr::null_mut()])
            .collect();
        let pid_buf = envp[self.pid_at];
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: fork has no memory-safety preconditions; the child only
        // calls async-signal-safe functions (child_exec) and leaves through
        // execve or _exit, never returning here.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: every pointer was made before the fork from live
                // allocations that the child's copy of memory still holds.
                unsafe {
                    child_exec(&self.program, &argv, &envp, pid_buf, &raw, status_write.as_raw_fd())
                }
            }
            pid => {
                drop(status_write);
                let mut errno = [0u8; 4];
                // SAFETY: reads at most 4 bytes into a 4-byte buffer.
                let n = loop {
                    let n = unsafe {
                        libc::read(status_read.as_raw_fd(), errno.as_mut_ptr().cast(), 4)
                    };
                    if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        break n;
                    }
                };
                if n == 4 {
                    let _ = super::reap(super::Pid::from_raw(pid), true);
                    return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
                }
                Ok(pid as u32)
            }
        }
    }
}

/// Tells the parent the errno of the failed step and leaves.
fn fail(status: RawFd) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0).to_ne_bytes();
    // SAFETY: write and _exit are async-signal-safe; the buffer is 4 bytes.
    unsafe {
        libc::write(status, errno.as_ptr().cast(), 4);
        libc::_exit(127)
    }
}

/// The child's side of [`Successor::spawn`]: async-signal-safe calls only.
///
/// # Safety
/// Call only in a freshly forked child; the pointers must be valid and
/// NUL-terminated (`argv`, `envp` null-terminated), `pid_buf` must point to
/// `LISTEN_PID=` followed by at least 11 writable bytes.
unsafe fn child_exec(
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*mut libc::c_char],
    pid_buf: *mut libc::c_char,
    fds: &[RawFd],
    status: RawFd,
) -> ! {
    let top = LISTEN_FDS_START + fds.len() as RawFd;
    // First move every source above the targets, so that no dup2 below
    // overwrites a source that is still to be placed.
    let mut moved = [0 as RawFd; MAX_FDS];
    for (i, &fd) in fds.iter().enumerate().take(moved.len()) {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor this process owns.
        moved[i] = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, top) };
        if moved[i] < 0 {
            fail(status);
        }
    }
    for (i, &fd) in moved.iter().enumerate().take(fds.len().min(moved.len())) {
        // SAFETY: dup2 is async-signal-safe; the target's old descriptor (if
        // any) is the child's own copy. dup2 clears FD_CLOEXEC on the target.
        if unsafe { libc::dup2(fd, LISTEN_FDS_START + i as RawFd) } < 0 {
            fail(status);
        }
    }
    // LISTEN_PID=<our pid>: digits written into the prepared buffer.
    // SAFETY: getpid is async-signal-safe.
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let start = b"LISTEN_PID=".len();
    for i in 0..n {
        // SAFETY: the buffer has 12 bytes after the prefix (caller's contract).
        unsafe { *pid_buf.add(start + i) = digits[n - 1 - i] as libc::c_char };
    }
    // SAFETY: as above; the NUL after the digits.
    unsafe { *pid_buf.add(start + n) = 0 };
    // SAFETY: valid, null-terminated argv and envp (caller's contract).
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr().cast()) };
    fail(status)
}

/// A socket this process inherited (from a service manager, or a parent
/// that passed it by number), owned from now on: dropping it closes it.
///
/// Made by [`listen_fds`](crate::activation::listen_fds), from an
/// [`OwnedFd`] (safe), or from a bare descriptor number with
/// [`FromRawFd::from_raw_fd`] (unsafe, as std's: the number must belong to
/// nothing else in the process, which only the caller knows — a number
/// passed with `--fd` by a launcher, say):
///
/// ```no_run
/// use std::os::fd::FromRawFd;
/// use sockserv_std::activation::Inherited;
/// // SAFETY: the launcher passed fd 3 to this process and nothing here
/// // has used it.
/// let socket = unsafe { Inherited::from_raw_fd(3) };
/// ```
///
/// Whether it is a socket of the right kind is checked when a server is
/// built from it (`BindError` otherwise).
pub struct Inherited {
    pub(crate) socket: socket2::Socket,
    pub(crate) fd: RawFd,
    pub(crate) name: Option<String>,
}

impl From<OwnedFd> for Inherited {
    fn from(fd: OwnedFd) -> Self {
        let raw = fd.as_raw_fd();
        Self { socket: socket2::Socket::from(fd), fd: raw, name: None }
    }
}

impl FromRawFd for Inherited {
    /// Takes descriptor `fd` as it is (no check: a descriptor that is not
    /// an open socket of the right kind fails when a server is built).
    ///
    /// # Safety
    /// `fd` must be open and owned by nothing else in this process (std's
    /// [`OwnedFd::from_raw_fd`] contract).
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: the caller's contract is OwnedFd's.
        Self::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}
