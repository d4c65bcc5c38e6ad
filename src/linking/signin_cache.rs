//! The links the sign-in path has resolved, kept in memory, on either database.
//!
//! Every sign-in of a linked identity used to look its link up: on SQLite an index and a
//! customer row, on PostgreSQL a round trip from the executor's thread. Here the account number
//! an identity resolved to is kept with the [`LinkChanges`] stamp taken *before* it was read
//! ([`SigninCache::before_read`]), and is used only while the stamp is still that one. The stamp
//! moves whenever a kept link may have become wrong, in any process: an unlink, a move, a linked
//! customer's new account number (the link generation of migration 000006, moved by triggers).
//! SQLite tells it from the WAL index header, or `PRAGMA data_version` ([`ChangeWatch`]);
//! PostgreSQL from `LISTEN`/`NOTIFY` and a periodic read ([`LinkListener`]). While the stamp
//! cannot be told (`None`: PostgreSQL's listening connection is down), nothing kept is used, and
//! the cache is emptied.
//!
//! Links that do not exist are never kept (a new link does not move the stamp). The cache holds
//! at most [`CAPACITY`] links (about 200 bytes each) and is emptied when full.

use std::collections::HashMap;

use parking_lot::{RwLock, RwLockWriteGuard};

use crate::domain::Identity;
use crate::storage::links::{self, LinkChanges};
use crate::storage::postgres::link_changes::LinkListener;
use crate::storage::sqlite::change_watch::ChangeWatch;
use crate::storage::{BackendKind, Db, DbConn, StorageError};

/// Most links kept.
const CAPACITY: usize = 16 * 1024;

struct Kept {
    issuer: String,
    subject: String,
    stamp: u64,
    account_number: String,
}

/// The stamp taken before a read of a link: what the link read may be kept under.
#[derive(Debug, Clone, Copy)]
pub(super) struct BeforeRead(Option<u64>);

/// The kept links, by a hash of the identity.
pub(super) struct SigninCache {
    /// Read by every sign-in, written when a link is read from the database: readers do not
    /// wait for each other.
    links: RwLock<HashMap<i64, Kept>>,
    /// What tells whether a kept link may have changed; `None`: nothing is ever kept.
    changes: Option<Box<dyn LinkChanges>>,
}

/// The identity's 64-bit hash, the audit lookup's; a collision only misses (the kept identity is
/// compared).
fn key(identity: &Identity) -> i64 {
    crate::storage::audit::identity_lookup_key(
        identity.issuer.as_bytes(),
        identity.subject.as_bytes(),
    )
}

impl SigninCache {
    /// A cache of links read from `db`: its SQLite file's change watch, or a listener of
    /// PostgreSQL's notifications (which opens its connection when first asked).
    pub(super) fn new(db: &Db) -> Self {
        let changes: Option<Box<dyn LinkChanges>> = match (db.backend(), db.sqlite_path()) {
            (BackendKind::Sqlite, Some(path)) => Some(Box::new(ChangeWatch::new(path))),
            (BackendKind::Sqlite, None) => None,
            (BackendKind::Postgres, _) => Some(Box::new(LinkListener::new(db.clone()))),
        };
        SigninCache {
            links: RwLock::default(),
            changes,
        }
    }

    /// A cache over any [`LinkChanges`] (tests).
    #[cfg(test)]
    fn with_changes(changes: Box<dyn LinkChanges>) -> Self {
        SigninCache {
            links: RwLock::default(),
            changes: Some(changes),
        }
    }

    /// The stamp now; when it cannot be told, the kept links are dropped (none could be used).
    fn stamp(&self) -> Option<u64> {
        let stamp = self.changes.as_ref()?.stamp();
        // Looked at under the read lock first: while the stamp cannot be told, every sign-in
        // comes here, and the links are already gone.
        if stamp.is_none() && !self.links.read().is_empty() {
            self.lock().clear();
        }
        stamp
    }

