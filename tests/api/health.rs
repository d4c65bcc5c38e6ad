//! Liveness, readiness, and failing closed when the database goes away (PostgreSQL through a
//! TCP proxy the test can cut).

use std::time::{Duration, Instant};

use crate::db_proxy::{Proxy, OPEN, REFUSE, STALL};
use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_answer_when_the_database_is_up() {
    let app = spawn_app().await;
    let (status, body) = app.healthz().await;
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_away_sign_ups_fail_closed_and_the_service_recovers() {
    if postgres_base_url().is_none() {
        needs_postgres("with_the_database_away_sign_ups_fail_closed_and_the_service_recovers");
        return;
    }
    let db = TestDatabase::new();
    db.open();
    let proxy = Proxy::start(host_and_port(&db.url)).await;
    let proxied = through_proxy(&db.url, proxy.port);
    let app = spawn_on(db, |s| s.database_url = proxied.clone()).await;
    app.import_csv(&csv(&["POS-100,USRT,person,false,down@example.com,D,Own"]));
    let (status, body) = app
        .connector(&token_step(
            "down@example.com",
            "oid-before",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);

    for mode in [REFUSE, STALL] {
        proxy.set(mode).await;
        let started = Instant::now();
        let (status, body) = app
            .connector(&attribute_collection("down@example.com", B2C_CLIENT))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "block page took {:?}",
            started.elapsed()
        );
        assert_block(status, &body, "ServiceUnavailable");

        let started = Instant::now();
        let (status, body) = app
            .connector(&token_step(
                "down@example.com",
                "oid-during",
                local_identity(),
                B2C_CLIENT,
            ))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "token step took {:?}",
            started.elapsed()
        );
        assert_continue(status, &body);
        assert_eq!(body["extension_AutoLinkError"], "ServiceUnavailable");
        assert!(body.get("extension_CustomerAccountNumber").is_none());

        let response = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        let response = app
            .client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    proxy.set(OPEN).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the service did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = app
        .connector(&token_step(
            "down@example.com",
            "oid-after",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_CustomerAccountNumber"], "POS-100");
    // Nothing was linked while the database was away.
    let subjects: Vec<String> = app
        .links_of("POS-100")
        .into_iter()
        .map(|l| l.subject)
        .collect();
    assert_eq!(
        subjects,
        vec!["oid-before".to_string(), "oid-after".to_string()]
    );
}
