//! The administrative commands of the `autolink` command line: `customers create|show|search|
//! update|deactivate|duplicates`, `links list|unlink|move`, `prospects add|list|show|approve|
//! reject`, `audit` and `webhooks deliveries|retry|events`. They call the same [`Admin`] operations as the admin API and print the
//! same JSON; a refusal prints `field: message` on standard error and exits with status 2.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::admin::audit::AuditQuery;
use crate::admin::customers::{CustomerQuery, CustomerUpdate, NewCustomerRequest};
use crate::admin::links::{LinkQuery, MoveLinkRequest, UnlinkRequest};
use crate::admin::prospects::{ApproveProspectRequest, NewProspectRequest, RejectProspectRequest};
use crate::admin::webhooks::EventQuery;
use crate::admin::{id, Actor, Admin, AdminError, AdminResult, Context, StatusQuery};
use crate::config::Settings;
use crate::startup;

/// Who acts, for the audit.
#[derive(Debug, Clone, Args)]
pub struct ActorArg {
    /// Your name for the audit log (letters, digits, . _ - @ +); `admin` when absent.
    #[arg(long, env = "AUTOLINK_ACTOR")]
    pub actor: Option<String>,
}

/// The administrative `customers` subcommands.
#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create a customer (the account number is generated when not given).
    Create {
        /// Account number.
        #[arg(long)]
        account_number: Option<String>,
        /// Legal entity (one a configured channel serves).
        #[arg(long)]
        legal_entity: String,
        /// `person` or `organization`.
        #[arg(long, default_value = "person")]
        party_type: String,
        /// A business (B2B) customer.
        #[arg(long)]
        b2b: bool,
        /// Primary email.
        #[arg(long)]
        email: Option<String>,
        /// First name (or company name).
        #[arg(long)]
        first_name: Option<String>,
        /// Last name.
        #[arg(long)]
        last_name: Option<String>,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Show a customer.
    Show {
        /// Account number.
        account_number: String,
    },
    /// Search customers by email or account number.
    Search {
        /// Email (normalised by the comparison rule).
        #[arg(long)]
        email: Option<String>,
        /// Account number.
        #[arg(long)]
        account_number: Option<String>,
        /// Restrict an email search to one legal entity.
        #[arg(long)]
        legal_entity: Option<String>,
        /// Page size (1 to 500).
        #[arg(long)]
        limit: Option<String>,
        /// The nextCursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Change a customer; a new email never moves its links.
    Update {
        /// Account number.
        account_number: String,
        /// New primary email (`--email ""` removes it).
        #[arg(long)]
        email: Option<String>,
        /// New first name (`""` removes it).
        #[arg(long)]
        first_name: Option<String>,
        /// New last name (`""` removes it).
        #[arg(long)]
        last_name: Option<String>,
        /// The B2B flag.
        #[arg(long)]
        b2b: Option<bool>,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Deactivate a customer (no longer a linking candidate; its links are kept).
    Deactivate {
        /// Account number.
        account_number: String,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
    /// The duplicate report of a legal entity.
    Duplicates {
        /// Legal entity.
        #[arg(long)]
        legal_entity: String,
    },
}

/// `links` subcommands.
#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// List the links of a customer, or of an identity.
    List {
        /// The customer's account number.
        #[arg(long)]
        account_number: Option<String>,
        /// The identity's issuer (with --subject).
        #[arg(long)]
        issuer: Option<String>,
        /// The identity's subject (with --issuer).
        #[arg(long)]
        subject: Option<String>,
        /// Page size (1 to 500).
        #[arg(long)]
        limit: Option<String>,
        /// The nextCursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Deactivate a link (the row is kept as history).
    Unlink {
        /// The link's id (from `links list`).
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Move a link to another customer.
    Move {
        /// The link's id (from `links list`).
        id: String,
        /// The account number of the customer the identity moves to.
        #[arg(long)]
        to: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
}

/// `prospects` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProspectsCommand {
    /// Record a business onboarding request.
    Add {
        /// The requester's email.
        #[arg(long)]
        email: String,
        /// The company.
        #[arg(long)]
        company: String,
        /// The legal entity of the B2B channel.
        #[arg(long)]
        legal_entity: String,
        /// First name.
        #[arg(long)]
        first_name: Option<String>,
        /// Last name.
        #[arg(long)]
        last_name: Option<String>,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
    /// List prospects of a status: `pending` (the default), `approved` or `rejected`.
    List {
        /// Status, page size, cursor.
        #[command(flatten)]
        query: StatusQuery,
    },
    /// Show a prospect.
    Show {
        /// The prospect's id.
        id: String,
    },
    /// Approve: create the organization and the B2B person customer.
    Approve {
        /// The prospect's id.
        id: String,
        /// The organization's account number (generated when absent).
        #[arg(long)]
        organization_account_number: Option<String>,
        /// The person's account number (generated when absent).
        #[arg(long)]
        person_account_number: Option<String>,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
    /// Reject.
    Reject {
        /// The prospect's id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
}

/// `audit` filters.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// At or after (RFC 3339, or a date).
    #[arg(long)]
    pub from: Option<String>,
    /// Before (RFC 3339, or a date).
    #[arg(long)]
    pub to: Option<String>,
    /// Channel id.
    #[arg(long)]
    pub channel: Option<String>,
    /// Outcome.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Email.
    #[arg(long)]
    pub email: Option<String>,
    /// Identity issuer.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Identity subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// Page size (1 to 500).
    #[arg(long)]
    pub limit: Option<String>,
    /// The nextCursor of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Runs an administrative `customers` command.
pub fn customers(settings: &Settings, command: CustomerCommand) -> anyhow::Result<ExitCode> {
    with_admin(settings, |admin| match command {
        CustomerCommand::Create {
            account_number,
            legal_entity,
            party_type,
            b2b,
            email,
            first_name,
            last_name,
            actor,
        } => {
            let request = NewCustomerRequest {
                account_number,
                legal_entity: Some(legal_entity),
                party_type: Some(party_type),
                is_b2b: Some(b2b),
                primary_email: email,
                first_name,
                last_name,
            };
            let ctx = context(&actor)?;
            print(admin.create_customer(&ctx, &request))
        }
        CustomerCommand::Show { account_number } => print(admin.customer(&account_number)),
        CustomerCommand::Search {
            email,
            account_number,
            legal_entity,
            limit,
            cursor,
        } => print(admin.search_customers(&CustomerQuery {
            email,
            account_number,
            legal_entity,
            limit,
            cursor,
        })),
        CustomerCommand::Update {
            account_number,
            email,
            first_name,
            last_name,
            b2b,
            actor,
        } => {
            // On the command line an empty value removes a field (JSON's null).
            let removable = |v: Option<String>| v.map(|v| Some(v).filter(|v| !v.is_empty()));
            let update = CustomerUpdate {
                is_b2b: b2b.map(Some),
                primary_email: removable(email),
                first_name: removable(first_name),
                last_name: removable(last_name),
                ..CustomerUpdate::default()
            };
            let ctx = context(&actor)?;
            print(admin.update_customer(&ctx, &account_number, &update))
        }
        CustomerCommand::Deactivate {
            account_number,
            actor,
        } => {
            let ctx = context(&actor)?;
            print(admin.deactivate_customer(&ctx, &account_number))
        }
        CustomerCommand::Duplicates { legal_entity } => {
            print(admin.duplicates(Some(&legal_entity)))
        }
    })
}

/// Runs a `links` command.
pub fn links(settings: &Settings, command: LinksCommand) -> anyhow::Result<ExitCode> {
    with_admin(settings, |admin| match command {
        LinksCommand::List {
            account_number,
            issuer,
            subject,
            limit,
            cursor,
        } => print(admin.links(&LinkQuery {
            account_number,
            issuer,
            subject,
            limit,
            cursor,
        })),
        LinksCommand::Unlink {
            id: raw,
            reason,
            actor,
        } => {
            let ctx = context(&actor)?;
            let link = id("id", &raw)?;
            print(admin.unlink(&ctx, link, &UnlinkRequest { reason }))
        }
        LinksCommand::Move {
            id: raw,
            to,
            reason,
            actor,
        } => {
            let ctx = context(&actor)?;
            let link = id("id", &raw)?;
            print(admin.move_link(
                &ctx,
                link,
                &MoveLinkRequest {
                    account_number: Some(to),
                    reason: Some(reason),
                },
            ))
        }
    })
}

/// Runs a `prospects` command.
pub fn prospects(settings: &Settings, command: ProspectsCommand) -> anyhow::Result<ExitCode> {
    with_admin(settings, |admin| match command {
        ProspectsCommand::Add {
            email,
            company,
            legal_entity,
            first_name,
            last_name,
            actor,
        } => {
            let ctx = context(&actor)?;
            print(admin.record_prospect(
                &ctx,
                &NewProspectRequest {
                    email: Some(email),
                    company_name: Some(company),
                    legal_entity: Some(legal_entity),
                    first_name,
                    last_name,
                },
            ))
        }
        ProspectsCommand::List { query } => print(admin.prospects(&query)),
        ProspectsCommand::Show { id: raw } => print(admin.prospect(id("id", &raw)?)),
        ProspectsCommand::Approve {
            id: raw,
            organization_account_number,
            person_account_number,
            actor,
        } => {
            let ctx = context(&actor)?;
            print(admin.approve_prospect(
                &ctx,
                id("id", &raw)?,
                &ApproveProspectRequest {
                    organization_account_number,
                    person_account_number,
                },
            ))
        }
        ProspectsCommand::Reject {
            id: raw,
            reason,
            actor,
        } => {
            let ctx = context(&actor)?;
            print(admin.reject_prospect(&ctx, id("id", &raw)?, &RejectProspectRequest { reason }))
        }
    })
}

/// Runs `audit`.
pub fn audit(settings: &Settings, args: AuditArgs) -> anyhow::Result<ExitCode> {
    with_admin(settings, |admin| {
        print(admin.audit(&AuditQuery {
            from: args.from,
            to: args.to,
            channel: args.channel,
            outcome: args.outcome,
            email: args.email,
            issuer: args.issuer,
            subject: args.subject,
            limit: args.limit,
            cursor: args.cursor,
        }))
    })
}

/// Opens the database, runs one operation, waits for the audit writer, and turns a refusal into
/// exit status 2.
/// The `webhooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List deliveries of a status, oldest first: `pending` (the default), `delivered` or
    /// `failed`.
    Deliveries {
        /// Status, page size, cursor.
        #[command(flatten)]
        query: StatusQuery,
    },
    /// Retry a failed delivery (pending again, due now, its schedule from the start).
    Retry {
        /// The delivery's id.
        id: String,
        /// Who acts.
        #[command(flatten)]
        actor: ActorArg,
    },
    /// The feed of events after a cursor, in commit order.
    Events {
        /// The nextCursor of an earlier page; the beginning when absent.
        #[arg(long)]
        after: Option<String>,
        /// Page size (1 to 500).
        #[arg(long)]
        limit: Option<String>,
    },
}

/// `autolink webhooks ...`.
pub fn webhooks(settings: &Settings, command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    with_admin(settings, |admin| match command {
        WebhooksCommand::Deliveries { query } => print(admin.webhook_deliveries(&query)),
        WebhooksCommand::Retry { id: raw, actor } => {
            let ctx = context(&actor)?;
            print(admin.retry_delivery(&ctx, id("id", &raw)?))
        }
        WebhooksCommand::Events { after, limit } => {
            print(admin.events(&EventQuery { after, limit }))
        }
    })
}

fn with_admin(
    settings: &Settings,
    work: impl FnOnce(&Admin) -> AdminResult<()>,
) -> anyhow::Result<ExitCode> {
    let db = startup::open_database(settings)?;
    let (admin, audit) = startup::build_admin(settings, db)?;
    let result = work(&admin);
    drop(admin);
    audit.join();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(AdminError::Storage(e)) => Err(e.into()),
        Err(refusal) => {
            eprintln!("autolink: {refusal}");
            Ok(ExitCode::from(2))
        }
    }
}

fn context(actor: &ActorArg) -> AdminResult<Context> {
    let actor = match actor.actor.as_deref() {
        Some(name) => Actor::parse(name).map_err(|m| AdminError::invalid("actor", m))?,
        None => Actor::default_admin(),
    };
    Ok(Context {
        actor,
        request_id: crate::api::new_request_id(),
        source: "cli",
    })
}

fn print<T: Serialize>(result: AdminResult<T>) -> AdminResult<()> {
    let value = result?;
    match serde_json::to_string_pretty(&value) {
        // A closed pipe (`| head`) is not an error of the operation, which is done.
        Ok(text) => {
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
        Err(e) => eprintln!("autolink: cannot print the answer: {e}"),
    }
    Ok(())
}
