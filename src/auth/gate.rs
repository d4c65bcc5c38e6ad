//! What a wrong credential costs, bounded: failures remembered, clients throttled.
//!
//! Every credential check that the cache of recent successes cannot answer goes through
//! [`Gate::check`]:
//! 1. a presented secret that failed recently is refused again without a new check (the failure
//!    cache keeps an HMAC of it under a key that lives only in this process, never the secret);
//! 2. a client (IP address; an IPv6 client by its /64) with `max_failures` failed checks in the
//!    last `window` is answered 429 with `Retry-After` until the window has passed;
//! 3. otherwise the check runs (argon2 on the bounded pool, or the keyed hash at once), and a
//!    failure is remembered for both.
//!
//! Both tables are bounded. When the client table is full of clients that are still throttled,
//! a new client is throttled too: under a flood from that many addresses, checks that would
//! cost argon2 wait; callers whose credentials were verified before are never affected, since
//! the success cache answers them before the gate.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::secret::hmac_sha256;
use crate::config::ThrottleSettings;

/// Failed secrets remembered at most.
const FAILURE_CACHE_SIZE: usize = 4096;
/// Clients tracked at most.
const MAX_CLIENTS: usize = 16_384;

/// The verdict on presented credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials are valid.
    Accepted,
    /// The credentials are not valid.
    Refused,
    /// The client failed too often: answer 429 with this `Retry-After`.
    Throttled(Duration),
    /// Too many checks are running: answer 429, retry in a second.
    Busy,
}

/// A client, as the throttle counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address, or an IPv6 network's first 64 bits.
    Ip(IpAddr),
    /// The address is unknown (a test request); all such requests share one count.
    Unknown,
}

impl ClientKey {
    /// The key of an address: IPv6 addresses by their /64 (one subscriber's network).
    pub fn of(address: Option<IpAddr>) -> ClientKey {
        match address {
            None => ClientKey::Unknown,
            Some(IpAddr::V4(v4)) => ClientKey::Ip(IpAddr::V4(v4)),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::Ip(IpAddr::V4(v4)),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    ClientKey::Ip(IpAddr::V6(octets.into()))
                }
            },
        }
    }
}

struct ClientWindow {
    started: Instant,
    failures: u32,
}

/// The failure cache and the per-client throttle.
pub struct Gate {
    key: [u8; 32],
    max_failures: u32,
    window: Duration,
    remember_failure: Duration,
    failures: Mutex<FailureCache>,
    clients: Mutex<HashMap<ClientKey, ClientWindow>>,
}

#[derive(Default)]
struct FailureCache {
    expiry: HashMap<[u8; 32], Instant>,
    order: VecDeque<[u8; 32]>,
}

