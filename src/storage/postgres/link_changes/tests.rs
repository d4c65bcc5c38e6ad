//! The listener against a real PostgreSQL server (`AUTOLINK_TEST_POSTGRES_URL`), with faults
//! injected from outside: a terminated backend, a change without a notification, a connection
//! that stops answering.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;

use diesel::prelude::*;

use super::test_database::create;
use super::*;
use crate::storage::PoolOptions;

/// Polls `f` every millisecond until it answers `Some`, for at most `limit`; returns the answer
/// and when it came.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(value) = f() {
            return Some((value, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// A listener on `db` that is listening: its first stamp.
fn listening(db: &Db) -> (LinkListener, u64) {
    let listener = LinkListener::new(db.clone());
    let (stamp, _) = wait_for(Duration::from_secs(10), || listener.stamp())
        .expect("the listener listens within 10 s");
    (listener, stamp)
}

/// The listener's backends on the test's database.
fn listener_backends(conn: &mut PgConnection) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = '{APPLICATION_NAME}'"
    )))
    .get_result(conn)
    .unwrap()
}

fn execute(conn: &mut PgConnection, sql: &str) {
    conn.batch_execute(sql).unwrap();
}

fn counts(listener: &LinkListener) -> (u64, u64, u64) {
    let counts = &listener.shared.counts;
    (
        counts.notifications.load(Ordering::SeqCst),
        counts.missed.load(Ordering::SeqCst),
        counts.sessions.load(Ordering::SeqCst),
    )
}

/// A new customer `number` and a link of identity `subject` to it; returns the link's id.
fn seed_link(conn: &mut PgConnection, number: &str, subject: &str) -> i64 {
    execute(
        conn,
        &format!(
            "INSERT INTO customers (account_number, legal_entity, party_type, origin, \
             created_at, updated_at) VALUES ('{number}', 'USRT', 'person', 'import', now(), now()); \
             INSERT INTO identity_links (issuer, subject, customer_id, sign_in_type, email_key, \
             linked_by, created_at, updated_at) SELECT 'tenant', '{subject}', id, 'emailAddress', \
             'ann@example.com', 'auto', now(), now() FROM customers WHERE account_number = '{number}'"
        ),
    );
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "max(id) FROM identity_links",
    ))
    .get_result(conn)
    .unwrap()
}

#[test]
fn a_notification_moves_the_stamp() {
    let Some(pg) = create("a_notification_moves_the_stamp") else {
        return;
    };
    let mut conn = pg.connect();
    let id = seed_link(&mut conn, "C1", "s1");
    let (listener, first) = listening(&pg.db);
    let (notifications, missed, _) = counts(&listener);

    // A notification alone, with no change of the generation: only hearing it moves the stamp.
    execute(&mut conn, "NOTIFY autolink_links, 'hello'");
    let (second, took) = wait_for(Duration::from_secs(1), || {
        listener.stamp().filter(|s| *s != first)
    })
    .expect("the stamp moves within 1 s of a notification");
    assert_eq!(counts(&listener).0, notifications + 1, "heard once");
    assert_eq!(
        counts(&listener).1,
        missed,
        "not found by the periodic read"
    );
    eprintln!("a bare notification moved the stamp after {took:?}");

    // An unlink: the trigger notifies at COMMIT.
    execute(
        &mut conn,
        &format!("UPDATE identity_links SET active = false WHERE id = {id}"),
    );
    let (_, took) = wait_for(Duration::from_secs(1), || {
        listener.stamp().filter(|s| *s != second)
    })
    .expect("the stamp moves within 1 s of an unlink");
    eprintln!("an unlink moved the stamp after {took:?}");
    assert_eq!(counts(&listener).0, notifications + 2);
    assert_eq!(counts(&listener).1, missed);

    // A rolled-back change notifies nothing, and a new link is not a change of a kept one.
    let third = listener.stamp().unwrap();
    execute(
        &mut conn,
        "BEGIN; UPDATE identity_links SET active = true; ROLLBACK",
    );
    seed_link(&mut conn, "C2", "s2");
    std::thread::sleep(CHECK_EVERY * 3);
    assert_eq!(listener.stamp(), Some(third));
}

#[test]
fn the_periodic_read_catches_a_change_that_was_not_notified() {
    let Some(pg) = create("the_periodic_read_catches_a_change_that_was_not_notified") else {
        return;
    };
    let mut conn = pg.connect();
    let (listener, first) = listening(&pg.db);
    let (notifications, missed, _) = counts(&listener);
    // Moved by hand, without the triggers: no notification.
    execute(&mut conn, "UPDATE link_generation SET n = n + 1");
    let (_, took) = wait_for(CHECK_EVERY + Duration::from_secs(1), || {
        listener.stamp().filter(|s| *s != first)
    })
    .expect("the periodic read moves the stamp");
    eprintln!("a change without a notification moved the stamp after {took:?}");
    assert_eq!(counts(&listener).0, notifications, "nothing was heard");
    assert_eq!(
        counts(&listener).1,
        missed + 1,
        "found by the periodic read"
    );
}

