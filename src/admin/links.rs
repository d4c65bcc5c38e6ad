//! Identity links: list by customer or identity, unlink, move. Only an administrator moves or
//! removes a link (DESIGN section 1), and every change is audited with who did it and why.
//!
//! Links are never deleted: unlinking deactivates the row; moving deactivates it and inserts a
//! new active link (`linked_by = admin`) to the other customer, so the history stays readable.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::customers::find_customer;
use super::{
    cursor, page_size, reason, required, rfc3339, Admin, AdminError, AdminResult, Context, Page,
};
use crate::storage::links::{self, Link, NewLink};
use crate::storage::{self, DbConn};
use crate::webhooks::{Event, LinkFacts};

/// Longest issuer or subject accepted in a query, in characters.
const MAX_IDENTITY_PART: usize = 1024;

/// An identity link as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// The link's id (for unlink and move).
    pub id: i64,
    /// Identity issuer.
    pub issuer: String,
    /// Identity subject (the B2C object id).
    pub subject: String,
    /// The customer's account number.
    pub account_number: String,
    /// `emailAddress`, `federated`, ...
    pub sign_in_type: String,
    /// `local` or the social identity provider.
    pub identity_provider: Option<String>,
    /// The normalised email under which the identity was linked.
    pub email_key: String,
    /// `auto` (by the linking rules) or `admin` (moved by an administrator).
    pub linked_by: String,
    /// Whether the link is active; inactive links are kept as history.
    pub active: bool,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// Last change (RFC 3339, UTC): when it was deactivated, for an inactive link.
    pub updated_at: String,
}

/// Which links to list: those of a customer, or those of an identity.
#[derive(Debug, Clone, Default)]
pub struct LinkQuery {
    /// The customer's account number.
    pub account_number: Option<String>,
    /// The identity's issuer (with `subject`).
    pub issuer: Option<String>,
    /// The identity's subject (with `issuer`).
    pub subject: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// Cursor of the previous page.
    pub cursor: Option<String>,
}

/// Why a link is removed.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnlinkRequest {
    /// Why (kept in the audit log); at most 500 characters.
    pub reason: Option<String>,
}

/// Where a link moves, and why.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveLinkRequest {
    /// The account number of the customer the identity moves to.
    #[schema(required = true)]
    pub account_number: Option<String>,
    /// Why (required; kept in the audit log); at most 500 characters.
    #[schema(required = true)]
    pub reason: Option<String>,
}

