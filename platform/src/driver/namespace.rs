//! The driver's namespace operations: opening files, links, renames, removals, directories and
//! their listings and syncs (the operations on an open file's data are in `driver.rs`).

use std::ffi::CString;
use std::io;
use std::path::Path;

use super::{DirEntry, Engine, IoDriver};
use crate::file::{File, FileState, OpenOptions};
use crate::sys;

impl IoDriver {
    /// Opens a file.
    ///
    /// # Errors
    ///
    /// The system's error (`NotFound`, `AlreadyExists`, `PermissionDenied`, `IsADirectory`, …);
    /// `InvalidInput` for a path with a NUL byte or options that open nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped after the kernel opened the file, the driver closes
    /// the descriptor when the open completes.
    pub async fn open(&self, path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<File> {
        let path = path.as_ref();
        let (flags, mode) = options.flags()?;
        let c_path = sys::c_path(path)?;
        let ticket = self.ticket(1).await?;
        #[cfg(feature = "sim")]
        if let Engine::Sim(sim) = &self.shared.engine {
            let file = sim.open(path, options.sim()?).await;
            drop(ticket);
            return Ok(File::new(self.clone(), FileState::new_sim(file?), path));
        }
        let file = match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => crate::uring::ops::open(ring, ticket, c_path, flags, mode).await,
            _ => {
                self.shared
                    .pool
                    .run(ticket, move || sys::open(&c_path, flags, mode))
                    .await
            }
        }?;
        Ok(File::new(self.clone(), FileState::new(file), path))
    }

    /// Makes `to` a new name (a hard link) of the file `from`, in the same file system. The new
    /// name is durable once its directory is synced ([`sync_dir`](Self::sync_dir)). Runs on the
    /// thread pool under either backend (as [`read_dir`](Self::read_dir) does).
    ///
    /// # Errors
    ///
    /// The system's error, e.g. `AlreadyExists` if `to` exists, `NotFound`, or `CrossesDevices`
    /// (`EXDEV`) across file systems.
    ///
    /// # Cancel safety
    ///
    /// A dropped call may or may not have made the link.
    pub async fn hard_link(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let (from, to) = (from.as_ref().to_path_buf(), to.as_ref().to_path_buf());
        let ticket = self.ticket(1).await?;
        #[cfg(feature = "sim")]
        if let Engine::Sim(sim) = &self.shared.engine {
            return sim.link(&from, &to).await;
        }
        self.shared
            .pool
            .run(ticket, move || std::fs::hard_link(&from, &to))
            .await
    }

