//! A stand-in for Microsoft Graph and its token endpoint, answering exactly the shapes the
//! issue 17 contract fixes for the mock's External ID tenant: `POST
//! /ciam/{tenant}/oauth2/v2.0/token` (client credentials, `scope`
//! `https://graph.microsoft.com/.default`) and `GET /graph/v1.0/users/{id}?$select=identities,mail`
//! (401 without the token it issued, 404 `Request_ResourceNotFound` for an unknown user).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::entra_support::TENANT;

pub const GRAPH_CLIENT_ID: &str = "7d1e2f3a-0000-4000-8000-00000000a11e";
pub const GRAPH_CLIENT_SECRET: &str = "graph-client-secret-for-tests";

#[derive(Default)]
struct State {
    users: Mutex<HashMap<String, Value>>,
    token_requests: AtomicUsize,
    user_reads: AtomicUsize,
    delay: Mutex<Duration>,
    issued: Mutex<Option<String>>,
}

/// The running stub; stopped when dropped.
pub struct GraphStub {
    pub base_url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

impl Drop for GraphStub {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn token(
    state: web::Data<Arc<State>>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let field = |name: &str| form.get(name).map(String::as_str);
    let valid = field("grant_type") == Some("client_credentials")
        && field("client_id") == Some(GRAPH_CLIENT_ID)
        && field("client_secret") == Some(GRAPH_CLIENT_SECRET)
        && field("scope") == Some("https://graph.microsoft.com/.default");
    if !valid {
        return HttpResponse::Unauthorized()
            .json(json!({"error": "invalid_client", "error_description": "AADSTS7000215"}));
    }
    let token = format!("graph-token-{}", uuid::Uuid::new_v4().simple());
    *state.issued.lock().unwrap() = Some(token.clone());
    HttpResponse::Ok().json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
}

async fn user(
    state: web::Data<Arc<State>>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    state.user_reads.fetch_add(1, Ordering::SeqCst);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }
    let issued = state.issued.lock().unwrap().clone();
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if issued.is_none() || presented != issued {
        return HttpResponse::Unauthorized().json(json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}}));
    }
    if query.get("$select").map(String::as_str) != Some("identities,mail") {
        return HttpResponse::BadRequest().json(json!({"error": {"code": "BadRequest"}}));
    }
    let id = path.into_inner();
    match state.users.lock().unwrap().get(&id) {
        Some(user) => HttpResponse::Ok().json(user),
        None => HttpResponse::NotFound().json(json!({"error": {"code": "Request_ResourceNotFound", "message": format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present.")}})),
    }
}

impl GraphStub {
    pub async fn start() -> GraphStub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = Arc::new(State::default());
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/ciam/{tenant}/oauth2/v2.0/token", web::post().to(token))
                .route("/graph/v1.0/users/{id}", web::get().to(user))
        })
        .workers(1)
        .shutdown_timeout(0)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        GraphStub {
            base_url,
            state,
            handle,
        }
    }

    /// `[entra.graph] token_url`.
    pub fn token_url(&self) -> String {
        format!("{}/ciam/{TENANT}/oauth2/v2.0/token", self.base_url)
    }

    /// `[entra.graph] base_url`.
    pub fn graph_url(&self) -> String {
        format!("{}/graph", self.base_url)
    }

    /// Adds a user as Graph answers it.
    pub fn add_user(&self, id: &str, mail: Option<&str>, identities: Value) {
        let user = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(identities,mail)/$entity",
            "id": id,
            "mail": mail,
            "identities": identities,
        });
        self.state.users.lock().unwrap().insert(id.into(), user);
    }

    /// Every user read sleeps this long first.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn user_reads(&self) -> usize {
        self.state.user_reads.load(Ordering::SeqCst)
    }
}