    /// To be taken before reading an identity's link elsewhere (the executor), so that what the
    /// read answers can be kept ([`SigninCache::keep_read`]): a change that commits during the
    /// read moves the stamp away from this one, and the link read is then never used.
    pub(super) fn before_read(&self) -> BeforeRead {
        BeforeRead(self.stamp())
    }

    /// Keeps the account number an identity's active link was read to have, by a read that
    /// started after `before` was taken.
    pub(super) fn keep_read(&self, before: BeforeRead, identity: &Identity, account_number: &str) {
        if let BeforeRead(Some(stamp)) = before {
            self.keep(key(identity), identity, stamp, account_number);
        }
    }

    /// The account number of the identity's kept link, when the stamp tells without a read of
    /// the database that it has not changed since it was read; `None` means "read it", not "no
    /// link".
    pub(super) fn without_reading(&self, identity: &Identity) -> Option<String> {
        let stamp = self.stamp()?;
        self.kept(key(identity), identity, stamp)
    }

    /// The account number of the identity's active link, as [`links::find_active`] would answer
    /// now: the kept one while the stamp stands, else read on `conn` (and kept).
    pub(super) fn find_active(
        &self,
        conn: &mut DbConn,
        identity: &Identity,
    ) -> Result<Option<String>, StorageError> {
        let key = key(identity);
        let before = self.stamp();
        if let Some(number) = before.and_then(|stamp| self.kept(key, identity, stamp)) {
            return Ok(Some(number));
        }
        let link = links::find_active(conn, &identity.issuer, &identity.subject)?;
        let number = link.map(|link| link.account_number);
        if let (Some(stamp), Some(number)) = (before, &number) {
            self.keep(key, identity, stamp, number);
        }
        Ok(number)
    }

