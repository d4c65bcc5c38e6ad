//! Builds the service from settings. Tests start exactly what production starts, on port 0.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::admin::Admin;
use crate::api::authn::ConnectorAuth;
use crate::api::{self, AppState};
use crate::auth::api_key::ApiKeys;
use crate::auth::bootstrap::{self, CredentialError, Credentials, Generated};
use crate::auth::fetch::Fetcher;
use crate::auth::oidc::{AccessTokenVerifier, B2cIdTokenVerifier};
use crate::config::Settings;
use crate::linking::{LinkingService, LinkingSettings};
use crate::messages::Catalogue;
use crate::metrics::Metrics;
use crate::storage::audit::{AuditWriter, AuditWriterHandle};
use crate::storage::{Db, PoolOptions, StorageError};
use crate::tls::ClientCertPolicy;
use crate::webhooks::dispatcher::Dispatcher;
use crate::webhooks::Outbox;

/// Longest wait, once the server has stopped, for the audit writer to write what is queued.
const AUDIT_AT_STOP: Duration = Duration::from_secs(5);

/// A built, not yet running, server.
pub struct Application {
    port: u16,
    tls: bool,
    server: Server,
    audit: AuditWriterHandle,
    generated: Generated,
    /// The webhook dispatcher, when `[[webhooks]]` are configured.
    dispatcher: Option<Dispatcher>,
}

/// Opens the database (applying migrations) with the pool settings of `settings`, for a command:
/// connections open as they are needed.
pub fn open_database(settings: &Settings) -> anyhow::Result<Db> {
    open_database_with(settings, false)
}

/// [`open_database`]; `serving`: on SQLite, every connection of the pool opens at start, and a
/// PostgreSQL server that does not answer is not an error (the migrations are applied once it
/// answers, see [`crate::storage::postgres::start`]).
fn open_database_with(settings: &Settings, serving: bool) -> anyhow::Result<Db> {
    let options = PoolOptions {
        max_size: settings.database.pool_size,
        checkout_timeout: Duration::from_millis(settings.database.checkout_timeout_ms),
        open_at_start: serving,
        durable_commits: settings.database.sqlite_durable_commits,
        // PostgreSQL: the server's statements and lock waits end with its request time limit;
        // commands (migrations, imports) keep the server's defaults.
        statement_timeout: serving
            .then(|| Duration::from_millis(settings.database.request_timeout_ms)),
    };
    if serving {
        Ok(Db::open_serving(&settings.database_url, &options)?)
    } else {
        Ok(Db::open(&settings.database_url, &options)?)
    }
}

/// Builds the linking service over an open database; returns the audit writer's handle with it.
pub fn build_linking(
    settings: &Settings,
    db: Db,
) -> anyhow::Result<(LinkingService, AuditWriterHandle)> {
    let channels = settings.channel_directory()?;
    let metrics = Arc::new(Metrics::new(&channels)?);
    // The audit writer has connections of its own, so that requests holding the pool's
    // connections can never keep it from emptying its queue.
    let audit_db = db.other_pool(&PoolOptions {
        // The writer, and on SQLite the audit lookup's merge thread.
        max_size: 2,
        checkout_timeout: Duration::from_millis(settings.database.checkout_timeout_ms),
        open_at_start: false,
        // The writer's batches hold the events of decisions that wrote nothing (a write's
        // event commits with the write): see "Database down" in the README.
        durable_commits: false,
        statement_timeout: Some(crate::storage::audit::APPEND_LIMIT),
    })?;
    let (audit, audit_handle) = AuditWriter::start(audit_db);
    let linking_settings = LinkingSettings {
        linking_enabled: settings.linking.enabled,
        allow_link_after_email_change: settings.linking.allow_link_after_email_change,
        verification: settings.linking.verification_policy(),
        account_number_prefix: settings.customers.account_number_prefix.clone(),
    };
    Ok((
        LinkingService::new(
            db,
            channels,
            linking_settings,
            audit,
            metrics,
            Outbox::new(&settings.webhooks),
            Duration::from_millis(settings.database.request_timeout_ms),
        ),
        audit_handle,
    ))
}

