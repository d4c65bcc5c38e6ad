//! The admin API over HTTP: its credentials, every operation and every refusal, `/openapi.json`
//! against the routes actually served, and `/metrics`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const CODE_MULTIPLE: &str =
    "Microsoft_Dynamics_Commerce_Runtime_MultipleCustomerAccountsFoundWithSameEmailAddress";

/// Calls the admin API with the admin token (and an actor name when given).
async fn admin(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    actor: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(actor) = actor {
        request = request.header("X-Autolink-Actor", actor);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"))
    };
    (status, value)
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    admin(app, Method::GET, path, None, None).await
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    admin(app, Method::POST, path, Some(body), None).await
}

async fn patch(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    admin(app, Method::PATCH, path, Some(body), None).await
}

/// Asserts an admin error answer: status, code and field.
fn assert_error(status: u16, body: &Value, expected_status: u16, error: &str, field: Option<&str>) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{body}");
    }
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Signs an identity in through the connector's token step and returns the answer.
async fn sign_in(app: &TestApp, email: &str, object_id: &str, client: &str) -> Value {
    let (status, body) = app
        .connector(&token_step(email, object_id, local_identity(), client))
        .await;
    assert_continue(status, &body);
    body
}

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = get(app, &format!("/admin/v1/audit?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

// --- credentials -------------------------------------------------------------------------------

#[tokio::test]
async fn connector_credentials_cannot_reach_the_admin_api() {
    let app = spawn_app_with(|s| {
        s.auth.api_key = Some(autolink::config::ApiKeySettings {
            header: "x-functions-key".into(),
            key_hashes: vec![],
            keys: vec!["connector-api-key".into()],
        });
    })
    .await;
    let url = format!("{}/admin/v1/customers?email=a@example.com", app.address);
    let attempts = [
        app.client.get(&url),
        app.client
            .get(&url)
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD)),
        // The admin token is not accepted as a Basic password either.
        app.client
            .get(&url)
            .basic_auth(CONNECTOR_USER, Some(ADMIN_TOKEN)),
        app.client
            .get(&url)
            .header("x-functions-key", "connector-api-key"),
        app.client.get(&url).bearer_auth(CONNECTOR_PASSWORD),
        app.client.get(&url).bearer_auth("connector-api-key"),
        app.client.get(&url).bearer_auth(format!("{ADMIN_TOKEN}x")),
        app.client
            .get(format!("{}/admin/v1/no-such-thing", app.address))
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD)),
    ];
    for attempt in attempts {
        let response = attempt.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    // The same API key does open the B2C endpoints.
    let response = app
        .client
        .post(format!("{}/b2c/api-connector", app.address))
        .header("x-functions-key", "connector-api-key")
        .json(&attribute_collection("a@example.com", B2C_CLIENT))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_admin_token_is_refused_on_the_b2c_endpoints() {
    let app = spawn_app().await;
    for path in ["/b2c/api-connector", "/b2c/rest/precheck", "/b2c/rest/link"] {
        let url = format!("{}{path}", app.address);
        let body = attribute_collection("a@example.com", B2C_CLIENT);
        for request in [
            app.client.post(&url).bearer_auth(ADMIN_TOKEN),
            app.client
                .post(&url)
                .basic_auth(CONNECTOR_USER, Some(ADMIN_TOKEN)),
            app.client.post(&url).basic_auth("admin", Some(ADMIN_TOKEN)),
        ] {
            let response = request.json(&body).send().await.unwrap();
            assert_eq!(response.status(), 401, "{path}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["error"], "unauthorized");
        }
    }
    assert_eq!(app.customer_count(), 0);
}

#[tokio::test]
async fn the_actor_header_names_who_acted_in_the_audit_and_a_bad_one_is_refused() {
    let app = spawn_app().await;
    let body = json!({"legalEntity": "USRT", "partyType": "person", "accountNumber": "A-1"});
    let (status, answer) = admin(
        &app,
        Method::POST,
        "/admin/v1/customers",
        Some(body.clone()),
        Some("ana.admin@fabrikam.com"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = post(
        &app,
        "/admin/v1/customers",
        json!({"legalEntity": "USRT", "partyType": "person", "accountNumber": "A-2"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let events = audit(&app, "outcome=CustomerCreated").await;
    let actors: Vec<&str> = events
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, vec!["admin", "ana.admin@fabrikam.com"]);
    assert!(events.iter().all(|e| e["source"] == "admin-api"));

    for bad in ["b2c", "two words", &"x".repeat(65)] {
        let (status, answer) = admin(
            &app,
            Method::POST,
            "/admin/v1/customers",
            Some(json!({"legalEntity": "USRT", "partyType": "person"})),
            Some(bad),
        )
        .await;
        assert_error(
            status,
            &answer,
            400,
            "invalid_field",
            Some("X-Autolink-Actor"),
        );
    }
    assert_eq!(app.customer_count(), 2);
}

// --- customers ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_administrator_creates_reads_and_searches_customers() {
    let app = spawn_app().await;
    let (status, created) = post(
        &app,
        "/admin/v1/customers",
        json!({
            "accountNumber": "B2B-100",
            "legalEntity": "usrt",
            "partyType": "Person",
            "isB2b": true,
            "primaryEmail": " Buyer@Contoso.com ",
            "firstName": "Ana",
            "lastName": "Buyer"
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["accountNumber"], "B2B-100");
    assert_eq!(created["legalEntity"], "USRT");
    assert_eq!(created["partyType"], "person");
    assert_eq!(created["isB2b"], true);
    assert_eq!(created["primaryEmail"], "Buyer@Contoso.com");
    assert_eq!(created["origin"], "admin");
    assert_eq!(created["active"], true);
    assert_eq!(created["activeLinks"], 0);

    // Without a number, one is generated; an organization needs no email.
    let (status, organization) = post(
        &app,
        "/admin/v1/customers",
        json!({"legalEntity": "USRT", "partyType": "organization", "isB2b": true, "firstName": "Contoso"}),
    )
    .await;
    assert_eq!(status, 201, "{organization}");
    let generated = organization["accountNumber"].as_str().unwrap();
    assert!(
        generated.starts_with("AL") && generated.len() == 14,
        "{generated}"
    );

    let (status, read) = get(&app, "/admin/v1/customers/B2B-100").await;
    assert_eq!(status, 200);
    assert_eq!(read, created);

    // Search by email uses the comparison rule (case), and by account number.
    let (status, found) = get(&app, "/admin/v1/customers?email=BUYER@contoso.COM").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["items"][0]["accountNumber"], "B2B-100");
    assert!(found.get("nextCursor").is_none());
    let (_, found) = get(
        &app,
        &format!("/admin/v1/customers?accountNumber={generated}"),
    )
    .await;
    assert_eq!(found["items"][0]["partyType"], "organization");
    let (_, found) = get(&app, "/admin/v1/customers?email=nobody@contoso.com").await;
    assert_eq!(found["items"], json!([]));

    // The created customer is a linking candidate at once.
    let answer = sign_in(&app, "buyer@contoso.com", "oid-b2b", B2B_CLIENT).await;
    assert_eq!(answer["extension_CustomerAccountNumber"], "B2B-100");
    let (_, read) = get(&app, "/admin/v1/customers/B2B-100").await;
    assert_eq!(read["activeLinks"], 1);
}

#[tokio::test]
async fn searching_pages_through_customers_with_a_cursor() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "P-1,USRT,person,false,same@example.com,A,One",
        "P-2,USRT,person,false,same@example.com,A,Two",
        "P-3,DEMF,person,false,same@example.com,A,Three",
    ]));
    let (status, first) = get(&app, "/admin/v1/customers?email=same@example.com&limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"].as_str().unwrap();
    let (_, second) = get(
        &app,
        &format!("/admin/v1/customers?email=same@example.com&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["items"][0]["accountNumber"], "P-3");
    assert!(second.get("nextCursor").is_none());
    let (_, usrt) = get(
        &app,
        "/admin/v1/customers?email=same@example.com&legalEntity=usrt",
    )
    .await;
    assert_eq!(usrt["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn creating_a_customer_refuses_each_bad_field_by_name() {
    let app = spawn_app().await;
    let base = json!({"legalEntity": "USRT", "partyType": "person"});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let cases = [
        (json!({"partyType": "person"}), "legalEntity"),
        (json!({"legalEntity": "USRT"}), "partyType"),
        (with("legalEntity", json!("NOWHERE")), "legalEntity"),
        (with("legalEntity", json!("US RT")), "legalEntity"),
        (with("legalEntity", json!(42)), "legalEntity"),
        (with("partyType", json!("robot")), "partyType"),
        (with("isB2b", json!("yes")), "isB2b"),
        (with("primaryEmail", json!("not-an-email")), "primaryEmail"),
        (with("primaryEmail", json!("a@localhost")), "primaryEmail"),
        (with("accountNumber", json!("A 1")), "accountNumber"),
        (
            with("accountNumber", json!("9".repeat(65))),
            "accountNumber",
        ),
        (with("firstName", json!("a".repeat(201))), "firstName"),
        (with("lastName", json!("bell\u{7}")), "lastName"),
        (with("colour", json!("blue")), "colour"),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&app, "/admin/v1/customers", body.clone()).await;
        assert_error(status, &answer, 400, "invalid_field", Some(field));
        assert!(
            answer["message"].as_str().unwrap().starts_with(field),
            "{answer}"
        );
    }
    // Not JSON, not an object, and not said to be JSON.
    let url = format!("{}/admin/v1/customers", app.address);
    let response = app
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"legalEntity\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["field"], "body");
    let (status, answer) = post(&app, "/admin/v1/customers", json!(["USRT"])).await;
    assert_error(status, &answer, 400, "invalid_field", Some("body"));
    let response = app
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body("legalEntity=USRT")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = app
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!("{{\"firstName\": \"{}\"}}", "a".repeat(70_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(app.customer_count(), 0);
}

#[tokio::test]
async fn an_existing_account_number_is_a_conflict_and_an_unknown_one_is_not_found() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,c1@example.com,C,One"]));
    let (status, answer) = post(
        &app,
        "/admin/v1/customers",
        json!({"accountNumber": "C-1", "legalEntity": "USRT", "partyType": "person"}),
    )
    .await;
    assert_error(
        status,
        &answer,
        409,
        "account_number_exists",
        Some("accountNumber"),
    );
    for path in [
        "/admin/v1/customers/NOPE",
        "/admin/v1/prospects/999",
        "/admin/v1/links?accountNumber=NOPE",
    ] {
        let (status, answer) = get(&app, path).await;
        assert_error(status, &answer, 404, "not_found", None);
    }
    let (status, answer) = patch(&app, "/admin/v1/customers/NOPE", json!({"firstName": "X"})).await;
    assert_error(status, &answer, 404, "not_found", Some("accountNumber"));
    let (status, answer) = post(&app, "/admin/v1/customers/NOPE/deactivate", json!({})).await;
    assert_error(status, &answer, 404, "not_found", Some("accountNumber"));
    for path in [
        "/admin/v1/links/999/unlink",
        "/admin/v1/prospects/999/reject",
    ] {
        let (status, answer) = post(&app, path, json!({})).await;
        assert_error(status, &answer, 404, "not_found", Some("id"));
    }
    let (status, answer) = post(&app, "/admin/v1/links/abc/unlink", json!({})).await;
    assert_error(status, &answer, 400, "invalid_field", Some("id"));
}

#[tokio::test]
async fn changing_a_primary_email_never_moves_links_and_is_audited() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,old@example.com,Old,Name"]));
    let linked = sign_in(&app, "old@example.com", "oid-1", B2C_CLIENT).await;
    assert_eq!(linked["extension_AutoLinkOutcome"], "Linked");

    let (status, changed) = admin(
        &app,
        Method::PATCH,
        "/admin/v1/customers/C-1",
        Some(json!({"primaryEmail": "New@Example.com", "firstName": null, "isB2b": true})),
        Some("bo"),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["primaryEmail"], "New@Example.com");
    assert_eq!(changed["firstName"], Value::Null);
    assert_eq!(changed["lastName"], "Name");
    assert_eq!(changed["isB2b"], true);

    // The identity stays linked to C-1, under the email it was linked with.
    let links = app.links_of("C-1");
    assert_eq!(links.len(), 1);
    assert!(links[0].active);
    assert_eq!(links[0].email_key, "old@example.com");
    let again = sign_in(&app, "whatever@example.com", "oid-1", B2C_CLIENT).await;
    assert_eq!(again["extension_CustomerAccountNumber"], "C-1");
    assert_eq!(again["extension_AutoLinkOutcome"], "AlreadyLinked");
    // A new identity under the new email is not joined silently (DESIGN section 5).
    let review = sign_in(&app, "new@example.com", "oid-2", B2C_CLIENT).await;
    assert_eq!(review["extension_AutoLinkError"], "LinkRequiresReview");

    let events = audit(&app, "outcome=CustomerUpdated").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], "bo");
    assert_eq!(events[0]["accountNumber"], "C-1");
    assert_eq!(events[0]["emailKey"], "new@example.com");
    let detail = events[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("old@example.com -> new@example.com"),
        "{detail}"
    );
    assert!(detail.contains("1 active link(s) kept"), "{detail}");

    // The same change again changes nothing and audits nothing.
    let (status, _) = patch(&app, "/admin/v1/customers/C-1", json!({"isB2b": true})).await;
    assert_eq!(status, 200);
    assert_eq!(audit(&app, "outcome=CustomerUpdated").await.len(), 1);
}

#[tokio::test]
async fn changing_the_email_of_a_customer_autolink_created_frees_the_old_email_for_a_new_sign_up() {
    let app = spawn_app().await;
    let created = sign_in(&app, "first@example.com", "oid-1", B2C_CLIENT).await;
    assert_eq!(created["extension_AutoLinkOutcome"], "Created");
    let number = created["extension_CustomerAccountNumber"].as_str().unwrap();
    let (status, _) = patch(
        &app,
        &format!("/admin/v1/customers/{number}"),
        json!({"primaryEmail": "second@example.com"}),
    )
    .await;
    assert_eq!(status, 200);
    // Without clearing the race guard, this creation would collide with the old record.
    let again = sign_in(&app, "first@example.com", "oid-9", B2C_CLIENT).await;
    assert_eq!(again["extension_AutoLinkOutcome"], "Created", "{again}");
    assert_ne!(again["extension_CustomerAccountNumber"], number);
}

#[tokio::test]
async fn updating_a_customer_refuses_fields_that_cannot_change_or_are_bad() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,c1@example.com,C,One"]));
    for (body, field) in [
        (json!({"legalEntity": "DEMF"}), "legalEntity"),
        (json!({"partyType": "organization"}), "partyType"),
        (json!({"accountNumber": "C-2"}), "accountNumber"),
        (json!({"primaryEmail": "nope"}), "primaryEmail"),
        (json!({"isB2b": "true"}), "isB2b"),
        (json!({"isB2b": null, "firstName": "Carl"}), "isB2b"),
        (json!({"lastName": 7}), "lastName"),
        (json!({}), "body"),
        // serde would read a struct from an array of its fields in order.
        (json!([null, null]), "body"),
    ] {
        let (status, answer) = patch(&app, "/admin/v1/customers/C-1", body).await;
        assert_error(status, &answer, 400, "invalid_field", Some(field));
    }
    let (_, read) = get(&app, "/admin/v1/customers/C-1").await;
    assert_eq!(read["primaryEmail"], "c1@example.com");
}

#[tokio::test]
async fn a_deactivated_customer_is_no_longer_a_candidate_and_deactivating_twice_conflicts() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["B-1,USRT,person,true,b1@contoso.com,B,One"]));
    let (status, answer) = post(&app, "/admin/v1/customers/B-1/deactivate", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["active"], false);
    let (status, answer) = post(&app, "/admin/v1/customers/B-1/deactivate", json!({})).await;
    assert_error(
        status,
        &answer,
        409,
        "customer_inactive",
        Some("accountNumber"),
    );
    let refused = sign_in(&app, "b1@contoso.com", "oid-1", B2B_CLIENT).await;
    assert_eq!(
        refused["extension_AutoLinkError"],
        "Microsoft_Dynamics_CommerceIdentityNotFound"
    );
    assert_eq!(audit(&app, "outcome=CustomerDeactivated").await.len(), 1);
}

