//! Low-level file operations of the writer: kernel-side copies with `copy_file_range(2)` and a
//! bounded-buffer fallback, zero runs, positioned writes, directory fsync, free-space queries,
//! space reservation and no-replace renames.
//!
//! Everything writes with explicit offsets (`pwrite`, `copy_file_range` with both offsets given), so
//! no call depends on a file position another call moved. Memory stays bounded: the only buffer is
//! [`CHUNK`] bytes, whatever the model size. The copy loop checks the cancel flag between chunks, so a
//! Ctrl-C stops within one chunk. RELIABILITY.md B.5 (copy_file_range fallbacks) and B.6 (disk full).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest unit of work between two cancel checks / progress reports, and the fallback buffer size.
pub const CHUNK: usize = 16 << 20;

/// How far ahead of the copy the source is read (see `CopyCtx::read_ahead`).
const READ_AHEAD: u64 = 64 << 20;

/// State shared by every copy of one write: the cancel flag, progress, the fallback buffer, and
/// (debug builds) the injected failure.
pub struct CopyCtx<'a> {
    /// Set by the signal handler; checked between chunks.
    pub cancel: Option<&'a AtomicBool>,
    /// Called with the number of bytes written so far.
    pub progress: Option<&'a dyn Fn(u64)>,
    /// Bytes written so far (tensor data and headers).
    pub done: u64,
    /// Whether `copy_file_range` is still worth trying (cleared after the first refusal).
    pub use_cfr: bool,
    /// Bytes moved by `copy_file_range`.
    pub cfr_bytes: u64,
    /// Fail with ENOSPC once this many bytes were written (tests; debug builds only).
    pub fail_after: Option<u64>,
    /// Make `copy_file_range` fail with this errno once this many bytes went through it (tests of
    /// the fallback; debug builds only).
    pub cfr_fail: Option<(i32, u64)>,
    buf: Vec<u8>,
    /// Per source file (by descriptor): the end of the range already asked to be read ahead.
    ahead: Vec<(std::os::unix::io::RawFd, u64)>,
}

impl<'a> CopyCtx<'a> {
    /// A new context. In debug builds the environment variable `CKPT_TEST_FAIL_AFTER_BYTES` injects
    /// a disk-full error after that many bytes, and `CKPT_TEST_CFR_ERRNO=ERRNO[@BYTES]` makes
    /// `copy_file_range` fail with `ERRNO` once `BYTES` (default 0) went through it (fault tests).
    pub fn new(cancel: Option<&'a AtomicBool>, progress: Option<&'a dyn Fn(u64)>) -> Self {
        #[cfg(debug_assertions)]
        let fail_after = std::env::var("CKPT_TEST_FAIL_AFTER_BYTES")
            .ok()
            .and_then(|v| v.parse().ok());
        #[cfg(not(debug_assertions))]
        let fail_after = None;
        #[cfg(debug_assertions)]
        let cfr_fail = std::env::var("CKPT_TEST_CFR_ERRNO").ok().and_then(|v| {
            let (errno, after) = v.split_once('@').unwrap_or((v.as_str(), "0"));
            Some((errno.parse().ok()?, after.parse().ok()?))
        });
        #[cfg(not(debug_assertions))]
        let cfr_fail = None;
        CopyCtx {
            cancel,
            progress,
            done: 0,
            use_cfr: true,
            cfr_bytes: 0,
            fail_after,
            cfr_fail,
            buf: Vec::new(),
            ahead: Vec::new(),
        }
    }

