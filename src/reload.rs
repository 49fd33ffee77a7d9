//! Values loaded from files and re-loaded when the files change: certificates, keys, CAs and
//! tokens mounted from Kubernetes Secrets, which the kubelet replaces in place on rotation.
//!
//! A reader checks the files at most once per [`CHECK_EVERY`], on access, so nothing runs
//! in the background and an idle node does no work. A file that changed but does not load (a
//! rotation caught half-way, a key that does not fit its certificate) keeps the last good
//! value and is retried at the next check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often a reader looks at the files' metadata.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies one version of a file: a Secret volume swaps a symlink, so the inode
/// changes even when the size and the modification time do not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

type Loader<T> = Box<dyn Fn(&[PathBuf]) -> Result<T, String> + Send + Sync>;

/// A value built from `paths` by `load`, rebuilt when any of them changes.
pub struct Reloading<T> {
    what: String,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    value: RwLock<Arc<T>>,
    check: Mutex<(Instant, Vec<Option<Stamp>>)>,
    every: Duration,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<T> Reloading<T> {
    /// Loads the value once (an error here is the caller's: the process should not start
    /// without it) and keeps `load` for later changes. `what` names it in errors and logs.
    pub fn new(
        what: impl Into<String>,
        paths: Vec<PathBuf>,
        load: impl Fn(&[PathBuf]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let what = what.into();
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        let value = load(&paths).map_err(|e| format!("{what}: {e}"))?;
        Ok(Reloading {
            what,
            paths,
            load: Box::new(load),
            value: RwLock::new(Arc::new(value)),
            check: Mutex::new((Instant::now(), stamps)),
            every: CHECK_EVERY,
        })
    }

    /// Checks the files on every access (tests).
    pub fn check_always(mut self) -> Self {
        self.every = Duration::ZERO;
        self
    }

    /// The current value, re-loaded first if a file changed since the last check.
    pub fn get(&self) -> Arc<T> {
        self.refresh();
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn refresh(&self) {
        let Ok(mut check) = self.check.try_lock() else {
            // Another reader is checking right now; the value it may install is no older.
            return;
        };
        if check.0.elapsed() < self.every {
            return;
        }
        check.0 = Instant::now();
        let stamps: Vec<_> = self.paths.iter().map(|p| stamp(p)).collect();
        if stamps == check.1 {
            return;
        }
        match (self.load)(&self.paths) {
            Ok(v) => {
                *self.value.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(v);
                check.1 = stamps;
                tracing::info!(what = %self.what, "re-loaded after its files changed");
            }
            // The stamps stay old, so the next check tries again.
            Err(e) => {
                tracing::warn!(what = %self.what, error = %e, "changed files do not load; keeping the previous version")
            }
        }
    }
}

/// Reads a whole file as UTF-8, naming it in the error.
pub fn read_to_string(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(paths: &[PathBuf]) -> Result<u32, String> {
        read_to_string(&paths[0])?
            .trim()
            .parse()
            .map_err(|e| format!("not a number: {e}"))
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n");
        std::fs::write(&f, "1").unwrap();
        let r = Reloading::new("n", vec![f.clone()], number)
            .unwrap()
            .check_always();
        assert_eq!(*r.get(), 1);
        // Replaced the way a Secret volume does it: a new file renamed over the old one.
        let tmp = dir.path().join("n.tmp");
        std::fs::write(&tmp, "22").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_eq!(*r.get(), 22);
        std::fs::write(&tmp, "not a number").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_eq!(*r.get(), 22);
        std::fs::write(&tmp, "333").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_eq!(*r.get(), 333);
    }

    #[test]
    fn a_file_that_does_not_load_at_start_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("missing");
        let e = Reloading::new("the count", vec![f], number).unwrap_err();
        assert!(e.starts_with("the count: cannot read"), "{e}");
    }
}