// --- links -------------------------------------------------------------------------------------

#[tokio::test]
async fn links_are_listed_by_customer_and_by_identity() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,c1@example.com,C,One"]));
    sign_in(&app, "c1@example.com", "oid-local", B2C_CLIENT).await;
    let (status, body) = app
        .connector(&token_step(
            "c1@example.com",
            "oid-social",
            social_identity("google.com"),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);

    let (status, page) = get(&app, "/admin/v1/links?accountNumber=C-1").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.get("nextCursor").is_none(), "{page}");
    let links = page["items"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0]["subject"], "oid-local");
    assert_eq!(links[0]["issuer"], TENANT_ISSUER);
    assert_eq!(links[0]["signInType"], "emailAddress");
    assert_eq!(links[1]["identityProvider"], "google.com");
    assert_eq!(links[1]["linkedBy"], "auto");
    assert_eq!(links[1]["accountNumber"], "C-1");

    let issuer = urlencode(TENANT_ISSUER);
    let (status, by_identity) = get(
        &app,
        &format!("/admin/v1/links?issuer={issuer}&subject=oid-social"),
    )
    .await;
    assert_eq!(status, 200, "{by_identity}");
    assert_eq!(by_identity["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_identity["items"][0]["accountNumber"], "C-1");

    // Pages: one link per page, the cursor leads to the second and last.
    let (status, first) = get(&app, "/admin/v1/links?accountNumber=C-1&limit=1").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["items"][0]["subject"], "oid-local");
    let cursor = first["nextCursor"].as_str().unwrap().to_string();
    let (status, second) = get(
        &app,
        &format!("/admin/v1/links?accountNumber=C-1&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["items"][0]["identityProvider"], "google.com");
    assert!(second.get("nextCursor").is_none(), "{second}");

    for (query, field) in [
        ("", "accountNumber"),
        ("?issuer=x", "subject"),
        ("?subject=x", "issuer"),
        ("?accountNumber=C-1&subject=x", "accountNumber"),
        ("?account=C-1", "account"),
        ("?accountNumber=C-1&accountNumber=C-2", "accountNumber"),
        ("?accountNumber=C-1&limit=501", "limit"),
        ("?accountNumber=C-1&cursor=x", "cursor"),
    ] {
        let (status, answer) = get(&app, &format!("/admin/v1/links{query}")).await;
        assert_error(status, &answer, 400, "invalid_field", Some(field));
    }
}

#[tokio::test]
async fn unlinking_keeps_the_history_and_unlinking_twice_conflicts() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,c1@example.com,C,One"]));
    sign_in(&app, "c1@example.com", "oid-1", B2C_CLIENT).await;
    let (_, links) = get(&app, "/admin/v1/links?accountNumber=C-1").await;
    let id = links["items"][0]["id"].as_i64().unwrap();

    let (status, unlinked) = admin(
        &app,
        Method::POST,
        &format!("/admin/v1/links/{id}/unlink"),
        Some(json!({"reason": "customer asked"})),
        Some("carla"),
    )
    .await;
    assert_eq!(status, 200, "{unlinked}");
    assert_eq!(unlinked["active"], false);
    assert_eq!(app.active_links(), 0);
    let (_, links) = get(&app, "/admin/v1/links?accountNumber=C-1").await;
    assert_eq!(
        links["items"].as_array().unwrap().len(),
        1,
        "the row is kept"
    );

    // An empty body is fine too, but the link is inactive now.
    let response = app
        .client
        .post(format!("{}/admin/v1/links/{id}/unlink", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let answer: Value = response.json().await.unwrap();
    assert_error(409, &answer, 409, "link_inactive", Some("id"));

    let events = audit(&app, "outcome=Unlinked").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], "carla");
    assert_eq!(events[0]["subject"], "oid-1");
    assert!(events[0]["detail"]
        .as_str()
        .unwrap()
        .contains("customer asked"));
}

#[tokio::test]
async fn moving_a_link_needs_a_reason_and_the_identity_then_resolves_to_the_new_customer() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "C-1,USRT,person,false,c1@example.com,C,One",
        "C-2,USRT,person,false,c2@example.com,C,Two",
        "C-3,USRT,person,false,c3@example.com,C,Three",
    ]));
    sign_in(&app, "c1@example.com", "oid-1", B2C_CLIENT).await;
    let (_, links) = get(&app, "/admin/v1/links?accountNumber=C-1").await;
    let id = links["items"][0]["id"].as_i64().unwrap();
    let path = format!("/admin/v1/links/{id}/move");

    let (status, answer) = post(&app, &path, json!({"accountNumber": "C-2"})).await;
    assert_error(status, &answer, 400, "invalid_field", Some("reason"));
    let (status, answer) = post(&app, &path, json!({"reason": "merge"})).await;
    assert_error(status, &answer, 400, "invalid_field", Some("accountNumber"));
    let (status, answer) = post(
        &app,
        &path,
        json!({"accountNumber": "NOPE", "reason": "merge"}),
    )
    .await;
    assert_error(status, &answer, 404, "not_found", Some("accountNumber"));
    let (status, answer) = post(
        &app,
        &path,
        json!({"accountNumber": "C-1", "reason": "merge"}),
    )
    .await;
    assert_error(status, &answer, 409, "same_customer", Some("accountNumber"));
    let (status, _) = post(&app, "/admin/v1/customers/C-3/deactivate", json!({})).await;
    assert_eq!(status, 200);
    let (status, answer) = post(
        &app,
        &path,
        json!({"accountNumber": "C-3", "reason": "merge"}),
    )
    .await;
    assert_error(
        status,
        &answer,
        409,
        "customer_inactive",
        Some("accountNumber"),
    );

    let (status, moved) = post(
        &app,
        &path,
        json!({"accountNumber": "C-2", "reason": "duplicate record, merged into C-2"}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["accountNumber"], "C-2");
    assert_eq!(moved["linkedBy"], "admin");
    assert_eq!(moved["active"], true);
    assert_ne!(moved["id"].as_i64().unwrap(), id);
    assert_eq!(app.links_of("C-1").iter().filter(|l| l.active).count(), 0);
    assert_eq!(app.links_of("C-1").len(), 1, "the old row is kept");

    let answer = sign_in(&app, "c1@example.com", "oid-1", B2C_CLIENT).await;
    assert_eq!(answer["extension_CustomerAccountNumber"], "C-2");
    assert_eq!(answer["extension_AutoLinkOutcome"], "AlreadyLinked");
    // Moving the old, now inactive link again conflicts.
    let (status, answer) = post(
        &app,
        &path,
        json!({"accountNumber": "C-2", "reason": "again"}),
    )
    .await;
    assert_error(status, &answer, 409, "link_inactive", Some("id"));

    let events = audit(&app, "outcome=LinkMoved").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["accountNumber"], "C-2");
    assert!(events[0]["detail"]
        .as_str()
        .unwrap()
        .contains("from C-1 to C-2"));
}

