//! The demo's HTML pages: the result of a sign-in, and errors.

use actix_web::http::header;
use actix_web::HttpResponse;

use crate::mock_b2c::pages::esc;

use super::handlers::LinkResult;
use super::support::claim_text;
use super::{Demo, PageError, SignedIn, B2C_CLAIMS, EXTERNAL_ID_CLAIMS};

/// The page after a sign-in: the store's name (so that QA sees which store came back), the
/// account number, the outcome, the claims and the link button.
pub(super) fn result_page(
    demo: &Demo,
    signed_in_id: &str,
    signed_in: &SignedIn,
    link: Option<&LinkResult>,
) -> HttpResponse {
    let claims = &signed_in.claims;
    let [claim_account_number, claim_outcome, claim_error] = match demo.settings.external_id {
        Some(_) => EXTERNAL_ID_CLAIMS,
        None => B2C_CLAIMS,
    };
    let mount = demo.mount_path();
    let mut body = format!(
        "<h1>Signed in</h1>\n<p>Store: <span id=\"store\">{}</span></p>\n",
        esc(&demo.settings.name)
    );
    match claims.get(claim_account_number).map(claim_text) {
        Some(number) if !number.is_empty() => body.push_str(&format!(
            "<p>Customer account number: <span id=\"account-number\">{}</span></p>\n",
            esc(&number)
        )),
        _ => body.push_str(
            "<p id=\"no-account-number\">The token carries no customer account number.</p>\n",
        ),
    }
    if let Some(error) = claims.get(claim_error).map(claim_text) {
        body.push_str(&format!(
            "<p>autolink refused: <span id=\"autolink-error\">{}</span></p>\n",
            esc(&error)
        ));
    }
    body.push_str(&format!(
        "<p>Outcome: <span id=\"outcome\">{}</span></p>\n",
        esc(&claims
            .get(claim_outcome)
            .map(claim_text)
            .unwrap_or_default())
    ));
    body.push_str(&format!(
        "<p class=\"muted\">Policy <code id=\"policy\">{}</code>, issuer <code id=\"issuer\">{}</code>.</p>\n",
        esc(&signed_in.policy),
        esc(&signed_in.issuer)
    ));
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\">\n<input type=\"hidden\" name=\"signin\" value=\"{}\">\n\
         <button id=\"link\" type=\"submit\">Link with POST /v1/link</button>\n</form>\n",
        esc(&format!("{mount}/link")),
        esc(signed_in_id)
    ));
    if let Some(link) = link {
        let status = link
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no answer".into());
        body.push_str(&format!(
            "<h2>POST <code>{}</code>: <span id=\"link-status\">{}</span></h2>\n<pre id=\"link-result\">{}</pre>\n",
            esc(&link.url),
            esc(&status),
            esc(&link.body)
        ));
    }
    body.push_str(
        "<h2>Claims</h2>\n<table id=\"claims\">\n<tr><th>Claim</th><th>Value</th></tr>\n",
    );
    for (name, value) in claims {
        body.push_str(&format!(
            "<tr><td class=\"claim-name\">{}</td><td class=\"claim-value\" data-claim=\"{}\">{}</td></tr>\n",
            esc(name),
            esc(name),
            esc(&claim_text(value))
        ));
    }
    body.push_str("</table>\n");
    body.push_str(&format!(
        "<p><a id=\"start-over\" href=\"{}\">Start over</a></p>\n",
        esc(&mount)
    ));
    page(actix_web::http::StatusCode::OK, "Signed in", &body)
}

pub(super) fn error_page(demo: &Demo, error: PageError) -> HttpResponse {
    let mut body = format!("<h1>{}</h1>\n", esc(error.title));
    if let Some(code) = &error.code {
        body.push_str(&format!(
            "<p>Error: <code id=\"error-code\">{}</code></p>\n",
            esc(code)
        ));
    }
    body.push_str(&format!(
        "<p id=\"error-message\">{}</p>\n<p><a id=\"start-over\" href=\"{}\">Start over</a></p>\n",
        esc(&error.message),
        esc(&demo.mount_path())
    ));
    page(error.status, error.title, &body)
}

pub(super) fn page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}\
         td{{font-family:monospace;word-break:break-all}}.muted{{color:#666}}</style>\n\
         </head>\n<body>\n{}</body>\n</html>\n",
        esc(title),
        body
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(html)
}
