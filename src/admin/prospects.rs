//! B2B prospects: a business onboarding request is recorded (email, company, names), listed while
//! pending, then approved or rejected.
//!
//! Approving creates, in one transaction, the organization (the company) and the B2B person
//! customer with the requester's email in the prospect's legal entity. The requester's next
//! sign-up on that legal entity's B2B channel then finds exactly one candidate and links
//! automatically. An approval that would give the email a second B2B person record (and so make
//! the sign-up fail with the multiple-accounts error) is refused instead.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::customers::{account_number_exists, name};
use super::{
    cursor, invalid_from, page_size, reason, required_email, rfc3339, Admin, AdminError,
    AdminResult, Context, Page, StatusQuery,
};
use crate::domain::customer::MAX_NAME_CHARS;
use crate::domain::AccountNumber;
use crate::storage::customers::{self, NewCustomer};
use crate::storage::prospects::{self, NewProspect, Prospect, ProspectDecision};
use crate::storage::{self, DbConn};
use crate::webhooks::Event;

/// The statuses of a prospect.
pub const STATUSES: [&str; 3] = ["pending", "approved", "rejected"];

/// A business onboarding request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewProspectRequest {
    /// The requester's email: the B2B person customer gets it on approval.
    #[schema(required = true)]
    pub email: Option<String>,
    /// The requester's company: the organization gets its name on approval.
    #[schema(required = true)]
    pub company_name: Option<String>,
    /// The legal entity of the B2B channel the requester signs up on.
    #[schema(required = true)]
    pub legal_entity: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
}

/// Account numbers for the customers an approval creates; generated when absent.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproveProspectRequest {
    /// The organization's account number.
    pub organization_account_number: Option<String>,
    /// The B2B person customer's account number.
    pub person_account_number: Option<String>,
}

/// Why a prospect is rejected.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejectProspectRequest {
    /// Why (kept with the prospect and in the audit log); at most 500 characters.
    pub reason: Option<String>,
}

/// A prospect as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProspectView {
    /// The prospect's id.
    pub id: i64,
    /// The requester's email.
    pub email: String,
    /// The company.
    pub company_name: String,
    /// The legal entity.
    pub legal_entity: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// Who recorded the request.
    pub requested_by: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When it was decided (RFC 3339, UTC).
    pub decided_at: Option<String>,
    /// Why it was rejected.
    pub decision_reason: Option<String>,
    /// The organization created on approval.
    pub organization_account_number: Option<String>,
    /// The B2B person customer created on approval.
    pub person_account_number: Option<String>,
    /// When the request was recorded (RFC 3339, UTC).
    pub created_at: String,
}

impl Admin {
    /// Records a pending prospect. A pending request for the same email and legal entity, or an
    /// existing B2B person customer with that email there, is a conflict.
    pub fn record_prospect(
        &self,
        ctx: &Context,
        request: &NewProspectRequest,
    ) -> AdminResult<ProspectView> {
        let address = required_email("email", request.email.as_deref())?;
        let company = name("companyName", request.company_name.as_deref())?
            .ok_or_else(|| AdminError::invalid("companyName", "is required"))?;
        let legal_entity =
            self.served_legal_entity("legalEntity", request.legal_entity.as_deref())?;
        let first_name = name("firstName", request.first_name.as_deref())?;
        let last_name = name("lastName", request.last_name.as_deref())?;
        let mut conn = self.conn()?;
        let result = storage::write_transaction(&mut conn, |conn| {
            if let Some(existing) =
                prospects::find_pending(conn, legal_entity.as_str(), address.key())?
            {
                return Err(pending_exists(existing.id));
            }
            let b2b = customers::find_candidates(conn, legal_entity.as_str(), address.key(), true)?;
            if let Some(first) = b2b.first() {
                return Err(AdminError::conflict(
                    "customer_exists",
                    Some("email"),
                    format!(
                        "a B2B customer with this email exists in {legal_entity} already ({}); \
                         the requester can sign up now",
                        first.account_number
                    ),
                ));
            }
            let now = storage::now();
            let id = prospects::insert(
                conn,
                &NewProspect {
                    email: address.as_str(),
                    email_key: address.key(),
                    legal_entity: legal_entity.as_str(),
                    company_name: &company,
                    first_name: first_name.as_deref(),
                    last_name: last_name.as_deref(),
                    status: "pending",
                    requested_by: ctx.actor.as_str(),
                    created_at: now,
                    updated_at: now,
                },
            )?;
            let mut event = ctx.event("ProspectRecorded");
            event.email_key = Some(address.key().to_string());
            event.detail = Some(format!("prospect {id} for {legal_entity}"));
            storage::audit::insert(conn, &[event])?;
            Ok(id)
        });
        let id = match result {
            Ok(id) => id,
            // Two requests at once: the unique index on pending prospects decided.
            Err(AdminError::Storage(e)) if e.is_unique_violation() => {
                let existing =
                    prospects::find_pending(&mut conn, legal_entity.as_str(), address.key())?;
                return Err(pending_exists(existing.map(|p| p.id).unwrap_or_default()));
            }
            Err(other) => return Err(other),
        };
        self.prospect(id)
    }

