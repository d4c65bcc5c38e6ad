//! The admin REST API under `/admin/v1/`: customers, links, audit, preview, B2B prospects, the
//! duplicate report, webhook deliveries and the feed of events.
//!
//! Handlers read the request (JSON body, query, path), call [`crate::admin::Admin`] on a blocking
//! thread, and render its answer or its error ([`error::ApiError`]); no rule lives here. The
//! caller is an [`authn::AdminCaller`], authenticated by the middleware with the admin token.

pub mod authn;
pub mod error;

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};

use self::authn::AdminCaller;
use self::error::{path_param, read_body, ApiError, ErrorBody, QueryParams};
use super::AppState;
use crate::admin::audit::{AuditEventView, AuditQuery};
use crate::admin::customers::{CustomerQuery, CustomerUpdate, CustomerView, NewCustomerRequest};
use crate::admin::duplicates::DuplicateReport;
use crate::admin::links::{LinkQuery, LinkView, MoveLinkRequest, UnlinkRequest};
use crate::admin::prospects::{
    ApproveProspectRequest, NewProspectRequest, ProspectView, RejectProspectRequest,
};
use crate::admin::webhooks::{DeliveryView, EventPage, EventQuery};
use crate::admin::{
    self as ops, Admin, AdminResult, Page, PreviewRequest, PreviewView, StatusQuery,
};

/// Time limit of an admin operation (the duplicate report reads a whole legal entity).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs an operation on a blocking thread within [`ADMIN_TIMEOUT`].
async fn run<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Admin) -> AdminResult<T> + Send + 'static,
{
    let admin = state.admin.clone();
    if admin.backend() == crate::storage::BackendKind::Postgres {
        return match super::postgres_within(ADMIN_TIMEOUT, move || work(&admin)).await {
            Ok(result) => Ok(result?),
            Err(super::Late::WorkerFailed) => {
                log::error!("admin operation: worker failed");
                Err(ApiError::Unavailable)
            }
            Err(super::Late::TimedOut) => {
                log::warn!("admin operation did not finish in time");
                Err(ApiError::Unavailable)
            }
        };
    }
    match actix_web::rt::time::timeout(ADMIN_TIMEOUT, web::block(move || work(&admin))).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(_)) => {
            log::error!("admin operation: worker failed");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            log::warn!("admin operation did not finish in time");
            Err(ApiError::Unavailable)
        }
    }
}

