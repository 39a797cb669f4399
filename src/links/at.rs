//! Looking at names inside one folder through a descriptor of it
//! (`readlinkat`, `fstatat`): the kernel then looks up one name instead of
//! every folder from `/` down. Most links lead to a file beside them (an
//! icon theme has tens of thousands), so each walker thread keeps the
//! folder it looked into last open (`O_PATH`: nothing is read through it),
//! and once it looked at a few names there, the folder's listing (the
//! types `getdents` gives for free) answers instead of one call per name.

use std::cell::RefCell;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::listing::{Kind, Listing};
use crate::state::Stat;

/// What a name is, not followed.
#[derive(Debug)]
pub enum Entry {
    Link,
    Folder,
    /// Its stat data when it was looked at alone (not from a listing).
    File(Option<Stat>),
    /// A FIFO, socket or device.
    Other,
}

/// The folder a walker thread looks into.
struct Open {
    /// The pass it was opened in (see [`new_pass`]).
    pass: u64,
    dir: PathBuf,
    fd: OwnedFd,
    /// Names looked at so far.
    looks: usize,
    listing: Option<Listing>,
}

/// Looks in one folder after which its listing is read.
const LIST_AFTER: usize = 16;

/// Folders each thread keeps open: walker threads take turns on the
/// entries of a few folders at once.
const KEEP: usize = 4;

thread_local! {
    /// Most recently used last.
    static OPEN: RefCell<Vec<Open>> = const { RefCell::new(Vec::new()) };
}

static PASS: AtomicU64 = AtomicU64::new(0);

/// A new pass starts: what threads keep open from earlier ones (a
/// listing, above all) may be out of date.
pub fn new_pass() {
    PASS.fetch_add(1, Ordering::AcqRel);
}

/// Runs `f` with the open real folder `dir`.
fn in_folder<T>(dir: &Path, f: impl FnOnce(&mut Open) -> io::Result<T>) -> io::Result<T> {
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        let pass = PASS.load(Ordering::Acquire);
        open.retain(|o| o.pass == pass);
        // Bytes, not `Path` equality (component by component): this runs
        // twice for every link.
        let bytes = dir.as_os_str().as_bytes();
        match open
            .iter()
            .position(|o| o.dir.as_os_str().as_bytes() == bytes)
        {
            Some(i) => {
                let o = open.remove(i);
                open.push(o);
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    )
                    .open(dir)?;
                if open.len() >= KEEP {
                    open.remove(0);
                }
                open.push(Open {
                    pass,
                    dir: dir.to_path_buf(),
                    fd: OwnedFd::from(file),
                    looks: 0,
                    listing: None,
                });
            }
        }
        match open.last_mut() {
            Some(o) => f(o),
            None => Err(io::Error::other("no folder open")),
        }
    })
}

/// Runs `f` with `name` NUL-terminated, on the stack (no allocation: this
/// runs for every link). Longer than a file name may be, or holding a NUL:
/// invalid.
fn with_c_name<T>(name: &OsStr, f: impl FnOnce(&CStr) -> io::Result<T>) -> io::Result<T> {
    let bytes = name.as_bytes();
    let mut buf = [0u8; 256];
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let room = buf.get_mut(..bytes.len()).ok_or_else(invalid)?;
    room.copy_from_slice(bytes);
    let with_nul = buf.get(..bytes.len() + 1).ok_or_else(invalid)?;
    f(CStr::from_bytes_with_nul(with_nul).map_err(|_| invalid())?)
}

/// The text of the link `name` in the real folder `dir`.
pub fn read_link(dir: &Path, name: &OsStr) -> io::Result<PathBuf> {
    with_c_name(name, |name| read_link_c(dir, name))
}

fn read_link_c(dir: &Path, name: &CStr) -> io::Result<PathBuf> {
    in_folder(dir, |open| {
        let fd = open.fd.as_fd();
        let mut buf = [0u8; libc::PATH_MAX as usize];
        // SAFETY: `fd` is an open descriptor, `name` a NUL-terminated
        // string and `buf` writable for its whole length; readlinkat writes
        // at most that many bytes and returns how many.
        let n = unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if n >= buf.len() {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        Ok(PathBuf::from(OsString::from_vec(buf[..n].to_vec())))
    })
}

/// What `name` in the real folder `dir` is, without following it.
pub fn look(dir: &Path, name: &OsStr) -> io::Result<Entry> {
    let listed = in_folder(dir, |open| {
        open.looks += 1;
        if open.listing.is_none() && open.looks > LIST_AFTER {
            open.listing = Some(Listing::read(dir)?);
        }
        Ok(open
            .listing
            .as_ref()
            .and_then(|names| names.get(name.as_bytes())))
    })?;
    match listed {
        Some(Some(Kind::Link)) => return Ok(Entry::Link),
        Some(Some(Kind::Folder)) => return Ok(Entry::Folder),
        Some(Some(Kind::File)) => return Ok(Entry::File(None)),
        Some(Some(Kind::Other)) => return Ok(Entry::Other),
        Some(None) => return Err(io::Error::from(io::ErrorKind::NotFound)),
        None => {}
    }
    with_c_name(name, |name| stat_at(dir, name))
}

fn stat_at(dir: &Path, name: &CStr) -> io::Result<Entry> {
    in_folder(dir, |open| {
        let fd = open.fd.as_fd();
        // SAFETY: all-zero bytes are a valid `stat` (plain integers).
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open, `name` NUL-terminated, `st` a writable
        // `stat` the call fills in.
        let rc = unsafe {
            libc::fstatat(
                fd.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // `time_t` and its nanoseconds are i64 here, narrower elsewhere.
        #[allow(clippy::useless_conversion)]
        let ns = |s, n| {
            i64::from(s)
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(n))
        };
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => Entry::Link,
            libc::S_IFDIR => Entry::Folder,
            libc::S_IFREG => Entry::File(Some(Stat {
                size: u64::try_from(st.st_size).unwrap_or(0),
                mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
                ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
                inode: st.st_ino,
                dev: st.st_dev,
            })),
            _ => Entry::Other,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_like_lstat_and_readlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("f"), b"abc").unwrap();
        std::os::unix::fs::symlink("f", dir.join("l")).unwrap();
        std::fs::create_dir(dir.join("d")).unwrap();
        let meta = std::fs::metadata(dir.join("f")).unwrap();
        match look(dir, OsStr::new("f")).unwrap() {
            Entry::File(stat) => assert_eq!(stat, Some(Stat::of(&meta))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(look(dir, OsStr::new("l")).unwrap(), Entry::Link));
        assert!(matches!(look(dir, OsStr::new("d")).unwrap(), Entry::Folder));
        assert_eq!(read_link(dir, OsStr::new("l")).unwrap(), PathBuf::from("f"));
        let gone = look(dir, OsStr::new("nothing")).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
        assert!(read_link(dir, OsStr::new("f")).is_err());
        // Past a few looks the listing answers, the same way.
        for _ in 0..LIST_AFTER {
            assert!(matches!(look(dir, OsStr::new("l")).unwrap(), Entry::Link));
        }
        assert!(matches!(
            look(dir, OsStr::new("f")).unwrap(),
            Entry::File(None)
        ));
        assert!(matches!(look(dir, OsStr::new("d")).unwrap(), Entry::Folder));
        let gone = look(dir, OsStr::new("nothing")).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }
}
