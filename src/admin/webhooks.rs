//! Webhook deliveries (list, retry) and the pull feed of events, for the admin API and the CLI.

use serde::Serialize;
use utoipa::ToSchema;

use super::{
    cursor, page_size, rfc3339, Admin, AdminError, AdminResult, Context, Page, StatusQuery,
};
use crate::storage::webhooks::{self as store, DeliveryRow, DELIVERED, FAILED, PENDING};

/// A delivery of an event to one endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// The delivery's id (for a retry).
    pub id: i64,
    /// The event's id: the `webhook-id` of every attempt, and its id in the feed.
    pub event_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    /// The endpoint.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts started.
    pub attempts: i32,
    /// Why the last attempt failed (absent when none did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (pending deliveries only); RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(row: DeliveryRow) -> Self {
        let pending = row.status == PENDING;
        DeliveryView {
            id: row.id,
            event_id: row.event_id,
            kind: row.kind,
            url: row.url,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: pending.then(|| rfc3339(row.next_attempt_at)),
        }
    }
}

/// An event of the feed: its id and the body every endpoint is sent (without the email).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// The event's id (the `webhook-id` of its deliveries).
    pub id: String,
    /// `customer.created`, `identity.linked`, `identity.unlinked` or `identity.moved`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    /// When it was written; RFC 3339.
    pub timestamp: String,
    /// What it tells (only the fields that apply).
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// The events after the cursor, in commit order.
    pub items: Vec<EventView>,
    /// Always present: the position after the last item, or the cursor given when the page is
    /// empty. Keep it and ask again with `after` later.
    pub next_cursor: String,
}

/// The query of the feed.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// A `nextCursor` of an earlier page; the beginning when absent.
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<String>,
}

impl Admin {
    /// Deliveries of a status (pending by default), oldest first.
    pub fn webhook_deliveries(&self, query: &StatusQuery) -> AdminResult<Page<DeliveryView>> {
        let status = query
            .status
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(PENDING)
            .to_ascii_lowercase();
        if ![PENDING, DELIVERED, FAILED].contains(&status.as_str()) {
            return Err(AdminError::invalid(
                "status",
                "must be pending, delivered or failed",
            ));
        }
        let limit = page_size(query.limit.as_deref())?;
        let after = cursor(query.cursor.as_deref())?;
        let mut conn = self.conn()?;
        let mut found = store::deliveries(&mut conn, &status, after, limit + 1)?;
        let more = found.len() as i64 > limit;
        found.truncate(limit as usize);
        let items: Vec<DeliveryView> = found.into_iter().map(DeliveryView::from).collect();
        let next_cursor = if more {
            items.last().map(|d| d.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Makes a failed delivery pending again, due now, with its schedule from the start.
    pub fn retry_delivery(&self, ctx: &Context, id: i64) -> AdminResult<DeliveryView> {
        let mut conn = self.conn()?;
        // Read in the transaction: as the retry left it (the dispatcher may claim it at once).
        let retried = crate::storage::write_transaction(&mut conn, |conn| {
            let Some(delivery) = store::delivery(conn, id)? else {
                return Err(AdminError::not_found("id", format!("no delivery {id}")));
            };
            if !store::retry(conn, id)? {
                return Err(AdminError::conflict(
                    "delivery_not_failed",
                    Some("id"),
                    format!("delivery {id} is {}, not failed", delivery.status),
                ));
            }
            let mut event = ctx.event("WebhookRetried");
            event.detail = Some(format!(
                "delivery {id} of {} ({}) to {}",
                delivery.event_id, delivery.kind, delivery.url
            ));
            crate::storage::audit::insert(conn, &[event])?;
            store::delivery(conn, id)?
                .ok_or_else(|| AdminError::not_found("id", format!("no delivery {id}")))
        })?;
        self.told();
        Ok(DeliveryView::from(retried))
    }

    /// The feed: events after a cursor, in commit order.
    pub fn events(&self, query: &EventQuery) -> AdminResult<EventPage> {
        let limit = page_size(query.limit.as_deref())?;
        let after = match query.after.as_deref().map(str::trim) {
            None => 0,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| AdminError::invalid("after", "is not a cursor of the feed"))?,
        };
        let mut conn = self.conn()?;
        let found = store::feed(&mut conn, after, limit)?;
        let next_cursor = found.last().map_or(after, |e| e.position).to_string();
        let items = found
            .into_iter()
            .map(|e| EventView {
                timestamp: rfc3339(e.at),
                data: e.data(),
                id: e.event_id,
                kind: e.kind,
            })
            .collect();
        Ok(EventPage { items, next_cursor })
    }
}
