//! A shared value that readers load per connection or request without a lock, and that
//! can be replaced at runtime (a reload): [`Live`], built on `arc-swap`.
//!
//! A reader keeps what it loaded for as long as it holds it, so replacing the value
//! affects the next connection or request, never one already being decided.
//!
//! # Example
//!
//! ```
//! use realip_core::{Live, TrustedProxies};
//!
//! let trusted = Live::new("10.0.0.0/8".parse::<TrustedProxies>().unwrap());
//! let reader = trusted.clone(); // what a listener or layer keeps
//! assert!(!reader.load().contains("192.0.2.1".parse().unwrap()));
//!
//! // A reload: the next load sees the new set.
//! trusted.store("10.0.0.0/8, 192.0.2.0/24".parse().unwrap());
//! assert!(reader.load().contains("192.0.2.1".parse().unwrap()));
//! ```

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// A replaceable value shared by every clone of the handle: [`load`](Self::load) is
/// lock-free and wait-free for readers; [`store`](Self::store) replaces it for all of them.
pub struct Live<T> {
    value: Arc<ArcSwap<T>>,
}

impl<T> Live<T> {
    /// A handle holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            value: Arc::new(ArcSwap::from_pointee(value)),
        }
    }

    /// The current value, for the duration of one decision (lock-free; holding many
    /// guards at once on one thread falls back to a slower path, so do not keep it).
    pub fn load(&self) -> impl Deref<Target = T> + '_ {
        LoadGuard(self.value.load())
    }

    /// The current value, as an `Arc` that may be kept.
    pub fn load_full(&self) -> Arc<T> {
        self.value.load_full()
    }

    /// Replaces the value; loads from now on see `value`.
    pub fn store(&self, value: T) {
        self.value.store(Arc::new(value));
    }

    /// Replaces the value, returning the previous one.
    pub fn swap(&self, value: T) -> Arc<T> {
        self.value.swap(Arc::new(value))
    }
}

struct LoadGuard<T>(arc_swap::Guard<Arc<T>>);

impl<T> Deref for LoadGuard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Live").field(&*self.load()).finish()
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for Live<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrustedProxies;

    #[test]
    fn a_loaded_value_is_kept_across_a_store_and_the_next_load_is_new() {
        let live = Live::new(TrustedProxies::loopback());
        let before = live.load_full();
        let held = live.load();
        let old = live.swap(TrustedProxies::new());
        assert!(Arc::ptr_eq(&before, &old));
        // The reader that loaded before the swap still decides with the old set.
        assert!(held.contains("127.0.0.1".parse().unwrap()));
        assert!(live.load().is_empty());
    }

    #[test]
    fn every_clone_sees_a_store_from_any_thread() {
        let live = Live::new(TrustedProxies::new());
        let writer = live.clone();
        std::thread::spawn(move || writer.store(TrustedProxies::private()))
            .join()
            .unwrap();
        assert!(live.load().contains("10.1.2.3".parse().unwrap()));
    }
}