impl Gate {
    /// A gate with the configured limits.
    pub fn new(settings: &ThrottleSettings) -> Gate {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Gate {
            key,
            max_failures: settings.max_failures.max(1),
            window: Duration::from_secs(settings.window_s.max(1)),
            remember_failure: Duration::from_secs(settings.remember_failure_s),
            failures: Mutex::new(FailureCache::default()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Checks presented credentials of `kind` (`basic`, `api-key`, `admin`): refused at once
    /// when they failed recently, throttled when the client failed too often, else `slow` runs.
    /// `presented` is everything the caller presented (for Basic, user name and password).
    pub async fn check<F>(
        &self,
        client: ClientKey,
        kind: &str,
        presented: &[u8],
        slow: F,
    ) -> Verdict
    where
        F: std::future::Future<Output = Result<bool, super::argon2_pool::Busy>>,
    {
        let fingerprint = self.fingerprint(kind, presented);
        if self.failed_recently(&fingerprint) {
            self.count_failure(client);
            return Verdict::Refused;
        }
        if let Some(retry_after) = self.throttled(client) {
            return Verdict::Throttled(retry_after);
        }
        match slow.await {
            Ok(true) => Verdict::Accepted,
            Ok(false) => {
                self.remember_failure(fingerprint);
                self.count_failure(client);
                Verdict::Refused
            }
            Err(super::argon2_pool::Busy) => Verdict::Busy,
        }
    }

    /// A short, non-reversible fingerprint of a presented value for logs (8 hex digits of an
    /// HMAC under this process's key): tells repeated attempts apart without revealing them.
    pub fn log_fingerprint(&self, value: &[u8]) -> String {
        let mac = hmac_sha256(&self.key, value);
        mac[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn fingerprint(&self, kind: &str, presented: &[u8]) -> [u8; 32] {
        let mut message = Vec::with_capacity(kind.len() + 1 + presented.len());
        message.extend_from_slice(kind.as_bytes());
        message.push(0);
        message.extend_from_slice(presented);
        hmac_sha256(&self.key, &message)
    }

    fn failed_recently(&self, fingerprint: &[u8; 32]) -> bool {
        let cache = lock(&self.failures);
        cache
            .expiry
            .get(fingerprint)
            .is_some_and(|until| *until > Instant::now())
    }

    fn remember_failure(&self, fingerprint: [u8; 32]) {
        if self.remember_failure.is_zero() {
            return;
        }
        let mut cache = lock(&self.failures);
        let until = Instant::now() + self.remember_failure;
        if cache.expiry.insert(fingerprint, until).is_none() {
            cache.order.push_back(fingerprint);
        }
        while cache.order.len() > FAILURE_CACHE_SIZE {
            if let Some(oldest) = cache.order.pop_front() {
                cache.expiry.remove(&oldest);
            }
        }
    }

    /// `Some(retry_after)` when the client has used up its failures in the current window.
    fn throttled(&self, client: ClientKey) -> Option<Duration> {
        let now = Instant::now();
        let mut clients = lock(&self.clients);
        if let Some(window) = clients.get(&client) {
            let elapsed = now.saturating_duration_since(window.started);
            if elapsed < self.window && window.failures >= self.max_failures {
                return Some(self.window - elapsed);
            }
            return None;
        }
        if clients.len() >= MAX_CLIENTS {
            self.forget_expired(&mut clients, now);
            if clients.len() >= MAX_CLIENTS {
                // Every tracked client is in a live window: fail closed for newcomers.
                return Some(self.window);
            }
        }
        None
    }

    fn count_failure(&self, client: ClientKey) {
        let now = Instant::now();
        let mut clients = lock(&self.clients);
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            self.forget_expired(&mut clients, now);
            if clients.len() >= MAX_CLIENTS {
                return;
            }
        }
        let window = clients.entry(client).or_insert(ClientWindow {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.started) >= self.window {
            window.started = now;
            window.failures = 0;
        }
        window.failures = window.failures.saturating_add(1);
    }

    fn forget_expired(&self, clients: &mut HashMap<ClientKey, ClientWindow>, now: Instant) {
        clients.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::argon2_pool::Busy;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn gate(max_failures: u32) -> Gate {
        Gate::new(&ThrottleSettings {
            max_failures,
            window_s: 60,
            remember_failure_s: 600,
            client_ip_header: None,
        })
    }

    fn client(last: u8) -> ClientKey {
        ClientKey::of(Some(IpAddr::from([192, 0, 2, last])))
    }

    #[tokio::test]
    async fn a_failed_secret_is_refused_again_without_a_new_check() {
        let gate = gate(100);
        let runs = AtomicUsize::new(0);
        let slow = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Busy>(false)
        };
        assert_eq!(
            gate.check(client(1), "basic", b"u\0wrong", slow()).await,
            Verdict::Refused
        );
        assert_eq!(
            gate.check(client(2), "basic", b"u\0wrong", slow()).await,
            Verdict::Refused
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The same bytes of another kind, or other bytes, are checked.
        assert_eq!(
            gate.check(client(1), "admin", b"u\0wrong", slow()).await,
            Verdict::Refused
        );
        assert_eq!(
            gate.check(client(1), "basic", b"u\0wrong2", slow()).await,
            Verdict::Refused
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_client_that_fails_too_often_is_throttled_and_others_are_not() {
        let gate = gate(3);
        for n in 0..3u8 {
            let verdict = gate
                .check(client(1), "basic", &[n], async { Ok(false) })
                .await;
            assert_eq!(verdict, Verdict::Refused);
        }
        match gate
            .check(client(1), "basic", b"right", async { Ok(true) })
            .await
        {
            Verdict::Throttled(retry_after) => {
                assert!(retry_after <= Duration::from_secs(60));
                assert!(retry_after > Duration::from_secs(50));
            }
            other => panic!("not throttled: {other:?}"),
        }
        assert_eq!(
            gate.check(client(2), "basic", b"right", async { Ok(true) })
                .await,
            Verdict::Accepted
        );
    }

    #[tokio::test]
    async fn a_saturated_pool_is_busy_and_not_counted_as_a_failure() {
        let gate = gate(1);
        assert_eq!(
            gate.check(client(1), "basic", b"x", async { Err(Busy) })
                .await,
            Verdict::Busy
        );
        assert_eq!(
            gate.check(client(1), "basic", b"x", async { Ok(true) })
                .await,
            Verdict::Accepted
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_bit_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(Some(a)), ClientKey::of(Some(b)));
        assert_ne!(ClientKey::of(Some(a)), ClientKey::of(Some(c)));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(ClientKey::of(Some(mapped)), client(1));
    }

    #[test]
    fn log_fingerprints_are_short_stable_and_not_the_value() {
        let gate = gate(1);
        let a = gate.log_fingerprint(b"Basic c2VjcmV0");
        assert_eq!(a.len(), 8);
        assert_eq!(a, gate.log_fingerprint(b"Basic c2VjcmV0"));
        assert_ne!(a, gate.log_fingerprint(b"Basic c2VjcmV1"));
    }
}
