//! Entra External ID's time limit: every answer within `[entra] deadline_ms` whatever the
//! database does, failing closed (`showBlockPage` `ServiceUnavailable` at submit, `autoLinkError`
//! at token issuance), and Entra's retry, once the database answers again, links once.

use std::time::{Duration, Instant};

use autolink::config::EntraSettings;
use autolink::domain::Refusal;
use autolink::messages;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::json;

use crate::db_proxy::{Proxy, OPEN, STALL};
use crate::entra_support::*;
use crate::helpers::*;
use crate::mock_issuer::MockIssuer;

const DEADLINE: Duration = Duration::from_millis(800);
const USER: &str = "90847c2a-e29d-4d2f-9f54-c5b4d3f26471";

/// Token issuance until it links (the pool reconnects after the database comes back).
async fn retry_until_linked(entra: &EntraApp, body: &serde_json::Value) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let claims = token_claims(&entra.token_issuance(body).await).clone();
        if claims.get("autoLinkError").is_none() || started.elapsed() > Duration::from_secs(20) {
            return claims;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_stalled_both_events_fail_closed_within_the_deadline_and_the_retry_links_once(
) {
    if postgres_base_url().is_none() {
        needs_postgres("with_postgresql_stalled_both_events_fail_closed_within_the_deadline_and_the_retry_links_once");
        return;
    }
    let db = TestDatabase::new();
    db.open();
    let proxy = Proxy::start(host_and_port(&db.url)).await;
    let proxied = through_proxy(&db.url, proxy.port);
    let issuer = MockIssuer::start().await;
    let app = spawn_on(db, |s| {
        s.database_url = proxied.clone();
        s.entra = Some(EntraSettings {
            deadline_ms: DEADLINE.as_millis() as u64,
            ..entra_settings(&issuer)
        });
    })
    .await;
    let entra = EntraApp { app, issuer };
    entra.app.import_csv(&csv(&[
        "C-1,USRT,person,false,casey@example.com,Casey,Jensen",
    ]));
    let correlation = correlation();
    assert_continues(
        &entra
            .submit(&submit_body(
                &correlation,
                local_sign_up("casey@example.com"),
                "en-us",
            ))
            .await,
    );

    proxy.set(STALL).await;
    let answer = entra
        .submit(&submit_body(
            &crate::entra_support::correlation(),
            local_sign_up("casey@example.com"),
            "en-us",
        ))
        .await;
    assert!(
        answer.elapsed < DEADLINE,
        "submit took {:?}",
        answer.elapsed
    );
    assert_eq!(
        assert_block_page(&answer),
        messages::message(Refusal::ServiceUnavailable, "en")
    );
    let body = token_body(&correlation, USER, "casey@example.com", B2C_CLIENT);
    let answer = entra.token_issuance(&body).await;
    assert!(
        answer.elapsed < DEADLINE,
        "token issuance took {:?}",
        answer.elapsed
    );
    assert_eq!(
        token_claims(&answer).clone(),
        json!({"autoLinkError": "ServiceUnavailable"})
    );

    proxy.set(OPEN).await;
    let claims = retry_until_linked(&entra, &body).await;
    assert_eq!(claims["customerAccountNumber"], "C-1", "{claims}");
    let again = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(
        again,
        json!({"customerAccountNumber": "C-1", "autoLinkOutcome": "AlreadyLinked"})
    );
    assert_eq!(entra.app.active_links(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sqlite_write_locked_token_issuance_fails_closed_within_the_deadline_and_the_retry_links_once(
) {
    if postgres_base_url().is_some() {
        // The PostgreSQL pass runs the stalled-database test above instead.
        needs_sqlite("with_sqlite_write_locked_token_issuance_fails_closed_within_the_deadline_and_the_retry_links_once");
        return;
    }
    let entra = spawn_entra(|settings, _| {
        if let Some(entra) = settings.entra.as_mut() {
            entra.deadline_ms = DEADLINE.as_millis() as u64;
        }
    })
    .await;
    entra.app.import_csv(&csv(&[
        "C-1,USRT,person,false,casey@example.com,Casey,Jensen",
    ]));
    let correlation = correlation();
    assert_continues(
        &entra
            .submit(&submit_body(
                &correlation,
                local_sign_up("casey@example.com"),
                "en-us",
            ))
            .await,
    );
    // Another process holds the database's write lock (longer than busy_timeout would wait).
    let path = entra.app.db.url.trim_start_matches("sqlite://").to_string();
    let mut holder = SqliteConnection::establish(&path).unwrap();
    holder.batch_execute("BEGIN IMMEDIATE").unwrap();

    let body = token_body(&correlation, USER, "casey@example.com", B2C_CLIENT);
    for _ in 0..2 {
        let answer = entra.token_issuance(&body).await;
        assert!(
            answer.elapsed < DEADLINE,
            "token issuance took {:?}",
            answer.elapsed
        );
        assert_eq!(
            token_claims(&answer).clone(),
            json!({"autoLinkError": "ServiceUnavailable"})
        );
    }
    // Reads go on under the write lock (WAL): a submit still decides.
    let answer = entra
        .submit(&submit_body(
            &crate::entra_support::correlation(),
            local_sign_up("casey@example.com"),
            "en-us",
        ))
        .await;
    assert!(
        answer.elapsed < DEADLINE,
        "submit took {:?}",
        answer.elapsed
    );
    submit_action(&answer);

    holder.batch_execute("ROLLBACK").unwrap();
    let claims = retry_until_linked(&entra, &body).await;
    assert_eq!(claims["customerAccountNumber"], "C-1", "{claims}");
    let again = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(
        again,
        json!({"customerAccountNumber": "C-1", "autoLinkOutcome": "AlreadyLinked"})
    );
    assert_eq!(entra.app.active_links(), 1);
}