// --- audit -------------------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_is_queried_by_outcome_channel_email_identity_and_time_a_page_at_a_time() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "D-1,USRT,person,false,dup@example.com,D,One",
        "D-2,USRT,person,false,dup@example.com,D,Two",
    ]));
    sign_in(&app, "new1@example.com", "oid-1", B2C_CLIENT).await;
    sign_in(&app, "new2@example.com", "oid-2", B2C_CLIENT).await;
    sign_in(&app, "dup@example.com", "oid-3", B2C_CLIENT).await;
    sign_in(&app, "new1@example.com", "oid-1", B2C_CLIENT).await;
    // The refusal and "already linked" are written by the background writer.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let created = audit(&app, "outcome=Created").await;
    assert_eq!(created.len(), 2);
    assert!(
        created[0]["id"].as_i64() > created[1]["id"].as_i64(),
        "newest first"
    );
    let refused = audit(&app, "outcome=Refused&channel=fabrikam-web").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["code"], CODE_MULTIPLE);
    assert_eq!(audit(&app, "channel=fabrikam-b2b").await.len(), 0);
    let by_email = audit(&app, "email=NEW1@example.com").await;
    assert_eq!(by_email.len(), 2);
    let issuer = urlencode(TENANT_ISSUER);
    let by_identity = audit(&app, &format!("issuer={issuer}&subject=oid-2")).await;
    assert_eq!(by_identity.len(), 1);
    assert_eq!(by_identity[0]["outcome"], "Created");
    assert_eq!(audit(&app, "from=2999-01-01").await.len(), 0);
    assert_eq!(
        audit(&app, "from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z")
            .await
            .len(),
        4
    );

    let (_, first) = get(&app, "/admin/v1/audit?limit=3").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["nextCursor"].as_str().unwrap();
    let (_, second) = get(&app, &format!("/admin/v1/audit?limit=3&cursor={cursor}")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second.get("nextCursor").is_none());

    for (query, field) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("cursor=abc", "cursor"),
        ("outcome=Maybe", "outcome"),
        ("channel=nowhere", "channel"),
        ("email=not-an-email", "email"),
        ("from=yesterday", "from"),
        ("from=2026-02-01&to=2026-01-01", "to"),
        ("colour=blue", "colour"),
    ] {
        let (status, answer) = get(&app, &format!("/admin/v1/audit?{query}")).await;
        assert_error(status, &answer, 400, "invalid_field", Some(field));
    }
}

