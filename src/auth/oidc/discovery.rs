//! A provider: its discovery document and key set, fetched with the [`Fetcher`] and cached
//! (see the parent module for the refresh rules).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreIdTokenVerifier, CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::JsonWebKey;
use tokio::sync::Mutex;

use crate::auth::fetch::{FetchError, Fetcher};

use super::verification::{self, claims_verifier, Claims, Header, Token};
use super::TokenError;

/// One discovery document, its key set, the verifier built from both, and when they were
/// fetched.
pub(super) struct Snapshot {
    metadata: CoreProviderMetadata,
    keys: CoreJsonWebKeySet,
    /// `openidconnect`'s verifier for the document's issuer and this key set, built once per
    /// fetch rather than per token.
    verifier: CoreIdTokenVerifier<'static>,
    fetched_at: Instant,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("issuer", &self.issuer())
            .field("keys", &self.keys.keys().len())
            .field("fetched_at", &self.fetched_at)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    fn new(
        metadata: CoreProviderMetadata,
        keys: CoreJsonWebKeySet,
        fetched_at: Instant,
        issuer_checked_by_caller: bool,
    ) -> Self {
        let verifier = claims_verifier(metadata.issuer().clone(), keys.clone(), chrono::Utc::now)
            .require_issuer_match(!issuer_checked_by_caller);
        Snapshot {
            metadata,
            keys,
            verifier,
            fetched_at,
        }
    }

    pub(super) fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    /// The token's claims, verified against this issuer and key set.
    fn verify<'t>(&self, token: &'t Token) -> Result<&'t Claims, TokenError> {
        verification::verify(&self.verifier, token)
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .keys()
            .iter()
            .any(|key| key.key_id().is_some_and(|id| id.as_str() == kid))
    }
}

/// Bookkeeping of fetches; only touched with the fetch mutex held.
#[derive(Default)]
struct FetchBook {
    /// The last failed fetch of the document and keys, and why.
    last_failure: Option<(Instant, Arc<FetchError>)>,
    /// The last key-set refetch caused by an unknown `kid`.
    last_unknown_kid_refetch: Option<Instant>,
}

/// An OpenID provider known by its discovery URL: the cached discovery document and key set.
pub struct OidcProvider {
    discovery_url: String,
    fetcher: Arc<Fetcher>,
    ttl: Duration,
    min_refetch_interval: Duration,
    /// The caller compares `iss` with a list of its own (Entra External ID), not with the
    /// document's `issuer`.
    issuer_checked_by_caller: bool,
    current: RwLock<Option<Arc<Snapshot>>>,
    fetching: Mutex<FetchBook>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("discovery_url", &self.discovery_url)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// A provider for `discovery_url`; nothing is fetched yet. Fails when the URL may not be
    /// fetched (not https, and not loopback http). The cache times come from the fetcher's
    /// `[oidc]` settings.
    pub fn new(discovery_url: &str, fetcher: Arc<Fetcher>) -> Result<OidcProvider, FetchError> {
        Fetcher::check_url(discovery_url)?;
        Ok(OidcProvider {
            discovery_url: discovery_url.to_string(),
            ttl: fetcher.cache_ttl(),
            min_refetch_interval: fetcher.min_refetch_interval(),
            fetcher,
            issuer_checked_by_caller: false,
            current: RwLock::new(None),
            fetching: Mutex::new(FetchBook::default()),
        })
    }

    /// The same provider, whose tokens' `iss` the caller checks against a list of its own
    /// instead of the document's `issuer` (Entra External ID: several issuer forms, v1 tokens).
    pub(super) fn with_issuer_checked_by_caller(mut self) -> OidcProvider {
        self.issuer_checked_by_caller = true;
        self
    }

    /// The discovery URL.
    pub fn discovery_url(&self) -> &str {
        &self.discovery_url
    }

    /// The issuer named by the discovery document (fetching it when needed).
    pub async fn issuer(&self) -> Result<String, TokenError> {
        Ok(self.snapshot().await?.issuer().to_string())
    }

    /// Fetches the document and keys now unless a fresh copy is cached (for start-up or
    /// readiness checks).
    pub async fn prefetch(&self) -> Result<(), TokenError> {
        self.snapshot().await.map(|_| ())
    }