impl Admin {
    /// A page of the links of a customer or of an identity, active or not, oldest first.
    pub fn links(&self, query: &LinkQuery) -> AdminResult<Page<LinkView>> {
        let limit = page_size(query.limit.as_deref())?;
        let after = cursor(query.cursor.as_deref())?;
        let number = query
            .account_number
            .as_deref()
            .filter(|v| !v.trim().is_empty());
        let issuer = query.issuer.as_deref().filter(|v| !v.trim().is_empty());
        let subject = query.subject.as_deref().filter(|v| !v.trim().is_empty());
        let mut conn = self.conn()?;
        // One more than the page, to know whether another page follows.
        let found: Vec<LinkView> = match (number, issuer, subject) {
            (Some(number), None, None) => {
                let customer = find_customer(&mut conn, number)?;
                links::list_for_customer(&mut conn, customer.id, after, limit + 1)?
                    .into_iter()
                    .map(|link| view(link, customer.account_number.clone()))
                    .collect()
            }
            (None, Some(_), _) | (None, _, Some(_)) => {
                let issuer = identity_part("issuer", issuer)?;
                let subject = identity_part("subject", subject)?;
                links::list_for_identity(&mut conn, issuer, subject, after, limit + 1)?
                    .into_iter()
                    .map(|(link, number)| view(link, number))
                    .collect()
            }
            (Some(_), _, _) => {
                return Err(AdminError::invalid(
                    "accountNumber",
                    "give either accountNumber or issuer and subject, not both",
                ))
            }
            (None, None, None) => {
                return Err(AdminError::invalid(
                    "accountNumber",
                    "give accountNumber, or issuer and subject",
                ))
            }
        };
        let more = found.len() as i64 > limit;
        let items: Vec<LinkView> = found.into_iter().take(limit as usize).collect();
        let next_cursor = if more {
            items.last().map(|link| link.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Deactivates a link; the row is kept. An inactive link is a conflict.
    pub fn unlink(
        &self,
        ctx: &Context,
        link_id: i64,
        request: &UnlinkRequest,
    ) -> AdminResult<LinkView> {
        let why = reason("reason", request.reason.as_deref())?;
        let mut conn = self.conn()?;
        storage::write_transaction(&mut conn, |conn| {
            let (link, number) = find_link(conn, link_id)?;
            deactivate(conn, &link)?;
            let mut event = link_event(ctx, "Unlinked", &link, &number);
            event.detail = Some(match &why {
                Some(why) => format!("link {} removed: {why}", link.id),
                None => format!("link {} removed", link.id),
            });
            storage::audit::insert(conn, &[event])?;
            self.tell(
                conn,
                vec![Event::identity_unlinked(
                    &facts(&link, &number, link.id),
                    why.as_deref(),
                )],
            )?;
            Ok::<_, AdminError>(())
        })?;
        self.told();
        let (link, number) = find_link(&mut conn, link_id)?;
        Ok(view(link, number))
    }

    /// Moves a link to another customer: deactivates it and links the identity to the target.
    /// Returns the new link.
    pub fn move_link(
        &self,
        ctx: &Context,
        link_id: i64,
        request: &MoveLinkRequest,
    ) -> AdminResult<LinkView> {
        let target_number = required("accountNumber", request.account_number.as_deref())?;
        let why = reason("reason", request.reason.as_deref())?
            .ok_or_else(|| AdminError::invalid("reason", "is required to move a link"))?;
        let mut conn = self.conn()?;
        let new_id = storage::write_transaction(&mut conn, |conn| {
            let (link, from_number) = find_link(conn, link_id)?;
            let target = find_customer(conn, target_number)?;
            if target.id == link.customer_id {
                return Err(AdminError::conflict(
                    "same_customer",
                    Some("accountNumber"),
                    format!("link {link_id} already belongs to customer {from_number}"),
                ));
            }
            if !target.active {
                return Err(AdminError::conflict(
                    "customer_inactive",
                    Some("accountNumber"),
                    format!("customer {} is inactive", target.account_number),
                ));
            }
            deactivate(conn, &link)?;
            let now = storage::now();
            // The administrator confirms the identity belongs to the target as it is now, so
            // the link is recorded under the target's email: the review guard of DESIGN
            // section 5 then does not fire for the target's own email.
            let email_key = target.email_key.as_deref().unwrap_or(&link.email_key);
            let new_id = links::insert_returning_id(
                conn,
                &NewLink {
                    issuer: &link.issuer,
                    subject: &link.subject,
                    customer_id: target.id,
                    sign_in_type: &link.sign_in_type,
                    identity_provider: link.identity_provider.as_deref(),
                    email_key,
                    linked_by: "admin",
                    created_at: now,
                    updated_at: now,
                },
            )?;
            let mut event = link_event(ctx, "LinkMoved", &link, &target.account_number);
            event.email_key = Some(email_key.to_string());
            event.detail = Some(format!(
                "link {} moved from {from_number} to {} (new link {new_id}): {why}",
                link.id, target.account_number
            ));
            storage::audit::insert(conn, &[event])?;
            self.tell(
                conn,
                vec![Event::identity_moved(
                    &from_number,
                    link.id,
                    &facts(&link, &target.account_number, new_id),
                    &why,
                )],
            )?;
            Ok(new_id)
        })?;
        self.told();
        let (link, number) = find_link(&mut conn, new_id)?;
        Ok(view(link, number))
    }
}

fn find_link(conn: &mut DbConn, id: i64) -> AdminResult<(Link, String)> {
    links::find(conn, id)?.ok_or_else(|| AdminError::not_found("id", format!("no link {id}")))
}

fn deactivate(conn: &mut DbConn, link: &Link) -> AdminResult<()> {
    if !links::deactivate(conn, link.id, storage::now())? {
        return Err(AdminError::conflict(
            "link_inactive",
            Some("id"),
            format!("link {} is already inactive", link.id),
        ));
    }
    Ok(())
}

fn identity_part<'a>(field: &str, raw: Option<&'a str>) -> AdminResult<&'a str> {
    let value = required(field, raw)?;
    if value.chars().count() > MAX_IDENTITY_PART || value.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            field,
            format!("must be at most {MAX_IDENTITY_PART} characters without control characters"),
        ));
    }
    Ok(value)
}

fn link_event(
    ctx: &Context,
    outcome: &str,
    link: &Link,
    account_number: &str,
) -> storage::audit::AuditEvent {
    let mut event = ctx.event(outcome);
    event.issuer = Some(link.issuer.clone());
    event.subject = Some(link.subject.clone());
    event.email_key = Some(link.email_key.clone());
    event.account_number = Some(account_number.to_string());
    event
}

/// The identity of `link`, with a customer's account number and a link id (the new link's, for
/// a move).
fn facts<'a>(link: &'a Link, account_number: &'a str, link_id: i64) -> LinkFacts<'a> {
    LinkFacts {
        account_number,
        issuer: &link.issuer,
        subject: &link.subject,
        link_id,
    }
}

fn view(link: Link, account_number: String) -> LinkView {
    LinkView {
        id: link.id,
        issuer: link.issuer,
        subject: link.subject,
        account_number,
        sign_in_type: link.sign_in_type,
        identity_provider: link.identity_provider,
        email_key: link.email_key,
        linked_by: link.linked_by,
        active: link.active,
        created_at: rfc3339(link.created_at),
        updated_at: rfc3339(link.updated_at),
    }
}
