//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// Liveness and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable` (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
    /// `ok`, `ready` or `not ready`.
    pub status: &'static str,
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        database: None,
        status: "ok",
    })
}

/// `GET /readyz`: the database answers within the request time limit (and its migrations are
/// applied: a PostgreSQL server that was away at start is waited for, see
/// [`crate::storage::postgres::start`]).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database does not answer in time", body = Health),
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
        Ok(Ok(Ok(()))) => HttpResponse::Ok().json(Health {
            database: Some("ok"),
            status: "ready",
        }),
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
    HttpResponse::ServiceUnavailable().json(Health {
        database: Some("unavailable"),
        status: "not ready",
    })
}
