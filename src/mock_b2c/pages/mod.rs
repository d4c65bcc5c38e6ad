//! The pages a person clicks through: sign-in, local sign-up with email verification, a
//! simulated social provider, and the block, validation and error pages. Each page posts to
//! `/mock/ui/{interaction}/...`; the interaction keeps the authorize request's parameters.
//!
//! Here: the interaction, the sign-in page, the end of a page flow (redirect, block and error
//! pages) and the page frame; the local sign-up with its mailbox in [`sign_up`], the simulated
//! social provider in [`social`].

mod sign_up;
mod social;

use self::sign_up::{send_code, sign_up, sign_up_page};
pub use self::sign_up::{CodeCheck, Mailbox};
use self::social::{provider_continue, provider_page};

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::journey::{self, urlencode};
use super::types::{AccountKind, JourneyKind, JourneyRequest, JourneyResult, Outcome};
use super::Tenant;

type State = web::Data<Arc<Tenant>>;

/// How long a page flow may take.
const INTERACTION_LIFETIME: Duration = Duration::from_secs(1800);

/// How long B2C's single sign-on session lasts (the session lifetime's default, 1440 minutes).
const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// B2C's single sign-on session: the account a browser signed in to with a policy.
#[derive(Clone)]
pub struct Session {
    policy: String,
    object_id: String,
    started: Instant,
}

/// The name of B2C's session cookie, `x-ms-cpim-sso:{tenant}_0`.
pub fn session_cookie_name(tenant: &str) -> String {
    format!("x-ms-cpim-sso:{tenant}_0")
}

/// One authorize request in progress.
#[derive(Clone)]
pub struct Interaction {
    policy: String,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    response_mode: String,
    with_access_token: bool,
    ui_locales: Option<String>,
    started: Instant,
    /// The journey ended with a token: its pages were submitted for the last time.
    finished: bool,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mock/ui/{id}/signin", web::post().to(sign_in))
        .route("/mock/ui/{id}/signup", web::get().to(sign_up_page))
        .route("/mock/ui/{id}/signup/code", web::post().to(send_code))
        .route("/mock/ui/{id}/signup", web::post().to(sign_up))
        .route(
            "/mock/ui/{id}/provider/{name}",
            web::post().to(provider_page),
        )
        .route(
            "/mock/ui/{id}/provider/{name}/continue",
            web::post().to(provider_continue),
        );
}

/// Escapes text for HTML.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(in crate::mock_b2c) fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
             <style>body{{font-family:sans-serif;max-width:32em;margin:2em auto}}\
             label{{display:block;margin-top:.6em}}.message{{color:#a00;font-weight:bold}}\
             .mailbox{{background:#eef;padding:.5em}}</style></head><body>\
             <p><small>mock B2C (not Azure AD B2C)</small></p><h1>{}</h1>{body}</body></html>",
            esc(title),
            esc(title)
        ))
}

pub(in crate::mock_b2c) fn error_page(message: &str) -> HttpResponse {
    let mut response = page(
        "Error",
        &format!(
            "<p id=\"error-message\" class=\"message\">{}</p>",
            esc(message)
        ),
    );
    *response.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
    response
}

/// `GET /`: what the mock serves.
pub async fn home(state: State) -> HttpResponse {
    let mut body = String::from("<p>Policies:</p><ul>");
    for policy in state.policies() {
        body.push_str(&format!(
            "<li>{} (<a href=\"/{}/{}/v2.0/.well-known/openid-configuration\">discovery</a>)</li>",
            esc(&policy),
            esc(&state.settings.tenant),
            esc(&policy)
        ));
    }
    body.push_str(
        "</ul><p><a id=\"demo\" href=\"/demo\">Demo application</a> · \
         <a id=\"demo-business\" href=\"/demo-business\">Demo business application</a> \
         (when a business application is registered with its callback) · \
         <a id=\"demo-external-id\" href=\"/demo-external-id\">Demo External ID application</a> \
         (with an External ID tenant and an application registered with its callback) · \
         <a href=\"/mock/users\">Directory users (JSON)</a></p>",
    );
    page("mock B2C", &body)
}

/// The authorize request's query.
#[derive(Deserialize)]
pub struct AuthorizeQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    response_mode: Option<String>,
    ui_locales: Option<String>,
    /// `login` asks for the sign-in page even when B2C's session would sign the browser in.
    prompt: Option<String>,
}

