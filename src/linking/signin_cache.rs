//! SQLite: the links the sign-in path has resolved, kept in memory.
//!
//! Every sign-in of a linked identity used to look its link up (an index and a customer row,
//! three to six page reads). Here a resolved link is kept with the link generation it was read
//! at (migration 000006: a counter that triggers move forward on every change to an existing
//! link, or to a linked customer's account number, in any process). A kept link is used only
//! after reading the generation again, in the request's own read of the database, and only if it
//! has not moved: an unlink or a move anywhere makes every kept link miss until it is read again.
//! Links that do not exist are never kept (a new link does not move the generation).
//!
//! When no transaction has committed since the generation was last read, the
//! [`ChangeWatch`] tells it without a read of the database, from the WAL index header
//! that every commit rewrites, and a kept link answers without touching the database at all
//! ([`SigninCache::without_reading`]).
//!
//! The cache holds at most [`CAPACITY`] links (about 200 bytes each) and is emptied when full.

use std::sync::Mutex;

use crate::domain::rules::ExistingLink;
use crate::domain::Identity;
use crate::storage::links;
use crate::storage::sqlite::change_watch::ChangeWatch;
use crate::storage::{DbConn, StorageError};

/// Most links kept.
const CAPACITY: usize = 16 * 1024;

struct Kept {
    issuer: String,
    subject: String,
    generation: i64,
    link: ExistingLink,
}

/// The kept links, by a hash of the identity.
#[derive(Default)]
pub(super) struct SigninCache {
    links: Mutex<std::collections::HashMap<i64, Kept>>,
    /// The database file's change watch (SQLite files only).
    watch: Option<ChangeWatch>,
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
    /// A cache of links read from the SQLite file at `sqlite_path` (`None`: no file, nothing
    /// is answered without reading).
    pub(super) fn new(sqlite_path: Option<&str>) -> Self {
        SigninCache {
            links: Mutex::default(),
            watch: sqlite_path.map(ChangeWatch::new),
        }
    }

    /// The identity's kept link, when the watch can tell without waiting that the generation
    /// has not moved since it was kept; `None` means "read it" ([`SigninCache::find_active`]),
    /// not "no link".
    pub(super) fn without_reading(&self, identity: &Identity) -> Option<ExistingLink> {
        let generation = self.watch.as_ref()?.link_generation()?;
        self.kept(key(identity), identity, generation)
    }

    /// The identity's active link, as [`links::find_active`] would answer now.
    pub(super) fn find_active(
        &self,
        conn: &mut DbConn,
        identity: &Identity,
    ) -> Result<Option<ExistingLink>, StorageError> {
        let DbConn::Sqlite(c) = &mut *conn else {
            return links::find_active(conn, &identity.issuer, &identity.subject);
        };
        let key = key(identity);
        // The watch's generation when it can tell (no read while nothing has committed), else
        // a read on this connection.
        let now = match self.watch.as_ref().and_then(ChangeWatch::link_generation) {
            Some(generation) => generation,
            None => links::generation(c)?,
        };
        if let Some(link) = self.kept(key, identity, now) {
            return Ok(Some(link));
        }
        let (generation, link) =
            links::find_active_with_generation(conn, &identity.issuer, &identity.subject)?;
        if let Some(link) = &link {
            self.keep(key, identity, generation, link);
        }
        Ok(link)
    }