/// Create a customer (person or organization, B2B or not).
#[utoipa::path(
    post, path = "/admin/v1/customers", tag = "admin: customers",
    request_body = NewCustomerRequest,
    params(("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit")),
    responses(
        (status = 201, description = "Created", body = CustomerView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 409, description = "The account number exists", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_customer(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let body: NewCustomerRequest = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.create_customer(&ctx, &body)).await?;
    Ok(HttpResponse::Created().json(view))
}

/// Search customers by email (normalised by the comparison rule) or account number.
#[utoipa::path(
    get, path = "/admin/v1/customers", tag = "admin: customers",
    params(
        ("email" = Option<String>, Query, description = "Email to search by"),
        ("accountNumber" = Option<String>, Query, description = "Account number to search by"),
        ("legalEntity" = Option<String>, Query, description = "Restrict an email search to one legal entity"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of customers", body = Page<CustomerView>),
        (status = 400, description = "A parameter is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn search_customers(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = QueryParams::parse(&req)?;
    let query = CustomerQuery {
        email: q.take("email"),
        account_number: q.take("accountNumber"),
        legal_entity: q.take("legalEntity"),
        limit: q.take("limit"),
        cursor: q.take("cursor"),
    };
    q.finish()?;
    let page = run(&state, move |admin| admin.search_customers(&query)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Read a customer.
#[utoipa::path(
    get, path = "/admin/v1/customers/{accountNumber}", tag = "admin: customers",
    params(("accountNumber" = String, Path, description = "The customer account number")),
    responses(
        (status = 200, description = "The customer", body = CustomerView),
        (status = 400, description = "Not an account number", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such customer", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_customer(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let number = path_param(&req, "accountNumber")?;
    let view = run(&state, move |admin| admin.customer(&number)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Change a customer. A new primary email never moves existing links; the change is audited.
#[utoipa::path(
    patch, path = "/admin/v1/customers/{accountNumber}", tag = "admin: customers",
    request_body = CustomerUpdate,
    params(
        ("accountNumber" = String, Path, description = "The customer account number"),
        ("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit"),
    ),
    responses(
        (status = 200, description = "The changed customer", body = CustomerView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such customer", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn update_customer(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let number = path_param(&req, "accountNumber")?;
    let body: CustomerUpdate = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| {
        admin.update_customer(&ctx, &number, &body)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Deactivate a customer: it is no longer a linking candidate; its links are kept.
#[utoipa::path(
    post, path = "/admin/v1/customers/{accountNumber}/deactivate", tag = "admin: customers",
    params(
        ("accountNumber" = String, Path, description = "The customer account number"),
        ("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit"),
    ),
    responses(
        (status = 200, description = "The deactivated customer", body = CustomerView),
        (status = 400, description = "Not an account number, or not an administrator name", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such customer", body = ErrorBody),
        (status = 409, description = "Already inactive", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn deactivate_customer(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let number = path_param(&req, "accountNumber")?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| {
        admin.deactivate_customer(&ctx, &number)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// List the links of a customer, or of an identity (issuer and subject); active and inactive.
#[utoipa::path(
    get, path = "/admin/v1/links", tag = "admin: links",
    params(
        ("accountNumber" = Option<String>, Query, description = "The customer's account number"),
        ("issuer" = Option<String>, Query, description = "The identity's issuer (with subject)"),
        ("subject" = Option<String>, Query, description = "The identity's subject (with issuer)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of links, oldest first", body = Page<LinkView>),
        (status = 400, description = "A parameter is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such customer", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_links(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = QueryParams::parse(&req)?;
    let query = LinkQuery {
        account_number: q.take("accountNumber"),
        issuer: q.take("issuer"),
        subject: q.take("subject"),
        limit: q.take("limit"),
        cursor: q.take("cursor"),
    };
    q.finish()?;
    let page = run(&state, move |admin| admin.links(&query)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Unlink: deactivate a link (the row is kept as history).
#[utoipa::path(
    post, path = "/admin/v1/links/{id}/unlink", tag = "admin: links",
    request_body(content = UnlinkRequest, description = "Optional"),
    params(
        ("id" = i64, Path, description = "The link's id"),
        ("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit"),
    ),
    responses(
        (status = 200, description = "The deactivated link", body = LinkView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
        (status = 409, description = "The link is inactive already", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn unlink(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let id = ops::id("id", &path_param(&req, "id")?)?;
    let body: UnlinkRequest = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.unlink(&ctx, id, &body)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Move a link to another customer, with a reason. Answers the new link.
#[utoipa::path(
    post, path = "/admin/v1/links/{id}/move", tag = "admin: links",
    request_body = MoveLinkRequest,
    params(
        ("id" = i64, Path, description = "The link's id"),
        ("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit"),
    ),
    responses(
        (status = 200, description = "The new link", body = LinkView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such link or customer", body = ErrorBody),
        (status = 409, description = "Inactive link or customer, or the same customer", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn move_link(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let id = ops::id("id", &path_param(&req, "id")?)?;
    let body: MoveLinkRequest = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.move_link(&ctx, id, &body)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Query the audit log, newest first.
#[utoipa::path(
    get, path = "/admin/v1/audit", tag = "admin: audit",
    params(
        ("from" = Option<String>, Query, description = "At or after (RFC 3339, or a date)"),
        ("to" = Option<String>, Query, description = "Before (RFC 3339, or a date)"),
        ("channel" = Option<String>, Query, description = "Channel id"),
        ("outcome" = Option<String>, Query, description = "Outcome (Linked, Created, AlreadyLinked, WouldLink, WouldCreate, Refused, CustomerCreated, CustomerUpdated, CustomerDeactivated, Unlinked, LinkMoved, ProspectRecorded, ProspectApproved, ProspectRejected)"),
        ("email" = Option<String>, Query, description = "Email (normalised)"),
        ("issuer" = Option<String>, Query, description = "Identity issuer"),
        ("subject" = Option<String>, Query, description = "Identity subject"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of events", body = Page<AuditEventView>),
        (status = 400, description = "A parameter is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn query_audit(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = QueryParams::parse(&req)?;
    let query = AuditQuery {
        from: q.take("from"),
        to: q.take("to"),
        channel: q.take("channel"),
        outcome: q.take("outcome"),
        email: q.take("email"),
        issuer: q.take("issuer"),
        subject: q.take("subject"),
        limit: q.take("limit"),
        cursor: q.take("cursor"),
    };
    q.finish()?;
    let page = run(&state, move |admin| admin.audit(&query)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Preview (dry run): what would happen for this email on this channel. Writes only the audit.
#[utoipa::path(
    post, path = "/admin/v1/preview", tag = "admin: preview",
    request_body = PreviewRequest,
    params(("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit")),
    responses(
        (status = 200, description = "What would happen (a refusal is an answer, not an error)", body = PreviewView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn preview(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let body: PreviewRequest = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.preview(&ctx, &body)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Record a B2B prospect (a business onboarding request); it is pending until decided.
#[utoipa::path(
    post, path = "/admin/v1/prospects", tag = "admin: prospects",
    request_body = NewProspectRequest,
    params(("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit")),
    responses(
        (status = 201, description = "Recorded", body = ProspectView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 409, description = "A pending request or a B2B customer exists for this email", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn record_prospect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let body: NewProspectRequest = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.record_prospect(&ctx, &body)).await?;
    Ok(HttpResponse::Created().json(view))
}

/// List prospects of a status (pending by default), oldest first.
#[utoipa::path(
    get, path = "/admin/v1/prospects", tag = "admin: prospects",
    params(
        ("status" = Option<String>, Query, description = "pending (default), approved or rejected"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of prospects", body = Page<ProspectView>),
        (status = 400, description = "A parameter is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_prospects(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = QueryParams::parse(&req)?;
    let query = StatusQuery {
        status: q.take("status"),
        limit: q.take("limit"),
        cursor: q.take("cursor"),
    };
    q.finish()?;
    let page = run(&state, move |admin| admin.prospects(&query)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Read a prospect.
#[utoipa::path(
    get, path = "/admin/v1/prospects/{id}", tag = "admin: prospects",
    params(("id" = i64, Path, description = "The prospect's id")),
    responses(
        (status = 200, description = "The prospect", body = ProspectView),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such prospect", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_prospect(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let id = ops::id("id", &path_param(&req, "id")?)?;
    let view = run(&state, move |admin| admin.prospect(id)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Approve a pending prospect: creates the organization and the B2B person customer, so the
/// requester's next sign-up links automatically.
#[utoipa::path(
    post, path = "/admin/v1/prospects/{id}/approve", tag = "admin: prospects",
    request_body(content = ApproveProspectRequest, description = "Optional"),
    params(
        ("id" = i64, Path, description = "The prospect's id"),
        ("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit"),
    ),
    responses(
        (status = 200, description = "The approved prospect, with the created account numbers", body = ProspectView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such prospect", body = ErrorBody),
        (status = 409, description = "Not pending, an account number exists, or the email has a B2B customer", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn approve_prospect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let id = ops::id("id", &path_param(&req, "id")?)?;
    let body: ApproveProspectRequest = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.approve_prospect(&ctx, id, &body)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Reject a pending prospect.
#[utoipa::path(
    post, path = "/admin/v1/prospects/{id}/reject", tag = "admin: prospects",
    request_body(content = RejectProspectRequest, description = "Optional"),
    params(
        ("id" = i64, Path, description = "The prospect's id"),
        ("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit"),
    ),
    responses(
        (status = 200, description = "The rejected prospect", body = ProspectView),
        (status = 400, description = "A field is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such prospect", body = ErrorBody),
        (status = 409, description = "Not pending", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn reject_prospect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let id = ops::id("id", &path_param(&req, "id")?)?;
    let body: RejectProspectRequest = read_body(&req, payload).await?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.reject_prospect(&ctx, id, &body)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The duplicate report of a legal entity: emails that make sign-ups fail with the
/// multiple-accounts error, and near-duplicates as warnings.
#[utoipa::path(
    get, path = "/admin/v1/duplicates", tag = "admin: duplicates",
    params(("legalEntity" = String, Query, description = "The legal entity")),
    responses(
        (status = 200, description = "The report", body = DuplicateReport),
        (status = 400, description = "A parameter is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn duplicates(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = QueryParams::parse(&req)?;
    let legal_entity = q.take("legalEntity");
    q.finish()?;
    let report = run(&state, move |admin| {
        admin.duplicates(legal_entity.as_deref())
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// List webhook deliveries of a status (pending by default), oldest first.
#[utoipa::path(
    get, path = "/admin/v1/webhook-deliveries", tag = "admin: webhooks",
    params(
        ("status" = Option<String>, Query, description = "pending (default), delivered or failed"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<DeliveryView>),
        (status = 400, description = "A parameter is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_webhook_deliveries(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = QueryParams::parse(&req)?;
    let query = StatusQuery {
        status: q.take("status"),
        limit: q.take("limit"),
        cursor: q.take("cursor"),
    };
    q.finish()?;
    let page = run(&state, move |admin| admin.webhook_deliveries(&query)).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Retry a failed webhook delivery: pending again, due now, its retry schedule from the start.
#[utoipa::path(
    post, path = "/admin/v1/webhook-deliveries/{id}/retry", tag = "admin: webhooks",
    params(
        ("id" = i64, Path, description = "The delivery's id"),
        ("X-Autolink-Actor" = Option<String>, Header, description = "Administrator name for the audit"),
    ),
    responses(
        (status = 200, description = "The delivery, pending", body = DeliveryView),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "The delivery is not failed", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn retry_webhook_delivery(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let id = ops::id("id", &path_param(&req, "id")?)?;
    let ctx = caller.context(&req);
    let view = run(&state, move |admin| admin.retry_delivery(&ctx, id)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The feed of events, in commit order, for stores that do not receive webhooks: resumable
/// from any `nextCursor`.
#[utoipa::path(
    get, path = "/admin/v1/events", tag = "admin: webhooks",
    params(
        ("after" = Option<String>, Query, description = "nextCursor of an earlier page; the beginning when absent"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 50)"),
    ),
    responses(
        (status = 200, description = "The events after the cursor", body = EventPage),
        (status = 400, description = "A parameter is not acceptable", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    _caller: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = QueryParams::parse(&req)?;
    let query = EventQuery {
        after: q.take("after"),
        limit: q.take("limit"),
    };
    q.finish()?;
    let page = run(&state, move |admin| admin.events(&query)).await?;
    Ok(HttpResponse::Ok().json(page))
}
