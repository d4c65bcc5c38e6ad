//! What a journey is asked to do and what the user ends up seeing: the mock's driver API
//! (`POST /mock/journeys`) speaks these types as JSON, and the HTML pages build the same request.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Sign up (create a B2C account) or sign in (an account that exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyKind {
    SignUp,
    SignIn,
}

/// A local account (email and password in the tenant) or a social one (a simulated provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Local,
    Social,
}

/// One journey, as a person would run it on the sign-up or sign-in page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyRequest {
    /// The policy: `B2C_1_...` runs as a user flow (API connector), `B2C_1A_...` as the project's
    /// custom policy (REST technical profiles read from `policies/`). Default: the mock's first.
    #[serde(default)]
    pub policy: Option<String>,
    /// The application (relying party) the person signs in to; autolink maps it to a channel.
    pub client_id: String,
    pub kind: JourneyKind,
    pub account: AccountKind,
    /// The address the person types (local) or the provider asserts (social).
    pub email: String,
    /// Local accounts: the password (sign-up sets it, sign-in checks it).
    #[serde(default)]
    pub password: Option<String>,
    /// Social accounts: the provider, e.g. `google.com` (the default) or `facebook.com`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Social accounts: the person's id at the provider (default: derived from provider and email).
    #[serde(default)]
    pub provider_subject: Option<String>,
    /// Social accounts: what the provider says of the email (default: what the provider is
    /// configured to do; Google verifies, Facebook does not claim to).
    #[serde(default)]
    pub email_verified: Option<bool>,
    /// Local sign-up: whether the person enters the code B2C mailed (default true). Without it
    /// a tenant that requires verification never lets the form be submitted.
    #[serde(default = "yes")]
    pub complete_email_verification: bool,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    /// The page's language (`ui_locales`), default `en-US`.
    #[serde(default)]
    pub ui_locales: Option<String>,
    /// Echoed in the ID token.
    #[serde(default)]
    pub nonce: Option<String>,
    /// When set, a token outcome also carries an authorization code and the redirect an
    /// application at this URI (registered for `client_id`) would receive.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// Single sign-on: the browser holds B2C's session of this account (an earlier sign-in with
    /// the same policy), so the sign-in page and the identity provider are skipped and the
    /// journey's remaining steps run on the session's claims. The account must exist (local:
    /// by `email`; social: by `provider` and `provider_subject`, or the subject derived from
    /// `email`).
    #[serde(default)]
    pub single_sign_on: bool,
    /// Run the External ID tenant's sign-up-or-sign-in user flow instead of a B2C policy
    /// (`policy` is then not read): `local` is email with a one-time code, `social` a federated
    /// provider; the custom authentication extensions are called as Entra calls them.
    #[serde(default)]
    pub external_id: bool,
    /// External ID: the payload variant of this journey's extension calls (default: the
    /// tenant's `payload` setting).
    #[serde(default)]
    pub payload: Option<crate::mock_b2c::external_id::PayloadVariant>,
}

fn yes() -> bool {
    true
}

/// How the journey ended, from the person's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The application got an ID token.
    Token,
    /// B2C showed a block page (user-flow `ShowBlockPage`); the journey is over.
    BlockPage,
    /// The person is still on the form, with a message above it; nothing was created.
    ValidationError,
    /// B2C's error: the service failed or answered what B2C does not accept, or a custom-policy
    /// journey step refused (the error goes back to the application).
    Error,
}

/// One HTTP call B2C made to the service (each retry is its own record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    /// `api-connector`, or the technical profile id in custom-policy mode.
    pub name: String,
    /// The URL called.
    pub url: String,
    /// The user-flow step (`PostAttributeCollection`, ...) when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// The JSON (or form fields) sent.
    pub request: Value,
    /// The HTTP status, absent when no answer came (time-out, connection refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The answer's body (JSON when it parsed, else a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// What went wrong with the attempt (time-out, connection, invalid answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the person saw at the end of a journey, and how B2C got there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JourneyResult {
    pub outcome: Outcome,
    /// The text on the block page, above the form, or on the error page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The service's refusal code, when it sent one (`CommerceIdentityNotFound`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The B2C user's object id, once the account exists (sign-in, or sign-up past the write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Whether this journey created a B2C directory account.
    pub account_created: bool,
    /// Token outcome: the signed ID token (RS256) and its claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Map<String, Value>>,
    /// Token outcome with a `redirect_uri`: the authorization code and the full redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Every call made to the service, in order.
    pub calls: Vec<CallRecord>,
    /// External ID: the block page's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// External ID: the messages per attribute of a validation error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_errors: Option<Map<String, Value>>,
    /// External ID: why Entra failed the sign-in after an extension call (the code its
    /// sign-in logs record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_error: Option<crate::mock_b2c::external_id::answers::ExtensionError>,
}

impl JourneyResult {
    pub(crate) fn new(outcome: Outcome) -> JourneyResult {
        JourneyResult {
            outcome,
            message: None,
            code: None,
            object_id: None,
            account_created: false,
            id_token: None,
            claims: None,
            code_grant: None,
            redirect: None,
            calls: Vec::new(),
            title: None,
            attribute_errors: None,
            extension_error: None,
        }
    }

    /// The account number the token carries (`extension_CustomerAccountNumber`), if any.
    pub fn account_number(&self) -> Option<&str> {
        self.claims
            .as_ref()?
            .get("extension_CustomerAccountNumber")?
            .as_str()
    }
}