/// Builds the administrative operations (and the linking service they preview with) over an open
/// database; returns the audit writer's handle with them.
pub fn build_admin(settings: &Settings, db: Db) -> anyhow::Result<(Admin, AuditWriterHandle)> {
    let (linking, audit) = build_linking(settings, db)?;
    let admin = Admin::new(
        Arc::new(linking),
        settings.customers.account_number_prefix.clone(),
    );
    Ok((admin, audit))
}

/// The credentials, from the configuration or from the database. Credentials kept in the
/// database (generated at a first start) need it: while a PostgreSQL server that did not answer
/// at start is away, the start waits for it, without listening.
fn load_credentials(settings: &Settings, db: &Db) -> anyhow::Result<(Credentials, Generated)> {
    let mut waited = false;
    loop {
        match bootstrap::load_or_generate(settings, db) {
            Err(CredentialError::Storage(StorageError::Unavailable(_))) if !db.is_migrated() => {
                if !waited {
                    log::warn!(
                        "no credentials are configured and those kept in the database cannot be \
                         read: waiting for the database before listening"
                    );
                    waited = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

impl Application {
    /// Opens the database, loads or generates credentials, and binds the listener.
    pub fn build(settings: &Settings) -> anyhow::Result<Application> {
        let db = open_database_with(settings, true)?;
        let (credentials, generated) = load_credentials(settings, &db)?;
        let (linking, audit) = build_linking(settings, db)?;
        if !settings.tenant_issuer_configured() {
            log::warn!(
                "tenant_issuer is not configured: identities from connector calls are keyed under \
                 {:?}; set it to your B2C tenant's token issuer before production",
                settings.tenant_issuer
            );
        }
        if !settings.linking.local_accounts_verify_email {
            log::warn!(
                "linking.local_accounts_verify_email is false: local accounts never link or create"
            );
        }
        let messages = match &settings.messages.file {
            Some(path) => Catalogue::from_file(path).map_err(anyhow::Error::msg)?,
            None => Catalogue::default(),
        };
        let api_key = match &settings.auth.api_key {
            Some(api_key) => Some(ApiKeys::from_settings(api_key).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let fetcher = Arc::new(Fetcher::new(&settings.oidc)?);
        let bearer = match &settings.auth.bearer {
            Some(bearer) => Some(AccessTokenVerifier::new(bearer, fetcher.clone())?),
            None => None,
        };
        let client_certificate = match &settings.auth.client_certificate {
            Some(certs) => Some(ClientCertPolicy::from_settings(certs)?),
            None => None,
        };
        // The channels' client ids: the audiences of the store's ID tokens (`POST /v1/link`).
        let client_ids: Vec<String> = settings
            .channels
            .iter()
            .flat_map(|c| c.client_ids.clone())
            .collect();
        let id_tokens = match &settings.relying_party {
            Some(rp) => Some(Arc::new(B2cIdTokenVerifier::new(
                rp,
                client_ids.clone(),
                fetcher.clone(),
            )?)),
            None => None,
        };
        let entra = match &settings.entra {
            Some(entra) => Some(Arc::new(entra_state(
                entra,
                fetcher.clone(),
                &settings.linking,
                client_ids,
            )?)),
            None => None,
        };
        let client_ip_header = match &settings.limits.credentials.client_ip_header {
            Some(name) => Some(
                actix_web::http::header::HeaderName::from_bytes(
                    name.trim().to_ascii_lowercase().as_bytes(),
                )
                .map_err(|_| {
                    anyhow::anyhow!("limits.credentials.client_ip_header: not a header name")
                })?,
            ),
            None => None,
        };
        let connector_auth = ConnectorAuth {
            basic: credentials.connector_basic,
            api_key,
            bearer,
            client_certificate,
        };
        let linking = Arc::new(linking);
        let dispatcher = Dispatcher::start(
            linking.db().other_pool(&PoolOptions {
                max_size: 2,
                checkout_timeout: Duration::from_millis(settings.database.checkout_timeout_ms),
                open_at_start: false,
                // SQLite: a claim or an outcome lost to a power cut means one more attempt of a
                // delivery that is at least once anyway; a sync per attempt would slow the
                // link writer, which shares the file's one write lock.
                durable_commits: false,
                statement_timeout: Some(Duration::from_millis(
                    settings.database.request_timeout_ms,
                )),
            })?,
            &settings.webhooks,
            &settings.webhook_delivery,
            linking.outbox(),
            linking.metrics().clone(),
        )?;
        let admin = Arc::new(Admin::new(
            linking.clone(),
            settings.customers.account_number_prefix.clone(),
        ));
        let state = web::Data::new(AppState {
            linking,
            connector_auth,
            tenant_issuer: settings.tenant_issuer.clone(),
            max_body_bytes: settings.limits.max_body_bytes,
            body_timeout: Duration::from_millis(settings.limits.body_timeout_ms),
            request_timeout: Duration::from_millis(settings.database.request_timeout_ms),
            messages,
            id_tokens,
            admin,
            admin_token: credentials.admin_token,
            credential_gate: crate::auth::gate::Gate::new(&settings.limits.credentials),
            client_ip_header,
            entra,
        });
        let listener = TcpListener::bind(&settings.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(api::request_context))
                .configure(api::configure)
        })
        .shutdown_timeout(5);
        if let Some(workers) = settings.workers {
            server = server.workers(workers.max(1));
        }
        let server = match &settings.tls {
            Some(tls) => {
                // Ask for client certificates only when they are an authentication type; trust
                // is decided per request (crate::tls::authenticate), not in the handshake.
                let request_client_certs = settings.auth.client_certificate.is_some();
                let config = crate::tls::server_config(tls, request_client_certs)?;
                server
                    .on_connect(crate::tls::on_connect)
                    .listen_rustls_0_23(listener, config)?
            }
            None => server.listen(listener)?,
        }
        .run();
        Ok(Application {
            port,
            tls: settings.tls.is_some(),
            server,
            audit,
            generated,
            dispatcher,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https` when the server terminates TLS, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Credentials generated by this start (shown once by `serve`).
    pub fn take_generated(&mut self) -> Generated {
        std::mem::take(&mut self.generated)
    }

    /// Serves until stopped, then flushes the audit log.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            audit,
            dispatcher,
            ..
        } = self;
        let result = server.await;
        // Attempts under way end by their own time limits; a delivery not recorded is attempted
        // again once its claim lapses (by this instance's next start or another instance).
        drop(dispatcher);
        // The server and its state are gone; the writer flushes what is queued and stops once
        // the last request's work has ended. On a thread of its own, waited for at most
        // AUDIT_AT_STOP: work that waits for a database that does not answer must not keep the
        // process from stopping (a blocking task of the runtime would: its end is waited for).
        let (done, joined) = tokio::sync::oneshot::channel::<()>();
        let joiner = std::thread::Builder::new()
            .name("autolink-audit-stop".into())
            .spawn(move || {
                audit.join();
                let _ = done.send(());
            });
        if joiner.is_ok()
            && actix_web::rt::time::timeout(AUDIT_AT_STOP, joined)
                .await
                .is_err()
        {
            log::error!(
                "stopping with audit events not written: the database did not answer within {} s",
                AUDIT_AT_STOP.as_secs()
            );
        }
        result
    }
}

/// What the Entra External ID endpoints need, from `[entra]`.
fn entra_state(
    settings: &crate::config::EntraSettings,
    fetcher: Arc<Fetcher>,
    linking: &crate::config::LinkingSettings,
    client_ids: Vec<String>,
) -> anyhow::Result<api::entra::EntraState> {
    let graph = match &settings.graph {
        Some(graph) => Some(crate::auth::graph::GraphClient::new(
            graph,
            &settings.tenant_id,
        )?),
        None => None,
    };
    Ok(api::entra::EntraState {
        verifier: crate::auth::oidc::EntraTokenVerifier::new(settings, fetcher)?,
        deadline: Duration::from_millis(settings.deadline_ms),
        identity_issuer: settings.identity_issuer(),
        signups: crate::linking::verified_signups::VerifiedSignups::default(),
        graph,
        verification: linking.verification_policy(),
        client_ids,
    })
}