    /// A prospect by id.
    pub fn prospect(&self, id: i64) -> AdminResult<ProspectView> {
        let mut conn = self.conn()?;
        let prospect = find_prospect(&mut conn, id)?;
        view(&mut conn, prospect)
    }

    /// Prospects of a status (pending by default), oldest first.
    pub fn prospects(&self, query: &StatusQuery) -> AdminResult<Page<ProspectView>> {
        let status = query
            .status
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("pending")
            .to_ascii_lowercase();
        if !STATUSES.contains(&status.as_str()) {
            return Err(AdminError::invalid(
                "status",
                "must be pending, approved or rejected",
            ));
        }
        let limit = page_size(query.limit.as_deref())?;
        let after = cursor(query.cursor.as_deref())?;
        let mut conn = self.conn()?;
        let found = prospects::list(&mut conn, &status, after, limit + 1)?;
        let more = found.len() as i64 > limit;
        let mut items = Vec::new();
        for prospect in found.into_iter().take(limit as usize) {
            items.push(view(&mut conn, prospect)?);
        }
        let next_cursor = if more {
            items.last().map(|p| p.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Approves a pending prospect: creates the organization and the B2B person customer.
    pub fn approve_prospect(
        &self,
        ctx: &Context,
        id: i64,
        request: &ApproveProspectRequest,
    ) -> AdminResult<ProspectView> {
        let organization_number = account_number(
            "organizationAccountNumber",
            &request.organization_account_number,
        )?;
        let person_number = account_number("personAccountNumber", &request.person_account_number)?;
        if organization_number.is_some() && organization_number == person_number {
            return Err(AdminError::invalid(
                "personAccountNumber",
                "must differ from organizationAccountNumber",
            ));
        }
        let mut conn = self.conn()?;
        for _ in 0..super::MAX_ATTEMPTS {
            let result = storage::write_transaction(&mut conn, |conn| {
                self.approve_in_transaction(
                    conn,
                    ctx,
                    id,
                    organization_number.as_ref(),
                    person_number.as_ref(),
                )
            });
            match result {
                Ok(()) => {
                    self.told();
                    return self.prospect(id);
                }
                // A generated number was taken meanwhile: try again with new ones.
                Err(AdminError::Storage(e)) if e.is_unique_violation() => {
                    if organization_number.is_some() && person_number.is_some() {
                        return Err(AdminError::conflict(
                            "account_number_exists",
                            Some("personAccountNumber"),
                            "an account number was taken meanwhile".into(),
                        ));
                    }
                }
                Err(other) => return Err(other),
            }
        }
        Err(AdminError::conflict(
            "account_number_exists",
            None,
            "could not generate unused account numbers; try again".into(),
        ))
    }

    fn approve_in_transaction(
        &self,
        conn: &mut DbConn,
        ctx: &Context,
        id: i64,
        organization_number: Option<&AccountNumber>,
        person_number: Option<&AccountNumber>,
    ) -> AdminResult<()> {
        let prospect = find_prospect(conn, id)?;
        require_pending(&prospect)?;
        let existing =
            customers::find_candidates(conn, &prospect.legal_entity, &prospect.email_key, true)?;
        if let Some(first) = existing.first() {
            return Err(AdminError::conflict(
                "duplicate_email",
                Some("email"),
                format!(
                    "a B2B customer with this email exists in {} already ({}); approving would \
                     make the sign-up fail with the multiple-accounts error",
                    prospect.legal_entity, first.account_number
                ),
            ));
        }
        // Numbers the caller chose must be free; generated ones are retried on a collision.
        for (field, number) in [
            ("organizationAccountNumber", organization_number),
            ("personAccountNumber", person_number),
        ] {
            if let Some(number) = number {
                if customers::find_by_account_number(conn, number.as_str())?.is_some() {
                    return Err(account_number_exists(field, number.as_str()));
                }
            }
        }
        let organization_number = organization_number
            .cloned()
            .unwrap_or_else(|| AccountNumber::generate(&self.account_number_prefix));
        let person_number = person_number
            .cloned()
            .unwrap_or_else(|| AccountNumber::generate(&self.account_number_prefix));
        let now = storage::now();
        let company: String = prospect.company_name.chars().take(MAX_NAME_CHARS).collect();
        let organization_id = customers::insert(
            conn,
            &NewCustomer {
                account_number: organization_number.as_str(),
                legal_entity: &prospect.legal_entity,
                party_type: "organization",
                is_b2b: true,
                primary_email: None,
                email_key: None,
                first_name: Some(&company),
                last_name: None,
                origin: "prospect",
                creation_key: None,
                created_at: now,
                updated_at: now,
            },
        )?;
        let person_id = customers::insert(
            conn,
            &NewCustomer {
                account_number: person_number.as_str(),
                legal_entity: &prospect.legal_entity,
                party_type: "person",
                is_b2b: true,
                primary_email: Some(&prospect.email),
                email_key: Some(&prospect.email_key),
                first_name: prospect.first_name.as_deref(),
                last_name: prospect.last_name.as_deref(),
                origin: "prospect",
                creation_key: None,
                created_at: now,
                updated_at: now,
            },
        )?;
        let decided = prospects::decide(
            conn,
            id,
            &ProspectDecision {
                status: "approved",
                decided_by: ctx.actor.as_str(),
                reason: None,
                organization_id: Some(organization_id),
                person_id: Some(person_id),
                at: now,
            },
        )?;
        if !decided {
            return Err(not_pending(id, "decided meanwhile"));
        }
        let mut event = ctx.event("ProspectApproved");
        event.email_key = Some(prospect.email_key.clone());
        event.account_number = Some(person_number.to_string());
        event.detail = Some(format!(
            "prospect {id}: organization {organization_number} and B2B person {person_number} \
             created in {}",
            prospect.legal_entity
        ));
        storage::audit::insert(conn, &[event])?;
        let legal_entity = prospect.legal_entity.as_str();
        self.tell(
            conn,
            vec![
                Event::customer_created(
                    organization_number.as_str(),
                    legal_entity,
                    "prospect",
                    None,
                    None,
                ),
                Event::customer_created(
                    person_number.as_str(),
                    legal_entity,
                    "prospect",
                    None,
                    Some(&prospect.email),
                ),
            ],
        )?;
        Ok(())
    }

    /// Rejects a pending prospect.
    pub fn reject_prospect(
        &self,
        ctx: &Context,
        id: i64,
        request: &RejectProspectRequest,
    ) -> AdminResult<ProspectView> {
        let why = reason("reason", request.reason.as_deref())?;
        let mut conn = self.conn()?;
        storage::write_transaction(&mut conn, |conn| {
            let prospect = find_prospect(conn, id)?;
            require_pending(&prospect)?;
            let decided = prospects::decide(
                conn,
                id,
                &ProspectDecision {
                    status: "rejected",
                    decided_by: ctx.actor.as_str(),
                    reason: why.as_deref(),
                    organization_id: None,
                    person_id: None,
                    at: storage::now(),
                },
            )?;
            if !decided {
                return Err(not_pending(id, "decided meanwhile"));
            }
            let mut event = ctx.event("ProspectRejected");
            event.email_key = Some(prospect.email_key.clone());
            event.detail = Some(match &why {
                Some(why) => format!("prospect {id} rejected: {why}"),
                None => format!("prospect {id} rejected"),
            });
            storage::audit::insert(conn, &[event])?;
            Ok::<_, AdminError>(())
        })?;
        self.prospect(id)
    }
}

fn account_number(field: &str, raw: &Option<String>) -> AdminResult<Option<AccountNumber>> {
    match raw.as_deref().filter(|v| !v.trim().is_empty()) {
        Some(raw) => Ok(Some(
            AccountNumber::parse(raw).map_err(|m| invalid_from(field, &m))?,
        )),
        None => Ok(None),
    }
}

fn find_prospect(conn: &mut DbConn, id: i64) -> AdminResult<Prospect> {
    prospects::find(conn, id)?
        .ok_or_else(|| AdminError::not_found("id", format!("no prospect {id}")))
}

fn require_pending(prospect: &Prospect) -> AdminResult<()> {
    if prospect.status != "pending" {
        return Err(not_pending(prospect.id, &prospect.status));
    }
    Ok(())
}

fn not_pending(id: i64, status: &str) -> AdminError {
    AdminError::conflict(
        "prospect_not_pending",
        Some("id"),
        format!("prospect {id} is not pending ({status})"),
    )
}

fn pending_exists(id: i64) -> AdminError {
    AdminError::conflict(
        "prospect_pending",
        Some("email"),
        format!("a pending request for this email and legal entity exists already (prospect {id})"),
    )
}

fn view(conn: &mut DbConn, prospect: Prospect) -> AdminResult<ProspectView> {
    let number_of = |conn: &mut DbConn, id: Option<i64>| -> AdminResult<Option<String>> {
        Ok(match id {
            Some(id) => customers::find(conn, id)?.map(|c| c.account_number),
            None => None,
        })
    };
    Ok(ProspectView {
        organization_account_number: number_of(conn, prospect.organization_id)?,
        person_account_number: number_of(conn, prospect.person_id)?,
        id: prospect.id,
        email: prospect.email,
        company_name: prospect.company_name,
        legal_entity: prospect.legal_entity,
        first_name: prospect.first_name,
        last_name: prospect.last_name,
        status: prospect.status,
        requested_by: prospect.requested_by,
        decided_by: prospect.decided_by,
        decided_at: prospect.decided_at.map(rfc3339),
        decision_reason: prospect.decision_reason,
        created_at: rfc3339(prospect.created_at),
    })
}
