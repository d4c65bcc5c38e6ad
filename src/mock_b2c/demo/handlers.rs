//! The demo's routes under `/demo` and their handlers.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, Scope};

use crate::mock_b2c::journey::urlencode;
use crate::mock_b2c::pages::esc;

use super::support::parse_pairs;
use super::views::{error_page, page, result_page};
use super::{Demo, PageError};

/// What `POST {service_url}/v1/link` answered.
pub(super) struct LinkResult {
    pub(super) url: String,
    pub(super) status: Option<u16>,
    pub(super) body: String,
}

impl LinkResult {
    pub(super) fn failed(url: &str, error: String) -> LinkResult {
        LinkResult {
            url: url.to_string(),
            status: None,
            body: format!("the call failed: {error}"),
        }
    }
}

/// Mounts the demo at `/{path}` (`/demo`, `/demo-business`).
pub fn scope(demo: Arc<Demo>) -> Scope {
    web::scope(&format!("/{}", demo.settings.path))
        .app_data(web::Data::from(demo))
        .route("", web::get().to(index))
        .route("/", web::get().to(index))
        .route("/login", web::get().to(login))
        .route("/callback", web::get().to(callback))
        .route("/link", web::post().to(link))
}

async fn index(demo: web::Data<Demo>) -> HttpResponse {
    let mount = demo.mount_path();
    let mut body = format!("<h1>{}</h1>\n", esc(&demo.settings.name));
    if demo.settings.policies.is_empty() {
        body.push_str("<p id=\"error-message\">No policy is configured.</p>\n");
    } else {
        body.push_str("<ul>\n");
        for (i, policy) in demo.settings.policies.iter().enumerate() {
            let href = format!("{mount}/login?policy={}", urlencode(policy));
            let id = if i == 0 { " id=\"sign-in\"" } else { "" };
            // B2C's naming: custom policies are `B2C_1A_...`, user flows `B2C_1_...`.
            let kind = if policy.to_ascii_uppercase().starts_with("B2C_1A_") {
                "custom policy: the REST technical profiles of policies/"
            } else {
                "user flow: the API connector"
            };
            body.push_str(&format!(
                "<li><a class=\"sign-in\"{id} href=\"{}\" data-policy=\"{}\">Sign in with {}</a> \
                 <span class=\"policy-kind muted\">({kind})</span></li>\n",
                esc(&href),
                esc(policy),
                esc(policy)
            ));
        }
        body.push_str("</ul>\n");
    }
    body.push_str(&format!(
        "<p class=\"muted\">Application <code>{}</code>; autolink at <code id=\"service-url\">{}</code>.</p>\n",
        esc(&demo.settings.client_id),
        esc(&demo.service_url())
    ));
    page(actix_web::http::StatusCode::OK, &demo.settings.name, &body)
}

async fn login(demo: web::Data<Demo>, req: HttpRequest) -> HttpResponse {
    let query = parse_pairs(req.query_string().as_bytes());
    match demo.start_login(&query).await {
        Ok(url) => HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(error) => error_page(&demo, error),
    }
}

async fn callback(demo: web::Data<Demo>, req: HttpRequest) -> HttpResponse {
    let query = parse_pairs(req.query_string().as_bytes());
    match demo.finish_login(&query).await {
        Ok(id) => match demo.signed_in(&id) {
            Some(signed_in) => result_page(&demo, &id, &signed_in, None),
            None => error_page(&demo, PageError::bad_request("the sign-in expired")),
        },
        Err(error) => {
            if error.status.is_server_error() {
                log::warn!("demo: sign-in failed: {}", error.message);
            }
            error_page(&demo, error)
        }
    }
}

async fn link(demo: web::Data<Demo>, body: Bytes) -> HttpResponse {
    let form = parse_pairs(&body);
    let id = form.get("signin").map(String::as_str).unwrap_or_default();
    let Some(signed_in) = demo.signed_in(id) else {
        return error_page(
            &demo,
            PageError::bad_request("unknown or expired sign-in: sign in again"),
        );
    };
    let result = demo.call_link(&signed_in).await;
    result_page(&demo, id, &signed_in, Some(&result))
}
