//! The outbox of events (migration 000008): written in the transaction of the change they tell
//! of, read by the dispatcher (src/webhooks/dispatcher.rs), the admin lists and the feed.
//!
//! A delivery is claimed before each attempt: its attempts are counted and its `next_attempt_at`
//! moved past the attempt's end, in one statement that skips rows another instance has claimed
//! (PostgreSQL: `FOR UPDATE SKIP LOCKED`, [`super::postgres::webhooks`]; SQLite has one writer at
//! a time, [`super::sqlite::webhooks`]). An instance that stops during an attempt leaves the
//! delivery pending: it is attempted again once its claim lapses.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text, Timestamp};

use super::schema::{event_sequence, webhook_deliveries, webhook_events};
use super::{DbConn, StorageError};
use crate::webhooks::{Event, Subscriber};

/// A delivery's status.
pub const PENDING: &str = "pending";
/// Answered 2xx.
pub const DELIVERED: &str = "delivered";
/// Every attempt of the schedule failed.
pub const FAILED: &str = "failed";

/// An event of the outbox, as written (on PostgreSQL by one statement for any number of events,
/// [`super::postgres::unnest`]). It borrows nothing: diesel keeps the prepared SQLite insert of an
/// array of rows only when their type has no borrowed lifetime ([`insert_events`]).
#[derive(Insertable)]
#[diesel(table_name = webhook_events, treat_none_as_default_value = false)]
pub(crate) struct NewEvent {
    pub position: i64,
    pub event_id: String,
    pub kind: &'static str,
    pub at: NaiveDateTime,
    pub data: String,
    pub email: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = webhook_deliveries, treat_none_as_default_value = false)]
struct NewDelivery<'a> {
    event_position: i64,
    url: &'a str,
    status: &'a str,
    attempts: i32,
    last_error: Option<&'a str>,
    next_attempt_at: NaiveDateTime,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// Writes events and one pending delivery per event and subscriber that receives it. Takes the
/// next positions from `event_sequence` (held until the commit on PostgreSQL: positions follow
/// the commit order).
pub fn append(
    conn: &mut DbConn,
    mut events: Vec<Event>,
    subscribers: &[Subscriber],
) -> Result<(), StorageError> {
    let count = events.len() as i64;
    let last: i64 = crate::on_backend!(conn, c => diesel::update(event_sequence::table)
        .set(event_sequence::n.eq(event_sequence::n + count))
        .returning(event_sequence::n)
        .get_result(c))?;
    let first = last - count + 1;
    let now = super::now();
    let rows: Vec<NewEvent> = events
        .iter_mut()
        .enumerate()
        .map(|(n, event)| NewEvent {
            position: first + n as i64,
            // Time-ordered (UUIDv7): new ids go to the end of the unique index, not to a
            // random page of it.
            event_id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
            kind: event.kind.as_str(),
            at: now,
            // The data is not needed after this: serialised without a copy.
            data: serde_json::Value::Object(std::mem::take(&mut event.data)).to_string(),
            // Kept only for an endpoint that is sent it.
            email: event
                .email
                .as_ref()
                .filter(|_| receivers(subscribers, event).any(|s| s.include_email))
                .cloned(),
        })
        .collect();
    match conn {
        DbConn::Postgres(c) => super::postgres::unnest::insert_outbox(c, &rows)?,
        DbConn::Sqlite(c) => insert_events(c, &rows)?,
    }
    let receivers = |event| receivers(subscribers, event);
    let deliveries: Vec<NewDelivery<'_>> = events
        .iter()
        .enumerate()
        .flat_map(|(n, event)| {
            receivers(event).map(move |s| NewDelivery {
                event_position: first + n as i64,
                url: &s.url,
                status: PENDING,
                attempts: 0,
                last_error: None,
                next_attempt_at: now,
                created_at: now,
                updated_at: now,
            })
        })
        .collect();
    // 8 parameters per row.
    for chunk in deliveries.chunks(500) {
        crate::on_backend!(conn, c => diesel::insert_into(webhook_deliveries::table)
            .values(chunk)
            .execute(c))?;
    }
    Ok(())
}

/// SQLite: the outbox's rows, in inserts of fixed numbers of rows (prepared once).
fn insert_events(
    conn: &mut diesel::SqliteConnection,
    rows: &[NewEvent],
) -> Result<(), StorageError> {
    super::sqlite::for_each_chunk!(rows, chunk => {
        diesel::insert_into(webhook_events::table)
            .values(chunk)
            .execute(conn)?;
    });
    Ok(())
}

/// The subscribers that receive `event`.
fn receivers<'a>(
    subscribers: &'a [Subscriber],
    event: &'a Event,
) -> impl Iterator<Item = &'a Subscriber> + 'a {
    subscribers
        .iter()
        .filter(move |s| s.events.contains(&event.kind))
}

/// A delivery claimed for an attempt.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    /// The delivery's id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Its event.
    #[diesel(sql_type = BigInt)]
    pub event_position: i64,
    /// The endpoint.
    #[diesel(sql_type = Text)]
    pub url: String,
    /// Attempts started, this one included.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
}

/// Claims at most `limit` pending deliveries due at `now` to the endpoints `urls`, oldest due
/// first, that no other instance holds: counts the attempt and moves `next_attempt_at` to
/// `lapse`.
pub fn claim_due(
    conn: &mut DbConn,
    now: NaiveDateTime,
    lapse: NaiveDateTime,
    limit: i64,
    urls: &[String],
) -> Result<Vec<Claimed>, StorageError> {
    Ok(match conn {
        DbConn::Postgres(c) => diesel::sql_query(super::postgres::webhooks::CLAIM_DUE)
            .bind::<Timestamp, _>(lapse)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .bind::<diesel::sql_types::Array<Text>, _>(urls)
            .load(c)?,
        DbConn::Sqlite(c) => diesel::sql_query(super::sqlite::webhooks::CLAIM_DUE)
            .bind::<Timestamp, _>(lapse)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .bind::<Text, _>(serde_json::Value::from(urls.to_vec()).to_string())
            .load(c)?,
    })
}

