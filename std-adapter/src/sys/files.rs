//! Files for a file server: a path opened beneath a directory
//! (`openat2(2)`), a file sent to a socket by the kernel (`sendfile(2)`).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `path` for reading beneath the directory `dir`, as `openat2(2)`
/// with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` does: the kernel refuses
/// any `..` or symbolic link that would resolve outside `dir` (an absolute
/// link always), so no spelling of a path and no link planted in the
/// tree leaves it; links that stay inside are followed. `path` is
/// relative; empty, it opens `dir` itself again. The file is
/// close-on-exec. Directories open too (to list them, or to `stat`).
///
/// # Errors
/// The open's: `NotFound`, `PermissionDenied`, `CrossesDevices` (`EXDEV`)
/// for a path that would leave `dir`, `InvalidInput` for a NUL byte or an
/// absolute `path`, `Unsupported` (`ENOSYS`) on kernels before 5.6.
pub fn open_beneath(dir: &impl AsFd, path: impl AsRef<Path>) -> io::Result<File> {
    let path = path.as_ref();
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: open_how is plain integers; all zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: openat2 reads `path` (NUL-terminated, alive for the
        // call) and `how` (its size passed); it returns a new descriptor
        // or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_fd().as_raw_fd(),
                path.as_ptr(),
                &raw const how,
                size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: `fd` was just returned by openat2 and nothing else owns it.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends up to `count` bytes of `file` from `offset` to `socket` with
/// `sendfile(2)`: the kernel copies from the page cache, nothing passes
/// through the process. Returns how many bytes it sent: fewer than
/// `count` when the socket took less (a blocking socket waits as a write
/// does), 0 when the file ends at `offset`. Interruptions are retried.
/// (std's `io::copy` from a `File` to a `TcpStream` reads and writes
/// through a buffer instead: strace shows it with Rust 1.95.)
///
/// # Errors
/// The send's: `BrokenPipe` / `ConnectionReset` for a peer gone,
/// `WouldBlock` for a non-blocking socket that is full or a blocking one
/// past its send timeout, `InvalidInput` for an offset past `i64::MAX`.
pub fn send_file(socket: &impl AsFd, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    let mut at = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past i64::MAX"))?;
    loop {
        // SAFETY: both descriptors are open for the call (borrowed);
        // `at` is a valid off_t the kernel advances by what it sent.
        let n =
            unsafe { libc::sendfile(socket.as_fd().as_raw_fd(), file.as_raw_fd(), &mut at, count) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;
    use std::os::unix::net::UnixStream;

    fn tree(tag: &str) -> std::path::PathBuf {
        let top = std::env::temp_dir().join(format!("sockserv-files-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir_all(top.join("root/sub")).unwrap();
        std::fs::write(top.join("secret"), "secret").unwrap();
        std::fs::write(top.join("root/a.txt"), "hello").unwrap();
        symlink("../a.txt", top.join("root/sub/in")).unwrap();
        symlink("../secret", top.join("root/out")).unwrap();
        symlink(top.join("root/a.txt"), top.join("root/abs")).unwrap();
        top
    }

    #[test]
    fn open_beneath_stays_beneath() {
        let top = tree("open");
        let root = File::open(top.join("root")).unwrap();
        let mut text = String::new();
        open_beneath(&root, "sub/in").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        assert!(open_beneath(&root, "").unwrap().metadata().unwrap().is_dir());
        assert!(open_beneath(&root, "sub/../a.txt").is_ok());
        for escape in ["../secret", "sub/../../secret", "out", "abs", "/etc/passwd"] {
            let e = open_beneath(&root, escape).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{escape}: {e}");
        }
        assert_eq!(open_beneath(&root, "nope").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(open_beneath(&root, "a\0b").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        std::fs::remove_dir_all(top).unwrap();
    }

    #[test]
    fn send_file_sends_a_part_of_a_file() {
        let top = tree("send");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(top.join("big"), &data).unwrap();
        let file = File::open(top.join("big")).unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let (mut offset, end) = (1_000u64, 150_000u64);
        while offset < end {
            let n = send_file(&a, &file, offset, (end - offset) as usize).unwrap();
            assert!(n > 0);
            offset += n as u64;
        }
        assert_eq!(send_file(&a, &file, data.len() as u64, 10).unwrap(), 0, "at the end");
        drop(a);
        assert!(reader.join().unwrap() == data[1_000..150_000]);
        std::fs::remove_dir_all(top).unwrap();
    }
}
