//! The route table: every endpoint the server serves, with its method, path and who may call
//! it. [`crate::api::configure`] registers exactly these routes, [`crate::api::request_context`]
//! has the metrics register a latency histogram for each before the first request, and a test
//! compares them with `/openapi.json`.

use actix_web::http::{header, Method};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse, Route};

use super::errors::ErrorBody;
use super::{admin, authn, connector, entra, health, metrics, openapi, relying_party, rest};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (`/healthz`, `/readyz`, `/metrics`); `/v1/link` checks its ID token itself.
    Public,
    /// B2C, with the connector's credentials (under [`B2C_SCOPE`]).
    B2c,
    /// Microsoft Entra External ID, with its bearer token (under [`ENTRA_SCOPE`]).
    Entra,
    /// Administrators, with the admin token.
    Admin,
}

/// The HTTP methods the service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PATCH.
    Patch,
}

impl HttpMethod {
    /// As actix-web's method.
    pub fn as_method(self) -> Method {
        match self {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Patch => Method::PATCH,
        }
    }

    /// Upper-case name, as HTTP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Patch => "PATCH",
        }
    }

    /// Lower-case name, as OpenAPI names operations.
    pub fn as_lowercase(self) -> &'static str {
        match self {
            HttpMethod::Get => "get",
            HttpMethod::Post => "post",
            HttpMethod::Patch => "patch",
        }
    }
}

/// One endpoint.
pub struct RouteSpec {
    /// The method.
    pub method: HttpMethod,
    /// The full path pattern (`{name}` for a path parameter), as in the OpenAPI document.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Attaches the handler to a route.
    handler: fn(Route) -> Route,
}

/// Prefix of the B2C endpoints (one scope, behind the connector authentication).
pub const B2C_SCOPE: &str = "/b2c";
/// Prefix of Entra External ID's endpoints (one scope, behind the Entra bearer token).
pub const ENTRA_SCOPE: &str = "/entra";
/// Prefix of the admin API (one scope, behind the admin authentication).
pub const ADMIN_SCOPE: &str = "/admin/v1";

macro_rules! route {
    ($method:ident $path:literal, $access:ident, $handler:path) => {
        RouteSpec {
            method: HttpMethod::$method,
            path: $path,
            access: Access::$access,
            handler: |route| route.to($handler),
        }
    };
}

/// Every endpoint. Paths that share a pattern share one resource (so a wrong method is a 405).
pub static ROUTES: &[RouteSpec] = &[
    route!(Get "/healthz", Public, health::healthz),
    route!(Get "/readyz", Public, health::readyz),
    route!(Get "/metrics", Public, metrics::metrics),
    route!(Get "/openapi.json", Admin, openapi::openapi_json),
    route!(Post "/b2c/api-connector", B2c, connector::api_connector),
    route!(Post "/b2c/rest/precheck", B2c, rest::precheck),
    route!(Post "/b2c/rest/link", B2c, rest::link),
    route!(Post "/entra/attribute-collection-submit", Entra, entra::submit::attribute_collection_submit),
    route!(Post "/entra/token-issuance-start", Entra, entra::token::token_issuance_start),
    route!(Post "/v1/link", Public, relying_party::link),
    route!(Post "/admin/v1/customers", Admin, admin::create_customer),
    route!(Get "/admin/v1/customers", Admin, admin::search_customers),
    route!(Get "/admin/v1/customers/{accountNumber}", Admin, admin::get_customer),
    route!(Patch "/admin/v1/customers/{accountNumber}", Admin, admin::update_customer),
    route!(Post "/admin/v1/customers/{accountNumber}/deactivate", Admin, admin::deactivate_customer),
    route!(Get "/admin/v1/links", Admin, admin::list_links),
    route!(Post "/admin/v1/links/{id}/unlink", Admin, admin::unlink),
    route!(Post "/admin/v1/links/{id}/move", Admin, admin::move_link),
    route!(Get "/admin/v1/audit", Admin, admin::query_audit),
    route!(Post "/admin/v1/preview", Admin, admin::preview),
    route!(Post "/admin/v1/prospects", Admin, admin::record_prospect),
    route!(Get "/admin/v1/prospects", Admin, admin::list_prospects),
    route!(Get "/admin/v1/prospects/{id}", Admin, admin::get_prospect),
    route!(Post "/admin/v1/prospects/{id}/approve", Admin, admin::approve_prospect),
    route!(Post "/admin/v1/prospects/{id}/reject", Admin, admin::reject_prospect),
    route!(Get "/admin/v1/duplicates", Admin, admin::duplicates),
    route!(Get "/admin/v1/webhook-deliveries", Admin, admin::list_webhook_deliveries),
    route!(Post "/admin/v1/webhook-deliveries/{id}/retry", Admin, admin::retry_webhook_delivery),
    route!(Get "/admin/v1/events", Admin, admin::list_events),
];

