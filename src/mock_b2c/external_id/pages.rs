//! The External ID user flow's pages, for a person and the browser test: the authorize request,
//! email with a one-time code (the mock's mailbox shows the code) or Google (simulated), the
//! attribute page whose submit calls autolink's submit extension (a validation error shows the
//! form again with its messages, a block page ends the flow), then token issuance and the
//! redirect with an authorization code. Pages post to `/mock/ciam/{interaction}/...`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::endpoints::code_policy;
use super::extension::{Context, SignUpInfo};
use super::journey::{Journey, Submitted};
use super::ExternalId;
use crate::mock_b2c::journey::{derived_subject, urlencode};
use crate::mock_b2c::pages::{error_page, esc, message_html, page, CodeCheck};
use crate::mock_b2c::types::{AccountKind, JourneyKind, JourneyRequest, JourneyResult, Outcome};
use crate::mock_b2c::Tenant;

type State = web::Data<Arc<Tenant>>;

/// How long a page flow may take.
const INTERACTION_LIFETIME: Duration = Duration::from_secs(1800);
/// The longest address a code is sent to.
const MAX_EMAIL_LEN: usize = 254;
const INVALID_EMAIL: &str = "Please enter a valid email address.";
const CODE_INCORRECT: &str = "That code is incorrect. Please try again.";
const CODE_AGAIN: &str = "Please request a new code.";

/// What proved who the person is.
#[derive(Clone)]
enum Proven {
    Email(String),
    Google {
        subject: String,
        email: String,
        given_name: Option<String>,
        surname: Option<String>,
    },
}

/// One authorize request in progress; its correlation id is the session's, kept across pages.
#[derive(Clone)]
pub struct Interaction {
    client_id: String,
    client_name: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    /// The scope named the application itself: the token response has an access token too.
    with_access_token: bool,
    locale: String,
    correlation_id: String,
    proven: Option<Proven>,
    started: Instant,
    finished: bool,
}

/// The interactions of the tenant's pages.
#[derive(Default)]
pub struct Interactions(Mutex<HashMap<String, Interaction>>);

impl Interactions {
    fn get(&self, id: &str) -> Option<Interaction> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(id)
            .filter(|i| i.started.elapsed() < INTERACTION_LIFETIME && !i.finished)
            .cloned()
    }

    fn put(&self, id: &str, interaction: Interaction) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, i| i.started.elapsed() < INTERACTION_LIFETIME);
        all.insert(id.to_string(), interaction);
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ciam/{tid}/oauth2/v2.0/authorize",
        web::get().to(authorize),
    )
    .route("/mock/ciam/{id}/email", web::post().to(send_code))
    .route("/mock/ciam/{id}/code", web::post().to(check_code))
    .route("/mock/ciam/{id}/google", web::post().to(google_page))
    .route(
        "/mock/ciam/{id}/google/continue",
        web::post().to(google_continue),
    )
    .route("/mock/ciam/{id}/attributes", web::post().to(attributes));
}

/// The tenant and the page's interaction, or the page to show instead (boxed: a response is
/// large beside them).
fn open<'a>(
    state: &'a Tenant,
    id: &str,
) -> Result<(&'a ExternalId, Interaction), Box<HttpResponse>> {
    let ext = state
        .external_id
        .as_ref()
        .ok_or_else(|| Box::new(error_page("The mock has no External ID tenant.")))?;
    let i = ext.interactions.get(id).ok_or_else(|| {
        Box::new(error_page(
            "AADSTS50058: the page expired or was used; start again from the application.",
        ))
    })?;
    Ok((ext, i))
}

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
    ui_locales: Option<String>,
}

