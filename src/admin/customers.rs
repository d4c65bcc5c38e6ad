//! Customers: create, read, search, update, deactivate.
//!
//! Changing a primary email never moves a link: the customer's identities stay linked, and the
//! linking rules then refuse a *new* identity under the new email with `LinkRequiresReview`
//! while identities linked under the old email are active (DESIGN section 5). The change clears
//! the race guard (`creation_key`) of a record autolink created, so that a new sign-up with the
//! old email can create a record again instead of colliding with this one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    cursor, double_option, email, invalid_from, page_size, required, rfc3339, Admin, AdminError,
    AdminResult, Context, Page, MAX_ATTEMPTS,
};
use crate::domain::customer::parse_name;
use crate::domain::{AccountNumber, EmailAddress, PartyType};
use crate::storage::customers::{self, Customer, CustomerChanges, NewCustomer};
use crate::storage::{self, DbConn};
use crate::webhooks::Event;

/// A customer to create.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCustomerRequest {
    /// The account number; generated (the configured prefix and 12 digits) when absent.
    /// 1 to 64 characters without spaces; an existing number is a conflict (409).
    pub account_number: Option<String>,
    /// The legal entity; one that a configured channel serves.
    #[schema(required = true)]
    pub legal_entity: Option<String>,
    /// `person` or `organization`.
    #[schema(required = true)]
    pub party_type: Option<String>,
    /// Whether the customer is a business (B2B) customer; false when absent.
    pub is_b2b: Option<bool>,
    /// The primary email; only persons with an email are linking candidates.
    pub primary_email: Option<String>,
    /// First name (or the company name of an organization).
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
}

/// Changes to a customer: absent fields are left alone, `null` removes a value.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomerUpdate {
    /// The B2B flag (it cannot be removed: `null` is refused).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<bool>)]
    pub is_b2b: Option<Option<bool>>,
    /// The primary email; `null` removes it. Existing links are never moved.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub primary_email: Option<Option<String>>,
    /// First name; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub first_name: Option<Option<String>>,
    /// Last name; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub last_name: Option<Option<String>>,
    /// Cannot be changed (refused with 400): create a new customer instead.
    #[serde(default)]
    #[schema(ignore)]
    pub legal_entity: Option<serde_json::Value>,
    /// Cannot be changed (refused with 400): create a new customer instead.
    #[serde(default)]
    #[schema(ignore)]
    pub party_type: Option<serde_json::Value>,
    /// Cannot be changed (refused with 400).
    #[serde(default)]
    #[schema(ignore)]
    pub account_number: Option<serde_json::Value>,
}

/// A customer as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    /// The account number.
    pub account_number: String,
    /// The legal entity.
    pub legal_entity: String,
    /// `person` or `organization`.
    pub party_type: String,
    /// Whether the customer is a business customer.
    pub is_b2b: bool,
    /// The primary email as given.
    pub primary_email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Where the record came from: `import`, `admin`, `prospect` or `autolink`.
    pub origin: String,
    /// Whether the record is active (inactive records are never linking candidates).
    pub active: bool,
    /// Number of active identity links.
    pub active_links: i64,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// Last change (RFC 3339, UTC).
    pub updated_at: String,
}

/// How to search customers.
#[derive(Debug, Clone, Default)]
pub struct CustomerQuery {
    /// By email (normalised by the comparison rule).
    pub email: Option<String>,
    /// By account number (exact).
    pub account_number: Option<String>,
    /// Restrict an email search to one legal entity.
    pub legal_entity: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// Cursor of the previous page.
    pub cursor: Option<String>,
}

