//! The registry seam: which component runs a stage is looked up per job or per call,
//! through a [`Stage`] handle whose component can be replaced while the service runs.
//! Calls in flight keep the component they started with; the next call gets the new one.
//!
//! Today each stage holds the built-in component or the one named by `--converter`,
//! `--auth-plugin` or `--notifier`; the registry (hot swap, per tenant) fills it.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// A stage's component as installed: what it is (content address) and the seam it
/// implements (`dyn Converter`, `dyn Composer`, `dyn Authenticator`).
pub struct Installed<T: ?Sized> {
    /// sha256 of the component's bytes, hex (empty for stages that are not components,
    /// e.g. a test double).
    pub digest: String,
    pub stage: Arc<T>,
}

/// A replaceable handle on one stage; cheap to clone, shared by every caller.
pub struct Stage<T: ?Sized>(Arc<ArcSwap<Installed<T>>>);

impl<T: ?Sized> Clone for Stage<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: ?Sized> Stage<T> {
    pub fn new(digest: impl Into<String>, stage: Arc<T>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(Installed {
            digest: digest.into(),
            stage,
        })))
    }

    /// The component that runs this stage for `tenant` now. (Every tenant gets the
    /// same one until per-tenant installs exist.)
    pub fn for_tenant(&self, _tenant: &str) -> Arc<Installed<T>> {
        self.0.load_full()
    }

    /// The component installed for everyone.
    pub fn current(&self) -> Arc<Installed<T>> {
        self.0.load_full()
    }

    /// Installs another component; returns the one it replaces. Calls that already
    /// hold the old one finish with it.
    pub fn replace(&self, digest: impl Into<String>, stage: Arc<T>) -> Arc<Installed<T>> {
        self.0.swap(Arc::new(Installed {
            digest: digest.into(),
            stage,
        }))
    }
}

impl<T: ?Sized> From<Arc<T>> for Stage<T> {
    fn from(stage: Arc<T>) -> Self {
        Self::new(String::new(), stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Speak: Send + Sync {
        fn word(&self) -> &'static str;
    }
    struct A;
    struct B;
    impl Speak for A {
        fn word(&self) -> &'static str {
            "a"
        }
    }
    impl Speak for B {
        fn word(&self) -> &'static str {
            "b"
        }
    }

    #[test]
    fn replacing_affects_later_calls_only() {
        let stage: Stage<dyn Speak> = Stage::new("sha-a", Arc::new(A));
        let held = stage.for_tenant("t1");
        let old = stage.replace("sha-b", Arc::new(B));
        assert_eq!(old.digest, "sha-a");
        assert_eq!(
            held.stage.word(),
            "a",
            "a call in flight keeps its component"
        );
        let now = stage.clone().for_tenant("t1");
        assert_eq!((now.digest.as_str(), now.stage.word()), ("sha-b", "b"));
    }
}
