//! After the directory: link, then the token and its claims.

use serde_json::{json, Map, Value};

use crate::mock_b2c::directory::User;
use crate::mock_b2c::types::{JourneyRequest, JourneyResult, Outcome};
use crate::mock_b2c::Tenant;

use super::{urlencode, Journey, Mode, Step};

impl Journey<'_> {
    pub(super) fn mode(&self) -> Mode {
        if self.policies.is_some() {
            Mode::CustomPolicy
        } else {
            Mode::UserFlow
        }
    }

    pub(super) async fn before_token(&mut self, user: &User) -> Step<()> {
        match self.mode() {
            Mode::UserFlow => {
                let body = self.connector_body("PreTokenIssuance", user, Some(&user.object_id));
                let claims = match self.connector("PreTokenIssuance", body).await {
                    Step::Go(claims) => claims,
                    Step::Stop => return Step::Stop,
                };
                let mut token = self.user_flow_token_claims(user);
                // Only the claims selected under the user flow's "Application claims" reach
                // the token; the others are dropped, as B2C drops them.
                let selected = &self.tenant.settings.application_claims;
                for (name, value) in claims {
                    if selected.iter().any(|c| c.eq_ignore_ascii_case(&name)) {
                        token.insert(name, value);
                    }
                }
                self.issue(token);
                Step::Go(())
            }
            Mode::CustomPolicy => {
                let mut bag = if self.request.single_sign_on {
                    self.session_bag(user)
                } else {
                    self.signed_in_bag(user)
                };
                if let Step::Stop = self.steps_after_directory(user, &mut bag).await {
                    return Step::Stop;
                }
                let token = match self
                    .policies
                    .as_ref()
                    .map(|p| p.token_claims(&bag, self.tenant.settings.tenant_id.as_str()))
                {
                    Some(claims) => claims,
                    None => return self.stop(Outcome::Error, "no policy", None),
                };
                let mut token = token;
                self.standard_claims(&mut token);
                self.issue(token);
                Step::Go(())
            }
        }
    }

    fn user_flow_token_claims(&self, user: &User) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(user.object_id));
        claims.insert("oid".into(), json!(user.object_id));
        claims.insert("emails".into(), json!([user.email]));
        if let Some(provider) = &user.provider {
            claims.insert("idp".into(), json!(provider));
        }
        if let Some(name) = user.display_name() {
            claims.insert("name".into(), json!(name));
        }
        if let Some(g) = &user.given_name {
            claims.insert("given_name".into(), json!(g));
        }
        if let Some(s) = &user.surname {
            claims.insert("family_name".into(), json!(s));
        }
        self.standard_claims(&mut claims);
        claims
    }

    /// What every B2C ID token carries.
    fn standard_claims(&self, claims: &mut Map<String, Value>) {
        let now = chrono::Utc::now().timestamp();
        claims.insert("iss".into(), json!(self.tenant.issuer()));
        claims.insert("aud".into(), json!(self.request.client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + 3600));
        claims.insert("auth_time".into(), json!(now));
        claims.insert("ver".into(), json!("1.0"));
        // The claim that names the policy: `tfp` for user flows (B2C's default, "Claim
        // representing user flow" in the user flow's properties); `acr`, in lower case, for
        // custom policies, as Microsoft's sample token of a custom policy shows
        // (`"acr": "b2c_1a_signup_signin"`) and as the starter pack's JwtIssuer, which sets no
        // `AuthenticationContextReferenceClaimPattern`, issues it.
        match self.mode() {
            Mode::UserFlow => claims.insert("tfp".into(), json!(self.policy)),
            Mode::CustomPolicy => claims.insert("acr".into(), json!(self.policy.to_lowercase())),
        };
        if let Some(nonce) = &self.request.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
    }

    fn issue(&mut self, claims: Map<String, Value>) {
        // A driver journey's code is redeemed as if the application had asked for its own
        // scope too: the token response carries an access token.
        let (tenant, request, policy) = (self.tenant, self.request, self.policy);
        issue_id_token(tenant, request, &mut self.result, policy, true, claims);
    }
}

/// Ends a journey with an ID token: signs `claims` and, when the request has a redirect URI,
/// keeps an authorization code for `policy` and builds the redirect to the application. Used by
/// the B2C journeys and the External ID journeys alike.
pub(crate) fn issue_id_token(
    tenant: &Tenant,
    request: &JourneyRequest,
    result: &mut JourneyResult,
    policy: &str,
    with_access_token: bool,
    claims: Map<String, Value>,
) {
    let token = tenant.key.sign(&claims);
    if let Some(uri) = &request.redirect_uri {
        let code = tenant.remember_code(
            &request.client_id,
            uri,
            policy,
            &token,
            None,
            with_access_token,
        );
        let mut redirect = format!(
            "{uri}{}code={}",
            if uri.contains('?') { '&' } else { '?' },
            urlencode(&code)
        );
        if let Some(state) = &request.state {
            redirect.push_str(&format!("&state={}", urlencode(state)));
        }
        result.code_grant = Some(code);
        result.redirect = Some(redirect);
    }
    result.outcome = Outcome::Token;
    result.id_token = Some(token);
    result.claims = Some(claims);
}
