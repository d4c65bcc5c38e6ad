//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers within the request time limit.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let engine = state.engine.clone();
    let ping = web::block(move || engine.db().ping());
    let result = actix_web::rt::time::timeout(state.request_timeout, ping).await;
    match result {
        Ok(Ok(Ok(()))) => HttpResponse::Ok().json(json!({"status": "ready", "database": "ok"})),
        other => {
            let reason = match other {
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(_) => "internal error".to_string(),
                Err(_) => "database did not answer in time".to_string(),
            };
            log::warn!("not ready: {reason}");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "not ready", "database": "unavailable"}))
        }
    }
}
