use actix_web::http::header;
use actix_web::test as atest;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::mock_b2c::journey::urlencode;
use crate::mock_b2c::pages::esc;

use super::support::{parse_pairs, trim_oldest};
use super::*;

const TENANT: &str = "fabrikam.onmicrosoft.com";
const TENANT_ID: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
const POLICY: &str = "B2C_1_signup_signin";
const CLIENT: &str = "93fd07aa-333c-409d-955d-96008fd08dd9";
const SECRET: &str = "demo-client-secret";
const CODE: &str = "the-authorization-code";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the fake provider saw and how it answers.
#[derive(Default)]
struct Fake {
    base: String,
    /// `aud` of the tokens it issues (default: the client id).
    audience: Option<String>,
    /// The `nonce` and `code_challenge` of the last authorization request.
    nonce: Option<String>,
    challenge: Option<String>,
    /// The form of the last token request.
    token_form: HashMap<String, String>,
    /// The `Authorization` header of the last `/v1/link` call.
    link_authorization: Option<String>,
}

fn key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(include_str!("../../../tests/fixtures/oidc-test-key-1.pem"))
        .unwrap()
}

fn sign(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "demo-test-key"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = SigningKey::<Sha256>::new(key()).sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_vec()))
}

async fn discovery(
    fake: web::Data<Mutex<Fake>>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (tenant, policy) = path.into_inner();
    let base = fake.lock().unwrap().base.clone();
    HttpResponse::Ok().json(json!({
        // B2C's issuer is not the discovery URL.
        "issuer": format!("{base}/{TENANT_ID}/v2.0/"),
        "authorization_endpoint": format!("{base}/{tenant}/{policy}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/{policy}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/{policy}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "code id_token", "code token", "code id_token token", "id_token", "id_token token", "token", "token id_token"],
        "scopes_supported": ["openid"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["sub", "emails", "extension_CustomerAccountNumber"],
    }))
}

async fn keys() -> HttpResponse {
    let public = key().to_public_key();
    HttpResponse::Ok().json(json!({"keys": [{
        "kid": "demo-test-key", "use": "sig", "kty": "RSA",
        "e": b64(&public.e().to_bytes_be()), "n": b64(&public.n().to_bytes_be()),
    }]}))
}

async fn token(fake: web::Data<Mutex<Fake>>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let mut form = parse_pairs(&body);
    let mut fake = fake.lock().unwrap();
    // Basic client authentication counts as the form's client_id and client_secret.
    if let Some(basic) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap();
        let decoded = String::from_utf8(decoded).unwrap();
        let (id, secret) = decoded.split_once(':').unwrap();
        let decode = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned()
        };
        form.insert("client_id".into(), decode(id));
        form.insert("client_secret".into(), decode(secret));
    }
    fake.token_form = form.clone();
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let challenge = b64(&Sha256::digest(verifier.as_bytes()));
    if form.get("code").map(String::as_str) != Some(CODE)
        || fake.challenge.as_deref() != Some(challenge.as_str())
        || form.get("client_secret").map(String::as_str) != Some(SECRET)
    {
        return HttpResponse::BadRequest().json(json!({
            "error": "invalid_grant",
            "error_description": "AADB2C90090: The provided JWE is not a valid 5 segment token.",
        }));
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": format!("{}/{TENANT_ID}/v2.0/", fake.base),
        "aud": fake.audience.clone().unwrap_or_else(|| CLIENT.to_string()),
        "sub": "2f1a7c1e-8d0b-4a57-9a55-7d1a5f3c9e01",
        "exp": now + 3600, "iat": now, "nbf": now, "auth_time": now,
        "nonce": fake.nonce.clone(),
        "ver": "1.0", "tfp": POLICY,
        "emails": ["alice@example.com"],
        "extension_CustomerAccountNumber": "C0001<&>",
        "extension_AutoLinkOutcome": "Created",
    });
    HttpResponse::Ok().json(json!({
        "id_token": sign(&claims),
        "token_type": "Bearer",
        "access_token": sign(&claims),
        "expires_in": 3600,
    }))
}