    fn kept(&self, key: i64, identity: &Identity, generation: i64) -> Option<ExistingLink> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .get(&key)
            .filter(|kept| {
                kept.generation == generation
                    && kept.issuer == identity.issuer
                    && kept.subject == identity.subject
            })
            .map(|kept| kept.link.clone())
    }

    fn keep(&self, key: i64, identity: &Identity, generation: i64, link: &ExistingLink) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.len() >= CAPACITY && !links.contains_key(&key) {
            links.clear();
        }
        links.insert(
            key,
            Kept {
                issuer: identity.issuer.clone(),
                subject: identity.subject.clone(),
                generation,
                link: link.clone(),
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.links.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::storage::customers::{self, NewCustomer};
    use crate::storage::links::NewLink;
    use crate::storage::Db;

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
        let DbConn::Sqlite(c) = conn else {
            panic!("not SQLite")
        };
        links::generation(c).unwrap()
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

    #[test]
    fn the_generation_moves_on_every_change_that_can_alter_a_resolved_link() {
        let (_dir, db) = setup();
        let mut conn = db.get().unwrap();
        let start = generation(&mut conn);
        let first = customer(&mut conn, "C1");
        let id = link(&mut conn, "s1", first);
        assert_eq!(
            generation(&mut conn),
            start,
            "new rows change no resolved link"
        );
        conn.batch_execute("UPDATE customers SET first_name = 'Ann' WHERE id = 1")
            .unwrap();
        assert_eq!(generation(&mut conn), start, "nor does a customer's name");
        links::deactivate(&mut conn, id, crate::storage::now()).unwrap();
        assert_eq!(generation(&mut conn), start + 1, "unlink");
        conn.batch_execute("UPDATE customers SET account_number = 'C9' WHERE id = 1")
            .unwrap();
        assert_eq!(generation(&mut conn), start + 2, "a new account number");
        conn.batch_execute("DELETE FROM identity_links").unwrap();
        assert_eq!(generation(&mut conn), start + 3, "a deleted link");
        conn.batch_execute("DELETE FROM customers").unwrap();
        assert_eq!(generation(&mut conn), start + 4, "a deleted customer");
    }

    #[test]
    fn a_kept_link_is_used_only_while_the_generation_stands() {
        let (_dir, db) = setup();
        let mut conn = db.get().unwrap();
        let cache = SigninCache::default();
        let ann = customer(&mut conn, "C1");
        let bob = customer(&mut conn, "C2");
        assert_eq!(cache.find_active(&mut conn, &identity("s1")).unwrap(), None);
        assert_eq!(cache.len(), 0, "a missing link is not kept");
        let id = link(&mut conn, "s1", ann);
        let found = cache
            .find_active(&mut conn, &identity("s1"))
            .unwrap()
            .unwrap();
        assert_eq!(found.account_number, "C1");
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
        assert_eq!(found.account_number, "C2");
        assert_eq!(found.customer_id, bob);

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
        assert_eq!(kept.account_number, "C2");
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
        let cache = SigninCache::new(db.sqlite_path());
        let mut conn = db.get().unwrap();
        let ann = customer(&mut conn, "C1");
        let bob = customer(&mut conn, "C2");
        let id = link(&mut conn, "s1", ann);
        assert_eq!(cache.without_reading(&identity("s1")), None, "not kept yet");
        cache.find_active(&mut conn, &identity("s1")).unwrap();
        let kept = cache.without_reading(&identity("s1")).unwrap();
        assert_eq!(
            (kept.customer_id, kept.account_number.as_str()),
            (ann, "C1")
        );
        assert_eq!(cache.without_reading(&identity("s2")), None);

        // New rows do not move the generation: still answered.
        link(&mut conn, "s2", bob);
        assert_eq!(
            cache.without_reading(&identity("s1")).unwrap().customer_id,
            ann
        );

        // Unlinked on another connection (as another process would): not answered any more,
        // and the read says there is no link.
        links::deactivate(&mut conn, id, crate::storage::now()).unwrap();
        assert_eq!(cache.without_reading(&identity("s1")), None);
        assert_eq!(cache.find_active(&mut conn, &identity("s1")).unwrap(), None);
        // Linked again to another customer: read, kept, then answered with the new customer.
        link(&mut conn, "s1", bob);
        assert_eq!(cache.without_reading(&identity("s1")), None);
        cache.find_active(&mut conn, &identity("s1")).unwrap();
        let kept = cache.without_reading(&identity("s1")).unwrap();
        assert_eq!(
            (kept.customer_id, kept.account_number.as_str()),
            (bob, "C2")
        );
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
                .unwrap()
                .account_number,
            "C7"
        );
    }
}
