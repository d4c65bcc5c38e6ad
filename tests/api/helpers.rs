//! Starts the real server on a free port, on a fresh database per test: a temporary SQLite file,
//! or, when `AUTOLINK_TEST_POSTGRES_URL` is set, a new PostgreSQL database on that server.

use std::path::PathBuf;

pub use crate::mock_setup::*;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use autolink::config::{BasicSettings, ChannelSettings, Settings};
use autolink::domain::CustomerType;
use autolink::import::{self, Format, OnError};
use autolink::storage::{Db, PoolOptions};
use diesel::prelude::*;
use serde_json::{json, Value};

pub const B2C_CLIENT: &str = "93fd07aa-333c-409d-955d-96008fd08dd9";
pub const B2B_CLIENT: &str = "231c70e8-8424-48ac-9b5d-5623b9e4ccf3";
pub const NOLINK_CLIENT: &str = "5a1b6d7e-0000-4000-8000-00000000b2c0";
pub const OTHER_ENTITY_CLIENT: &str = "5a1b6d7e-0000-4000-8000-0000000000de";
pub const TENANT_ISSUER: &str =
    "https://fabrikam.b2clogin.com/775527ff-9a37-4307-8b3d-cc311f58d925/v2.0/";
pub const CONNECTOR_USER: &str = "b2c-connector";
pub const CONNECTOR_PASSWORD: &str = "correct horse battery staple";
/// The admin API's bearer token in tests (different from every connector credential).
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// The argon2 hash of the test password, computed once per test binary.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| autolink::auth::hash_secret(CONNECTOR_PASSWORD).unwrap())
}

/// The argon2 hash of the test admin token, computed once per test binary.
pub fn admin_token_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| autolink::auth::hash_secret(ADMIN_TOKEN).unwrap())
}

/// The PostgreSQL server to test against, when configured.
pub fn postgres_base_url() -> Option<String> {
    std::env::var("AUTOLINK_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A fresh database for one test, removed when dropped.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<(String, String)>,
}

impl TestDatabase {
    pub fn new() -> TestDatabase {
        match postgres_base_url() {
            Some(base) => {
                let name = format!("autolink_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&base)
                    .unwrap_or_else(|e| panic!("cannot reach AUTOLINK_TEST_POSTGRES_URL: {e}"));
                diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .unwrap();
                let url = replace_database(&base, &name);
                TestDatabase {
                    url,
                    _dir: None,
                    pg_name: Some((base, name)),
                }
            }
            None => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("autolink.db").display());
                TestDatabase {
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
        }
    }

    /// Opens the database the way the service does (applying migrations).
    pub fn open(&self) -> Db {
        Db::open(&self.url, &PoolOptions::default()).unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((base, name)) = &self.pg_name {
            if let Ok(mut admin) = PgConnection::establish(base) {
                let _ =
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin);
            }
        }
    }
}

/// Replaces the database name of a PostgreSQL URL.
pub fn replace_database(url: &str, name: &str) -> String {
    let (without_query, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let scheme_end = without_query.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match without_query[scheme_end..].find('/') {
        Some(slash) => &without_query[..scheme_end + slash],
        None => without_query,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Settings every test starts from: three channels, Basic credentials, no default channel.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings {
        bind: "127.0.0.1:0".into(),
        database_url: database_url.into(),
        tenant_issuer: TENANT_ISSUER.into(),
        workers: Some(2),
        ..Settings::default()
    };
    let channel = |id: &str, entity: &str, t: CustomerType, client: &str, linking: Option<bool>| {
        ChannelSettings {
            id: id.into(),
            legal_entity: entity.into(),
            customer_type: t,
            client_ids: vec![client.into()],
            linking_enabled: linking,
        }
    };
    settings.channels = vec![
        channel("fabrikam-web", "USRT", CustomerType::B2C, B2C_CLIENT, None),
        channel("fabrikam-b2b", "USRT", CustomerType::B2B, B2B_CLIENT, None),
        channel(
            "fabrikam-nolink",
            "USRT",
            CustomerType::B2C,
            NOLINK_CLIENT,
            Some(false),
        ),
        channel(
            "contoso-web",
            "DEMF",
            CustomerType::B2C,
            OTHER_ENTITY_CLIENT,
            None,
        ),
    ];
    settings.auth.basic = Some(BasicSettings {
        username: CONNECTOR_USER.into(),
        password_hash: Some(password_hash().to_string()),
        password: None,
    });
    settings.admin.token_hash = Some(admin_token_hash().to_string());
    settings
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    handle: ServerHandle,
    pool: OnceLock<Db>,
}

/// Starts the server with the test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the server with the test settings changed by `change`.
pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDatabase::new();
    spawn_on(db, change).await
}

/// Starts the server on an existing test database.
pub async fn spawn_on(db: TestDatabase, change: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&db.url);
    change(&mut settings);
    let settings = settings.finish().unwrap();
    let app = autolink::startup::Application::build(&settings).unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        address,
        client,
        db,
        handle,
        pool: OnceLock::new(),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop without waiting; the test runtime ends right after.
        drop(self.handle.stop(false));
    }
}