async fn v1_link(fake: web::Data<Mutex<Fake>>, req: HttpRequest) -> HttpResponse {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    fake.lock().unwrap().link_authorization = authorization;
    HttpResponse::Ok()
        .json(json!({"customerAccountNumber": "C0001<&>", "outcome": "AlreadyLinked"}))
}

/// Starts the fake provider (and autolink's `/v1/link`) on a free port.
fn start_fake(fake: Fake) -> (String, web::Data<Mutex<Fake>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let shared = web::Data::new(Mutex::new(Fake {
        base: base.clone(),
        ..fake
    }));
    let data = shared.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/{tenant}/{policy}/v2.0/.well-known/openid-configuration",
                web::get().to(discovery),
            )
            .route(
                "/{tenant}/{policy}/discovery/v2.0/keys",
                web::get().to(keys),
            )
            .route(
                "/{tenant}/{policy}/oauth2/v2.0/token",
                web::post().to(token),
            )
            .route("/v1/link", web::post().to(v1_link))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    (base, shared)
}

fn demo(base: &str) -> Arc<Demo> {
    Arc::new(Demo::new(DemoSettings {
        base_url: base.to_string(),
        path: "demo".into(),
        name: "Demo store".into(),
        tenant: TENANT.into(),
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        policies: vec![POLICY.into(), "B2C_1A_<other>".into()],
        service_url: Arc::new(RwLock::new(base.to_string())),
        external_id: None,
    }))
}

async fn body_of(response: actix_web::dev::ServiceResponse) -> String {
    String::from_utf8(atest::read_body(response).await.to_vec()).unwrap()
}

/// The text of the element with this id (up to the next tag).
fn text_of(html: &str, id: &str) -> Option<String> {
    let start = html.find(&format!("id=\"{id}\""))?;
    let open = start + html[start..].find('>')? + 1;
    let close = open + html[open..].find('<')?;
    Some(html[open..close].to_string())
}

fn hidden_signin(html: &str) -> String {
    let marker = "name=\"signin\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_string()
}

