//! The local sign-up page: the email, the verification code sent to the mock's mailbox (shown on
//! the page), and the attributes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{
    esc, finish, journey_request, message_html, open_interaction, page, State, INTERACTION_LIFETIME,
};
use crate::mock_b2c::journey::{self, urlencode};
use crate::mock_b2c::types::{AccountKind, JourneyKind};

/// The starter pack's help text for an email that is not an address (its `email` claim's
/// pattern), shown before any code is sent.
const INVALID_EMAIL: &str = "Please enter a valid email address.";
/// B2C's texts for the verification code (`ver_*` of the starter pack's localization).
const CODE_INCORRECT: &str = "That code is incorrect. Please try again.";
const CODE_NO_RETRY: &str = "You've made too many incorrect attempts. Please try again later.";
const CODE_EXPIRED: &str = "That code is expired. Please request a new code.";
const SEND_FIRST: &str = "Verification is necessary. Please click Send button.";
/// The longest address a code is sent to (RFC 5321's path limit, as autolink's own rule).
const MAX_EMAIL_LEN: usize = 254;

/// The sign-up page; `?email=` fills the address in ("Change e-mail" comes back here).
pub(super) async fn sign_up_page(
    state: State,
    path: web::Path<String>,
    query: web::Query<SignUpForm>,
) -> HttpResponse {
    let id = path.into_inner();
    if let Err(page) = open_interaction(&state, &id) {
        return *page;
    }
    let email = query.email.clone().unwrap_or_default();
    sign_up_form(&id, None, &email, None, &SignUpForm::default())
}

/// The sign-up form: first the email and "send verification code", then the code field (with
/// the mock's mailbox showing the code) and the rest of the attributes.
fn sign_up_form(
    id: &str,
    message: Option<&str>,
    email: &str,
    mailed: Option<&str>,
    form: &SignUpForm,
) -> HttpResponse {
    let id = esc(id);
    let body = match mailed {
        None => format!(
            "{}<form method=\"post\" action=\"/mock/ui/{id}/signup/code\">\
             <label>Email address <input id=\"email\" name=\"email\" type=\"email\" value=\"{}\"></label>\
             <p><button id=\"send-code\" type=\"submit\">Send verification code</button></p></form>",
            message_html(message),
            esc(email)
        ),
        Some(code) => format!(
            "{}<p class=\"mailbox\">Mock mailbox of {}: your verification code is \
             <span id=\"mailbox-code\">{}</span></p>\
             <form method=\"post\" action=\"/mock/ui/{id}/signup\">\
             <input type=\"hidden\" name=\"email\" value=\"{}\">\
             <label>Verification code <input id=\"verification-code\" name=\"verification_code\" value=\"{}\"></label>\
             <label>New password <input id=\"password\" name=\"password\" type=\"password\"></label>\
             <label>Given name <input id=\"given-name\" name=\"given_name\" value=\"{}\"></label>\
             <label>Surname <input id=\"surname\" name=\"surname\" value=\"{}\"></label>\
             <p><button id=\"create\" type=\"submit\">Create</button></p></form>\
             <p><a id=\"change-email\" href=\"/mock/ui/{id}/signup?email={}\">Change e-mail</a></p>",
            message_html(message),
            esc(email),
            esc(code),
            esc(email),
            esc(form.verification_code.as_deref().unwrap_or_default()),
            esc(form.given_name.as_deref().unwrap_or_default()),
            esc(form.surname.as_deref().unwrap_or_default()),
            esc(&urlencode(email)),
        ),
    };
    page("Sign up", &body)
}

#[derive(Deserialize, Default)]
pub struct SignUpForm {
    email: Option<String>,
    verification_code: Option<String>,
    password: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
}

pub(super) async fn send_code(
    state: State,
    path: web::Path<String>,
    form: web::Form<SignUpForm>,
) -> HttpResponse {
    let id = path.into_inner();
    if let Err(page) = open_interaction(&state, &id) {
        return *page;
    }
    let email = form.email.clone().unwrap_or_default().trim().to_string();
    if !email.contains('@') || email.len() > MAX_EMAIL_LEN {
        return sign_up_form(&id, Some(INVALID_EMAIL), &email, None, &form);
    }
    let code = state.mailbox.send(&email);
    sign_up_form(&id, None, &email, Some(&code), &SignUpForm::default())
}