async fn authorize(
    state: State,
    path: web::Path<String>,
    q: web::Query<AuthorizeQuery>,
) -> HttpResponse {
    let q = q.into_inner();
    let Some(ext) = state
        .external_id
        .as_ref()
        .filter(|e| e.settings.tenant_id.eq_ignore_ascii_case(&path))
    else {
        return error_page("AADSTS90002: unknown tenant.");
    };
    let client_id = q.client_id.unwrap_or_default();
    let redirect_uri = q.redirect_uri.unwrap_or_default();
    // Never redirect to an address that is not registered: show the error instead.
    if let Err(why) = state.check_redirect(&client_id, &redirect_uri) {
        return error_page(&format!("AADSTS50011: {why}."));
    }
    if q.response_type.as_deref() != Some("code") {
        return error_page("AADSTS700054: the mock supports response_type=code only.");
    }
    let scope = q.scope.unwrap_or_default();
    if !scope.split_whitespace().any(|s| s == "openid") {
        return error_page("AADSTS90009: the scope must include openid.");
    }
    if q.code_challenge.is_some() && q.code_challenge_method.as_deref() != Some("S256") {
        return error_page("AADSTS501491: the code challenge method must be S256.");
    }
    let client_name = state
        .settings
        .applications
        .iter()
        .find(|a| a.client_id == client_id)
        .and_then(|a| a.name.clone())
        .unwrap_or_else(|| client_id.clone());
    let with_access_token = scope.split_whitespace().any(|s| s == client_id);
    let id = crate::mock_b2c::random_token();
    ext.interactions.put(
        &id,
        Interaction {
            client_id,
            client_name,
            redirect_uri,
            state: q.state,
            nonce: q.nonce,
            code_challenge: q.code_challenge,
            with_access_token,
            locale: q
                .ui_locales
                .unwrap_or_else(|| "en-us".into())
                .to_lowercase(),
            correlation_id: uuid::Uuid::new_v4().to_string(),
            proven: None,
            started: Instant::now(),
            finished: false,
        },
    );
    start_page(&id, None, "")
}

fn start_page(id: &str, message: Option<&str>, email: &str) -> HttpResponse {
    let id = esc(id);
    page(
        "Sign in or sign up",
        &format!(
            "{}<form method=\"post\" action=\"/mock/ciam/{id}/email\">\
             <label>Email <input id=\"email\" name=\"email\" type=\"email\" value=\"{}\"></label>\
             <p><button id=\"send-code\" type=\"submit\">Send code</button></p></form>\
             <p>Or sign in with:</p><form method=\"post\" action=\"/mock/ciam/{id}/google\">\
             <button id=\"google\" type=\"submit\">Google</button></form>",
            message_html(message),
            esc(email)
        ),
    )
}

fn code_page(id: &str, email: &str, code: &str, message: Option<&str>) -> HttpResponse {
    let id = esc(id);
    page(
        "Enter code",
        &format!(
            "{}<p class=\"mailbox\">Mock mailbox of {}: your code is \
             <span id=\"mailbox-code\">{}</span></p>\
             <form method=\"post\" action=\"/mock/ciam/{id}/code\">\
             <input type=\"hidden\" name=\"email\" value=\"{}\">\
             <label>Code <input id=\"verification-code\" name=\"code\"></label>\
             <p><button id=\"verify\" type=\"submit\">Next</button></p></form>",
            message_html(message),
            esc(email),
            esc(code),
            esc(email)
        ),
    )
}

#[derive(Deserialize, Default)]
pub struct PageForm {
    email: Option<String>,
    code: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
}

async fn send_code(
    state: State,
    path: web::Path<String>,
    form: web::Form<PageForm>,
) -> HttpResponse {
    if let Err(page) = open(&state, &path) {
        return *page;
    }
    let email = form.email.clone().unwrap_or_default().trim().to_string();
    if !email.contains('@') || email.len() > MAX_EMAIL_LEN {
        return start_page(&path, Some(INVALID_EMAIL), &email);
    }
    let code = state.mailbox.send(&email);
    code_page(&path, &email, &code, None)
}

async fn check_code(
    state: State,
    path: web::Path<String>,
    form: web::Form<PageForm>,
) -> HttpResponse {
    let (ext, mut i) = match open(&state, &path) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let email = form.email.clone().unwrap_or_default().trim().to_string();
    let given = form.code.as_deref().unwrap_or_default();
    let lifetime = state.settings.verification_code_lifetime();
    match state.mailbox.check(&email, given, lifetime) {
        CodeCheck::Verified(_) => {
            i.proven = Some(Proven::Email(email));
            ext.interactions.put(&path, i.clone());
            after_proof(&state, ext, &path, i).await
        }
        CodeCheck::Wrong(code) => code_page(&path, &email, &code, Some(CODE_INCORRECT)),
        _ => start_page(&path, Some(CODE_AGAIN), &email),
    }
}