impl Admin {
    /// Creates a customer.
    pub fn create_customer(
        &self,
        ctx: &Context,
        request: &NewCustomerRequest,
    ) -> AdminResult<CustomerView> {
        let legal_entity =
            self.served_legal_entity("legalEntity", request.legal_entity.as_deref())?;
        let party_type = PartyType::parse(required("partyType", request.party_type.as_deref())?)
            .map_err(|m| invalid_from("partyType", &m))?;
        let given_number = match request.account_number.as_deref() {
            Some(raw) => {
                Some(AccountNumber::parse(raw).map_err(|m| invalid_from("accountNumber", &m))?)
            }
            None => None,
        };
        let primary_email = match request
            .primary_email
            .as_deref()
            .filter(|e| !e.trim().is_empty())
        {
            Some(raw) => Some(email("primaryEmail", raw)?),
            None => None,
        };
        let first_name = name("firstName", request.first_name.as_deref())?;
        let last_name = name("lastName", request.last_name.as_deref())?;
        let mut conn = self.conn()?;
        for _ in 0..MAX_ATTEMPTS {
            let number = given_number
                .clone()
                .unwrap_or_else(|| AccountNumber::generate(&self.account_number_prefix));
            let now = storage::now();
            let new = NewCustomer {
                account_number: number.as_str(),
                legal_entity: legal_entity.as_str(),
                party_type: party_type.as_str(),
                is_b2b: request.is_b2b.unwrap_or(false),
                primary_email: primary_email.as_ref().map(EmailAddress::as_str),
                email_key: primary_email.as_ref().map(EmailAddress::key),
                first_name: first_name.as_deref(),
                last_name: last_name.as_deref(),
                origin: "admin",
                creation_key: None,
                created_at: now,
                updated_at: now,
            };
            let result = storage::write_transaction(&mut conn, |conn| {
                if customers::find_by_account_number(conn, number.as_str())?.is_some() {
                    return Err(account_number_exists("accountNumber", number.as_str()));
                }
                let id = customers::insert(conn, &new)?;
                let mut event = ctx.event("CustomerCreated");
                event.account_number = Some(number.to_string());
                event.email_key = new.email_key.map(str::to_string);
                event.detail = Some(format!(
                    "{} {}{} in {}",
                    if new.is_b2b { "B2B" } else { "B2C" },
                    new.party_type,
                    if given_number.is_some() {
                        ""
                    } else {
                        " (generated number)"
                    },
                    new.legal_entity
                ));
                storage::audit::insert(conn, &[event])?;
                self.tell(
                    conn,
                    vec![Event::customer_created(
                        number.as_str(),
                        legal_entity.as_str(),
                        "admin",
                        None,
                        new.primary_email,
                    )],
                )?;
                Ok(id)
            });
            match result {
                Ok(id) => {
                    self.told();
                    return self.customer_view_by_id(&mut conn, id);
                }
                // A concurrent create took the number between the check and the insert.
                Err(AdminError::Storage(e)) if e.is_unique_violation() => {
                    if given_number.is_some() {
                        return Err(account_number_exists("accountNumber", number.as_str()));
                    }
                }
                Err(AdminError::Conflict { .. }) if given_number.is_none() => {}
                Err(other) => return Err(other),
            }
        }
        Err(AdminError::conflict(
            "account_number_exists",
            Some("accountNumber"),
            "could not generate an unused account number; try again".into(),
        ))
    }

    /// A customer by account number.
    pub fn customer(&self, account_number: &str) -> AdminResult<CustomerView> {
        let mut conn = self.conn()?;
        let customer = find_customer(&mut conn, account_number)?;
        view(&mut conn, customer)
    }

