//! The Unix-domain transport: a listening socket only in a private
//! directory (SPEC 7), mode 0600, a stale socket file cleared and a live or
//! foreign one refused; the socket file a listener created (`SocketFile`),
//! removed at shutdown only if it is still that file; dialing and wrapping
//! a connected socket as a link's stream.

use super::socket_link;
use crate::cmi::stream::{self, Stream};
use crate::log::{log, Level};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A connected Unix-domain socket as a link's stream, its send buffer sized.
pub(super) fn link(s: UnixStream, send_buffer: Option<u32>) -> io::Result<Box<dyn Stream>> {
    socket_link(s, send_buffer, true)
}

/// Connects to the listener at `path` (see `stream::connect_unix`).
pub(super) fn dial(path: &Path, send_buffer: Option<u32>, stop: &stream::Waker) -> io::Result<Box<dyn Stream>> {
    link(UnixStream::from(stream::connect_unix(path, stop)?), send_buffer)
}

/// The socket file a Unix-domain listener created, by (device, inode), so
/// that shutdown removes that file and never one that replaced it.
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub(crate) fn remove_if_ours(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log!(Level::Warn, "cannot remove the socket file {}: {e}", self.path.display());
                }
            }
            Ok(_) => log!(Level::Warn, "{} is no longer the socket this SP created: left in place", self.path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log!(Level::Warn, "cannot check the socket file {}: {e}", self.path.display()),
        }
    }
}

fn refused(kind: io::ErrorKind, why: String) -> io::Error {
    io::Error::new(kind, why)
}

/// The directory of a listening socket must be a real directory (not a
/// symbolic link), owned by this process's effective user and writable by
/// nobody else (SPEC 7): whoever can write there can replace the socket and
/// receive the peers' connections as this SP. Created 0700 when missing.
fn private_socket_dir(dir: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            std::fs::symlink_metadata(dir)?
        }
        r => r?,
    };
    let d = dir.display();
    if md.file_type().is_symlink() {
        return Err(refused(
            io::ErrorKind::PermissionDenied,
            format!("the socket directory {d} is a symbolic link: name the real directory (a link can be redirected to one another user controls)"),
        ));
    }
    if !md.is_dir() {
        return Err(refused(io::ErrorKind::AlreadyExists, format!("the socket directory {d} is not a directory")));
    }
    let euid = stream::effective_uid();
    if md.uid() != euid {
        return Err(refused(
            io::ErrorKind::PermissionDenied,
            format!("the socket directory {d} is owned by uid {}, not by this process's effective uid {euid}: it must be this user's own", md.uid()),
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(refused(
            io::ErrorKind::PermissionDenied,
            format!("the socket directory {d} is writable by group or others (mode {:04o}): it must be closed to them (chmod 0700)", md.mode() & 0o7777),
        ));
    }
    Ok(())
}

/// Clears the way for a new socket at `path`: a socket file nobody listens on
/// (left by an SP that died) is removed; a live one, or anything that is not
/// a socket (a regular file, a directory, a symbolic link), is refused and
/// left alone.
fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    let p = path.display();
    let ft = md.file_type();
    if !ft.is_socket() {
        let what = if ft.is_symlink() {
            "a symbolic link"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_file() {
            "a regular file"
        } else {
            "a special file"
        };
        return Err(refused(
            io::ErrorKind::AlreadyExists,
            format!("{p} exists and is not a socket ({what}): not removed; move it away or listen elsewhere"),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(refused(io::ErrorKind::AddrInUse, format!("another SP is listening on {p}"))),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)?;
            log!(Level::Info, "removed the stale socket {p} (nobody listened on it)");
            Ok(())
        }
        Err(e) => Err(refused(io::ErrorKind::AddrInUse, format!("{p} is a socket that may be in use ({e}): not removed"))),
    }
}

/// Binds a Unix-domain listener at `path` in a private directory, mode 0600
/// (the directory is closed to others, so the chmod after bind races nobody;
/// the process umask, which is process-wide, is left alone).
pub(super) fn bind(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    let dir = path
        .parent()
        .ok_or_else(|| refused(io::ErrorKind::InvalidInput, format!("{} is not a socket path", path.display())))?;
    private_socket_dir(dir)?;
    clear_stale_socket(path)?;
    let l = UnixListener::bind(path)?;
    let recorded = std::fs::symlink_metadata(path).and_then(|m| {
        if !m.file_type().is_socket() {
            return Err(refused(io::ErrorKind::Other, format!("{} is not the socket just bound", path.display())));
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(SocketFile { path: path.to_path_buf(), dev: m.dev(), ino: m.ino() })
    });
    match recorded {
        Ok(f) => Ok((l, f)),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}
