//! The mock's HTTP endpoints: OpenID provider, Entra ID client credentials, driver API, pages.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::journey::{self, BadJourney};
use super::types::JourneyRequest;
use super::{demo, pages, Tenant};

type State = web::Data<Arc<Tenant>>;

pub fn serve(listener: TcpListener, tenant: Arc<Tenant>) -> anyhow::Result<actix_web::dev::Server> {
    let demos: Vec<Arc<demo::Demo>> = demos_for(&tenant).into_iter().map(Arc::new).collect();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(tenant.clone()))
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|e, _| {
                        let message = e.to_string();
                        actix_web::error::InternalError::from_response(
                            e,
                            HttpResponse::BadRequest().json(json!({ "error": message })),
                        )
                        .into()
                    }),
            )
            .app_data(web::FormConfig::default().limit(64 * 1024))
            .route("/", web::get().to(pages::home))
            .route("/mock/journeys", web::post().to(run_journey))
            .route("/mock/users", web::get().to(users))
            .configure(super::external_id::routes)
            .configure(|cfg| {
                for demo in &demos {
                    cfg.service(demo::scope(demo.clone()));
                }
            })
            .configure(pages::routes)
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                web::get().to(entra_discovery),
            )
            .route("/{tenant}/discovery/v2.0/keys", web::get().to(entra_keys))
            .route("/{tenant}/oauth2/v2.0/token", web::post().to(entra_token))
            .route(
                "/{tenant}/{policy}/v2.0/.well-known/openid-configuration",
                web::get().to(discovery),
            )
            .route(
                "/{tenant}/{policy}/discovery/v2.0/keys",
                web::get().to(keys),
            )
            .route(
                "/{tenant}/{policy}/oauth2/v2.0/token",
                web::post().to(token),
            )
            .route(
                "/{tenant}/{policy}/oauth2/v2.0/authorize",
                web::get().to(pages::authorize),
            )
            .route(
                "/{tenant}/{policy}/oauth2/v2.0/authorize",
                web::post().to(pages::authorize_post),
            )
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(json!({ "error": "not found" }))
            }))
    })
    .workers(2)
    .listen(listener)?
    .run();
    Ok(server)
}

/// The External ID demo's one "policy": the name of the tenant's sign-up-or-sign-in user flow.
const EXTERNAL_ID_FLOW: &str = "SignUpSignIn (External ID)";

/// The demo relying parties: the consumer store at `/demo` (the application with the redirect
/// URI `{base}/demo/callback`, else the first one), the business store at `/demo-business`
/// when an application has the redirect URI `{base}/demo-business/callback`, and the External ID
/// tenant's store at `/demo-external-id` when the tenant is configured and an application has
/// the redirect URI `{base}/demo-external-id/callback`.
fn demos_for(tenant: &Tenant) -> Vec<demo::Demo> {
    let with_callback = |path: &str| {
        let callback = format!("{}/{path}/callback", tenant.base_url());
        tenant
            .settings
            .applications
            .iter()
            .find(|a| a.redirect_uris.iter().any(|r| r == &callback))
    };
    let demo =
        |path: &str, name: &str, app: Option<&crate::mock_b2c::Application>| demo::DemoSettings {
            base_url: tenant.base_url().to_string(),
            path: path.into(),
            name: name.into(),
            tenant: tenant.settings.tenant.clone(),
            client_id: app.map(|a| a.client_id.clone()).unwrap_or_default(),
            client_secret: app.and_then(|a| a.client_secret.clone()),
            policies: tenant.policies(),
            service_url: tenant.service_url.clone(),
            external_id: None,
        };
    let consumer = with_callback("demo").or_else(|| tenant.settings.applications.first());
    let mut demos = vec![demo("demo", "Demo store", consumer)];
    if let Some(business) = with_callback("demo-business") {
        demos.push(demo("demo-business", "Demo business store", Some(business)));
    }
    if let (Some(ext), Some(app)) = (&tenant.external_id, with_callback("demo-external-id")) {
        let mut store = demo("demo-external-id", "Demo store (External ID)", Some(app));
        store.policies = vec![EXTERNAL_ID_FLOW.into()];
        store.external_id = Some(format!(
            "{}/ciam/{}/v2.0/.well-known/openid-configuration",
            tenant.base_url(),
            ext.settings.tenant_id
        ));
        demos.push(store);
    }
    demos.into_iter().map(demo::Demo::new).collect()
}

pub(in crate::mock_b2c) fn error(
    status: actix_web::http::StatusCode,
    error: &str,
    description: &str,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": error, "error_description": description }))
}

async fn run_journey(state: State, request: web::Json<JourneyRequest>) -> HttpResponse {
    match journey::run(&state, request.into_inner()).await {
        Ok(result) => HttpResponse::Ok().json(result),
        Err(BadJourney(message)) => HttpResponse::BadRequest().json(json!({ "error": message })),
    }
}

async fn users(state: State) -> HttpResponse {
    HttpResponse::Ok().json(state.directory.all())
}

/// The policy named in the path, when the tenant and the policy are this mock's.
fn policy_of(state: &Tenant, tenant: &str, policy: &str) -> Option<String> {
    if !state.is_tenant(tenant) {
        return None;
    }
    state.find_policy(policy).map(|(p, _)| p)
}

