//! The External ID tenant's HTTP endpoints: discovery, keys, token, Graph.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::graph;
use super::ExternalId;
use crate::mock_b2c::server::{client_credentials, error, redeem_code, TokenForm};
use crate::mock_b2c::Tenant;

type State = web::Data<Arc<Tenant>>;

/// The routes, registered before the B2C tenant's `/{tenant}/{policy}/...` patterns (which would
/// otherwise take `/ciam/{tid}/...`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ciam/{tid}/v2.0/.well-known/openid-configuration",
        web::get().to(discovery),
    )
    .route("/ciam/{tid}/discovery/v2.0/keys", web::get().to(keys))
    .route("/ciam/{tid}/oauth2/v2.0/token", web::post().to(token))
    .route("/graph/v1.0/users/{id}", web::get().to(graph_user));
}

/// The tenant when the path names it.
fn tenant_of<'a>(state: &'a Tenant, tid: &str) -> Option<&'a ExternalId> {
    state
        .external_id
        .as_ref()
        .filter(|e| e.settings.tenant_id.eq_ignore_ascii_case(tid))
}

fn unknown_tenant() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "invalid_tenant", "unknown tenant")
}

/// The marker an authorization code of the External ID tenant carries instead of a policy.
pub(super) fn code_policy(tid: &str) -> String {
    format!("ciam:{tid}")
}

async fn discovery(state: State, path: web::Path<String>) -> HttpResponse {
    let Some(ext) = tenant_of(&state, &path) else {
        return unknown_tenant();
    };
    let base = format!("{}/ciam/{}", state.base_url(), ext.settings.tenant_id);
    HttpResponse::Ok().json(json!({
        "issuer": ext.issuer(),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "oid", "tid", "ver",
            "name", "given_name", "family_name", "email", "idp", "preferred_username",
            "customerAccountNumber", "autoLinkOutcome"
        ],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
    }))
}

async fn keys(state: State, path: web::Path<String>) -> HttpResponse {
    if tenant_of(&state, &path).is_none() {
        return unknown_tenant();
    }
    HttpResponse::Ok().json(state.key.jwks())
}

async fn token(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    let Some(ext) = tenant_of(&state, &path) else {
        return unknown_tenant();
    };
    match form.grant_type.as_deref() {
        Some("client_credentials") => {
            let (id, secret) = client_credentials(&req, &form);
            match ext.graph_token(
                &state.key,
                &id.unwrap_or_default(),
                &secret.unwrap_or_default(),
                form.scope.as_deref().unwrap_or_default(),
            ) {
                Ok(token) => HttpResponse::Ok()
                    .insert_header(("Cache-Control", "no-store"))
                    .json(json!({
                        "token_type": "Bearer",
                        "expires_in": 3599,
                        "ext_expires_in": 3599,
                        "access_token": token,
                    })),
                Err(("invalid_client", why)) => {
                    error(StatusCode::UNAUTHORIZED, "invalid_client", why)
                }
                Err((kind, why)) => error(StatusCode::BAD_REQUEST, kind, why),
            }
        }
        Some("authorization_code") => {
            redeem_code(&state, &req, &form, &code_policy(&ext.settings.tenant_id))
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials and authorization_code are supported",
        ),
    }
}

#[derive(Deserialize)]
struct GraphQuery {
    #[serde(rename = "$select")]
    select: Option<String>,
}

async fn graph_user(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<GraphQuery>,
) -> HttpResponse {
    let Some(ext) = state.external_id.as_ref() else {
        return HttpResponse::NotFound().json(graph::error(
            "Request_ResourceNotFound",
            "the mock has no External ID tenant",
        ));
    };
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer else {
        return unauthorized("Access token is empty.");
    };
    if !ext.accepts_graph_token(&state.key, token.trim()) {
        return unauthorized(
            "Access token validation failure. Invalid audience, issuer, signature or expiry.",
        );
    }
    let select = graph::parse_select(query.select.as_deref());
    if let Some(name) = select.as_deref().and_then(graph::unknown_property) {
        return HttpResponse::BadRequest().json(graph::error(
            "Request_BadRequest",
            &format!("Could not find a property named '{name}' on type 'microsoft.graph.user'."),
        ));
    }
    let user = state
        .directory
        .by_object_id(&path)
        .filter(|u| u.external_tenant.as_deref() == Some(ext.settings.tenant_id.as_str()));
    match user {
        Some(user) => HttpResponse::Ok().json(graph::user_json(
            &user,
            &ext.settings.domain,
            &format!("{}/graph", state.base_url()),
            select.as_deref(),
        )),
        None => HttpResponse::NotFound().json(graph::error(
            "Request_ResourceNotFound",
            &format!(
                "Resource '{}' does not exist or one of its queried reference-property objects are not present.",
                path.as_str()
            ),
        )),
    }
}

fn unauthorized(message: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Bearer"))
        .json(graph::error("InvalidAuthenticationToken", message))
}