pub(super) async fn sign_up(
    state: State,
    path: web::Path<String>,
    form: web::Form<SignUpForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let i = match open_interaction(&state, &id) {
        Ok(i) => i,
        Err(page) => return *page,
    };
    let email = form.email.clone().unwrap_or_default().trim().to_string();
    let given = form.verification_code.as_deref().unwrap_or_default();
    let lifetime = state.settings.verification_code_lifetime();
    // A tenant whose sign-up does not require verification takes the form without a code.
    let needed = state.settings.local_email_verification;
    let (shown_code, verified) = match state.mailbox.check(&email, given, lifetime) {
        CodeCheck::Verified(code) => (code, true),
        CodeCheck::Wrong(code) if needed => {
            return sign_up_form(&id, Some(CODE_INCORRECT), &email, Some(&code), &form)
        }
        CodeCheck::NoRetry if needed => {
            return sign_up_form(&id, Some(CODE_NO_RETRY), &email, None, &form)
        }
        CodeCheck::Expired if needed => {
            return sign_up_form(&id, Some(CODE_EXPIRED), &email, None, &form)
        }
        CodeCheck::NotSent if needed => {
            return sign_up_form(&id, Some(SEND_FIRST), &email, None, &form)
        }
        CodeCheck::Wrong(code) => (code, false),
        _ => (String::new(), false),
    };
    let request = journey_request(&i, JourneyKind::SignUp, AccountKind::Local, &email, |r| {
        r.password = form.password.clone().filter(|p| !p.is_empty());
        r.given_name = form.given_name.clone().filter(|g| !g.is_empty());
        r.surname = form.surname.clone().filter(|s| !s.is_empty());
        r.complete_email_verification = verified;
    });
    let result = match journey::run(&state, request).await {
        Ok(r) => r,
        Err(e) => return sign_up_form(&id, Some(&e.0), &email, Some(&shown_code), &form),
    };
    finish(&state, &id, &i, result, |message| {
        sign_up_form(&id, Some(message), &email, Some(&shown_code), &form)
    })
}

/// What the mailbox says of a code typed for an address.
pub enum CodeCheck {
    /// The code of the address (it stays verified for the rest of the sign-up).
    Verified(String),
    /// Not the code; the person may try again (the code is shown again).
    Wrong(String),
    /// Too many wrong codes: the code is void, a new one must be sent.
    NoRetry,
    Expired,
    /// No code was sent to this address.
    NotSent,
}

/// One code "mailed" to an address.
struct Mailed {
    code: String,
    sent: Instant,
    wrong: u32,
    verified: bool,
}

/// The mock's mailbox: the last code sent to each address (compared case-insensitively), so a
/// page shows and checks the code of the address typed on it, whatever other tabs sent.
#[derive(Default)]
pub struct Mailbox(Mutex<HashMap<String, Mailed>>);

/// Wrong codes allowed before a code is void (the mock's choice; B2C documents a limit, not
/// its number).
pub const CODE_ATTEMPTS: u32 = 3;

impl Mailbox {
    fn key(email: &str) -> String {
        email.trim().to_lowercase()
    }

    /// Sends a new code to `email`; returns it.
    pub fn send(&self, email: &str) -> String {
        let code = {
            use rand::Rng;
            format!("{:06}", rand::thread_rng().gen_range(0..1_000_000))
        };
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Codes of abandoned sign-ups do not pile up.
        all.retain(|_, m| m.sent.elapsed() < INTERACTION_LIFETIME);
        all.insert(
            Self::key(email),
            Mailed {
                code: code.clone(),
                sent: Instant::now(),
                wrong: 0,
                verified: false,
            },
        );
        code
    }

    /// Checks `given` against the code sent to `email`.
    pub fn check(&self, email: &str, given: &str, lifetime: Duration) -> CodeCheck {
        let key = Self::key(email);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mailed) = all.get_mut(&key) else {
            return CodeCheck::NotSent;
        };
        if mailed.verified {
            return CodeCheck::Verified(mailed.code.clone());
        }
        if mailed.sent.elapsed() >= lifetime {
            all.remove(&key);
            return CodeCheck::Expired;
        }
        if given.trim() == mailed.code {
            mailed.verified = true;
            return CodeCheck::Verified(mailed.code.clone());
        }
        mailed.wrong += 1;
        if mailed.wrong >= CODE_ATTEMPTS {
            all.remove(&key);
            return CodeCheck::NoRetry;
        }
        CodeCheck::Wrong(mailed.code.clone())
    }
}
