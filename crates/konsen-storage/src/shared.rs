//! In-memory state the store writes and its readers read, behind one lock.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `T` shared by the store (which writes it while applying) and its
/// readers. A panic while holding the lock breaks the invariant the state
/// describes, so a poisoned lock panics too, naming `T`.
#[derive(Debug, Default)]
pub(crate) struct Shared<T>(Arc<RwLock<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Shared<T> {
    pub(crate) fn new(state: T) -> Self {
        Shared(Arc::new(RwLock::new(state)))
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|_| poisoned::<T>())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|_| poisoned::<T>())
    }
}

fn poisoned<T>() -> ! {
    panic!(
        "{} invariant: no holder of its lock panicked",
        std::any::type_name::<T>()
    )
}
