//! Socket calls socket2 does not offer with the flags we need.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{SockAddr, Socket};

/// `recvfrom(2)` with `MSG_TRUNC`: returns the datagram's real length even
/// when it was larger than `buf` (Linux: UDP and Unix datagram sockets).
pub(crate) fn recv_from_trunc(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    loop {
        // SAFETY: `buf` is valid for writes of buf.len() bytes; the address
        // storage is filled by recvfrom and its length updated through the
        // pointer, which SockAddr::try_init hands us for exactly that.
        let res = unsafe {
            SockAddr::try_init(|storage, len| {
                let n = libc::recvfrom(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                    storage.cast(),
                    len,
                );
                if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
            })
        };
        match res {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `accept4(2)` with `SOCK_NONBLOCK | SOCK_CLOEXEC`: a connection that is
/// non-blocking from the start (no `fcntl` pair after the accept).
pub(crate) fn accept_nonblocking(listener: &Socket) -> io::Result<(Socket, SockAddr)> {
    listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
}

/// `send(MSG_DONTWAIT | MSG_NOSIGNAL)` on a blocking socket: what fits, or
/// `WouldBlock`.
pub(crate) fn send_dontwait(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of buf.len() bytes; the fd is open.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `recv(MSG_DONTWAIT)` on a blocking socket: what is there, or
/// `WouldBlock`.
pub(crate) fn recv_dontwait(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of buf.len() bytes; the fd is open.
    let n = unsafe {
        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// The kernel's `net.core.somaxconn` (what CPython now uses as the default
/// backlog), or libc's `SOMAXCONN` when it cannot be read.
pub(crate) fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(libc::SOMAXCONN)
}

/// `send(MSG_NOSIGNAL)`: a write to a peer that went away fails with
/// `EPIPE` instead of raising SIGPIPE.
pub(crate) fn send_nosignal(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    sock.send_with_flags(buf, libc::MSG_NOSIGNAL)
}

/// `sendto(MSG_DONTWAIT)`: a datagram the system cannot take at once
/// fails with `WouldBlock`.
pub(crate) fn send_to_dontwait(sock: &Socket, buf: &[u8], to: &SockAddr) -> io::Result<usize> {
    sock.send_to_with_flags(buf, to, libc::MSG_DONTWAIT)
}

/// Whether `e` says the descriptor is not a socket (`ENOTSOCK`).
pub(crate) fn is_not_socket(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTSOCK)
}

/// The kernel's `net.core.wmem_max`: the largest send buffer an
/// unprivileged `SO_SNDBUF` gets (Linux doubles it), or the usual default
/// (212,992) when it cannot be read.
pub(crate) fn wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992)
}

/// A close-on-exec duplicate of `fd` (`fcntl(F_DUPFD_CLOEXEC)`): a second
/// handle on the same open socket, owned by the caller.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) reads no memory of ours; on a
    // descriptor that is not open it fails with EBADF.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