    /// Error out when the user asked to stop.
    pub fn check_cancel(&self) -> io::Result<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        Ok(())
    }

    fn before_write(&self, n: u64) -> io::Result<()> {
        self.check_cancel()?;
        if let Some(limit) = self.fail_after
            && self.done.saturating_add(n) > limit
        {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn advance(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        if let Some(p) = self.progress {
            p(self.done);
        }
    }

    /// Write `bytes` at `off` of `out` (handles short writes and EINTR).
    pub fn write_at(&mut self, out: &File, bytes: &[u8], off: u64) -> io::Result<()> {
        let mut pos = 0usize;
        while pos < bytes.len() {
            let end = pos.saturating_add(CHUNK).min(bytes.len());
            let part = bytes.get(pos..end).unwrap_or_default();
            self.before_write(part.len() as u64)?;
            out.write_all_at(part, off.saturating_add(pos as u64))?;
            self.advance(part.len() as u64);
            pos = end;
        }
        Ok(())
    }

    /// Write `len` zero bytes at `off` of `out`.
    pub fn write_zeros(&mut self, out: &File, len: u64, off: u64) -> io::Result<()> {
        const Z: usize = 1 << 16;
        static ZEROS: [u8; Z] = [0u8; Z];
        let mut left = len;
        let mut o = off;
        while left > 0 {
            let n = left.min(Z as u64);
            let slice = ZEROS.get(..n as usize).unwrap_or_default();
            self.before_write(n)?;
            out.write_all_at(slice, o)?;
            self.advance(n);
            left -= n;
            o = o.saturating_add(n);
        }
        Ok(())
    }

    /// Copy `len` bytes from `src` at `src_off` to `out` at `out_off`: `copy_file_range` in
    /// [`CHUNK`]-sized steps (looping on short counts), falling back to `pread`/`pwrite` through one
    /// bounded buffer when the kernel refuses (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP, ...).
    pub fn copy(
        &mut self,
        src: &File,
        src_off: u64,
        len: u64,
        out: &File,
        out_off: u64,
    ) -> io::Result<()> {
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(CHUNK as u64);
            self.before_write(want)?;
            let so = src_off.saturating_add(done);
            self.read_ahead(src, so);
            let oo = out_off.saturating_add(done);
            let n = if self.use_cfr {
                let r = match self.cfr_fail {
                    Some((errno, after)) if self.cfr_bytes >= after => {
                        Err(io::Error::from_raw_os_error(errno))
                    }
                    _ => copy_file_range(src, so, out, oo, want),
                };
                match r {
                    Ok(0) => {
                        // EOF on the source: it shrank under us.
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the source file ended early (was it truncated while reading?)",
                        ));
                    }
                    Ok(n) => {
                        self.cfr_bytes = self.cfr_bytes.saturating_add(n);
                        n
                    }
                    // Refused (another filesystem, no kernel support, a special file): the rest of
                    // this write goes through the buffer, starting with this same chunk.
                    Err(e) if cfr_unsupported(&e) => {
                        self.use_cfr = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                self.copy_buffered(src, so, out, oo, want)?
            };
            self.advance(n);
            done = done.saturating_add(n);
        }
        Ok(())
    }

    /// Keep the source's reads [`READ_AHEAD`] bytes ahead of the copy at `pos`
    /// (`POSIX_FADV_WILLNEED`, which queues the reads and returns): the disk then reads the next
    /// part while this part is written, where the copy alone reads and writes in turn.
    fn read_ahead(&mut self, src: &File, pos: u64) {
        let fd = src.as_raw_fd();
        let slot = match self.ahead.iter().position(|&(f, _)| f == fd) {
            Some(i) => i,
            None => {
                self.ahead.push((fd, 0));
                self.ahead.len() - 1
            }
        };
        let Some((_, until)) = self.ahead.get_mut(slot) else {
            return;
        };
        let Some((from, len)) = read_ahead_step(*until, pos) else {
            return;
        };
        if let (Ok(o), Ok(l)) = (libc::off_t::try_from(from), libc::off_t::try_from(len)) {
            // SAFETY: plain syscall on an open fd; the result is deliberately ignored (a hint).
            unsafe {
                libc::posix_fadvise(fd, o, l, libc::POSIX_FADV_WILLNEED);
            }
        }
        *until = from.saturating_add(len);
    }

    fn copy_buffered(
        &mut self,
        src: &File,
        src_off: u64,
        out: &File,
        out_off: u64,
        want: u64,
    ) -> io::Result<u64> {
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
        let n = (want as usize).min(self.buf.len());
        let buf = self.buf.get_mut(..n).unwrap_or_default();
        src.read_exact_at(buf, src_off)?;
        out.write_all_at(buf, out_off)?;
        Ok(n as u64)
    }
}

/// The range `(from, len)` to read ahead when the copy reaches `pos` of a source whose reads were
/// already asked for up to `until`, or `None` when what was asked covers enough: the advice keeps
/// [`READ_AHEAD`] bytes ahead of `pos`, topped up in steps of at least half of it (a few large
/// requests, not one per chunk), and starts over at `pos` when the copy jumps outside the advised
/// window (a source whose tensors are copied out of file order).
fn read_ahead_step(until: u64, pos: u64) -> Option<(u64, u64)> {
    let target = pos.saturating_add(READ_AHEAD);
    let from = if until < pos || until > target {
        pos
    } else {
        until
    };
    let len = target.saturating_sub(from);
    (len >= READ_AHEAD / 2).then_some((from, len))
}

fn cfr_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EXDEV
                | libc::EINVAL
                | libc::ENOSYS
                | libc::EOPNOTSUPP
                | libc::EBADF
                | libc::EPERM
        )
    )
}

