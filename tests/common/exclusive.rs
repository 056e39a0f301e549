//! Exclusive use of something every test process on this machine shares (this node's
//! swarm membership, the local cluster): a mutex within the process, then a file lock
//! across processes. Both are let go when the guard drops, whether the test passed.

use std::fs::{File, OpenOptions};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held while the test uses the shared thing.
pub struct Exclusive {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// Waits for `in_process`, then for the lock on `lock_file` (made if missing).
pub fn exclusive(lock_file: &str, in_process: &'static Mutex<()>) -> Exclusive {
    let guard = in_process.lock().unwrap_or_else(PoisonError::into_inner);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_file)
        .unwrap_or_else(|e| panic!("{lock_file}: {e}"));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {lock_file}: {e}"));
    Exclusive {
        _file: file,
        _guard: guard,
    }
}