#[test]
fn escapes_html() {
    assert_eq!(
        esc("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(esc("plain"), "plain");
}

#[test]
fn parses_pairs_and_keeps_the_first() {
    let pairs = parse_pairs(b"a=1&b=x%20y+z&a=2&c");
    assert_eq!(pairs["a"], "1");
    assert_eq!(pairs["b"], "x y z");
    assert_eq!(pairs["c"], "");
}

#[actix_web::test]
async fn the_start_page_links_every_policy() {
    let app = atest::init_service(App::new().service(scope(demo("http://127.0.0.1:9")))).await;
    for path in ["/demo", "/demo/"] {
        let response =
            atest::call_service(&app, atest::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(response.status(), 200);
        let html = body_of(response).await;
        assert!(html.contains("<a class=\"sign-in\" id=\"sign-in\" href=\"/demo/login?policy=B2C_1_signup_signin\""), "{html}");
        assert!(
            html.contains("href=\"/demo/login?policy=B2C_1A_%3Cother%3E\""),
            "{html}"
        );
        assert!(html.contains("Sign in with B2C_1A_&lt;other&gt;</a> <span class=\"policy-kind muted\">(custom policy: "), "{html}");
        assert!(html.contains("Sign in with B2C_1_signup_signin</a> <span class=\"policy-kind muted\">(user flow: "), "{html}");
        assert_eq!(html.matches("class=\"sign-in\"").count(), 2);
        assert_eq!(html.matches("id=\"sign-in\"").count(), 1);
    }
}

#[actix_web::test]
async fn caller_mistakes_end_on_an_error_page() {
    let app = atest::init_service(App::new().service(scope(demo("http://127.0.0.1:9")))).await;
    let cases = [
        ("/demo/login?policy=%3Cscript%3E", 400, "unknown policy &quot;&lt;script&gt;&quot;"),
        ("/demo/callback?code=x&state=unknown", 400, "unknown or expired state"),
        ("/demo/callback?code=x", 400, "no state"),
        ("/demo/callback", 400, "no state"),
        (
            "/demo/callback?error=access_denied&error_description=AADB2C90091%3A+%3Cb%3Ecancelled%3C%2Fb%3E&state=s",
            200,
            "AADB2C90091: &lt;b&gt;cancelled&lt;/b&gt;",
        ),
    ];
    for (uri, status, message) in cases {
        let response =
            atest::call_service(&app, atest::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(response.status(), status, "{uri}");
        let html = body_of(response).await;
        let shown = text_of(&html, "error-message").unwrap_or_default();
        assert!(shown.contains(message), "{uri}: {html}");
    }
    let response = atest::call_service(
        &app,
        atest::TestRequest::post()
            .uri("/demo/link")
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
            .set_payload("signin=nothing")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let html = body_of(response).await;
    assert!(text_of(&html, "error-message")
        .unwrap()
        .contains("unknown or expired sign-in"));
}

#[actix_web::test]
async fn an_unreachable_provider_is_a_bad_gateway() {
    // Nothing listens on the discard port.
    let app = atest::init_service(App::new().service(scope(demo("http://127.0.0.1:9")))).await;
    let response = atest::call_service(
        &app,
        atest::TestRequest::get()
            .uri("/demo/login?policy=B2C_1_signup_signin")
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), 502);
    let html = body_of(response).await;
    assert!(
        text_of(&html, "error-message")
            .unwrap()
            .contains("discovery document"),
        "{html}"
    );
}

const LOGIN: &str = "/demo/login?policy=B2C_1_signup_signin";

/// Reads the redirect of `/demo/login`: the authorization URL's parameters, whose nonce and
/// code challenge the fake provider then expects.
fn authorization(
    response: actix_web::dev::ServiceResponse,
    base: &str,
    fake: &web::Data<Mutex<Fake>>,
) -> HashMap<String, String> {
    assert_eq!(response.status(), 302);
    let location = response
        .headers()
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (endpoint, query) = location.split_once('?').unwrap();
    assert_eq!(
        endpoint,
        format!("{base}/{TENANT}/{POLICY}/oauth2/v2.0/authorize")
    );
    let params = parse_pairs(query.as_bytes());
    let mut f = fake.lock().unwrap();
    f.nonce = params.get("nonce").cloned();
    f.challenge = params.get("code_challenge").cloned();
    params
}

#[actix_web::test]
async fn signs_in_with_pkce_and_shows_the_account_number() {
    let (base, fake) = start_fake(Fake::default());
    let app = atest::init_service(App::new().service(scope(demo(&base)))).await;
    let login = atest::call_service(&app, atest::TestRequest::get().uri(LOGIN).to_request()).await;
    let params = authorization(login, &base, &fake);
    assert_eq!(params["client_id"], CLIENT);
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["redirect_uri"], format!("{base}/demo/callback"));
    assert_eq!(params["code_challenge_method"], "S256");
    let scopes: Vec<&str> = params["scope"].split(' ').collect();
    assert!(
        scopes.contains(&"openid") && scopes.contains(&CLIENT),
        "{scopes:?}"
    );
    assert!(params["nonce"].len() >= 16 && params["state"].len() >= 16);

    let callback = format!(
        "/demo/callback?code={CODE}&state={}",
        urlencode(&params["state"])
    );
    let response =
        atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
    assert_eq!(response.status(), 200);
    let html = body_of(response).await;
    assert_eq!(
        text_of(&html, "account-number").as_deref(),
        Some("C0001&lt;&amp;&gt;"),
        "{html}"
    );
    assert_eq!(text_of(&html, "outcome").as_deref(), Some("Created"));
    assert_eq!(text_of(&html, "store").as_deref(), Some("Demo store"));
    assert!(!html.contains("no-account-number"));
    assert!(
        html.contains("data-claim=\"tfp\">B2C_1_signup_signin</td>"),
        "{html}"
    );
    assert!(
        html.contains("data-claim=\"emails\">[&quot;alice@example.com&quot;]</td>"),
        "{html}"
    );
    assert_eq!(
        text_of(&html, "issuer").unwrap(),
        format!("{base}/{TENANT_ID}/v2.0/")
    );
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.token_form["grant_type"], "authorization_code");
        assert_eq!(
            f.token_form["redirect_uri"],
            format!("{base}/demo/callback")
        );
    }
    // The token stays on the server.
    let signin = hidden_signin(&html);
    assert!(!html.contains("eyJ"), "{html}");

    // The same answer twice: the state was used.
    let response =
        atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
    assert_eq!(response.status(), 400);

    // Link: the ID token goes to /v1/link as a bearer token.
    let response = atest::call_service(
        &app,
        atest::TestRequest::post()
            .uri("/demo/link")
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
            .set_payload(format!("signin={}", urlencode(&signin)))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let html = body_of(response).await;
    assert_eq!(text_of(&html, "link-status").as_deref(), Some("200"));
    let result = text_of(&html, "link-result").unwrap();
    assert!(
        result.contains("AlreadyLinked") && result.contains("C0001&lt;&amp;&gt;"),
        "{html}"
    );
    let authorization = fake.lock().unwrap().link_authorization.clone().unwrap();
    assert!(authorization.starts_with("Bearer eyJ"), "{authorization}");
    assert_eq!(
        text_of(&html, "account-number").as_deref(),
        Some("C0001&lt;&amp;&gt;")
    );
}

#[actix_web::test]
async fn a_token_for_another_audience_is_refused() {
    let (base, fake) = start_fake(Fake {
        audience: Some("someone-else".into()),
        ..Fake::default()
    });
    let app = atest::init_service(App::new().service(scope(demo(&base)))).await;
    let login = atest::call_service(&app, atest::TestRequest::get().uri(LOGIN).to_request()).await;
    let params = authorization(login, &base, &fake);
    let callback = format!(
        "/demo/callback?code={CODE}&state={}",
        urlencode(&params["state"])
    );
    let response =
        atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
    assert_eq!(response.status(), 502);
    let html = body_of(response).await;
    assert!(
        text_of(&html, "error-message")
            .unwrap()
            .contains("ID token is not valid"),
        "{html}"
    );
    assert!(!html.contains("account-number"));
}

#[actix_web::test]
async fn a_refused_code_is_shown_with_the_provider_error() {
    let (base, fake) = start_fake(Fake::default());
    let app = atest::init_service(App::new().service(scope(demo(&base)))).await;
    let login = atest::call_service(&app, atest::TestRequest::get().uri(LOGIN).to_request()).await;
    let params = authorization(login, &base, &fake);
    let callback = format!(
        "/demo/callback?code=wrong&state={}",
        urlencode(&params["state"])
    );
    let response =
        atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
    assert_eq!(response.status(), 502);
    let html = body_of(response).await;
    let message = text_of(&html, "error-message").unwrap();
    assert!(
        message.contains("invalid_grant") && message.contains("AADB2C90090"),
        "{message}"
    );
}

#[test]
fn keeps_a_bounded_number_of_entries() {
    let mut map = HashMap::new();
    let start = Instant::now();
    for i in 0..MAX_ENTRIES {
        map.insert(i.to_string(), start + Duration::from_millis(i as u64));
    }
    trim_oldest(&mut map, |t| *t);
    assert_eq!(map.len(), MAX_ENTRIES - 1);
    assert!(!map.contains_key("0"));
}
