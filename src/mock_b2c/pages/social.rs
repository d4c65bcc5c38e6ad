//! The simulated social identity provider's page and the tenant's page after it.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{
    error_page, esc, finish, journey_request, message_html, open_interaction, page, State,
};
use crate::mock_b2c::journey;
use crate::mock_b2c::types::{AccountKind, JourneyKind};

fn provider_form(id: &str, provider: &str, verifies: bool, message: Option<&str>) -> HttpResponse {
    page(
        &format!("Sign in with {provider} (simulated)"),
        &format!(
            "{}<form method=\"post\" action=\"/mock/ui/{}/provider/{}/continue\">\
             <label>Email address at {} <input id=\"email\" name=\"email\" type=\"email\"></label>\
             <label>Given name <input id=\"given-name\" name=\"given_name\"></label>\
             <label>Surname <input id=\"surname\" name=\"surname\"></label>\
             <label><input id=\"email-verified\" name=\"email_verified\" type=\"checkbox\" value=\"true\"{}> \
             the provider says the email is verified</label>\
             <p><button id=\"continue\" type=\"submit\">Continue</button></p></form>",
            message_html(message),
            esc(id),
            esc(provider),
            esc(provider),
            if verifies { " checked" } else { "" }
        ),
    )
}

/// B2C's own page after the provider returned (the user flow's attribute page, the custom
/// policy's `SelfAsserted-Social`): where a refusal that the person can act on is shown, with
/// what the provider said kept as it was and the names editable.
fn social_page(id: &str, provider: &str, form: &ProviderForm, message: &str) -> HttpResponse {
    page(
        "Sign up",
        &format!(
            "{}<p>Signed in with {} as <span id=\"social-email\">{}</span>.</p>\
             <form method=\"post\" action=\"/mock/ui/{}/provider/{}/continue\">\
             <input type=\"hidden\" name=\"email\" value=\"{}\">\
             <input type=\"hidden\" name=\"email_verified\" value=\"{}\">\
             <label>Given name <input id=\"given-name\" name=\"given_name\" value=\"{}\"></label>\
             <label>Surname <input id=\"surname\" name=\"surname\" value=\"{}\"></label>\
             <p><button id=\"continue\" type=\"submit\">Continue</button></p></form>",
            message_html(Some(message)),
            esc(provider),
            esc(form.email.as_deref().unwrap_or_default()),
            esc(id),
            esc(provider),
            esc(form.email.as_deref().unwrap_or_default()),
            esc(form.email_verified.as_deref().unwrap_or_default()),
            esc(form.given_name.as_deref().unwrap_or_default()),
            esc(form.surname.as_deref().unwrap_or_default()),
        ),
    )
}

pub(super) async fn provider_page(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (id, name) = path.into_inner();
    if let Err(page) = open_interaction(&state, &id) {
        return *page;
    }
    let Some(provider) = state.settings.providers.iter().find(|p| p.name == name) else {
        return error_page("AADB2C90238: unknown identity provider.");
    };
    provider_form(&id, &provider.name, provider.verifies_email, None)
}

#[derive(Deserialize)]
pub struct ProviderForm {
    email: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
    email_verified: Option<String>,
}

pub(super) async fn provider_continue(
    state: State,
    path: web::Path<(String, String)>,
    form: web::Form<ProviderForm>,
) -> HttpResponse {
    let (id, name) = path.into_inner();
    let i = match open_interaction(&state, &id) {
        Ok(i) => i,
        Err(page) => return *page,
    };
    let Some(provider) = state
        .settings
        .providers
        .iter()
        .find(|p| p.name == name)
        .cloned()
    else {
        return error_page("AADB2C90238: unknown identity provider.");
    };
    let email = form.email.clone().unwrap_or_default();
    let checked = form.email_verified.as_deref() == Some("true");
    let request = journey_request(&i, JourneyKind::SignUp, AccountKind::Social, &email, |r| {
        r.provider = Some(provider.name.clone());
        // A provider that verifies says so either way; one that does not says nothing unless
        // the box asks it to claim verification.
        r.email_verified = if provider.verifies_email || checked {
            Some(checked)
        } else {
            None
        };
        r.given_name = form.given_name.clone().filter(|g| !g.is_empty());
        r.surname = form.surname.clone().filter(|s| !s.is_empty());
    });
    let result = match journey::run(&state, request).await {
        Ok(r) => r,
        Err(e) => return provider_form(&id, &provider.name, provider.verifies_email, Some(&e.0)),
    };
    // A refusal the person can act on is shown on B2C's page, not on the provider's.
    finish(&state, &id, &i, result, |message| {
        social_page(&id, &provider.name, &form, message)
    })
}