/// `GET /{tenant}/{policy}/oauth2/v2.0/authorize`: the sign-in page.
pub async fn authorize(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
    query: web::Query<AuthorizeQuery>,
) -> HttpResponse {
    start(&req, state, path.into_inner(), query.into_inner()).await
}

/// `POST` of the same (`response_mode=form_post` clients may post the request).
pub async fn authorize_post(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
    form: web::Form<AuthorizeQuery>,
) -> HttpResponse {
    start(&req, state, path.into_inner(), form.into_inner()).await
}

async fn start(
    req: &HttpRequest,
    state: State,
    (tenant, policy): (String, String),
    q: AuthorizeQuery,
) -> HttpResponse {
    if !state.is_tenant(&tenant) {
        return error_page("AADB2C90002: unknown tenant.");
    }
    let Some((policy, _)) = state.find_policy(&policy) else {
        return error_page("AADB2C90008: the policy does not exist in the tenant.");
    };
    let Some(client_id) = q.client_id.filter(|c| !c.is_empty()) else {
        return error_page("AADB2C90018: the request names no client_id.");
    };
    let Some(redirect_uri) = q.redirect_uri.filter(|r| !r.is_empty()) else {
        return error_page("AADB2C90013: the request names no redirect_uri.");
    };
    // Never redirect to an address that is not registered: show the error instead.
    if let Err(why) = state.check_redirect(&client_id, &redirect_uri) {
        return error_page(&format!("AADB2C90006: {why}."));
    }
    if q.response_type.as_deref() != Some("code") {
        return error_page("AADB2C90079: the mock supports response_type=code only.");
    }
    let scope = q.scope.unwrap_or_default();
    if !scope.split_whitespace().any(|s| s == "openid") {
        return error_page("AADB2C90055: the scope must include openid.");
    }
    if q.code_challenge.is_some() && q.code_challenge_method.as_deref() != Some("S256") {
        return error_page("AADB2C90183: the code challenge method must be S256.");
    }
    let interaction = Interaction {
        with_access_token: scope.split_whitespace().any(|s| s == client_id),
        policy,
        client_id,
        redirect_uri,
        state: q.state,
        nonce: q.nonce,
        code_challenge: q.code_challenge,
        response_mode: q.response_mode.unwrap_or_else(|| "query".into()),
        ui_locales: q.ui_locales,
        started: Instant::now(),
        finished: false,
    };
    let id = super::random_token();
    {
        let mut all = state.interactions.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, i| i.started.elapsed() < INTERACTION_LIFETIME);
        all.insert(id.clone(), interaction.clone());
    }
    // Single sign-on: B2C's session of this browser and policy signs in without a page, and
    // the journey's remaining steps run (autolink's link step among them).
    let prompt_login = q
        .prompt
        .as_deref()
        .is_some_and(|p| p.split_whitespace().any(|p| p == "login"));
    if !prompt_login {
        if let Some(request) = session_request(req, &state, &interaction) {
            let result = match journey::run(&state, request).await {
                Ok(r) => r,
                Err(e) => return error_page(&e.0),
            };
            return finish(&state, &id, &interaction, result, |message| {
                error_page(message)
            });
        }
    }
    sign_in_page(&state, &id, None, "")
}

