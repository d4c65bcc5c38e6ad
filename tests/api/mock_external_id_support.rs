//! The mock's External ID tenant as the tests start it, and a receiver on a local port that
//! stands for autolink's extension endpoints: it records what arrives and answers as scripted
//! (late, with another status, another content type...).

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use autolink::mock_b2c::{
    AccountKind, ExternalIdSettings, JourneyKind, JourneyRequest, MockB2c, MockSettings,
    PayloadVariant,
};
use serde_json::{json, Value};

use crate::helpers::B2C_CLIENT;
use crate::mock_setup::{mock_settings, start_mock, web_store};

pub const EXT_TENANT_ID: &str = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d94";
/// The extension's app registration (the `aud` of the tokens the mock sends).
pub const EXTENSION_APP_ID: &str = "a13d0fc1-04ab-4ede-b215-63de0174cbb4";
pub const GRAPH_CLIENT_ID: &str = "6e2b4c8a-1f3d-4a5b-9c7e-0d8f2a4b6c1e";
pub const GRAPH_CLIENT_SECRET: &str = "graph secret for the tests";
pub const EXT_DOMAIN: &str = "fabrikamcustomers.onmicrosoft.com";
/// The authentication events service.
pub const EVENTS_APP: &str = "99045fe1-7639-4a75-9d4a-577b6ca3810f";
/// Where the web store's code grant lands.
pub const EXT_REDIRECT: &str = "https://store.example/_msdyn365/authresp";

/// The External ID tenant's settings in the tests (payload: the reference variant).
pub fn external_id_settings() -> ExternalIdSettings {
    ExternalIdSettings {
        tenant_id: EXT_TENANT_ID.into(),
        domain: EXT_DOMAIN.into(),
        extension_app_id: EXTENSION_APP_ID.into(),
        graph_client_id: GRAPH_CLIENT_ID.into(),
        graph_client_secret: GRAPH_CLIENT_SECRET.into(),
        timeout_ms: 1000,
        retries: 1,
        submit_url: None,
        token_issuance_url: None,
        payload: PayloadVariant::default(),
        token_claims: vec!["customerAccountNumber".into(), "autoLinkOutcome".into()],
        caller_object_id: "c3a5b0d4-8f53-4f3c-9a57-6f0e1d2b7a10".into(),
    }
}

/// The mock with the External ID tenant and the web store, changed by `change`, pointed at
/// `service`.
pub async fn start_external_id_mock(
    service: &str,
    change: impl FnOnce(&mut MockSettings),
) -> MockB2c {
    let mut settings = mock_settings();
    settings.custom_policy = None;
    settings.custom_policy_id = None;
    settings.applications = vec![web_store(vec![EXT_REDIRECT.into()])];
    settings.external_id = Some(external_id_settings());
    change(&mut settings);
    start_mock(settings, service).await
}

/// An External ID journey on the web store: email with a one-time code (`Local`) or Google.
pub fn ext_journey(account: AccountKind, email: &str) -> JourneyRequest {
    JourneyRequest {
        policy: None,
        client_id: B2C_CLIENT.into(),
        kind: JourneyKind::SignUp,
        account,
        email: email.into(),
        password: None,
        provider: None,
        provider_subject: None,
        email_verified: None,
        complete_email_verification: true,
        given_name: Some("Ada".into()),
        surname: Some("Lovelace".into()),
        ui_locales: None,
        nonce: None,
        redirect_uri: None,
        state: None,
        single_sign_on: false,
        external_id: true,
        payload: None,
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub delay: Duration,
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn json(body: Value) -> Reply {
        Reply {
            delay: Duration::ZERO,
            status: 200,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    pub fn late(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

pub const SUBMIT_PATH: &str = "/entra/attribute-collection-submit";
pub const TOKEN_PATH: &str = "/entra/token-issuance-start";

/// A submit answer with one action.
pub fn submit_answer(action: Value) -> Value {
    json!({"data": {
        "@odata.type": "microsoft.graph.onAttributeCollectionSubmitResponseData",
        "actions": [action]
    }})
}

pub fn submit_continue() -> Value {
    submit_answer(
        json!({"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"}),
    )
}

/// A token-issuance answer providing `claims`.
pub fn token_claims(claims: Value) -> Value {
    json!({"data": {
        "@odata.type": "microsoft.graph.onTokenIssuanceStartResponseData",
        "actions": [{
            "@odata.type": "microsoft.graph.tokenIssuanceStart.provideClaimsForToken",
            "claims": claims
        }]
    }})
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
}

/// The stand-in for autolink's two endpoints. Unscripted, submit continues and token issuance
/// provides `customerAccountNumber` `C-RECEIVER`, `autoLinkOutcome` `Linked` and a claim no
/// mapping names (`unmapped`).
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn receive(
    state: web::Data<Arc<ReceiverState>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let path = req.path().to_string();
    let received = Received {
        path: path.clone(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    state.received.lock().unwrap().push(received);
    let scripted = state
        .scripts
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    let reply = scripted.unwrap_or_else(|| match path.as_str() {
        TOKEN_PATH => Reply::json(token_claims(json!({
            "customerAccountNumber": "C-RECEIVER",
            "autoLinkOutcome": "Linked",
            "unmapped": "dropped by the claims mapping"
        }))),
        _ => Reply::json(submit_continue()),
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap())
        .content_type(reply.content_type)
        .body(reply.body)
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(data.clone()))
                .default_service(web::to(receive))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver { url, state, handle }
    }

    /// The next answers to requests on `path`, in order.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// A local port nothing listens on.
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}
