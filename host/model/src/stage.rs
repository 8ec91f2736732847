//! The registry seam: which component runs a stage is looked up per job or per call,
//! through a [`Stage`] handle whose component can be replaced while the service runs.
//! Calls in flight keep the component they started with; the next call gets the new one.
//!
//! Each stage starts with the built-in component or the one named by `--converter`,
//! `--auth-plugin` or `--notifier`; the plugin registry replaces it for everyone
//! ([`Stage::replace`]) or for one tenant ([`Stage::set_tenant`]).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::canary::CanarySettings;

/// A stage's component as installed: what it is (content address) and the seam it
/// implements (`dyn Converter`, `dyn Composer`, `dyn Authenticator`).
pub struct Installed<T: ?Sized> {
    /// sha256 of the component's bytes, hex (empty for stages that are not components,
    /// e.g. a test double).
    pub digest: String,
    pub stage: Arc<T>,
}

/// Per-tenant installs, replaced as a whole.
type Overrides<T> = HashMap<String, Arc<Installed<T>>>;

/// A canary installed beside a scope's component (see `crate::canary`).
pub struct CanaryInstall<T: ?Sized> {
    pub settings: CanarySettings,
    pub installed: Arc<Installed<T>>,
}

/// Canaries by scope (`None`: everyone's).
type Canaries<T> = HashMap<Option<String>, Arc<CanaryInstall<T>>>;

/// A replaceable handle on one stage; cheap to clone, shared by every caller.
pub struct Stage<T: ?Sized> {
    everyone: Arc<ArcSwap<Installed<T>>>,
    tenants: Arc<ArcSwap<Overrides<T>>>,
    canaries: Arc<ArcSwap<Canaries<T>>>,
}

impl<T: ?Sized> Clone for Stage<T> {
    fn clone(&self) -> Self {
        Self {
            everyone: self.everyone.clone(),
            tenants: self.tenants.clone(),
            canaries: self.canaries.clone(),
        }
    }
}

impl<T: ?Sized> Stage<T> {
    pub fn new(digest: impl Into<String>, stage: Arc<T>) -> Self {
        Self {
            everyone: Arc::new(ArcSwap::from_pointee(Installed {
                digest: digest.into(),
                stage,
            })),
            tenants: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            canaries: Arc::new(ArcSwap::from_pointee(HashMap::new())),
        }
    }

    /// What runs a job of `tenant`: the component of its scope, and the canary running
    /// beside it if any (whether this job takes it is `settings.takes`). A tenant with
    /// its own component sees only a canary of its own.
    pub fn for_job(&self, tenant: &str) -> (Arc<Installed<T>>, Option<Arc<CanaryInstall<T>>>) {
        let canaries = self.canaries.load();
        let own = canaries.get(&Some(tenant.to_owned())).cloned();
        match self.tenants.load().get(tenant) {
            Some(installed) => (installed.clone(), own),
            None => (
                self.everyone.load_full(),
                own.or_else(|| canaries.get(&None).cloned()),
            ),
        }
    }

    /// Installs (or with `None` removes) the canary of a scope.
    pub fn set_canary(&self, tenant: Option<&str>, canary: Option<(CanarySettings, Arc<T>)>) {
        let scope = tenant.map(str::to_owned);
        self.canaries.rcu(|old| {
            let mut next: Canaries<T> = (**old).clone();
            match &canary {
                Some((settings, stage)) => {
                    next.insert(
                        scope.clone(),
                        Arc::new(CanaryInstall {
                            settings: settings.clone(),
                            installed: Arc::new(Installed {
                                digest: settings.digest.clone(),
                                stage: stage.clone(),
                            }),
                        }),
                    );
                }
                None => {
                    next.remove(&scope);
                }
            }
            next
        });
    }

    /// The canaries installed: scope and settings.
    pub fn canaries(&self) -> Vec<(Option<String>, CanarySettings)> {
        self.canaries
            .load()
            .iter()
            .map(|(scope, c)| (scope.clone(), c.settings.clone()))
            .collect()
    }

    /// The component that runs this stage for `tenant` now: its own install if it has
    /// one, else everyone's.
    pub fn for_tenant(&self, tenant: &str) -> Arc<Installed<T>> {
        match self.tenants.load().get(tenant) {
            Some(own) => own.clone(),
            None => self.everyone.load_full(),
        }
    }

    /// The component installed for everyone.
    pub fn current(&self) -> Arc<Installed<T>> {
        self.everyone.load_full()
    }

    /// Installs a component for one tenant (`None`: back to everyone's).
    pub fn set_tenant(&self, tenant: &str, installed: Option<(String, Arc<T>)>) {
        self.tenants.rcu(|old| {
            let mut next: Overrides<T> = (**old).clone();
            match &installed {
                Some((digest, stage)) => {
                    next.insert(
                        tenant.to_owned(),
                        Arc::new(Installed {
                            digest: digest.clone(),
                            stage: stage.clone(),
                        }),
                    );
                }
                None => {
                    next.remove(tenant);
                }
            }
            next
        });
    }

    /// Tenants with their own install, and its digest.
    pub fn tenant_digests(&self) -> Vec<(String, String)> {
        self.tenants
            .load()
            .iter()
            .map(|(t, i)| (t.clone(), i.digest.clone()))
            .collect()
    }

    /// Installs another component; returns the one it replaces. Calls that already
    /// hold the old one finish with it.
    pub fn replace(&self, digest: impl Into<String>, stage: Arc<T>) -> Arc<Installed<T>> {
        self.everyone.swap(Arc::new(Installed {
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

    #[test]
    fn a_tenant_install_affects_that_tenant_only() {
        let stage: Stage<dyn Speak> = Stage::new("sha-a", Arc::new(A));
        stage.set_tenant("t2", Some(("sha-b".into(), Arc::new(B))));
        assert_eq!(stage.for_tenant("t1").stage.word(), "a");
        assert_eq!(stage.for_tenant("t2").stage.word(), "b");
        assert_eq!(
            stage.tenant_digests(),
            [("t2".to_string(), "sha-b".to_string())]
        );
        stage.set_tenant("t2", None);
        assert_eq!(stage.for_tenant("t2").stage.word(), "a");
    }

    #[test]
    fn canaries_apply_to_their_scope() {
        let stage: Stage<dyn Speak> = Stage::new("sha-a", Arc::new(A));
        let everyone = CanarySettings::new("converter", None, "sha-b", 50.0);
        stage.set_canary(None, Some((everyone, Arc::new(B))));
        let (stable, canary) = stage.for_job("t1");
        assert_eq!(stable.digest, "sha-a");
        assert_eq!(canary.unwrap().installed.stage.word(), "b");
        // A tenant on its own component is not in everyone's canary.
        stage.set_tenant("t2", Some(("sha-c".into(), Arc::new(A))));
        assert!(stage.for_job("t2").1.is_none());
        let own = CanarySettings::new("converter", Some("t2"), "sha-d", 10.0);
        stage.set_canary(Some("t2"), Some((own, Arc::new(B))));
        assert_eq!(stage.for_job("t2").1.unwrap().settings.digest, "sha-d");
        assert_eq!(stage.for_job("t1").1.unwrap().settings.digest, "sha-b");
        stage.set_canary(None, None);
        assert!(stage.for_job("t1").1.is_none());
        assert_eq!(stage.canaries().len(), 1);
    }
}