/// One `copy_file_range(2)` call with explicit offsets (retrying EINTR).
fn copy_file_range(
    src: &File,
    src_off: u64,
    out: &File,
    out_off: u64,
    len: u64,
) -> io::Result<u64> {
    let mut off_in =
        libc::loff_t::try_from(src_off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut off_out =
        libc::loff_t::try_from(out_off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    loop {
        // SAFETY: both fds are open for the duration of the call; the offset pointers point to
        // live locals; the kernel does not retain them.
        let r = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        if r >= 0 {
            return Ok(r as u64);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reserve `len` bytes for `file` so that a full disk shows up now, not half-way. Filesystems that
/// cannot (EOPNOTSUPP) are fine: the writes themselves are still checked.
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    let Ok(l) = libc::off_t::try_from(len) else {
        return Ok(());
    };
    if l == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: plain syscall on an open fd.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, l) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => return Ok(()),
            _ => return Err(e),
        }
    }
}

/// Ask the kernel to start writing `file`'s dirty pages back now, without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a hint only; durability still comes from `fsync`.
pub fn start_writeback(file: &File) {
    start_writeback_range(file, 0, 0);
}

/// [`start_writeback`] for `len` bytes at `off` (`len` 0: to the end of the file).
pub fn start_writeback_range(file: &File, off: u64, len: u64) {
    let (Ok(o), Ok(l)) = (libc::off64_t::try_from(off), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on an open fd; the result is deliberately ignored (a hint).
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), o, l, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Tell the kernel a file will be read sequentially (doubles its readahead window), as `cp` does.
pub fn advise_sequential(file: &File) {
    // SAFETY: plain syscall on an open fd; the result is deliberately ignored (a hint).
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// Bytes available to an unprivileged user on the filesystem holding `path` (`statvfs`).
pub fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `fsync` a directory so the entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Rename `from` to `to` failing if `to` exists (`renameat2(RENAME_NOREPLACE)`); on kernels or
/// filesystems without it, an existence check followed by a plain rename.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::ffi::CString::new(from.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let t = std::ffi::CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both paths are NUL-terminated and live for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            std::fs::rename(from, to)
        }
        _ => Err(e),
    }
}

/// Atomically exchange two paths (`renameat2(RENAME_EXCHANGE)`, Linux >= 3.15; both must exist).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both paths are NUL-terminated and live for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A short random suffix for temporary names.
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// True for an error that means "no space" (ENOSPC). A quota (EDQUOT) and a file too large
/// (EFBIG) are reported by their own names.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC))
}

/// Raise the soft limit on open files to the hard limit (a sharded checkpoint keeps one descriptor
/// per shard open while writing). Best effort: errors are ignored.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequential copy in 16 MiB chunks asks for every byte ahead exactly once, in a few large
    /// steps, and never more than `READ_AHEAD` past the copy.
    #[test]
    fn read_ahead_covers_a_sequential_copy_once_in_large_steps() {
        let (mut until, mut asked, mut calls) = (0u64, 0u64, 0);
        let total = 1u64 << 30;
        for pos in (0..total).step_by(CHUNK) {
            if let Some((from, len)) = read_ahead_step(until, pos) {
                assert_eq!(from, until.max(pos), "contiguous with what was asked");
                assert!(len >= READ_AHEAD / 2);
                assert!(from + len <= pos + READ_AHEAD);
                asked += len;
                calls += 1;
                until = from + len;
            }
            assert!(
                until >= pos + CHUNK as u64,
                "the chunk being copied was asked for"
            );
        }
        assert_eq!(asked, until, "no byte asked twice");
        assert!(
            calls <= (total / (READ_AHEAD / 2)) as usize + 1,
            "{calls} calls"
        );
    }

    /// A jump backwards or far forwards (tensors copied out of file order) starts over at the
    /// new position.
    #[test]
    fn read_ahead_starts_over_after_a_jump() {
        let until = 10 * READ_AHEAD;
        assert_eq!(read_ahead_step(until, 0), Some((0, READ_AHEAD)));
        let far = 20 * READ_AHEAD;
        assert_eq!(read_ahead_step(until, far), Some((far, READ_AHEAD)));
        // Within the window: topped up only once half of it was used.
        assert_eq!(read_ahead_step(until, until - READ_AHEAD + 1), None);
        let half = until - READ_AHEAD / 2;
        assert_eq!(read_ahead_step(until, half), Some((until, READ_AHEAD / 2)));
    }
}