impl TestApp {
    /// Stops this server and starts another on the same database with changed settings.
    pub async fn restart(mut self, change: impl FnOnce(&mut Settings)) -> TestApp {
        self.handle.stop(true).await;
        let placeholder = TestDatabase {
            url: String::new(),
            _dir: None,
            pg_name: None,
        };
        let db = std::mem::replace(&mut self.db, placeholder);
        drop(self);
        spawn_on(db, change).await
    }

    /// A pool on the test database, for reading what the service wrote.
    pub fn db(&self) -> &Db {
        self.pool.get_or_init(|| self.db.open())
    }

    /// Posts a JSON body to the connector with the right credentials.
    pub async fn connector(&self, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/b2c/api-connector", self.address))
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
        (status, value)
    }

    /// Imports customers from CSV text (header included) through the import module.
    pub fn import_csv(&self, csv: &str) {
        import::import_reader(self.db(), csv.as_bytes(), Format::Csv, OnError::RejectFile).unwrap();
    }

    /// Number of customers whose email key is `email_key`.
    pub fn customers_with_email(
        &self,
        email_key: &str,
    ) -> Vec<autolink::storage::customers::Customer> {
        use autolink::storage::schema::customers;
        let mut conn = self.db().get().unwrap();
        customers::table
            .filter(customers::email_key.eq(email_key))
            .select(autolink::storage::customers::Customer::as_select())
            .load(&mut *conn)
            .unwrap()
    }

    /// Active links of a customer.
    pub fn links_of(&self, account_number: &str) -> Vec<autolink::storage::links::Link> {
        let mut conn = self.db().get().unwrap();
        let customer =
            autolink::storage::customers::find_by_account_number(&mut conn, account_number)
                .unwrap()
                .unwrap_or_else(|| panic!("no customer {account_number}"));
        autolink::storage::links::list_for_customer(&mut conn, customer.id, None, i64::MAX).unwrap()
    }

    /// Number of active links in the database.
    pub fn active_links(&self) -> i64 {
        let mut conn = self.db().get().unwrap();
        autolink::storage::links::count_active(&mut conn).unwrap()
    }

    /// Number of customers in the database.
    pub fn customer_count(&self) -> i64 {
        let mut conn = self.db().get().unwrap();
        autolink::storage::customers::count(&mut conn).unwrap()
    }
}

/// CSV text with the import header and the given rows.
pub fn csv(rows: &[&str]) -> String {
    let mut text = String::from(
        "account_number,legal_entity,party_type,is_b2b,primary_email,first_name,last_name\n",
    );
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

/// A local account's identities claim.
pub fn local_identity() -> Value {
    json!([{"signInType": "emailAddress", "issuer": "fabrikam.onmicrosoft.com", "issuerAssignedId": "someone"}])
}

/// A social account's identities claim.
pub fn social_identity(provider: &str) -> Value {
    json!([{"signInType": "federated", "issuer": provider, "issuerAssignedId": "0123456789"}])
}

/// A sign-up check at `PostAttributeCollection` for a local account (no identities yet).
pub fn attribute_collection(email: &str, client_id: &str) -> Value {
    json!({
        "email": email,
        "displayName": "Test User",
        "givenName": "Test",
        "surname": "User",
        "step": "PostAttributeCollection",
        "client_id": client_id,
        "ui_locales": "en-US"
    })
}

/// `PostFederationSignup` for a social account.
pub fn federation_signup(email: &str, provider: &str, client_id: &str) -> Value {
    json!({
        "email": email,
        "identities": social_identity(provider),
        "displayName": "Test User",
        "step": "PostFederationSignup",
        "client_id": client_id,
        "ui_locales": "en-US"
    })
}

/// `PreTokenIssuance` for a user with the given identities claim.
pub fn token_step(email: &str, object_id: &str, identities: Value, client_id: &str) -> Value {
    json!({
        "email": email,
        "identities": identities,
        "displayName": "Test User",
        "givenName": "Test",
        "surname": "User",
        "objectId": object_id,
        "step": "PreTokenIssuance",
        "client_id": client_id,
        "ui_locales": "en-US"
    })
}

/// The path of the shared B2C reference files, when they are beside the repository.
pub fn shared_b2c_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/b2c");
    dir.is_dir().then_some(dir)
}