/// The single sign-on journey of the browser's session for this policy, when it has one and
/// its account still exists.
fn session_request(req: &HttpRequest, state: &Tenant, i: &Interaction) -> Option<JourneyRequest> {
    let cookie = req.cookie(&session_cookie_name(&state.settings.tenant))?;
    let session = {
        let mut all = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
        all.get(cookie.value()).cloned()?
    };
    if !session.policy.eq_ignore_ascii_case(&i.policy) {
        return None;
    }
    let user = state.directory.by_object_id(&session.object_id)?;
    let account = if user.provider.is_some() {
        AccountKind::Social
    } else {
        AccountKind::Local
    };
    let email = user.sign_in_email.clone().unwrap_or(user.email.clone());
    Some(journey_request(
        i,
        JourneyKind::SignIn,
        account,
        &email,
        |r| {
            r.provider = user.provider.clone();
            r.provider_subject = user.provider_subject.clone();
            r.single_sign_on = true;
        },
    ))
}

/// The interaction of a page, or the page to show instead: expired, or already finished (boxed:
/// a response is large beside an interaction).
pub(super) fn open_interaction(state: &Tenant, id: &str) -> Result<Interaction, Box<HttpResponse>> {
    match interaction(state, id) {
        None => Err(Box::new(error_page(
            "AADB2C90088: the page expired; start again from the application.",
        ))),
        // A page submitted again after its journey ended (the browser went Back): the mock's
        // own answer, since B2C documents none; the journey is not run twice.
        Some(i) if i.finished => Err(Box::new(page(
            "Sign in",
            "<p id=\"journey-complete\" class=\"message\">You have already signed in with this \
             page. Go back to the application and sign in again from there.</p>",
        ))),
        Some(i) => Ok(i),
    }
}

fn interaction(state: &Tenant, id: &str) -> Option<Interaction> {
    let all = state.interactions.lock().unwrap_or_else(|e| e.into_inner());
    all.get(id)
        .filter(|i| i.started.elapsed() < INTERACTION_LIFETIME)
        .cloned()
}

pub(in crate::mock_b2c) fn message_html(message: Option<&str>) -> String {
    message
        .map(|m| {
            format!(
                "<p id=\"validation-message\" class=\"message\">{}</p>",
                esc(m)
            )
        })
        .unwrap_or_default()
}

