//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = crate::api::openapi::Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers within the request time limit (and its migrations are
/// applied: a PostgreSQL server that was away at start is waited for, see
/// [`crate::storage::postgres::start`]).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = crate::api::openapi::Health),
        (status = 503, description = "The database does not answer in time", body = crate::api::openapi::Health),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let linking = state.linking.clone();
    if !linking.db().is_migrated() {
        // The thread waiting for the database logs each attempt.
        return not_ready();
    }
    let result = if linking.db().backend() == crate::storage::BackendKind::Postgres {
        match super::postgres_within(state.request_timeout, move || linking.db().ping()).await {
            Ok(result) => Ok(Ok(result)),
            Err(super::Late::WorkerFailed) => Ok(Err(())),
            Err(super::Late::TimedOut) => Err(()),
        }
    } else {
        let ping = web::block(move || linking.db().ping());
        match actix_web::rt::time::timeout(state.request_timeout, ping).await {
            Ok(Ok(result)) => Ok(Ok(result)),
            Ok(Err(_)) => Ok(Err(())),
            Err(_) => Err(()),
        }
    };
    match result {
        Ok(Ok(Ok(()))) => HttpResponse::Ok().json(json!({"status": "ready", "database": "ok"})),
        other => {
            let reason = match other {
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(_) => "internal error".to_string(),
                Err(_) => "database did not answer in time".to_string(),
            };
            log::warn!("not ready: {reason}");
            not_ready()
        }
    }
}

fn not_ready() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .json(json!({"status": "not ready", "database": "unavailable"}))
}