/// Every (method, path) served, e.g. `("post", "/b2c/api-connector")`.
pub fn served() -> Vec<(&'static str, &'static str)> {
    ROUTES
        .iter()
        .map(|r| (r.method.as_lowercase(), r.path))
        .collect()
}

/// Every (path, method) served, as the metrics label request latency.
pub fn endpoints() -> impl Iterator<Item = (&'static str, Method)> {
    ROUTES.iter().map(|r| (r.path, r.method.as_method()))
}

/// Registers [`ROUTES`]: the B2C endpoints in one scope behind the connector authentication,
/// the admin API in one scope behind the admin authentication (so an unknown path there is
/// refused without the right credentials too), the rest at the root.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut b2c = web::scope(B2C_SCOPE).wrap(from_fn(authn::require_b2c_caller));
    let mut entra_scope = web::scope(ENTRA_SCOPE).wrap(from_fn(entra::require_entra_caller));
    let mut admin_scope = web::scope(ADMIN_SCOPE).wrap(from_fn(admin::authn::require_admin));
    let mut paths: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    for path in paths {
        let routes: Vec<&RouteSpec> = ROUTES.iter().filter(|r| r.path == path).collect();
        let access = routes.first().map(|r| r.access).unwrap_or(Access::Public);
        let (relative, in_scope) = match access {
            Access::B2c => (path.strip_prefix(B2C_SCOPE), true),
            Access::Entra => (path.strip_prefix(ENTRA_SCOPE), true),
            Access::Admin => (path.strip_prefix(ADMIN_SCOPE), true),
            Access::Public => (None, false),
        };
        let allow = allowed_methods(path);
        // The resource's name is its full pattern: the request log and the metrics read it.
        let mut resource = web::resource(relative.filter(|_| in_scope).unwrap_or(path))
            .name(path)
            .default_service(web::to(move || method_not_allowed(allow.clone())));
        for spec in routes {
            resource = resource.route((spec.handler)(web::route().method(spec.method.as_method())));
        }
        match (access, relative) {
            (Access::B2c, Some(_)) => b2c = b2c.service(resource),
            (Access::Entra, Some(_)) => entra_scope = entra_scope.service(resource),
            (Access::Admin, Some(_)) => admin_scope = admin_scope.service(resource),
            (Access::Admin, None) => {
                cfg.service(resource.wrap(from_fn(admin::authn::require_admin)));
            }
            // A B2C route outside the scope would be served without authentication: refuse to
            // register it rather than serve it open.
            (Access::B2c | Access::Entra, None) => {
                log::error!("route {path} is not under its authenticated scope; not served");
            }
            (Access::Public, _) => {
                cfg.service(resource);
            }
        }
    }
    cfg.service(b2c).service(entra_scope).service(admin_scope);
}

/// The methods served on a path, as the `Allow` header lists them (`GET, PATCH`).
pub fn allowed_methods(path: &str) -> String {
    ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Any other method on a served path: 405 with the `Allow` header RFC 9110 requires.
async fn method_not_allowed(allow: String) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow))
        .json(ErrorBody::new(
            "method_not_allowed",
            "this endpoint does not accept this method; see the Allow header",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_header_lists_every_method_of_a_path() {
        assert_eq!(allowed_methods("/admin/v1/customers"), "POST, GET");
        assert_eq!(
            allowed_methods("/admin/v1/customers/{accountNumber}"),
            "GET, PATCH"
        );
        assert_eq!(allowed_methods("/healthz"), "GET");
    }

    #[test]
    fn every_route_is_unique_and_b2c_and_admin_routes_sit_in_their_scopes() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method, route.path)),
                "{} twice",
                route.path
            );
            match route.access {
                Access::B2c => assert!(route.path.starts_with("/b2c/"), "{}", route.path),
                Access::Entra => assert!(route.path.starts_with("/entra/"), "{}", route.path),
                Access::Admin => assert!(
                    route.path.starts_with("/admin/v1/") || route.path == "/openapi.json",
                    "{}",
                    route.path
                ),
                Access::Public => assert!(
                    !route.path.starts_with("/b2c")
                        && !route.path.starts_with("/admin")
                        && !route.path.starts_with("/entra"),
                    "{}",
                    route.path
                ),
            }
        }
    }
}