// --- preview -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_preview_says_what_would_happen_without_writing() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "C-1,USRT,person,false,one@example.com,C,One",
        "D-1,USRT,person,false,dup@example.com,D,One",
        "D-2,USRT,person,false,dup@example.com,D,Two",
    ]));
    let cases = [
        ("fabrikam-web", "One@Example.com", "WouldLink", None),
        ("fabrikam-web", "new@example.com", "WouldCreate", None),
        (
            "fabrikam-web",
            "dup@example.com",
            "Refused",
            Some(CODE_MULTIPLE),
        ),
        (
            "fabrikam-b2b",
            "one@example.com",
            "Refused",
            Some("Microsoft_Dynamics_CommerceIdentityNotFound"),
        ),
    ];
    for (channel, email, outcome, code) in cases {
        let (status, answer) = admin(
            &app,
            Method::POST,
            "/admin/v1/preview",
            Some(json!({"channel": channel, "email": email})),
            Some("pat"),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outcome"], outcome, "{email}: {answer}");
        assert_eq!(answer["channel"], channel);
        if outcome == "WouldLink" {
            assert_eq!(answer["customerAccountNumber"], "C-1");
        }
        if let Some(code) = code {
            assert_eq!(answer["code"], code);
        }
    }
    assert_eq!(app.customer_count(), 3);
    assert_eq!(app.active_links(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let events = audit(&app, "limit=10").await;
    assert_eq!(events.len(), 4);
    assert!(events
        .iter()
        .all(|e| e["source"] == "preview" && e["actor"] == "pat"));

    for (body, field) in [
        (
            json!({"channel": "nowhere", "email": "a@example.com"}),
            "channel",
        ),
        (json!({"email": "a@example.com"}), "channel"),
        (json!({"channel": "fabrikam-web", "email": "nope"}), "email"),
        (json!({"channel": "fabrikam-web"}), "email"),
    ] {
        let (status, answer) = post(&app, "/admin/v1/preview", body).await;
        assert_error(status, &answer, 400, "invalid_field", Some(field));
    }
}

// --- prospects ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_approved_prospects_sign_up_links_through_the_api_connector() {
    let app = spawn_app().await;
    // Before approval, the B2B sign-up is refused on the form.
    let (status, body) = app
        .connector(&attribute_collection("Lee@Northwind.example", B2B_CLIENT))
        .await;
    assert_validation_error(status, &body, "Microsoft_Dynamics_CommerceIdentityNotFound");

    let (status, prospect) = admin(
        &app,
        Method::POST,
        "/admin/v1/prospects",
        Some(json!({
            "email": "Lee@Northwind.example",
            "companyName": "Northwind Traders",
            "legalEntity": "usrt",
            "firstName": "Lee",
            "lastName": "Chen"
        })),
        Some("sales"),
    )
    .await;
    assert_eq!(status, 201, "{prospect}");
    assert_eq!(prospect["status"], "pending");
    assert_eq!(prospect["requestedBy"], "sales");
    assert_eq!(prospect["legalEntity"], "USRT");
    let id = prospect["id"].as_i64().unwrap();

    let (_, pending) = get(&app, "/admin/v1/prospects").await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    assert_eq!(pending["items"][0]["id"], id);

    let (status, approved) = admin(
        &app,
        Method::POST,
        &format!("/admin/v1/prospects/{id}/approve"),
        Some(json!({"organizationAccountNumber": "ORG-1", "personAccountNumber": "B2B-7"})),
        Some("manager"),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decidedBy"], "manager");
    assert_eq!(approved["organizationAccountNumber"], "ORG-1");
    assert_eq!(approved["personAccountNumber"], "B2B-7");
    let (_, organization) = get(&app, "/admin/v1/customers/ORG-1").await;
    assert_eq!(organization["partyType"], "organization");
    assert_eq!(organization["isB2b"], true);
    assert_eq!(organization["firstName"], "Northwind Traders");
    let (_, person) = get(&app, "/admin/v1/customers/B2B-7").await;
    assert_eq!(person["partyType"], "person");
    assert_eq!(person["isB2b"], true);
    assert_eq!(person["origin"], "prospect");
    assert_eq!(person["primaryEmail"], "Lee@Northwind.example");
    let (_, pending) = get(&app, "/admin/v1/prospects").await;
    assert_eq!(pending["items"], json!([]));
    let (_, decided) = get(&app, "/admin/v1/prospects?status=approved").await;
    assert_eq!(decided["items"][0]["id"], id);

    // The requester's next sign-up: the form check passes, the token step links.
    let (status, body) = app
        .connector(&attribute_collection("lee@northwind.example", B2B_CLIENT))
        .await;
    assert_continue(status, &body);
    let linked = sign_in(&app, "lee@northwind.example", "oid-lee", B2B_CLIENT).await;
    assert_eq!(linked["extension_CustomerAccountNumber"], "B2B-7");
    assert_eq!(linked["extension_AutoLinkOutcome"], "Linked");

    // Decided once only.
    for action in ["approve", "reject"] {
        let (status, answer) = post(
            &app,
            &format!("/admin/v1/prospects/{id}/{action}"),
            json!({}),
        )
        .await;
        assert_error(status, &answer, 409, "prospect_not_pending", Some("id"));
    }
    let events = audit(&app, "outcome=ProspectApproved").await;
    assert_eq!(events[0]["actor"], "manager");
    assert_eq!(events[0]["accountNumber"], "B2B-7");
}

#[tokio::test]
async fn an_approval_with_generated_numbers_also_links_the_next_sign_up() {
    let app = spawn_app().await;
    let (status, prospect) = post(
        &app,
        "/admin/v1/prospects",
        json!({"email": "kim@fabrikam.example", "companyName": "Fabrikam", "legalEntity": "USRT"}),
    )
    .await;
    assert_eq!(status, 201, "{prospect}");
    let id = prospect["id"].as_i64().unwrap();
    let response = app
        .client
        .post(format!("{}/admin/v1/prospects/{id}/approve", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let approved: Value = response.json().await.unwrap();
    let person = approved["personAccountNumber"].as_str().unwrap();
    assert!(person.starts_with("AL"), "{approved}");
    let linked = sign_in(&app, "kim@fabrikam.example", "oid-kim", B2B_CLIENT).await;
    assert_eq!(linked["extension_CustomerAccountNumber"], person);
}

#[tokio::test]
async fn prospects_refuse_duplicates_bad_fields_and_second_decisions() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["B-1,USRT,person,true,taken@contoso.com,B,One"]));
    let record = |body: Value| {
        let app = &app;
        async move { post(app, "/admin/v1/prospects", body).await }
    };
    let (status, answer) = record(json!({
        "email": "taken@contoso.com", "companyName": "Contoso", "legalEntity": "USRT"
    }))
    .await;
    assert_error(status, &answer, 409, "customer_exists", Some("email"));

    let body = json!({"email": "new@contoso.com", "companyName": "Contoso", "legalEntity": "USRT"});
    let (status, first) = record(body.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, answer) = record(body.clone()).await;
    assert_error(status, &answer, 409, "prospect_pending", Some("email"));

    for (bad, field) in [
        (json!({"companyName": "C", "legalEntity": "USRT"}), "email"),
        (
            json!({"email": "x", "companyName": "C", "legalEntity": "USRT"}),
            "email",
        ),
        (
            json!({"email": "a@contoso.com", "legalEntity": "USRT"}),
            "companyName",
        ),
        (
            json!({"email": "a@contoso.com", "companyName": "  ", "legalEntity": "USRT"}),
            "companyName",
        ),
        (
            json!({"email": "a@contoso.com", "companyName": "C"}),
            "legalEntity",
        ),
        (
            json!({"email": "a@contoso.com", "companyName": "C", "legalEntity": "ZZZZ"}),
            "legalEntity",
        ),
        (
            json!({"email": "a@contoso.com", "companyName": "C", "legalEntity": "USRT", "phone": "1"}),
            "phone",
        ),
    ] {
        let (status, answer) = record(bad).await;
        assert_error(status, &answer, 400, "invalid_field", Some(field));
    }

    // Rejected: it leaves the pending list, and a new request may then be recorded.
    let id = first["id"].as_i64().unwrap();
    let (status, rejected) = post(
        &app,
        &format!("/admin/v1/prospects/{id}/reject"),
        json!({"reason": "not a business"}),
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["decisionReason"], "not a business");
    let (status, answer) = post(
        &app,
        &format!("/admin/v1/prospects/{id}/approve"),
        json!({}),
    )
    .await;
    assert_error(status, &answer, 409, "prospect_not_pending", Some("id"));
    let (status, second) = record(body).await;
    assert_eq!(status, 201, "{second}");

    // An approval with a taken number, or one that would duplicate a B2B email, is refused.
    let second_id = second["id"].as_i64().unwrap();
    let (status, answer) = post(
        &app,
        &format!("/admin/v1/prospects/{second_id}/approve"),
        json!({"personAccountNumber": "B-1"}),
    )
    .await;
    assert_error(
        status,
        &answer,
        409,
        "account_number_exists",
        Some("personAccountNumber"),
    );
    let (status, answer) = post(
        &app,
        &format!("/admin/v1/prospects/{second_id}/approve"),
        json!({"personAccountNumber": "X 1"}),
    )
    .await;
    assert_error(
        status,
        &answer,
        400,
        "invalid_field",
        Some("personAccountNumber"),
    );
    app.import_csv(&csv(&["B-2,USRT,person,true,new@contoso.com,B,Two"]));
    let (status, answer) = post(
        &app,
        &format!("/admin/v1/prospects/{second_id}/approve"),
        json!({}),
    )
    .await;
    assert_error(status, &answer, 409, "duplicate_email", Some("email"));
    let (_, still) = get(&app, &format!("/admin/v1/prospects/{second_id}")).await;
    assert_eq!(still["status"], "pending");

    for (query, field) in [("status=maybe", "status"), ("limit=1000", "limit")] {
        let (status, answer) = get(&app, &format!("/admin/v1/prospects?{query}")).await;
        assert_error(status, &answer, 400, "invalid_field", Some(field));
    }
    let (status, answer) = get(&app, "/admin/v1/prospects/0").await;
    assert_error(status, &answer, 400, "invalid_field", Some("id"));
}

// --- duplicate report --------------------------------------------------------------------------

#[tokio::test]
async fn the_duplicate_report_lists_failing_emails_and_near_duplicates_per_legal_entity() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "D-1,USRT,person,false,Dup@Example.com,D,One",
        "D-2,USRT,person,true,dup@example.com,D,Two",
        "B-1,USRT,person,true,buyer@contoso.com,B,One",
        "B-2,USRT,person,true,BUYER@contoso.com,B,Two",
        "N-1,USRT,person,false,john.smith@gmail.com,J,S",
        "N-2,USRT,person,false,johnsmith+shop@gmail.com,J,S",
        "O-1,USRT,organization,true,dup@example.com,Org,",
        "E-1,DEMF,person,false,dup@example.com,Other,Entity",
    ]));
    let (status, report) = get(&app, "/admin/v1/duplicates?legalEntity=usrt").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["legalEntity"], "USRT");
    let duplicates = report["duplicates"].as_array().unwrap();
    assert_eq!(duplicates.len(), 2, "{report}");
    assert_eq!(duplicates[0]["emailKey"], "buyer@contoso.com");
    // Both B2B: fails on the B2C and the B2B channel with linking on (not on fabrikam-nolink).
    assert_eq!(
        duplicates[0]["failsOn"],
        json!(["fabrikam-web", "fabrikam-b2b"])
    );
    assert_eq!(duplicates[1]["emailKey"], "dup@example.com");
    assert_eq!(duplicates[1]["failsOn"], json!(["fabrikam-web"]));
    assert_eq!(duplicates[1]["customers"].as_array().unwrap().len(), 2);
    let near = report["nearDuplicates"].as_array().unwrap();
    assert_eq!(near.len(), 1, "{report}");
    assert_eq!(near[0]["reasons"], json!(["dots", "plus_tag"]));
    assert_eq!(near[0]["customers"][0]["accountNumber"], "N-1");

    // What the report predicts is what a sign-up gets.
    let refused = sign_in(&app, "buyer@contoso.com", "oid-1", B2B_CLIENT).await;
    assert_eq!(refused["extension_AutoLinkError"], CODE_MULTIPLE);

    let (status, answer) = get(&app, "/admin/v1/duplicates").await;
    assert_error(status, &answer, 400, "invalid_field", Some("legalEntity"));
    let (_, empty) = get(&app, "/admin/v1/duplicates?legalEntity=NONE").await;
    assert_eq!(empty["duplicates"], json!([]));
}