/// An event as written.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events)]
pub struct StoredEvent {
    /// Its position (the feed's cursor).
    pub position: i64,
    /// Its `webhook-id`.
    pub event_id: String,
    /// Its type.
    pub kind: String,
    /// When it was written.
    pub at: NaiveDateTime,
    /// The body's `data`, JSON.
    pub data: String,
    /// The email, when kept.
    pub email: Option<String>,
}

impl StoredEvent {
    /// The body's `data` object.
    pub fn data(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(&self.data) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}

/// The events at these positions.
pub fn events_at(conn: &mut DbConn, positions: &[i64]) -> Result<Vec<StoredEvent>, StorageError> {
    let mut found = Vec::with_capacity(positions.len());
    for chunk in positions.chunks(500) {
        found.extend(
            webhook_events::table
                .filter(webhook_events::position.eq_any(chunk))
                .select(StoredEvent::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// The feed: at most `limit` events after position `after`, in commit order.
pub fn feed(conn: &mut DbConn, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StorageError> {
    Ok(webhook_events::table
        .filter(webhook_events::position.gt(after))
        .order(webhook_events::position)
        .limit(limit)
        .select(StoredEvent::as_select())
        .load(conn)?)
}

/// Records the end of an attempt of a delivery still pending: `status`, the error, and when a
/// pending delivery is tried next.
pub fn finish(
    conn: &mut DbConn,
    id: i64,
    status: &str,
    last_error: Option<&str>,
    next_attempt_at: NaiveDateTime,
) -> Result<(), StorageError> {
    let update = diesel::update(
        webhook_deliveries::table
            .find(id)
            .filter(webhook_deliveries::status.eq(PENDING)),
    )
    .set((
        webhook_deliveries::status.eq(status),
        webhook_deliveries::last_error.eq(last_error),
        webhook_deliveries::next_attempt_at.eq(next_attempt_at),
        webhook_deliveries::updated_at.eq(super::now()),
    ));
    crate::on_backend!(conn, c => update.execute(c))?;
    Ok(())
}

/// A delivery as listed, with its event's id and type.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    /// The delivery's id.
    pub id: i64,
    /// The event's `webhook-id`.
    #[diesel(select_expression = webhook_events::event_id)]
    pub event_id: String,
    /// The event's type.
    #[diesel(select_expression = webhook_events::kind)]
    pub kind: String,
    /// The endpoint.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts started.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: NaiveDateTime,
}

/// At most `limit` deliveries of a status with ids after `after`, oldest first.
pub fn deliveries(
    conn: &mut DbConn,
    status: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StorageError> {
    Ok(webhook_deliveries::table
        .inner_join(webhook_events::table)
        .filter(webhook_deliveries::status.eq(status))
        .filter(webhook_deliveries::id.gt(after.unwrap_or(0)))
        .order(webhook_deliveries::id)
        .limit(limit)
        .select(DeliveryRow::as_select())
        .load(conn)?)
}

/// One delivery.
pub fn delivery(conn: &mut DbConn, id: i64) -> Result<Option<DeliveryRow>, StorageError> {
    Ok(webhook_deliveries::table
        .inner_join(webhook_events::table)
        .filter(webhook_deliveries::id.eq(id))
        .select(DeliveryRow::as_select())
        .first(conn)
        .optional()?)
}

/// Makes a failed delivery pending again, due now, with a new schedule (its attempts start
/// again from zero; its last error is kept). False when it is not failed.
pub fn retry(conn: &mut DbConn, id: i64) -> Result<bool, StorageError> {
    let now = super::now();
    let changed = diesel::update(
        webhook_deliveries::table
            .find(id)
            .filter(webhook_deliveries::status.eq(FAILED)),
    )
    .set((
        webhook_deliveries::status.eq(PENDING),
        webhook_deliveries::attempts.eq(0),
        webhook_deliveries::next_attempt_at.eq(now),
        webhook_deliveries::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Fails the pending deliveries to endpoints that are not `configured` (removed from the
/// configuration since their events were written: nothing to sign them with); returns how many.
pub fn fail_unconfigured(conn: &mut DbConn, configured: &[String]) -> Result<usize, StorageError> {
    let now = super::now();
    Ok(diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::status.eq(PENDING))
            .filter(webhook_deliveries::url.ne_all(configured)),
    )
    .set((
        webhook_deliveries::status.eq(FAILED),
        webhook_deliveries::last_error.eq("the webhook is no longer configured"),
        webhook_deliveries::updated_at.eq(now),
    ))
    .execute(conn)?)
}

/// Deletes deliveries delivered before `before`; returns how many.
pub fn prune_delivered(conn: &mut DbConn, before: NaiveDateTime) -> Result<usize, StorageError> {
    Ok(diesel::delete(
        webhook_deliveries::table
            .filter(webhook_deliveries::status.eq(DELIVERED))
            .filter(webhook_deliveries::updated_at.lt(before)),
    )
    .execute(conn)?)
}

/// When the oldest pending delivery was written (the first by id: the index on status and id
/// finds it without reading the others).
pub fn oldest_pending(conn: &mut DbConn) -> Result<Option<NaiveDateTime>, StorageError> {
    Ok(webhook_deliveries::table
        .filter(webhook_deliveries::status.eq(PENDING))
        .order(webhook_deliveries::id)
        .select(webhook_deliveries::created_at)
        .first(conn)
        .optional()?)
}
