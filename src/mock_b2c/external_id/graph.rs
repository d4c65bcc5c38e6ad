//! A user of the External ID tenant as Microsoft Graph shows it (`GET /v1.0/users/{id}`).
//!
//! `identities` follow what is known of External ID accounts (section 4.3 of the contracts
//! file): an email one-time-code account has `{"signInType":"federated","issuer":"mail",
//! "issuerAssignedId":<address>}` and a `userPrincipalName` identity; a Google account has
//! `{"signInType":"federated","issuer":"google.com","issuerAssignedId":<Google's id>}`. `mail`
//! is the address in both cases.

use serde_json::{json, Map, Value};

use crate::mock_b2c::directory::User;

/// The properties Graph returns when the request has no `$select`.
const DEFAULT_PROPERTIES: [&str; 6] = [
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "userPrincipalName",
];

/// The user's principal name in the tenant.
pub fn user_principal_name(user: &User, domain: &str) -> String {
    format!("{}@{domain}", user.object_id)
}

/// Every property the mock knows of the user.
fn properties(user: &User, domain: &str) -> Map<String, Value> {
    let upn = user_principal_name(user, domain);
    let mut identities = Vec::new();
    match (&user.provider, &user.provider_subject) {
        (Some(provider), Some(subject)) => identities.push(json!({
            "signInType": "federated",
            "issuer": provider,
            "issuerAssignedId": subject,
        })),
        _ => {
            if let Some(email) = &user.sign_in_email {
                identities.push(json!({
                    "signInType": "federated",
                    "issuer": "mail",
                    "issuerAssignedId": email,
                }));
            }
            identities.push(json!({
                "signInType": "userPrincipalName",
                "issuer": domain,
                "issuerAssignedId": upn,
            }));
        }
    }
    let mut all = Map::new();
    all.insert("id".into(), json!(user.object_id));
    all.insert("displayName".into(), json!(user.display_name()));
    all.insert("givenName".into(), json!(user.given_name));
    all.insert("surname".into(), json!(user.surname));
    all.insert("mail".into(), json!(user.email));
    all.insert("otherMails".into(), json!([]));
    all.insert("userPrincipalName".into(), json!(upn));
    all.insert("identities".into(), Value::Array(identities));
    all.insert("creationType".into(), json!("SelfServiceSignUp"));
    all
}

/// The names in a `$select` (comma-separated, case-insensitive as Graph reads them).
pub fn parse_select(select: Option<&str>) -> Option<Vec<String>> {
    select.map(|s| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

/// The user's JSON for `$select` (`None`: Graph's default set). Unknown names are left out
/// (Graph refuses them with 400; the caller checks [`unknown_property`] first).
pub fn user_json(user: &User, domain: &str, base: &str, select: Option<&[String]>) -> Value {
    let all = properties(user, domain);
    let names: Vec<String> = match select {
        Some(names) => names.to_vec(),
        None => DEFAULT_PROPERTIES.iter().map(|s| s.to_string()).collect(),
    };
    let mut body = Map::new();
    let shown: Vec<&str> = names.iter().map(String::as_str).collect();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{base}/v1.0/$metadata#users({})/$entity",
            shown.join(",")
        )),
    );
    // Graph answers `id` even when the selection leaves it out.
    body.insert("id".into(), json!(user.object_id));
    for name in &names {
        if let Some((key, value)) = all.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            body.insert(key.clone(), value.clone());
        }
    }
    Value::Object(body)
}

/// The first selected name the mock's users do not have.
pub fn unknown_property(select: &[String]) -> Option<&str> {
    let known = [
        "id",
        "displayName",
        "givenName",
        "surname",
        "mail",
        "otherMails",
        "userPrincipalName",
        "identities",
        "creationType",
    ];
    select
        .iter()
        .map(String::as_str)
        .find(|name| !known.iter().any(|k| k.eq_ignore_ascii_case(name)))
}

/// Graph's error body.
pub fn error(code: &str, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(provider: Option<(&str, &str)>) -> User {
        User {
            object_id: "0b6f2d1e-5c84-4b7a-9e0e-3c7d2f1a9b40".into(),
            sign_in_email: provider.is_none().then(|| "ann@example.com".into()),
            password_hash: None,
            provider: provider.map(|p| p.0.into()),
            provider_subject: provider.map(|p| p.1.into()),
            email: "ann@example.com".into(),
            email_verified: None,
            given_name: Some("Ann".into()),
            surname: None,
            external_tenant: Some("t".into()),
        }
    }

    #[test]
    fn an_email_one_time_code_user_has_a_mail_identity_and_a_principal_name() {
        let select = parse_select(Some("identities,mail")).unwrap();
        let body = user_json(&user(None), "d.onmicrosoft.com", "http://g", Some(&select));
        assert_eq!(body["mail"], "ann@example.com");
        assert_eq!(
            body["identities"],
            json!([
                {"signInType": "federated", "issuer": "mail", "issuerAssignedId": "ann@example.com"},
                {"signInType": "userPrincipalName", "issuer": "d.onmicrosoft.com",
                 "issuerAssignedId": "0b6f2d1e-5c84-4b7a-9e0e-3c7d2f1a9b40@d.onmicrosoft.com"}
            ])
        );
        assert!(body.get("givenName").is_none(), "not selected: {body}");
    }

    #[test]
    fn a_google_user_has_only_the_federated_identity_and_mail() {
        let select = parse_select(Some("identities,mail")).unwrap();
        let body = user_json(
            &user(Some(("google.com", "1049"))),
            "d.onmicrosoft.com",
            "http://g",
            Some(&select),
        );
        assert_eq!(
            body["identities"],
            json!([{"signInType": "federated", "issuer": "google.com", "issuerAssignedId": "1049"}])
        );
        assert_eq!(body["mail"], "ann@example.com");
    }

    #[test]
    fn without_select_identities_are_not_shown() {
        let body = user_json(&user(None), "d", "http://g", None);
        assert!(body.get("identities").is_none());
        assert_eq!(body["givenName"], "Ann");
    }

    #[test]
    fn an_unknown_selected_property_is_named() {
        let select = parse_select(Some("mail,shoeSize")).unwrap();
        assert_eq!(unknown_property(&select), Some("shoeSize"));
    }
}