    /// Renames `from` to `to`, replacing `to` if it exists. Follow with
    /// [`sync_dir`](Self::sync_dir) of the parent(s) to make the new name survive a crash.
    ///
    /// # Errors
    ///
    /// The system's error, e.g. `NotFound`.
    ///
    /// # Cancel safety
    ///
    /// Once submitted, the rename happens whether or not the future is still there; check the
    /// file system to learn its outcome.
    pub async fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let (from, to) = (sys::c_path(from.as_ref())?, sys::c_path(to.as_ref())?);
        let ticket = self.ticket(1).await?;
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => crate::uring::ops::rename(ring, ticket, from, to).await,
            #[cfg(feature = "sim")]
            Engine::Sim(sim) => sim.rename(as_path(&from), as_path(&to)).await,
            Engine::Pool => {
                self.shared
                    .pool
                    .run(ticket, move || {
                        std::fs::rename(as_path(&from), as_path(&to))
                    })
                    .await
            }
        }
    }

    /// Removes a file.
    ///
    /// # Errors
    ///
    /// The system's error, e.g. `NotFound`, or `IsADirectory` for a directory.
    ///
    /// # Cancel safety
    ///
    /// Once submitted, the removal happens whether or not the future is still there.
    pub async fn remove_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.unlink(path.as_ref(), false).await
    }

    /// Removes an empty directory.
    ///
    /// # Errors
    ///
    /// The system's error, e.g. `NotFound` or `DirectoryNotEmpty`.
    ///
    /// # Cancel safety
    ///
    /// Once submitted, the removal happens whether or not the future is still there.
    pub async fn remove_dir(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.unlink(path.as_ref(), true).await
    }

    async fn unlink(&self, path: &Path, dir: bool) -> io::Result<()> {
        let c_path = sys::c_path(path)?;
        let ticket = self.ticket(1).await?;
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => crate::uring::ops::unlink(ring, ticket, c_path, dir).await,
            #[cfg(feature = "sim")]
            Engine::Sim(sim) => sim.unlink(path, dir).await,
            Engine::Pool => {
                self.shared
                    .pool
                    .run(ticket, move || {
                        let path = as_path(&c_path);
                        if dir {
                            std::fs::remove_dir(path)
                        } else {
                            std::fs::remove_file(path)
                        }
                    })
                    .await
            }
        }
    }

    /// Creates one directory (mode 0o777 before the umask).
    ///
    /// # Errors
    ///
    /// The system's error, e.g. `AlreadyExists` or `NotFound` for a missing parent.
    ///
    /// # Cancel safety
    ///
    /// Once submitted, the directory is created whether or not the future is still there.
    pub async fn create_dir(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let c_path = sys::c_path(path.as_ref())?;
        let ticket = self.ticket(1).await?;
        match &self.shared.engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(ring) => crate::uring::ops::mkdir(ring, ticket, c_path, 0o777).await,
            #[cfg(feature = "sim")]
            Engine::Sim(sim) => sim.mkdir(as_path(&c_path)).await,
            Engine::Pool => {
                self.shared
                    .pool
                    .run(ticket, move || std::fs::create_dir(as_path(&c_path)))
                    .await
            }
        }
    }

    /// Creates a directory and every missing parent. An existing directory is not an error.
    ///
    /// What it creates is durable when it returns: the parent of each directory it created is
    /// synced, so a crash cannot take the new path away again.
    ///
    /// # Errors
    ///
    /// The system's error; `AlreadyExists` if `path` (or a parent) exists and is not a directory.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave some parents created, perhaps not durably; calling again
    /// creates the rest but does not sync what already exists.
    pub async fn create_dir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        // Walk up to the first ancestor that exists, then create downwards.
        let mut missing = Vec::new();
        let mut created = Vec::new();
        let mut cursor = Some(path);
        while let Some(dir) = cursor {
            if dir.as_os_str().is_empty() {
                break;
            }
            match self.create_dir(dir).await {
                Ok(()) => {
                    created.push(dir);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if self.is_dir(dir).await? {
                        break;
                    }
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.push(dir);
                    cursor = dir.parent();
                }
                Err(e) => return Err(e),
            }
        }
        for dir in missing.into_iter().rev() {
            match self.create_dir(dir).await {
                Ok(()) => created.push(dir),
                // Another task may have created it in between.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.is_dir(dir).await? => {}
                Err(e) => return Err(e),
            }
        }
        for dir in created {
            let parent = match dir.parent() {
                Some(p) if p.as_os_str().is_empty() => Path::new("."),
                Some(p) => p,
                None => continue,
            };
            self.sync_dir(parent).await?;
        }
        Ok(())
    }

    async fn is_dir(&self, path: &Path) -> io::Result<bool> {
        // O_PATH needs no read permission on the directory, as `std::fs::create_dir_all` does not.
        let opts = OpenOptions::new().path_only(true).directory(true);
        match self.open(path, &opts).await {
            Ok(dir) => {
                dir.close().await?;
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes the directory's entries durable: `fsync` of the directory itself. Call it after
    /// creating, renaming or removing a file so that the change survives a crash.
    ///
    /// # Errors
    ///
    /// The system's error, e.g. `NotFound` or `NotADirectory`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped, nothing is promised about durability; call again.
    pub async fn sync_dir(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let dir = self
            .open(path, &OpenOptions::new().read(true).directory(true))
            .await?;
        let synced = dir.sync_all().await;
        let closed = dir.close().await;
        synced.and(closed)
    }

    /// Lists a directory, sorted by path. Runs on the pool under both backends: io_uring has no
    /// operation for it.
    ///
    /// # Errors
    ///
    /// The system's error, e.g. `NotFound` or `NotADirectory`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn read_dir(&self, path: impl AsRef<Path>) -> io::Result<Vec<DirEntry>> {
        let path = path.as_ref().to_path_buf();
        let ticket = self.ticket(1).await?;
        #[cfg(feature = "sim")]
        if let Engine::Sim(sim) = &self.shared.engine {
            return sim.read_dir(&path).await;
        }
        self.shared
            .pool
            .run(ticket, move || sys::read_dir(&path))
            .await
    }
}

fn as_path(c: &CString) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(c.as_bytes()))
}