fn sign_in_page(state: &Tenant, id: &str, message: Option<&str>, email: &str) -> HttpResponse {
    let id = esc(id);
    let mut providers = String::new();
    for p in &state.settings.providers {
        let short = p.name.split('.').next().unwrap_or(&p.name);
        providers.push_str(&format!(
            "<form method=\"post\" action=\"/mock/ui/{id}/provider/{}\">\
             <button id=\"{}\" type=\"submit\">{}</button></form>",
            esc(&p.name),
            esc(short),
            esc(&p.name)
        ));
    }
    page(
        "Sign in",
        &format!(
            "{}<form method=\"post\" action=\"/mock/ui/{id}/signin\">\
             <label>Email address <input id=\"email\" name=\"email\" type=\"email\" value=\"{}\"></label>\
             <label>Password <input id=\"password\" name=\"password\" type=\"password\"></label>\
             <p><button id=\"next\" type=\"submit\">Sign in</button></p></form>\
             <p>Don't have an account? <a id=\"signup-link\" href=\"/mock/ui/{id}/signup\">Sign up now</a></p>\
             <p>Sign in with your social account:</p>{providers}",
            message_html(message),
            esc(email)
        ),
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    email: Option<String>,
    password: Option<String>,
}

async fn sign_in(
    state: State,
    path: web::Path<String>,
    form: web::Form<SignInForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let i = match open_interaction(&state, &id) {
        Ok(i) => i,
        Err(page) => return *page,
    };
    let email = form.email.clone().unwrap_or_default();
    let request = journey_request(&i, JourneyKind::SignIn, AccountKind::Local, &email, |r| {
        r.password = form.password.clone();
    });
    let result = match journey::run(&state, request).await {
        Ok(r) => r,
        Err(e) => return sign_in_page(&state, &id, Some(&e.0), &email),
    };
    finish(&state, &id, &i, result, |message| {
        sign_in_page(&state, &id, Some(message), &email)
    })
}

pub(super) fn journey_request(
    i: &Interaction,
    kind: JourneyKind,
    account: AccountKind,
    email: &str,
    change: impl FnOnce(&mut JourneyRequest),
) -> JourneyRequest {
    let mut request = JourneyRequest {
        policy: Some(i.policy.clone()),
        client_id: i.client_id.clone(),
        kind,
        account,
        email: email.to_string(),
        password: None,
        provider: None,
        provider_subject: None,
        email_verified: None,
        complete_email_verification: false,
        given_name: None,
        surname: None,
        ui_locales: i.ui_locales.clone(),
        nonce: i.nonce.clone(),
        redirect_uri: None,
        state: None,
        single_sign_on: false,
        external_id: false,
        payload: None,
    };
    change(&mut request);
    request
}

/// The end of a page flow: the redirect with a code (and B2C's session cookie), or the page the
/// person reads.
pub(super) fn finish(
    state: &Tenant,
    id: &str,
    i: &Interaction,
    result: JourneyResult,
    on_form: impl FnOnce(&str) -> HttpResponse,
) -> HttpResponse {
    let message = result.message.clone().unwrap_or_default();
    match result.outcome {
        Outcome::Token => {
            let Some(token) = result.id_token else {
                return error_page("no token");
            };
            let code = state.remember_code(
                &i.client_id,
                &i.redirect_uri,
                &i.policy,
                &token,
                i.code_challenge.clone(),
                i.with_access_token,
            );
            if let Some(mine) = state
                .interactions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(id)
            {
                mine.finished = true;
            }
            let mut response = redirect(i, &[("code", code.as_str())]);
            if let Some(object_id) = &result.object_id {
                let session = super::random_token();
                state
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        session.clone(),
                        Session {
                            policy: i.policy.clone(),
                            object_id: object_id.clone(),
                            started: Instant::now(),
                        },
                    );
                let cookie = Cookie::build(session_cookie_name(&state.settings.tenant), session)
                    .path("/")
                    .http_only(true)
                    .same_site(SameSite::Lax)
                    .finish();
                if let Err(e) = response.add_cookie(&cookie) {
                    log::warn!("mock B2C: the session cookie was not set: {e}");
                }
            }
            response
        }
        Outcome::ValidationError => on_form(&message),
        Outcome::BlockPage => page(
            "We can't sign you up",
            &format!(
                "<p id=\"block-message\" class=\"message\">{}</p>{}",
                esc(&message),
                result
                    .code
                    .map(|c| format!(
                        "<p><small>Code: <span id=\"block-code\">{}</span></small></p>",
                        esc(&c)
                    ))
                    .unwrap_or_default()
            ),
        ),
        Outcome::Error => error_page(&message),
    }
}

/// Sends the browser back to the application with these parameters and the state.
pub(super) fn redirect(i: &Interaction, params: &[(&str, &str)]) -> HttpResponse {
    let mut all: Vec<(&str, &str)> = params.to_vec();
    if let Some(s) = &i.state {
        all.push(("state", s));
    }
    if i.response_mode == "form_post" {
        let inputs: String = all
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    esc(k),
                    esc(v)
                )
            })
            .collect();
        return HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(format!(
                "<!DOCTYPE html><html><body onload=\"document.forms[0].submit()\">\
                 <form method=\"post\" action=\"{}\">{inputs}<noscript><button>Continue</button></noscript></form></body></html>",
                esc(&i.redirect_uri)
            ));
    }
    let query: Vec<String> = all
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    let separator = if i.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    HttpResponse::Found()
        .insert_header((
            "Location",
            format!("{}{separator}{}", i.redirect_uri, query.join("&")),
        ))
        .finish()
}