    /// Customers by email or account number.
    pub fn search_customers(&self, query: &CustomerQuery) -> AdminResult<Page<CustomerView>> {
        let limit = page_size(query.limit.as_deref())?;
        let after = cursor(query.cursor.as_deref())?;
        let email_raw = query.email.as_deref().filter(|e| !e.trim().is_empty());
        let number_raw = query
            .account_number
            .as_deref()
            .filter(|e| !e.trim().is_empty());
        let mut conn = self.conn()?;
        let found: Vec<Customer> = match (email_raw, number_raw) {
            (Some(_), Some(_)) => {
                return Err(AdminError::invalid(
                    "accountNumber",
                    "give either email or accountNumber, not both",
                ))
            }
            (None, None) => {
                return Err(AdminError::invalid(
                    "email",
                    "give email or accountNumber to search by",
                ))
            }
            (Some(raw), None) => {
                let address = email("email", raw)?;
                let legal_entity = match query
                    .legal_entity
                    .as_deref()
                    .filter(|e| !e.trim().is_empty())
                {
                    Some(raw) => Some(
                        crate::domain::LegalEntity::parse(raw)
                            .map_err(|m| invalid_from("legalEntity", &m))?,
                    ),
                    None => None,
                };
                customers::find_by_email_key(
                    &mut conn,
                    address.key(),
                    legal_entity.as_ref().map(|l| l.as_str()),
                    after,
                    limit + 1,
                )?
            }
            (None, Some(raw)) => {
                let number =
                    AccountNumber::parse(raw).map_err(|m| invalid_from("accountNumber", &m))?;
                customers::find_by_account_number(&mut conn, number.as_str())?
                    .into_iter()
                    .filter(|c| after.is_none_or(|a| c.id > a))
                    .collect()
            }
        };
        let more = found.len() as i64 > limit;
        let mut items = Vec::new();
        let mut last_id = None;
        for customer in found.into_iter().take(limit as usize) {
            last_id = Some(customer.id);
            items.push(view(&mut conn, customer)?);
        }
        Ok(Page {
            items,
            next_cursor: if more {
                last_id.map(|id| id.to_string())
            } else {
                None
            },
        })
    }

    /// Changes a customer. A new primary email never moves links, and clears the race guard of a
    /// record autolink created.
    pub fn update_customer(
        &self,
        ctx: &Context,
        account_number: &str,
        update: &CustomerUpdate,
    ) -> AdminResult<CustomerView> {
        for (field, value) in [
            ("legalEntity", &update.legal_entity),
            ("partyType", &update.party_type),
            ("accountNumber", &update.account_number),
        ] {
            if value.is_some() {
                return Err(AdminError::invalid(
                    field,
                    "cannot be changed; create a new customer instead",
                ));
            }
        }
        let new_email = match &update.primary_email {
            None => None,
            Some(None) => Some(None),
            Some(Some(raw)) if raw.trim().is_empty() => Some(None),
            Some(Some(raw)) => Some(Some(email("primaryEmail", raw)?)),
        };
        let first_name = match &update.first_name {
            None => None,
            Some(raw) => Some(name("firstName", raw.as_deref())?),
        };
        let last_name = match &update.last_name {
            None => None,
            Some(raw) => Some(name("lastName", raw.as_deref())?),
        };
        let is_b2b = match update.is_b2b {
            Some(None) => return Err(AdminError::invalid("isB2b", "must be true or false")),
            Some(Some(b2b)) => Some(b2b),
            None => None,
        };
        if is_b2b.is_none() && new_email.is_none() && first_name.is_none() && last_name.is_none() {
            return Err(AdminError::invalid(
                "body",
                "names no field to change (isB2b, primaryEmail, firstName, lastName)",
            ));
        }
        let mut conn = self.conn()?;
        let id = storage::write_transaction(&mut conn, |conn| {
            let current = find_customer(conn, account_number)?;
            let mut changed: Vec<String> = Vec::new();
            let mut changes = CustomerChanges {
                updated_at: Some(storage::now()),
                ..CustomerChanges::default()
            };
            if let Some(b2b) = is_b2b.filter(|b| *b != current.is_b2b) {
                changes.is_b2b = Some(b2b);
                changed.push(format!("isB2b {} -> {b2b}", current.is_b2b));
            }
            if let Some(new_email) = &new_email {
                let new_key = new_email.as_ref().map(EmailAddress::key);
                let new_display = new_email.as_ref().map(EmailAddress::as_str);
                if new_display != current.primary_email.as_deref() {
                    changes.primary_email = Some(new_display);
                    changes.email_key = Some(new_key);
                    changed.push(format!(
                        "primaryEmail {} -> {}",
                        current.email_key.as_deref().unwrap_or("(none)"),
                        new_key.unwrap_or("(none)")
                    ));
                    if current.creation_key.is_some() && new_key != current.email_key.as_deref() {
                        changes.creation_key = Some(None);
                    }
                }
            }
            if let Some(first) = &first_name {
                if first.as_deref() != current.first_name.as_deref() {
                    changes.first_name = Some(first.as_deref());
                    changed.push("firstName".into());
                }
            }
            if let Some(last) = &last_name {
                if last.as_deref() != current.last_name.as_deref() {
                    changes.last_name = Some(last.as_deref());
                    changed.push("lastName".into());
                }
            }
            if changed.is_empty() {
                // Nothing differs: idempotent, and nothing to audit.
                return Ok(current.id);
            }
            customers::update(conn, current.id, &changes)?;
            let links = customers::active_link_count(conn, current.id)?;
            let mut event = ctx.event("CustomerUpdated");
            event.account_number = Some(current.account_number.clone());
            event.email_key = match &changes.email_key {
                Some(key) => key.map(str::to_string),
                None => current.email_key.clone(),
            };
            event.detail = Some(format!(
                "{}; {links} active link(s) kept",
                changed.join(", ")
            ));
            storage::audit::insert(conn, &[event])?;
            Ok::<_, AdminError>(current.id)
        })?;
        self.customer_view_by_id(&mut conn, id)
    }

