//! `GET /metrics`: the Prometheus text format, without authentication (like `/healthz`).

use actix_web::{web, HttpResponse};

use super::AppState;

/// The metrics of this instance.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match state.linking.metrics().render(state.linking.db()) {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => {
            log::error!("metrics cannot be rendered: {e}");
            HttpResponse::ServiceUnavailable().finish()
        }
    }
}