#[test]
fn a_terminated_connection_gives_no_stamp_until_another_listens() {
    let Some(pg) = create("a_terminated_connection_gives_no_stamp_until_another_listens") else {
        return;
    };
    let mut conn = pg.connect();
    let (listener, first) = listening(&pg.db);
    assert_eq!(listener_backends(&mut conn), 1);
    let terminated: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = '{APPLICATION_NAME}'"
    )))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(terminated, 1);
    let (_, took) = wait_for(Duration::from_secs(1), || {
        listener.stamp().is_none().then_some(())
    })
    .expect("no stamp once the connection is gone");
    eprintln!("no stamp {took:?} after the backend was terminated");

    let (again, took) =
        wait_for(Duration::from_secs(5), || listener.stamp()).expect("listening again within 5 s");
    eprintln!("listening again {took:?} later");
    assert_ne!(
        again, first,
        "what was kept before is not trusted after the gap"
    );
    assert_eq!(counts(&listener).2, 2, "a second connection");
    assert_eq!(listener_backends(&mut conn), 1);
}

#[test]
fn the_listener_stops_when_dropped() {
    let Some(pg) = create("the_listener_stops_when_dropped") else {
        return;
    };
    let mut conn = pg.connect();
    let (listener, _) = listening(&pg.db);
    assert_eq!(listener_backends(&mut conn), 1);
    drop(listener);
    wait_for(Duration::from_secs(2), || {
        (listener_backends(&mut conn) == 0).then_some(())
    })
    .expect("its connection is closed within 2 s");
}

/// A TCP proxy that can freeze: connections open at the freeze stay open and forward nothing
/// more, in either direction; connections opened after it are forwarded.
struct FreezingProxy {
    port: u16,
    epoch: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl FreezingProxy {
    fn start(upstream: String) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let proxy = FreezingProxy {
            port: listener.local_addr().unwrap().port(),
            epoch: Arc::default(),
            stopped: Arc::default(),
            sockets: Arc::default(),
        };
        let (epoch, stopped, sockets) = (
            proxy.epoch.clone(),
            proxy.stopped.clone(),
            proxy.sockets.clone(),
        );
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((inbound, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                inbound.set_nonblocking(false).unwrap();
                let Ok(outbound) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let born = epoch.load(Ordering::SeqCst);
                {
                    let mut held = sockets.lock().unwrap();
                    held.push(inbound.try_clone().unwrap());
                    held.push(outbound.try_clone().unwrap());
                }
                for (from, to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let epoch = epoch.clone();
                    std::thread::spawn(move || pump(from, to, &epoch, born));
                }
            }
        });
        proxy
    }

    fn freeze(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The URL through the proxy.
    fn url(&self, url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let host = rest.split(['/', '?']).next().unwrap();
        url.replacen(host, &format!("127.0.0.1:{}", self.port), 1)
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        for socket in self.sockets.lock().unwrap().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Forwards while the proxy is in the epoch the connection was born in, then stops reading:
/// the sockets stay open (held by the proxy) and nothing more passes.
fn pump(mut from: TcpStream, mut to: TcpStream, epoch: &AtomicU64, born: u64) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if epoch.load(Ordering::SeqCst) != born || to.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
}

#[test]
fn a_silent_connection_gives_no_stamp_and_is_replaced() {
    let Some(pg) = create("a_silent_connection_gives_no_stamp_and_is_replaced") else {
        return;
    };
    let host = {
        let rest = pg.url.split_once("://").map_or(&*pg.url, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let host = rest.split(['/', '?']).next().unwrap();
        if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:5432")
        }
    };
    let proxy = FreezingProxy::start(host);
    let options = PoolOptions {
        statement_timeout: Some(Duration::from_secs(5)),
        ..PoolOptions::default()
    };
    let proxied = Db::open(&proxy.url(&pg.url), &options).unwrap();
    let (listener, first) = listening(&proxied);

    // The server still runs and the socket stays open: only time tells the connection is gone.
    proxy.freeze();
    let (_, took) = wait_for(LEASE + CHECK_EVERY + Duration::from_millis(500), || {
        listener.stamp().is_none().then_some(())
    })
    .expect("no stamp once the lease has run out");
    eprintln!("no stamp {took:?} after the connection went silent");
    assert!(took <= LEASE + CHECK_EVERY, "{took:?}");
    // A change meanwhile: heard by nobody.
    execute(&mut pg.connect(), "UPDATE link_generation SET n = n + 1");

    let (again, took) = wait_for(STUCK + Duration::from_secs(5), || listener.stamp())
        .expect("a new connection listens after the silent one is abandoned");
    eprintln!("listening again {took:?} after the lease ran out");
    assert_ne!(again, first);
    assert_eq!(counts(&listener).2, 2, "a second connection");
    drop(listener);
    drop(proxy);
}