    /// Deactivates a customer: it is no longer a linking candidate. Its links are kept (an
    /// administrator unlinks them separately); its race guard is cleared.
    pub fn deactivate_customer(
        &self,
        ctx: &Context,
        account_number: &str,
    ) -> AdminResult<CustomerView> {
        let mut conn = self.conn()?;
        let id = storage::write_transaction(&mut conn, |conn| {
            let current = find_customer(conn, account_number)?;
            if !current.active {
                return Err(AdminError::conflict(
                    "customer_inactive",
                    Some("accountNumber"),
                    format!("customer {} is already inactive", current.account_number),
                ));
            }
            customers::update(
                conn,
                current.id,
                &CustomerChanges {
                    active: Some(false),
                    creation_key: Some(None),
                    updated_at: Some(storage::now()),
                    ..CustomerChanges::default()
                },
            )?;
            let links = customers::active_link_count(conn, current.id)?;
            let mut event = ctx.event("CustomerDeactivated");
            event.account_number = Some(current.account_number.clone());
            event.email_key = current.email_key.clone();
            event.detail = Some(format!("{links} active link(s) kept"));
            storage::audit::insert(conn, &[event])?;
            Ok(current.id)
        })?;
        self.customer_view_by_id(&mut conn, id)
    }

    fn customer_view_by_id(&self, conn: &mut DbConn, id: i64) -> AdminResult<CustomerView> {
        let customer = customers::find(conn, id)?
            .ok_or_else(|| AdminError::not_found("accountNumber", "the customer vanished"))?;
        view(conn, customer)
    }
}

/// A customer by account number, or 404.
pub(crate) fn find_customer(conn: &mut DbConn, account_number: &str) -> AdminResult<Customer> {
    let number =
        AccountNumber::parse(account_number).map_err(|m| invalid_from("accountNumber", &m))?;
    customers::find_by_account_number(conn, number.as_str())?.ok_or_else(|| {
        AdminError::not_found(
            "accountNumber",
            format!("no customer with account number {number}"),
        )
    })
}

pub(crate) fn account_number_exists(field: &'static str, number: &str) -> AdminError {
    AdminError::conflict(
        "account_number_exists",
        Some(field),
        format!("a customer with account number {number} exists already"),
    )
}

pub(crate) fn name(field: &str, raw: Option<&str>) -> AdminResult<Option<String>> {
    parse_name(raw).map_err(|m| AdminError::invalid(field, m))
}

pub(crate) fn view(conn: &mut DbConn, customer: Customer) -> AdminResult<CustomerView> {
    let active_links = customers::active_link_count(conn, customer.id)?;
    Ok(CustomerView {
        account_number: customer.account_number,
        legal_entity: customer.legal_entity,
        party_type: customer.party_type,
        is_b2b: customer.is_b2b,
        primary_email: customer.primary_email,
        first_name: customer.first_name,
        last_name: customer.last_name,
        origin: customer.origin,
        active: customer.active,
        active_links,
        created_at: rfc3339(customer.created_at),
        updated_at: rfc3339(customer.updated_at),
    })
}