async fn google_page(state: State, path: web::Path<String>) -> HttpResponse {
    if let Err(page) = open(&state, &path) {
        return *page;
    }
    page(
        "Sign in with Google (simulated)",
        &format!(
            "<form method=\"post\" action=\"/mock/ciam/{}/google/continue\">\
             <label>Google account email <input id=\"email\" name=\"email\" type=\"email\"></label>\
             <label>Given name <input id=\"given-name\" name=\"given_name\"></label>\
             <label>Surname <input id=\"surname\" name=\"surname\"></label>\
             <p><button id=\"continue\" type=\"submit\">Continue</button></p></form>",
            esc(&path)
        ),
    )
}

async fn google_continue(
    state: State,
    path: web::Path<String>,
    form: web::Form<PageForm>,
) -> HttpResponse {
    let (ext, mut i) = match open(&state, &path) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let email = form.email.clone().unwrap_or_default().trim().to_string();
    if !email.contains('@') || email.len() > MAX_EMAIL_LEN {
        return error_page(INVALID_EMAIL);
    }
    i.proven = Some(Proven::Google {
        subject: derived_subject("google.com", &email),
        email,
        given_name: form.given_name.clone().filter(|g| !g.is_empty()),
        surname: form.surname.clone().filter(|s| !s.is_empty()),
    });
    ext.interactions.put(&path, i.clone());
    after_proof(&state, ext, &path, i).await
}

/// The driver's request for the interaction (`redirect_uri` is left out: the code is made
/// here, with the PKCE challenge).
fn request_of(i: &Interaction, info: &SignUpInfo) -> JourneyRequest {
    JourneyRequest {
        policy: None,
        client_id: i.client_id.clone(),
        kind: JourneyKind::SignUp,
        account: if info.federated.is_some() {
            AccountKind::Social
        } else {
            AccountKind::Local
        },
        email: info.email.clone(),
        password: None,
        provider: info.federated.as_ref().map(|f| f.0.clone()),
        provider_subject: info.federated.as_ref().map(|f| f.1.clone()),
        email_verified: None,
        complete_email_verification: true,
        given_name: info.given_name.clone(),
        surname: info.surname.clone(),
        ui_locales: Some(i.locale.clone()),
        nonce: i.nonce.clone(),
        redirect_uri: None,
        state: None,
        single_sign_on: false,
        external_id: true,
        payload: None,
    }
}

fn info_of(proven: &Proven) -> SignUpInfo {
    match proven {
        Proven::Email(email) => SignUpInfo {
            email: email.clone(),
            given_name: None,
            surname: None,
            federated: None,
        },
        Proven::Google {
            subject,
            email,
            given_name,
            surname,
        } => SignUpInfo {
            email: email.clone(),
            given_name: given_name.clone(),
            surname: surname.clone(),
            federated: Some(("google.com".into(), subject.clone())),
        },
    }
}

fn journey<'a>(
    state: &'a Tenant,
    ext: &'a ExternalId,
    i: &Interaction,
    request: &'a JourneyRequest,
) -> Journey<'a> {
    Journey {
        tenant: state,
        ext,
        variant: ext.settings.payload,
        request,
        context: Context {
            correlation_id: i.correlation_id.clone(),
            client_id: i.client_id.clone(),
            client_name: i.client_name.clone(),
            locale: i.locale.clone(),
        },
        result: JourneyResult::new(Outcome::Error),
    }
}

/// After the code or Google: a known user signs in (token issuance), a new one gets the
/// attribute page.
async fn after_proof(state: &Tenant, ext: &ExternalId, id: &str, i: Interaction) -> HttpResponse {
    let Some(proven) = &i.proven else {
        return error_page("Not signed in.");
    };
    let info = info_of(proven);
    let request = request_of(&i, &info);
    let mut journey = journey(state, ext, &i, &request);
    if let Some(user) = journey.existing(&info) {
        journey.result.object_id = Some(user.object_id.clone());
        journey.token_issuance(&user).await;
        return finish(state, ext, id, &i, journey.result);
    }
    attribute_page(id, &info, None, &Map::new())
}

