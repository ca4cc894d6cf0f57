//! Secrets rotated under a warm instance: [`Rotating`] holds the value in use and,
//! after a provider's 401 or Postgres' 28P01, fetches it again once and keeps it only
//! if it changed ([`SameSecret`]).

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use futures::future::BoxFuture;

use super::{ConfigError, SecretLoader};

/// Whether two values of a secret are the same, for [`Rotating`]. Secret types have
/// no `PartialEq`, so that comparing them stays a deliberate act (this comparison is
/// not constant-time: it only tells a refetched value from the one a server refused).
pub trait SameSecret {
    fn same_secret(&self, other: &Self) -> bool;
}

/// How a [`Rotating`] value is fetched again: one of [`SecretLoader`]'s methods, or a
/// consumer's `from_env` that calls them.
pub type Refetch<T> = for<'a> fn(&'a SecretLoader) -> BoxFuture<'a, Result<T, ConfigError>>;

/// A secret value in use that may be rotated under a warm instance: after a
/// provider's 401 or Postgres' 28P01 the caller hands back the value that was refused,
/// and [`Rotating::refetch_if_changed`] fetches it again once, keeping and answering
/// the new value only if it differs. So a refused call is repeated at most once, and
/// only when repeating can help. The value itself is never logged.
pub struct Rotating<T> {
    /// What the value is, for the log (`"the Vapi key"`).
    what: &'static str,
    current: RwLock<Arc<T>>,
    /// `None`: fixed (tests, values from the environment's `DATABASE_URL`).
    refetch: Option<(SecretLoader, Refetch<T>)>,
}

impl<T> Rotating<T> {
    /// Whether a refusal can be answered by fetching the value again.
    pub fn refetches(&self) -> bool {
        self.refetch.is_some()
    }
}

impl<T> fmt::Debug for Rotating<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotating")
            .field("what", &self.what)
            .field("refetches", &self.refetches())
            .finish_non_exhaustive()
    }
}

impl<T: SameSecret> Rotating<T> {
    /// A value that is never fetched again.
    pub fn fixed(what: &'static str, value: T) -> Self {
        Self {
            what,
            current: RwLock::new(Arc::new(value)),
            refetch: None,
        }
    }

    /// A value fetched again with `fetch` through `secrets` after a refusal; fixed
    /// when there is no loader.
    pub fn refetched(
        what: &'static str,
        value: T,
        secrets: Option<SecretLoader>,
        fetch: Refetch<T>,
    ) -> Self {
        Self {
            refetch: secrets.map(|s| (s, fetch)),
            ..Self::fixed(what, value)
        }
    }

    /// The value in use.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After `used` was refused: the value to try once more, if there is one that
    /// differs from it. If another caller has already replaced `used`, that value is
    /// answered without fetching; otherwise it is fetched once (`Ok(None)` when fixed
    /// or unchanged: the refusal stands). A failed fetch is logged and returned.
    pub async fn refetch_if_changed(&self, used: &T) -> Result<Option<Arc<T>>, ConfigError> {
        let Some((secrets, fetch)) = &self.refetch else {
            return Ok(None);
        };
        let current = self.current();
        if !current.same_secret(used) {
            return Ok(Some(current));
        }
        let fresh = fetch(secrets).await.inspect_err(|e| {
            tracing::error!(error = %e, "could not fetch {} again", self.what);
        })?;
        if fresh.same_secret(used) {
            return Ok(None);
        }
        tracing::warn!("{} was rotated; using the new one", self.what);
        let fresh = Arc::new(fresh);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
        Ok(Some(fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};

    use crate::config::{Env, VapiKey};

    #[tokio::test]
    async fn a_refused_value_is_fetched_again_once_and_only_a_new_one_is_answered() {
        let aws = aws_config::SdkConfig::builder().build();
        let key = |k: &str| VapiKey(SecretString::from(k.to_owned()));
        let loader = SecretLoader::new(&Env::from_pairs([("VAPI_PRIVATE_KEY", "new")]), &aws);
        let fetch: Refetch<VapiKey> = |s| Box::pin(s.vapi());

        let fixed = Rotating::fixed("the Vapi key", key("old"));
        assert!(
            fixed
                .refetch_if_changed(&key("old"))
                .await
                .unwrap()
                .is_none()
        );

        let rotating = Rotating::refetched("the Vapi key", key("old"), Some(loader), fetch);
        let fresh = rotating.refetch_if_changed(&key("old")).await.unwrap();
        assert_eq!(fresh.unwrap().0.expose_secret(), "new");
        assert_eq!(rotating.current().0.expose_secret(), "new");
        // A caller still holding the old value gets the new one.
        let again = rotating.refetch_if_changed(&key("old")).await.unwrap();
        assert_eq!(again.unwrap().0.expose_secret(), "new");
        // The new value refused too: fetching gives nothing newer.
        assert!(
            rotating
                .refetch_if_changed(&key("new"))
                .await
                .unwrap()
                .is_none()
        );
    }
}
