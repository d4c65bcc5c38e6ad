//! PostgreSQL at the server's start: the migrations are applied before anything else runs a
//! query, now if the database answers, or else by a thread of their own once it does.
//!
//! A server that is down when the service starts is a normal event under an orchestrator (both
//! start together, or the database restarts): `serve` starts and listens anyway. Until the
//! migrations are applied its pools lend no connection ([`Db::is_migrated`]), so every request
//! that needs the database fails closed at once and `/readyz` answers 503; the thread tries
//! again with a bounded backoff, logging each failure at warn (the URL without its password).
//! A database that answers but whose migrations fail is a start error, as it is for `migrate`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::storage::{Db, Manager, PoolOptions, StorageError};

/// The session advisory lock held while migrations run: instances that start together, or that
/// all waited for the database, apply them one at a time (the key spells "autolink").
pub(crate) const LOCK_MIGRATIONS: &str = "SELECT pg_advisory_lock(7022344802737653611)";
/// Releases [`LOCK_MIGRATIONS`].
pub(crate) const UNLOCK_MIGRATIONS: &str = "SELECT pg_advisory_unlock(7022344802737653611)";

/// The wait before the first new attempt; it doubles after each failure, up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between two attempts: the service is ready at most this long (plus one
/// connection attempt) after the database answers again.
const LONGEST_WAIT: Duration = Duration::from_secs(4);

/// Builds the server's pool over `manager`: migrated now if the database answers, else closed,
/// with a thread that migrates it once the database answers.
pub(crate) fn open(manager: Manager, options: &PoolOptions) -> Result<Db, StorageError> {
    let first = manager.migrate();
    let db = Db::pool(manager.clone(), options, 0, first.is_ok())?;
    match first {
        Ok(()) => Ok(db),
        Err(StorageError::Unavailable(reason)) => {
            let migrated = Arc::downgrade(&db.migrated);
            std::thread::Builder::new()
                .name("autolink-migrate".into())
                .spawn(move || migrate_once_it_answers(manager, migrated, reason))
                .map_err(|e| StorageError::Unavailable(format!("cannot start a thread: {e}")))?;
            Ok(db)
        }
        Err(other) => Err(other),
    }
}

/// Tries the migrations again until they are applied, then opens the pools. Ends early when
/// every pool of the database is gone (the service stopped).
fn migrate_once_it_answers(manager: Manager, migrated: Weak<AtomicBool>, first_failure: String) {
    let shown = manager.backend.shown();
    let mut wait = FIRST_WAIT;
    log::warn!(
        "PostgreSQL does not answer ({first_failure}): serving without it, not ready; \
         trying again in {wait:?}"
    );
    loop {
        std::thread::sleep(wait);
        let Some(flag) = migrated.upgrade() else {
            return;
        };
        wait = next_wait(wait);
        match manager.migrate() {
            Ok(()) => {
                flag.store(true, Ordering::Release);
                log::info!(
                    "PostgreSQL at {shown} answers: migrations applied, the service is ready"
                );
                return;
            }
            Err(StorageError::Unavailable(reason)) => {
                log::warn!("PostgreSQL still does not answer ({reason}); trying again in {wait:?}");
            }
            // It answered, but the migrations failed (the connection may have broken midway):
            // still not ready, and tried again.
            Err(error) => {
                log::error!("PostgreSQL at {shown}: {error}; trying again in {wait:?}");
            }
        }
    }
}

fn next_wait(wait: Duration) -> Duration {
    (wait * 2).min(LONGEST_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_between_attempts_doubles_up_to_its_bound() {
        let mut waits = vec![FIRST_WAIT];
        for _ in 0..6 {
            waits.push(next_wait(*waits.last().unwrap()));
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 4000, 4000]);
    }
}