fn attribute_page(
    id: &str,
    info: &SignUpInfo,
    message: Option<&str>,
    errors: &Map<String, Value>,
) -> HttpResponse {
    let error_of = |name: &str| {
        errors
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(|m| {
                format!(
                    "<span id=\"error-{name}\" class=\"message\">{}</span>",
                    esc(m)
                )
            })
            .unwrap_or_default()
    };
    // Messages for attributes the page has no field for (the email, when it is the identity).
    let others: String = errors
        .iter()
        .filter(|(k, _)| {
            !["givenName", "surname"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(k))
        })
        .map(|(k, v)| {
            format!(
                "<p id=\"error-{}\" class=\"message\">{}</p>",
                esc(k),
                esc(v.as_str().unwrap_or_default())
            )
        })
        .collect();
    page(
        "Sign up",
        &format!(
            "{}{others}<p>Signing up as <span id=\"signup-email\">{}</span>.</p>\
             <form method=\"post\" action=\"/mock/ciam/{}/attributes\">\
             <label>Given name <input id=\"given-name\" name=\"given_name\" value=\"{}\"></label>{}\
             <label>Surname <input id=\"surname\" name=\"surname\" value=\"{}\"></label>{}\
             <p><button id=\"create\" type=\"submit\">Continue</button></p></form>",
            message_html(message),
            esc(&info.email),
            esc(id),
            esc(info.given_name.as_deref().unwrap_or_default()),
            error_of("givenName"),
            esc(info.surname.as_deref().unwrap_or_default()),
            error_of("surname"),
        ),
    )
}

async fn attributes(
    state: State,
    path: web::Path<String>,
    form: web::Form<PageForm>,
) -> HttpResponse {
    let (ext, i) = match open(&state, &path) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let Some(proven) = &i.proven else {
        return error_page("Sign in first.");
    };
    let mut info = info_of(proven);
    info.given_name = form.given_name.clone().filter(|g| !g.is_empty());
    info.surname = form.surname.clone().filter(|s| !s.is_empty());
    let request = request_of(&i, &info);
    let mut journey = journey(&state, ext, &i, &request);
    match journey.submit(info.clone()).await {
        Submitted::Continue(info) => {
            if let Some(user) = journey.create(&info) {
                journey.token_issuance(&user).await;
            }
            finish(&state, ext, &path, &i, journey.result)
        }
        Submitted::Form {
            message,
            attribute_errors,
        } => attribute_page(&path, &info, message.as_deref(), &attribute_errors),
        Submitted::Ended => finish(&state, ext, &path, &i, journey.result),
    }
}

/// The end of the flow: the redirect with a code, the block page, or Entra's error page.
fn finish(
    state: &Tenant,
    ext: &ExternalId,
    id: &str,
    i: &Interaction,
    result: JourneyResult,
) -> HttpResponse {
    let message = result.message.clone().unwrap_or_default();
    match (result.outcome, result.id_token) {
        (Outcome::Token, Some(token)) => {
            let code = state.remember_code(
                &i.client_id,
                &i.redirect_uri,
                &code_policy(&ext.settings.tenant_id),
                &token,
                i.code_challenge.clone(),
                i.with_access_token,
            );
            let mut done = i.clone();
            done.finished = true;
            ext.interactions.put(id, done);
            let mut location = format!(
                "{}{}code={}",
                i.redirect_uri,
                if i.redirect_uri.contains('?') {
                    '&'
                } else {
                    '?'
                },
                urlencode(&code)
            );
            if let Some(s) = &i.state {
                location.push_str(&format!("&state={}", urlencode(s)));
            }
            HttpResponse::Found()
                .insert_header(("Location", location))
                .finish()
        }
        (Outcome::BlockPage, _) => page(
            result.title.as_deref().unwrap_or("You can't sign up"),
            &format!(
                "<p id=\"block-title\">{}</p><p id=\"block-message\" class=\"message\">{}</p>",
                esc(result.title.as_deref().unwrap_or_default()),
                esc(&message)
            ),
        ),
        (Outcome::ValidationError, _) => error_page(&message),
        _ => {
            let detail = result
                .extension_error
                .map(|e| {
                    format!(
                        "<p><small>Sign-in log (mock): <span id=\"extension-error\">{} {}</span></small></p>",
                        e.code,
                        esc(&e.name)
                    )
                })
                .unwrap_or_default();
            let body = format!(
                "<p id=\"error-message\" class=\"message\">{}</p>{detail}",
                esc(&message)
            );
            let mut response = page("Error", &body);
            *response.status_mut() = actix_web::http::StatusCode::BAD_GATEWAY;
            response
        }
    }
}