async fn discovery(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (tenant, policy) = path.into_inner();
    let Some(policy) = policy_of(&state, &tenant, &policy) else {
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            "invalid_tenant_or_policy",
            "unknown tenant or policy",
        );
    };
    let base = format!("{}/{}/{policy}", state.base_url(), state.settings.tenant);
    HttpResponse::Ok().json(json!({
        "issuer": state.issuer(),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "code id_token", "id_token"],
        "scopes_supported": ["openid"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": [
            "sub", "oid", "emails", "email", "name", "given_name", "family_name", "idp", "tfp",
            "extension_CustomerAccountNumber", "extension_AutoLinkOutcome", "extension_AutoLinkError",
            "iss", "iat", "exp", "aud", "acr", "nonce", "auth_time"
        ],
    }))
}

async fn keys(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (tenant, policy) = path.into_inner();
    if policy_of(&state, &tenant, &policy).is_none() {
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            "invalid_tenant_or_policy",
            "unknown tenant or policy",
        );
    }
    HttpResponse::Ok().json(state.key.jwks())
}

/// The token request's form fields.
#[derive(Deserialize)]
pub(in crate::mock_b2c) struct TokenForm {
    pub(in crate::mock_b2c) grant_type: Option<String>,
    pub(in crate::mock_b2c) code: Option<String>,
    pub(in crate::mock_b2c) redirect_uri: Option<String>,
    pub(in crate::mock_b2c) client_id: Option<String>,
    pub(in crate::mock_b2c) client_secret: Option<String>,
    pub(in crate::mock_b2c) code_verifier: Option<String>,
    pub(in crate::mock_b2c) scope: Option<String>,
}

/// Client credentials from HTTP Basic, else from the form.
pub(in crate::mock_b2c) fn client_credentials(
    req: &HttpRequest,
    form: &TokenForm,
) -> (Option<String>, Option<String>) {
    let basic = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            let (id, secret) = v.split_once(':')?;
            let decode = |s: &str| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((decode(id)?, decode(secret)?))
        });
    match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (form.client_id.clone(), form.client_secret.clone()),
    }
}

async fn token(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let (tenant, policy) = path.into_inner();
    let Some(policy) = policy_of(&state, &tenant, &policy) else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_tenant_or_policy",
            "unknown tenant or policy",
        );
    };
    if form.grant_type.as_deref() != Some("authorization_code") {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code is supported",
        );
    }
    redeem_code(&state, &req, &form, &policy)
}

/// Redeems an authorization code issued for `policy` (a B2C policy, or the External ID tenant's
/// marker): the ID token, and an access token when the authorize request asked for one.
pub(in crate::mock_b2c) fn redeem_code(
    state: &Tenant,
    req: &HttpRequest,
    form: &TokenForm,
    policy: &str,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let (client_id, secret) = client_credentials(req, form);
    let Some(code) = form.code.as_deref().and_then(|c| state.take_code(c)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code is unknown, used or expired",
        );
    };
    if client_id.as_deref() != Some(code.client_id.as_str()) || code.policy != policy {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code was issued to another client or policy",
        );
    }
    if form.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the redirect URI does not match",
        );
    }
    if let Some(expected) = state
        .application(&code.client_id)
        .and_then(|a| a.client_secret.clone())
    {
        use subtle::ConstantTimeEq;
        let given = secret.unwrap_or_default();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "the client secret is wrong",
            );
        }
    }
    if let Some(challenge) = &code.code_challenge {
        let verifier = form.code_verifier.clone().unwrap_or_default();
        let computed = super::keys::b64(&Sha256::digest(verifier.as_bytes()));
        if &computed != challenge {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the code verifier does not match",
            );
        }
    }
    let _ = &form.scope;
    let claims: Map<String, Value> = decode_claims(&code.id_token).unwrap_or_default();
    let mut body = json!({
        "id_token": code.id_token,
        "token_type": "Bearer",
        "not_before": claims.get("nbf").cloned().unwrap_or(Value::Null),
        "id_token_expires_in": 3600,
        "expires_in": 3600,
        "scope": "openid",
    });
    if code.with_access_token {
        body["access_token"] = json!(state.application_access_token(&claims));
        body["scope"] = json!(format!("openid {}", code.client_id));
    }
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

/// The payload of a JWT the mock signed.
fn decode_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn entra_discovery(state: State, path: web::Path<String>) -> HttpResponse {
    if path.as_str() != state.settings.tenant_id {
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            "invalid_tenant",
            "unknown tenant",
        );
    }
    let base = format!("{}/{}", state.base_url(), state.settings.tenant_id);
    HttpResponse::Ok().json(json!({
        "issuer": state.entra_issuer(),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_types_supported": ["code", "id_token", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn entra_keys(state: State, path: web::Path<String>) -> HttpResponse {
    if path.as_str() != state.settings.tenant_id {
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            "invalid_tenant",
            "unknown tenant",
        );
    }
    HttpResponse::Ok().json(state.key.jwks())
}

async fn entra_token(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if path.as_str() != state.settings.tenant_id {
        return error(StatusCode::NOT_FOUND, "invalid_tenant", "unknown tenant");
    }
    if form.grant_type.as_deref() != Some("client_credentials") {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported here",
        );
    }
    let (id, secret) = client_credentials(&req, &form);
    match state.client_credentials_token(
        &id.unwrap_or_default(),
        &secret.unwrap_or_default(),
        form.scope.as_deref().unwrap_or_default(),
    ) {
        Ok(token) => HttpResponse::Ok().json(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": token,
        })),
        Err(why) => error(StatusCode::UNAUTHORIZED, "invalid_client", &why),
    }
}