    fn lock(&self) -> RwLockWriteGuard<'_, HashMap<i64, Kept>> {
        self.links.write()
    }

    fn kept(&self, key: i64, identity: &Identity, stamp: u64) -> Option<String> {
        self.links
            .read()
            .get(&key)
            .filter(|kept| {
                kept.stamp == stamp
                    && kept.issuer == identity.issuer
                    && kept.subject == identity.subject
            })
            .map(|kept| kept.account_number.clone())
    }

    fn keep(&self, key: i64, identity: &Identity, stamp: u64, account_number: &str) {
        let mut links = self.lock();
        if links.len() >= CAPACITY && !links.contains_key(&key) {
            links.clear();
        }
        links.insert(
            key,
            Kept {
                issuer: identity.issuer.clone(),
                subject: identity.subject.clone(),
                stamp,
                account_number: account_number.to_string(),
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.links.read().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::storage::customers::{self, NewCustomer};
    use crate::storage::links::NewLink;

    fn customer(conn: &mut DbConn, number: &str) -> i64 {
        let now = crate::storage::now();
        customers::insert(
            conn,
            &NewCustomer {
                account_number: number,
                legal_entity: "USRT",
                party_type: "person",
                is_b2b: false,
                primary_email: Some("ann@example.com"),
                email_key: Some("ann@example.com"),
                first_name: None,
                last_name: None,
                origin: "import",
                creation_key: None,
                created_at: now,
                updated_at: now,
            },
        )
        .unwrap()
    }

    fn link(conn: &mut DbConn, subject: &str, customer_id: i64) -> i64 {
        let now = crate::storage::now();
        links::insert_returning_id(
            conn,
            &NewLink {
                issuer: "tenant",
                subject,
                customer_id,
                sign_in_type: "emailAddress",
                identity_provider: None,
                email_key: "ann@example.com",
                linked_by: "auto",
                created_at: now,
                updated_at: now,
            },
        )
        .unwrap()
    }

    fn generation(conn: &mut DbConn) -> i64 {
        links::generation(conn).unwrap()
    }

    fn setup() -> (tempfile::TempDir, Db) {
        crate::storage::temp_sqlite()
    }

    fn identity(subject: &str) -> Identity {
        Identity {
            issuer: "tenant".into(),
            subject: subject.into(),
        }
    }

    fn generation_moves_on_every_change_that_can_alter_a_resolved_link(db: &Db) {
        let mut conn = db.get().unwrap();
        let start = generation(&mut conn);
        let first = customer(&mut conn, "C1");
        let id = link(&mut conn, "s1", first);
        assert_eq!(
            generation(&mut conn),
            start,
            "new rows change no resolved link"
        );
        conn.batch_execute(&format!(
            "UPDATE customers SET first_name = 'Ann' WHERE id = {first}"
        ))
        .unwrap();
        assert_eq!(generation(&mut conn), start, "nor does a customer's name");
        links::deactivate(&mut conn, id, crate::storage::now()).unwrap();
        assert_eq!(generation(&mut conn), start + 1, "unlink");
        conn.batch_execute(&format!(
            "UPDATE customers SET account_number = 'C9' WHERE id = {first}"
        ))
        .unwrap();
        assert_eq!(generation(&mut conn), start + 2, "a new account number");
        conn.batch_execute("DELETE FROM identity_links").unwrap();
        assert_eq!(generation(&mut conn), start + 3, "a deleted link");
        conn.batch_execute("DELETE FROM customers").unwrap();
        assert_eq!(generation(&mut conn), start + 4, "a deleted customer");
    }

    #[test]
    fn the_generation_moves_on_every_change_that_can_alter_a_resolved_link() {
        let (_dir, db) = setup();
        generation_moves_on_every_change_that_can_alter_a_resolved_link(&db);
    }

    #[test]
    fn on_postgres_the_generation_moves_on_every_change_that_can_alter_a_resolved_link() {
        let Some(pg) = crate::storage::postgres::link_changes::test_database::create(
            "on_postgres_the_generation_moves_on_every_change_that_can_alter_a_resolved_link",
        ) else {
            return;
        };
        generation_moves_on_every_change_that_can_alter_a_resolved_link(&pg.db);
    }

    #[test]
    fn a_kept_link_is_used_only_while_the_generation_stands() {
        let (_dir, db) = setup();
        let mut conn = db.get().unwrap();
        let cache = SigninCache::new(&db);
        let ann = customer(&mut conn, "C1");
        let bob = customer(&mut conn, "C2");
        assert_eq!(cache.find_active(&mut conn, &identity("s1")).unwrap(), None);
        assert_eq!(cache.len(), 0, "a missing link is not kept");
        let id = link(&mut conn, "s1", ann);
        let found = cache
            .find_active(&mut conn, &identity("s1"))
            .unwrap()
            .unwrap();
        assert_eq!(found, "C1");
        assert_eq!(cache.len(), 1);

        // Unlinked (in this process or any other): the kept link is not used.
        links::deactivate(&mut conn, id, crate::storage::now()).unwrap();
        assert_eq!(cache.find_active(&mut conn, &identity("s1")).unwrap(), None);
        // Linked again, to another customer: the new one.
        link(&mut conn, "s1", bob);
        let found = cache
            .find_active(&mut conn, &identity("s1"))
            .unwrap()
            .unwrap();
        assert_eq!(found, "C2");

        // The kept link is what answers while the generation stands: with the trigger gone, a
        // change the cache is not told about goes unseen. (This is why the triggers exist.)
        conn.batch_execute(
            "DROP TRIGGER identity_links_updated; \
             UPDATE identity_links SET customer_id = 1 WHERE subject = 's1' AND active",
        )
        .unwrap();
        let kept = cache
            .find_active(&mut conn, &identity("s1"))
            .unwrap()
            .unwrap();
        assert_eq!(kept, "C2");
        assert_eq!(
            links::find_active(&mut conn, "tenant", "s1")
                .unwrap()
                .unwrap()
                .account_number,
            "C1"
        );
    }

    #[test]
    fn without_reading_a_kept_link_answers_until_a_commit_moves_the_generation() {
        let (_dir, db) = setup();
        let cache = SigninCache::new(&db);
        let mut conn = db.get().unwrap();
        let ann = customer(&mut conn, "C1");
        let bob = customer(&mut conn, "C2");
        let id = link(&mut conn, "s1", ann);
        assert_eq!(cache.without_reading(&identity("s1")), None, "not kept yet");
        cache.find_active(&mut conn, &identity("s1")).unwrap();
        assert_eq!(cache.without_reading(&identity("s1")).unwrap(), "C1");
        assert_eq!(cache.without_reading(&identity("s2")), None);

        // New rows do not move the generation: still answered.
        link(&mut conn, "s2", bob);
        assert_eq!(cache.without_reading(&identity("s1")).unwrap(), "C1");

        // Unlinked on another connection (as another process would): not answered any more,
        // and the read says there is no link.
        links::deactivate(&mut conn, id, crate::storage::now()).unwrap();
        assert_eq!(cache.without_reading(&identity("s1")), None);
        assert_eq!(cache.find_active(&mut conn, &identity("s1")).unwrap(), None);
        // Linked again to another customer: read, kept, then answered with the new customer.
        link(&mut conn, "s1", bob);
        assert_eq!(cache.without_reading(&identity("s1")), None);
        cache.find_active(&mut conn, &identity("s1")).unwrap();
        assert_eq!(cache.without_reading(&identity("s1")).unwrap(), "C2");
        // A customer's new account number moves the generation too.
        conn.batch_execute(
            "UPDATE customers SET account_number = 'C7' WHERE account_number = 'C2'",
        )
        .unwrap();
        assert_eq!(cache.without_reading(&identity("s1")), None);
        assert_eq!(
            cache
                .find_active(&mut conn, &identity("s1"))
                .unwrap()
                .unwrap(),
            "C7"
        );
    }

    /// What a scripted stamp does when next taken: a change (a move committed at that moment),
    /// then the stamp it returns and the stamp it holds afterwards.
    type AtNextStamp = Box<dyn FnOnce() -> (Option<u64>, Option<u64>) + Send>;

    /// A stamp the test sets by hand, which can run a change when it is next taken.
    #[derive(Default)]
    struct Scripted {
        stamp: std::sync::Mutex<Option<u64>>,
        at_next_stamp: std::sync::Mutex<Option<AtNextStamp>>,
    }

    impl LinkChanges for Arc<Scripted> {
        fn stamp(&self) -> Option<u64> {
            let change = self.at_next_stamp.lock().unwrap().take();
            let mut stamp = self.stamp.lock().unwrap();
            match change {
                Some(change) => {
                    let (now, after) = change();
                    *stamp = after;
                    now
                }
                None => *stamp,
            }
        }
    }

    fn scripted() -> (Arc<Scripted>, SigninCache) {
        let scripted = Arc::new(Scripted::default());
        *scripted.stamp.lock().unwrap() = Some(1);
        let cache = SigninCache::with_changes(Box::new(scripted.clone()));
        (scripted, cache)
    }

    /// Moves the link `id` of identity s1 to `to` on a connection of its own, as another
    /// instance would.
    fn mover(db: &Db, id: i64, to: i64) -> impl FnOnce() {
        let db = db.clone();
        move || {
            let mut conn = db.get().unwrap();
            links::deactivate(&mut conn, id, crate::storage::now()).unwrap();
            link(&mut conn, "s1", to);
        }
    }

    #[test]
    fn a_link_is_kept_with_the_stamp_taken_before_it_was_read() {
        let (_dir, db) = setup();
        let mut conn = db.get().unwrap();
        let ann = customer(&mut conn, "C1");
        let bob = customer(&mut conn, "C2");
        let first = link(&mut conn, "s1", ann);
        let (scripted, cache) = scripted();

        // A move commits just before the stamp is taken (so the stamp is the new one). A cache
        // that took the stamp after its read would keep the link from before the move under
        // the new stamp, and answer it from memory for good.
        let move_to_bob = mover(&db, first, bob);
        *scripted.at_next_stamp.lock().unwrap() = Some(Box::new(move || {
            move_to_bob();
            (Some(2), Some(2))
        }));
        let read = cache.find_active(&mut conn, &identity("s1")).unwrap();
        assert_eq!(read.unwrap(), "C2", "the read follows the stamp");
        assert_eq!(cache.without_reading(&identity("s1")).unwrap(), "C2");

        // A move commits just after the stamp is taken (the stamp then moves on): the link read
        // is kept under the stamp from before the move, and never answered from memory.
        cache.lock().clear();
        let second_id = links::list_for_identity(&mut conn, "tenant", "s1", None, 10)
            .unwrap()
            .into_iter()
            .find(|(l, _)| l.active)
            .unwrap()
            .0
            .id;
        let move_to_ann = mover(&db, second_id, ann);
        *scripted.at_next_stamp.lock().unwrap() = Some(Box::new(move || {
            move_to_ann();
            (Some(2), Some(3))
        }));
        let read = cache.find_active(&mut conn, &identity("s1")).unwrap();
        assert_eq!(read.unwrap(), "C1");
        assert_eq!(cache.len(), 1, "kept, under the stamp from before the read");
        assert_eq!(cache.without_reading(&identity("s1")), None);
        let read = cache.find_active(&mut conn, &identity("s1")).unwrap();
        assert_eq!(read.unwrap(), "C1");
        assert_eq!(cache.without_reading(&identity("s1")).unwrap(), "C1");
    }

    #[test]
    fn what_a_read_elsewhere_answered_is_kept_under_the_stamp_taken_before_it() {
        let (scripted, cache) = scripted();
        let ann = identity("s1");

        // Read by another path (the executor) after the stamp was taken: kept, then answered.
        let before = cache.before_read();
        cache.keep_read(before, &ann, "C1");
        assert_eq!(cache.without_reading(&ann).unwrap(), "C1");

        // A change committed while the read was under way: the stamp moved, and the answer of
        // that read is kept under the old stamp, never answered.
        let before = cache.before_read();
        *scripted.stamp.lock().unwrap() = Some(2);
        cache.keep_read(before, &ann, "C2");
        assert_eq!(cache.without_reading(&ann), None);

        // Read while the stamp could not be told: not kept.
        *scripted.stamp.lock().unwrap() = None;
        let before = cache.before_read();
        *scripted.stamp.lock().unwrap() = Some(3);
        cache.keep_read(before, &ann, "C3");
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.without_reading(&ann), None);
    }

    #[test]
    fn while_the_stamp_cannot_be_told_nothing_kept_is_used_and_the_cache_is_emptied() {
        let (_dir, db) = setup();
        let mut conn = db.get().unwrap();
        let ann = customer(&mut conn, "C1");
        link(&mut conn, "s1", ann);
        link(&mut conn, "s2", ann);
        let (scripted, cache) = scripted();
        cache.find_active(&mut conn, &identity("s1")).unwrap();
        cache.find_active(&mut conn, &identity("s2")).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.without_reading(&identity("s1")).is_some());

        *scripted.stamp.lock().unwrap() = None;
        assert_eq!(cache.without_reading(&identity("s1")), None);
        assert_eq!(cache.len(), 0, "emptied");
        // Read, answered, not kept.
        let read = cache.find_active(&mut conn, &identity("s2")).unwrap();
        assert_eq!(read.unwrap(), "C1");
        assert_eq!(cache.len(), 0);

        // Known again, at the same value as before: nothing was kept meanwhile to answer from.
        *scripted.stamp.lock().unwrap() = Some(1);
        assert_eq!(cache.without_reading(&identity("s1")), None);
        cache.find_active(&mut conn, &identity("s1")).unwrap();
        assert!(cache.without_reading(&identity("s1")).is_some());
    }
}
