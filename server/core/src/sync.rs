//! Locks that outlive a panic. A thread that panicked while holding one of Missions' locks is
//! a bug, but what these locks guard are plain values that stay whole between statements
//! (lists, maps, counters, open files); refusing them afterwards would turn one bug into a
//! dead language server or a stuck mission. Every lock in the workspace is taken through here.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, even if a panicking thread held it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `lock`, even if a panicking thread held it.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `lock`, even if a panicking thread held it.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The value of a mutex no one else holds any more, even if a panicking thread held it.
pub fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}
