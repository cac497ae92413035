//! Keeping the data directory private: it holds the join-link signing secret (in
//! `quad.sqlite3`), so the directory is made `0700` and the database files `0600`, whatever
//! the umask, and an existing directory or file that is looser is tightened at start-up.
//! What cannot be tightened (another owner's file, a shared directory such as `/tmp`) is
//! left as it is, with a warning in the log.

use anyhow::Context;
use std::path::Path;

/// The directory's mode.
pub const DIR_MODE: u32 = 0o700;
/// The database files' mode.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and any missing parents) as `0700`, or tightens an existing one that
/// others may read. Fails only if the directory cannot be created.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .with_context(|| format!("data directory {}", dir.display()))?;
        let meta =
            std::fs::metadata(dir).with_context(|| format!("data directory {}", dir.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            if mode & 0o1000 != 0 {
                // The sticky bit: a directory shared by everyone, not ours to close.
                tracing::warn!(
                    "data directory {} is shared (mode {:o}): others may read the campus's \
                     secrets; choose a data_dir of its own",
                    dir.display(),
                    mode & 0o7777
                );
            } else if let Err(e) =
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            {
                tracing::warn!(
                    "data directory {} is readable by others (mode {:o}) and could not be \
                     made private: {e}",
                    dir.display(),
                    mode & 0o777
                );
            }
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).with_context(|| format!("data directory {}", dir.display()))?;
    Ok(())
}

/// Creates `path` as an empty `0600` file if it does not exist (an empty file is a valid
/// new SQLite database, and SQLite gives its `-wal` and `-shm` files the database's mode).
pub fn create_private_file(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)
        {
            Ok(file) => {
                // The umask may have taken bits away; set exactly what is meant.
                file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
                    .with_context(|| format!("database {}", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("database {}", path.display()));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Tightens `path` to `0600` if it exists and others may read or write it.
pub fn tighten_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0
            && let Err(e) =
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
        {
            tracing::warn!(
                "{} is readable by others (mode {:o}) and could not be made private: {e}",
                path.display(),
                mode & 0o777
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("the file was just made")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_new_dir_and_file_are_private_and_loose_ones_are_tightened() {
        let root = std::env::temp_dir().join(format!("quad-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        let file = dir.join("f");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_dir(&dir).unwrap();
        create_private_file(&file).unwrap();
        tighten_file(&file);
        assert_eq!((mode(&dir), mode(&file)), (DIR_MODE, FILE_MODE));
        tighten_file(&dir.join("missing"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
