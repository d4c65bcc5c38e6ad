//! Verified sign-ups remembered between Entra External ID's two events.
//!
//! At `attributeCollectionSubmit` the user does not exist yet, so nothing can be linked; at
//! `tokenIssuanceStart` the user exists but the payload says nothing about how the email was
//! proven. A submit whose email was verified and would link or create is remembered for
//! [`REMEMBER_FOR`], keyed by (tenant, `correlationId`, email key), with the evidence that
//! verified it; token issuance of the same correlation id and the same email links with that
//! evidence.
//!
//! Bounded: at most `capacity` entries. Only calls with a valid Entra token reach it, and each
//! adds at most one entry; when full, the oldest entry is dropped (it would expire first).
//! Nothing here survives a restart or is shared between instances: a token issuance that lands
//! on another instance falls back to the Graph route (README).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::SignInEvidence;

/// How long a verified submit is remembered.
pub const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);

/// Entries kept at most by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Longest correlation id remembered (Entra sends a GUID); longer ones are not remembered.
pub const MAX_CORRELATION_ID: usize = 64;

type Key = (String, String, String);

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, (Instant, SignInEvidence)>,
    /// Keys in the order they were remembered, with that time: the front expires first.
    order: VecDeque<(Instant, Key)>,
}

/// The remembered verified sign-ups.
pub struct VerifiedSignups {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

impl VerifiedSignups {
    /// An empty memory of at most `capacity` entries, each kept `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        VerifiedSignups {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn key(tenant: &str, correlation_id: &str, email_key: &str) -> Option<Key> {
        let correlation_id = correlation_id.trim();
        if correlation_id.is_empty() || correlation_id.len() > MAX_CORRELATION_ID {
            return None;
        }
        Some((
            tenant.trim().to_ascii_lowercase(),
            correlation_id.to_ascii_lowercase(),
            email_key.to_string(),
        ))
    }

    /// Remembers that this sign-up's email (`email_key`, normalized) was verified by `evidence`.
    pub fn remember(
        &self,
        tenant: &str,
        correlation_id: &str,
        email_key: &str,
        evidence: SignInEvidence,
    ) {
        let Some(key) = Self::key(tenant, correlation_id, email_key) else {
            return;
        };
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { entries, order } = &mut *inner;
        while let Some((at, _)) = order.front() {
            let expired = now.duration_since(*at) >= self.ttl;
            if !expired && order.len() < self.capacity {
                break;
            }
            if let Some((at, old)) = order.pop_front() {
                // A key remembered again later keeps its newer entry.
                if entries.get(&old).is_some_and(|(kept, _)| *kept == at) {
                    entries.remove(&old);
                }
            }
        }
        order.push_back((now, key.clone()));
        entries.insert(key, (now, evidence));
    }

    /// The evidence of a remembered verified sign-up, while it is fresh.
    pub fn recall(
        &self,
        tenant: &str,
        correlation_id: &str,
        email_key: &str,
    ) -> Option<SignInEvidence> {
        let key = Self::key(tenant, correlation_id, email_key)?;
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .get(&key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, evidence)| evidence.clone())
    }

    /// Entries held now (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for VerifiedSignups {
    fn default() -> Self {
        VerifiedSignups::new(DEFAULT_CAPACITY, REMEMBER_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_sign_up_is_recalled_only_for_the_same_tenant_correlation_and_email() {
        let memory = VerifiedSignups::default();
        memory.remember("T", "C-1", "a@example.com", SignInEvidence::Local);
        assert_eq!(
            memory.recall("t", "c-1", "a@example.com"),
            Some(SignInEvidence::Local)
        );
        assert_eq!(memory.recall("t", "c-2", "a@example.com"), None);
        assert_eq!(memory.recall("u", "c-1", "a@example.com"), None);
        assert_eq!(memory.recall("t", "c-1", "b@example.com"), None);
    }

    #[test]
    fn the_memory_never_grows_past_its_capacity_and_drops_the_oldest() {
        let memory = VerifiedSignups::new(100, REMEMBER_FOR);
        for i in 0..10_000 {
            memory.remember(
                "t",
                &format!("c-{i}"),
                "a@example.com",
                SignInEvidence::Local,
            );
            // The same key again does not grow it either.
            memory.remember(
                "t",
                &format!("c-{i}"),
                "a@example.com",
                SignInEvidence::Local,
            );
            assert!(memory.len() <= 100);
            assert!(memory.inner.lock().unwrap().order.len() <= 100);
        }
        assert_eq!(memory.recall("t", "c-0", "a@example.com"), None);
        assert!(memory.recall("t", "c-9999", "a@example.com").is_some());
    }

    #[test]
    fn entries_expire_and_overlong_correlation_ids_are_not_remembered() {
        let memory = VerifiedSignups::new(10, Duration::from_millis(0));
        memory.remember("t", "c", "a@example.com", SignInEvidence::Local);
        assert_eq!(memory.recall("t", "c", "a@example.com"), None);
        let memory = VerifiedSignups::default();
        memory.remember("t", &"x".repeat(65), "a@example.com", SignInEvidence::Local);
        assert!(memory.is_empty());
    }
}