    pub(super) fn cached(&self) -> Option<Arc<Snapshot>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, snapshot: Arc<Snapshot>) {
        match self.current.write() {
            Ok(mut guard) => *guard = Some(snapshot),
            Err(poisoned) => *poisoned.into_inner() = Some(snapshot),
        }
    }

    pub(super) fn is_fresh(&self, snapshot: &Snapshot) -> bool {
        snapshot.fetched_at.elapsed() < self.ttl
    }

    /// A stale snapshot may stand in for a failed refresh up to twice the TTL.
    fn usable_stale(&self) -> Option<Arc<Snapshot>> {
        self.cached()
            .filter(|s| s.fetched_at.elapsed() < self.ttl.saturating_mul(2))
    }

    /// The current snapshot: cached when fresh, refreshed otherwise.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, TokenError> {
        let cached = self.cached();
        if let Some(snapshot) = &cached {
            if self.is_fresh(snapshot) {
                return Ok(snapshot.clone());
            }
        }
        let mut book = match self.fetching.try_lock() {
            Ok(book) => book,
            Err(_) => {
                // Someone is fetching: use the stale copy if there is one, else wait for them.
                if let Some(stale) = self.usable_stale() {
                    return Ok(stale);
                }
                self.fetching.lock().await
            }
        };
        if let Some(snapshot) = self.cached() {
            if self.is_fresh(&snapshot) {
                return Ok(snapshot);
            }
        }
        if let Some((at, error)) = &book.last_failure {
            if at.elapsed() < self.min_refetch_interval {
                return match self.usable_stale() {
                    Some(stale) => Ok(stale),
                    None => Err(TokenError::ProviderUnavailable(error.clone())),
                };
            }
        }
        match self.fetch_snapshot().await {
            Ok(snapshot) => {
                book.last_failure = None;
                let snapshot = Arc::new(snapshot);
                self.store(snapshot.clone());
                Ok(snapshot)
            }
            Err(error) => {
                log::warn!(
                    "OpenID provider {}: refresh failed: {error}",
                    self.discovery_url
                );
                let error = Arc::new(error);
                book.last_failure = Some((Instant::now(), error.clone()));
                match self.usable_stale() {
                    Some(stale) => Ok(stale),
                    None => Err(TokenError::ProviderUnavailable(error)),
                }
            }
        }
    }

    async fn fetch_snapshot(&self) -> Result<Snapshot, FetchError> {
        let metadata: CoreProviderMetadata = self.fetcher.get_json(&self.discovery_url).await?;
        let keys: CoreJsonWebKeySet = self.fetcher.get_json(metadata.jwks_uri().as_str()).await?;
        log::info!(
            "OpenID provider {}: issuer {}, {} keys",
            self.discovery_url,
            metadata.issuer().as_str(),
            keys.keys().len()
        );
        Ok(Snapshot::new(
            metadata,
            keys,
            Instant::now(),
            self.issuer_checked_by_caller,
        ))
    }

    /// Refetches the key set because a token named `kid`, which the cached set does not hold.
    /// Returns the snapshot to retry with, or `None` when no refetch is allowed yet.
    async fn refetch_for_unknown_kid(
        &self,
        kid: &str,
    ) -> Result<Option<Arc<Snapshot>>, TokenError> {
        let mut book = self.fetching.lock().await;
        // Another request may have fetched a set with this key while we waited.
        let Some(current) = self.cached() else {
            return Ok(None);
        };
        if current.has_kid(kid) {
            return Ok(Some(current));
        }
        if let Some(at) = book.last_unknown_kid_refetch {
            if at.elapsed() < self.min_refetch_interval {
                return Ok(None);
            }
        }
        book.last_unknown_kid_refetch = Some(Instant::now());
        let keys: CoreJsonWebKeySet = match self
            .fetcher
            .get_json(current.metadata.jwks_uri().as_str())
            .await
        {
            Ok(keys) => keys,
            Err(error) => {
                log::warn!(
                    "OpenID provider {}: key refetch failed: {error}",
                    self.discovery_url
                );
                return Err(TokenError::ProviderUnavailable(Arc::new(error)));
            }
        };
        log::info!(
            "OpenID provider {}: key set refetched for an unknown key id ({} keys)",
            self.discovery_url,
            keys.keys().len()
        );
        let snapshot = Arc::new(Snapshot::new(
            current.metadata.clone(),
            keys,
            current.fetched_at,
            self.issuer_checked_by_caller,
        ));
        self.store(snapshot.clone());
        Ok(Some(snapshot))
    }

    /// Verifies the token with this provider's issuer and keys (refetching the keys once, rate
    /// limited, for an unknown `kid`). Returns the snapshot it was checked against and the
    /// verified claims.
    pub(super) async fn verify<'t>(
        &self,
        header: &Header,
        token: &'t Token,
    ) -> Result<(Arc<Snapshot>, &'t Claims), TokenError> {
        let snapshot = self.snapshot().await?;
        match snapshot.verify(token) {
            Err(TokenError::UnknownKey) => {}
            Ok(claims) => return Ok((snapshot, claims)),
            Err(other) => return Err(other),
        }
        let Some(kid) = header.kid.as_deref() else {
            return Err(TokenError::UnknownKey);
        };
        match self.refetch_for_unknown_kid(kid).await? {
            Some(snapshot) => {
                let claims = snapshot.verify(token)?;
                Ok((snapshot, claims))
            }
            None => Err(TokenError::UnknownKey),
        }
    }
}