/// Says loudly that a PostgreSQL-only test did not run in this pass. It is not a failure: the
/// PostgreSQL pass of `.ci/run` sets `AUTOLINK_TEST_POSTGRES_URL` and runs it (and fails when
/// that server is unreachable with `CI=true`).
pub fn needs_postgres(test: &str) {
    // Written to the stream directly: libtest captures only the print macros, and this must be
    // seen even when the test passes.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** TEST DID NOT RUN IN THIS PASS: {test}: it needs AUTOLINK_TEST_POSTGRES_URL; \
         the PostgreSQL pass of .ci/run runs it ***\n"
    );
}

/// Says loudly that a SQLite-only test did not run in this pass (the PostgreSQL pass); the
/// SQLite pass of `.ci/run` runs it.
pub fn needs_sqlite(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** TEST DID NOT RUN IN THIS PASS: {test}: it needs the embedded SQLite database; \
         the SQLite pass of .ci/run runs it ***\n"
    );
}

/// Says loudly that a test could not run here; fails instead when `CI=true`.
pub fn cannot_run(test: &str, why: &str) {
    let message = format!("TEST DID NOT RUN: {test}: {why}");
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{message} (CI=true: failing instead of skipping)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** {message} ***\n");
}

/// Asserts a continue answer and returns it.
pub fn assert_continue(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "1.0.0", "{body}");
    assert_eq!(body["action"], "Continue", "{body}");
}

/// Asserts a block page with a code.
pub fn assert_block(status: u16, body: &Value, code: &str) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "1.0.0", "{body}");
    assert_eq!(body["action"], "ShowBlockPage", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["userMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Asserts a validation error with a code.
pub fn assert_validation_error(status: u16, body: &Value, code: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["version"], "1.0.0", "{body}");
    assert_eq!(body["status"], 400, "{body}");
    assert_eq!(body["action"], "ValidationError", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["userMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A server process of the built binary; stopped when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
}

impl ServerProcess {
    /// The binary with the tests' channels and connector and admin credentials (argon2id
    /// hashes, as production keeps them) on `database_url`, logging warnings to stderr.
    pub fn command(database_url: &str) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_autolink"));
        command
            .arg("serve")
            .env_remove("AUTOLINK_CONFIG")
            .env("AUTOLINK_BIND", "127.0.0.1:0")
            .env("AUTOLINK_DATABASE_URL", database_url)
            .env("AUTOLINK_TENANT_ISSUER", TENANT_ISSUER)
            .env("AUTOLINK_AUTH__BASIC__USERNAME", CONNECTOR_USER)
            .env("AUTOLINK_AUTH__BASIC__PASSWORD_HASH", password_hash())
            .env("AUTOLINK_ADMIN__TOKEN_HASH", admin_token_hash())
            .env(
                "AUTOLINK_CHANNELS",
                format!("[{{id=\"web\",legal_entity=\"USRT\",customer_type=\"B2C\",client_ids=[\"{B2C_CLIENT}\"]}}]"),
            )
            .env("RUST_LOG", "warn");
        command
    }

    /// Starts the tests' server on a database.
    pub fn start(database_url: &str) -> ServerProcess {
        ServerProcess::spawn(ServerProcess::command(database_url))
    }

    /// Starts `command` and waits for its "listening" line.
    pub fn spawn(mut command: std::process::Command) -> ServerProcess {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("autolink listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        ServerProcess { child, address }
    }

    /// A field of the process's `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `host:port` of a PostgreSQL URL (port 5432 when the URL names none).
pub fn host_and_port(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let host = rest.split(['/', '?']).next().unwrap_or("127.0.0.1");
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

/// The same PostgreSQL URL, reaching the server through a local proxy on `port`.
pub fn through_proxy(url: &str, port: u16) -> String {
    url.replacen(&host_and_port(url), &format!("127.0.0.1:{port}"), 1)
}

/// What the admin tests that send bodies to every endpoint need: customers `C-1`
/// (carol@example.com, linked through the connector) and `C-2` (other@example.com), and a pending
/// prospect. Returns the link's id and the prospect's id.
pub async fn seed_customers_link_and_prospect(app: &TestApp) -> (i64, i64) {
    app.import_csv(&csv(&[
        "C-1,USRT,person,false,carol@example.com,Carol,One",
        "C-2,USRT,person,false,other@example.com,Carol,Two",
    ]));
    let (_, linked) = app
        .connector(&token_step(
            "carol@example.com",
            "oid-carol",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(linked["extension_CustomerAccountNumber"], "C-1", "{linked}");
    let links: Value = app
        .client
        .get(format!("{}/admin/v1/links?accountNumber=C-1", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link = links["items"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{links}"));
    let response = app
        .client
        .post(format!("{}/admin/v1/prospects", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"email": "kim@example.com", "companyName": "Fabrikam", "legalEntity": "USRT"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let prospect: Value = response.json().await.unwrap();
    let prospect = prospect["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{prospect}"));
    (link, prospect)
}