// --- OpenAPI and metrics -----------------------------------------------------------------------

#[tokio::test]
async fn openapi_json_lists_every_route_the_server_serves() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the document needs the admin token");
    let (status, document) = get(&app, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let mut described = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                described.insert((method.clone(), path.clone()));
            }
        }
    }
    let served: std::collections::BTreeSet<(String, String)> = autolink::api::routes::served()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(described, served);

    // Every described route is really served: with the right credentials, none answers the
    // server's "no such endpoint" or "method not allowed".
    for (method, path) in &described {
        let url = format!("{}{}", app.address, path.replace(['{', '}'], ""));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = app.client.request(method.clone(), &url);
        request = if path.starts_with("/b2c/") {
            request.basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        } else {
            request.bearer_auth(ADMIN_TOKEN)
        };
        let response = request
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: {text}");
        assert!(
            !(status == 404 && text.contains("no such endpoint")),
            "{method} {path} is described but not served"
        );
        assert!(
            status < 500 || path == "/readyz",
            "{method} {path}: {status} {text}"
        );
    }
    // And a route that is not described is not served.
    let (status, answer) = get(&app, "/admin/v1/nothing-here").await;
    assert_eq!(status, 404, "{answer}");
}

#[tokio::test]
async fn a_method_a_path_does_not_serve_is_answered_405_with_the_allowed_methods() {
    let app = spawn_app().await;
    for (method, path, allow, admin_token) in [
        ("TRACE", "/healthz", "GET", false),
        ("DELETE", "/b2c/api-connector", "POST", false),
        ("PUT", "/admin/v1/customers", "POST, GET", true),
        ("TRACE", "/admin/v1/customers/C-1", "GET, PATCH", true),
        ("GET", "/admin/v1/links/1/unlink", "POST", true),
        ("TRACE", "/openapi.json", "GET", true),
    ] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{path}", app.address);
        let mut request = app.client.request(method.clone(), &url);
        request = if path.starts_with("/b2c/") {
            request.basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        } else if admin_token {
            // An administrator name the API refuses does not hide the 405.
            request
                .bearer_auth(ADMIN_TOKEN)
                .header("x-autolink-actor", "not a name")
        } else {
            request
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response.headers()["allow"].to_str().unwrap(),
            allow,
            "{method} {path}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
    // Credentials still come first on the admin API.
    let response = app
        .client
        .request(Method::TRACE, format!("{}/admin/v1/customers", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn metrics_count_decisions_refusals_latency_and_pool_use_without_credentials() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "D-1,USRT,person,false,dup@example.com,D,One",
        "D-2,USRT,person,false,dup@example.com,D,Two",
    ]));
    sign_in(&app, "new@example.com", "oid-1", B2C_CLIENT).await;
    sign_in(&app, "new@example.com", "oid-1", B2C_CLIENT).await;
    sign_in(&app, "dup@example.com", "oid-2", B2C_CLIENT).await;
    let (status, body) = app
        .connector(&attribute_collection("x@example.com", "no-such-client"))
        .await;
    assert_block(status, &body, "UnknownChannel");

    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for line in [
        r#"autolink_decisions_total{channel="fabrikam-web",outcome="Created"} 1"#,
        r#"autolink_decisions_total{channel="fabrikam-web",outcome="AlreadyLinked"} 1"#,
        r#"autolink_decisions_total{channel="fabrikam-web",outcome="Refused"} 1"#,
        r#"autolink_decisions_total{channel="none",outcome="Refused"} 1"#,
        r#"autolink_decisions_total{channel="fabrikam-b2b",outcome="Linked"} 0"#,
        &format!(r#"autolink_refusals_total{{code="{CODE_MULTIPLE}"}} 1"#),
        r#"autolink_refusals_total{code="UnknownChannel"} 1"#,
        r#"autolink_http_request_duration_seconds_count{endpoint="/b2c/api-connector",method="POST"} 4"#,
        r#"autolink_http_request_duration_seconds_count{endpoint="/admin/v1/customers/{accountNumber}",method="PATCH"} 0"#,
        "autolink_db_pool_max_connections 8",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(text.contains("autolink_db_pool_connections "));
    assert!(text.contains("autolink_db_pool_in_use_connections "));
    assert!(text.contains(r#"autolink_http_request_duration_seconds_bucket{endpoint="/b2c/api-connector",method="POST",le="0.005"}"#));
}

// --- nothing a caller sends is a 500 -----------------------------------------------------------

#[tokio::test]
async fn nothing_a_caller_sends_to_the_admin_api_is_answered_with_a_server_error() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,c1@example.com,C,One"]));
    let bodies = [
        "",
        "null",
        "[]",
        "\"text\"",
        "{\"accountNumber\": {\"deep\": [1, 2, {\"x\": null}]}}",
        "{\"email\": \"\\u0000@example.com\"}",
        "{\"legalEntity\": \"USRT\", \"partyType\": \"person\", \"primaryEmail\": \"ünïcödé@exämple.com\"}",
        "{\"limit\": -1, \"reason\": 12}",
        "\u{feff}{}",
        "{\"a\": 1e999}",
    ];
    let paths = [
        (Method::POST, "/admin/v1/customers"),
        (
            Method::GET,
            "/admin/v1/customers?email=%00&limit=99999999999999999999",
        ),
        (Method::PATCH, "/admin/v1/customers/C-1"),
        (Method::PATCH, "/admin/v1/customers/%20"),
        (Method::POST, "/admin/v1/customers/C-1/deactivate"),
        (Method::GET, "/admin/v1/links?issuer=%FF&subject=x"),
        (Method::POST, "/admin/v1/links/99999999999999999999/unlink"),
        (Method::POST, "/admin/v1/links/1/move"),
        (Method::GET, "/admin/v1/audit?from=2026-13-45&cursor=0"),
        (Method::POST, "/admin/v1/preview"),
        (Method::POST, "/admin/v1/prospects"),
        (Method::GET, "/admin/v1/prospects?status=%E2%80%AE"),
        (Method::POST, "/admin/v1/prospects/-1/approve"),
        (Method::POST, "/admin/v1/prospects/1/reject"),
        (Method::GET, "/admin/v1/duplicates?legalEntity=%0A"),
        (
            Method::GET,
            "/admin/v1/webhook-deliveries?status=%E2%80%AE&cursor=-5",
        ),
        (Method::POST, "/admin/v1/webhook-deliveries/1/retry"),
        (
            Method::POST,
            "/admin/v1/webhook-deliveries/99999999999999999999/retry",
        ),
        (Method::GET, "/admin/v1/events?after=-1&limit=0"),
        (Method::GET, "/admin/v1/events?after=99999999999999999999"),
        (Method::PUT, "/admin/v1/customers"),
        (Method::DELETE, "/admin/v1/customers/C-1"),
    ];
    for (method, path) in paths {
        for body in bodies {
            let response = app
                .client
                .request(method.clone(), format!("{}{path}", app.address))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(status < 500, "{method} {path} {body:?}: {status} {text}");
            assert!(
                serde_json::from_str::<Value>(&text).is_ok(),
                "{method} {path}: not JSON: {text}"
            );
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// --- the command line --------------------------------------------------------------------------

/// Runs `autolink --config FILE args...` against the test app's database; returns the exit
/// code and the JSON printed.
fn cli(config: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autolink"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("AUTOLINK_ACTOR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), value, stderr)
}

#[tokio::test]
async fn the_command_line_lists_unlinks_and_moves_links_manages_customers_and_prospects() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "C-1,USRT,person,false,c1@example.com,C,One",
        "C-2,USRT,person,false,c2@example.com,C,Two",
    ]));
    sign_in(&app, "c1@example.com", "oid-1", B2C_CLIENT).await;
    sign_in(&app, "c1@example.com", "oid-2", B2C_CLIENT).await;
    // Signed in again: on SQLite the server keeps the link and, while nothing commits, answers
    // it without reading the database. The move below, by another process, must still show.
    for _ in 0..3 {
        let again = sign_in(&app, "c1@example.com", "oid-2", B2C_CLIENT).await;
        assert_eq!(again["extension_CustomerAccountNumber"], "C-1");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("autolink.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n[[channels]]\nid = \"fabrikam-web\"\nlegal_entity = \"USRT\"\n\
             customer_type = \"B2C\"\nclient_ids = [\"{B2C_CLIENT}\"]\n[[channels]]\n\
             id = \"fabrikam-b2b\"\nlegal_entity = \"USRT\"\ncustomer_type = \"B2B\"\n\
             client_ids = [\"{B2B_CLIENT}\"]\n",
            app.db.url
        ),
    )
    .unwrap();

    let (code, page, err) = cli(&config, &["links", "list", "--account-number", "C-1"]);
    assert_eq!(code, 0, "{err}");
    let links = page["items"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    let first = links[0]["id"].as_i64().unwrap().to_string();
    let second = links[1]["id"].as_i64().unwrap().to_string();
    let (code, page, err) = cli(
        &config,
        &[
            "links",
            "list",
            "--account-number",
            "C-1",
            "--limit",
            "1",
            "--cursor",
            &first,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(page["items"][0]["id"].as_i64().unwrap().to_string(), second);
    let (code, unlinked, err) = cli(
        &config,
        &[
            "links",
            "unlink",
            &first,
            "--reason",
            "lost phone",
            "--actor",
            "desk-1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(unlinked["active"], false);
    let (code, _, err) = cli(&config, &["links", "unlink", &first]);
    assert_eq!(code, 2);
    assert!(err.contains("already inactive"), "{err}");
    let (code, moved, err) = cli(
        &config,
        &[
            "links", "move", &second, "--to", "C-2", "--reason", "merged", "--actor", "desk-1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(moved["accountNumber"], "C-2");
    let answer = sign_in(&app, "c1@example.com", "oid-2", B2C_CLIENT).await;
    assert_eq!(answer["extension_CustomerAccountNumber"], "C-2");

    let (code, created, err) = cli(
        &config,
        &[
            "customers",
            "create",
            "--legal-entity",
            "usrt",
            "--b2b",
            "--email",
            "B@contoso.com",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let number = created["accountNumber"].as_str().unwrap().to_string();
    let (code, _, err) = cli(&config, &["customers", "create", "--legal-entity", "MARS"]);
    assert_eq!(code, 2);
    assert!(err.contains("legalEntity"), "{err}");
    let (code, updated, err) = cli(
        &config,
        &[
            "customers",
            "update",
            &number,
            "--email",
            "b2@contoso.com",
            "--first-name",
            "Bea",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(updated["primaryEmail"], "b2@contoso.com");
    let (code, found, _) = cli(
        &config,
        &["customers", "search", "--email", "B2@CONTOSO.com"],
    );
    assert_eq!(code, 0);
    assert_eq!(found["items"][0]["accountNumber"], number.as_str());
    let (code, shown, _) = cli(&config, &["customers", "show", "C-2"]);
    assert_eq!(code, 0);
    assert_eq!(shown["activeLinks"], 1);
    let (code, deactivated, _) = cli(&config, &["customers", "deactivate", "C-1"]);
    assert_eq!(code, 0);
    assert_eq!(deactivated["active"], false);
    let (code, report, _) = cli(
        &config,
        &["customers", "duplicates", "--legal-entity", "USRT"],
    );
    assert_eq!(code, 0);
    assert_eq!(report["duplicates"], json!([]));

    let (code, prospect, err) = cli(
        &config,
        &[
            "prospects",
            "add",
            "--email",
            "kim@fabrikam.example",
            "--company",
            "Fabrikam",
            "--legal-entity",
            "USRT",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = prospect["id"].as_i64().unwrap().to_string();
    let (code, pending, _) = cli(&config, &["prospects", "list"]);
    assert_eq!(code, 0);
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    let (code, approved, err) = cli(
        &config,
        &[
            "prospects",
            "approve",
            &id,
            "--person-account-number",
            "K-1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(approved["personAccountNumber"], "K-1");
    let linked = sign_in(&app, "kim@fabrikam.example", "oid-kim", B2B_CLIENT).await;
    assert_eq!(linked["extension_CustomerAccountNumber"], "K-1");
    let (code, _, err) = cli(&config, &["prospects", "reject", &id]);
    assert_eq!(code, 2);
    assert!(err.contains("not pending"), "{err}");

    let (code, events, err) = cli(&config, &["audit", "--outcome", "Unlinked"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(events["items"][0]["actor"], "desk-1");
    assert_eq!(events["items"][0]["source"], "cli");
    let (code, _, err) = cli(&config, &["audit", "--limit", "9999"]);
    assert_eq!(code, 2);
    assert!(err.contains("limit"), "{err}");
}

#[test]
fn an_import_alone_on_the_file_leaves_it_in_wal_mode_and_a_reimport_changes_nothing() {
    use diesel::RunQueryDsl;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("alone.db");
    let file = dir.path().join("customers.csv");
    let mut text = csv(&["P-0,USRT,person,true,p0@example.com,P,Zero"]);
    for i in 1..=450 {
        text.push_str(&format!("P-{i},DEMF,person,false,P{i}@Example.com,P,{i}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let import = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_autolink"))
            .args(["customers", "import"])
            .arg(&file)
            .env(
                "AUTOLINK_DATABASE_URL",
                format!("sqlite://{}", database.display()),
            )
            .env("RUST_LOG", "warn")
            .env_remove("AUTOLINK_CONFIG")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let first = import();
    assert!(
        first.contains("451 inserted, 0 updated, 0 unchanged"),
        "{first}"
    );
    let again = import();
    assert!(
        again.contains("0 inserted, 0 updated, 451 unchanged"),
        "{again}"
    );
    let db = autolink::storage::Db::open(
        &format!("sqlite://{}", database.display()),
        &autolink::storage::PoolOptions::default(),
    )
    .unwrap();
    let mut conn = db.get().unwrap();
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result(&mut *conn)
        .unwrap();
    assert_eq!(mode.journal_mode, "wal");
    let customer = autolink::storage::customers::find_by_account_number(&mut conn, "P-0")
        .unwrap()
        .unwrap();
    assert!(customer.is_b2b);
    assert_eq!(customer.email_key.as_deref(), Some("p0@example.com"));
    assert_eq!(customer.origin, "import");
    let customer = autolink::storage::customers::find_by_account_number(&mut conn, "P-450")
        .unwrap()
        .unwrap();
    assert_eq!(customer.primary_email.as_deref(), Some("P450@Example.com"));
    assert_eq!(customer.email_key.as_deref(), Some("p450@example.com"));
    assert_eq!(customer.legal_entity, "DEMF");
}
