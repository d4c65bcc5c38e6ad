//! `autolink backfill`: the real binary on a Graph export, on SQLite, or on PostgreSQL when
//! `AUTOLINK_TEST_POSTGRES_URL` is set. The dry run, the real run, the second run, a run killed
//! with SIGKILL and run again, a run that the database fails in the middle and run again, and
//! sign-ups through the server during a backfill.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use autolink::storage::audit::AuditEvent;
use autolink::storage::customers::Customer;
use autolink::storage::links::Link;
use autolink::storage::schema::{audit_events, customers, identity_links};
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::helpers::*;

const TENANT: &str = "fabrikam.onmicrosoft.com";

/// The binary with the tests' channels (as the test server has them) on `database_url`.
fn backfill(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_autolink"));
    command
        .arg("backfill")
        .env_remove("AUTOLINK_CONFIG")
        .env_remove("RUST_LOG")
        .env("AUTOLINK_DATABASE_URL", database_url)
        .env("AUTOLINK_TENANT_ISSUER", TENANT_ISSUER)
        .env(
            "AUTOLINK_CHANNELS",
            format!(
                "[{{id=\"fabrikam-web\",legal_entity=\"USRT\",customer_type=\"B2C\",client_ids=[\"{B2C_CLIENT}\"]}},\
                 {{id=\"fabrikam-b2b\",legal_entity=\"USRT\",customer_type=\"B2B\",client_ids=[\"{B2B_CLIENT}\"]}}]"
            ),
        )
        .env("AUTOLINK_LINKING__EMAIL_VERIFYING_IDPS", "[\"google.com\"]");
    command
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The report file's lines by user id (`None` for users without one).
fn report_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn by_id(lines: &[Value]) -> BTreeMap<String, Value> {
    lines
        .iter()
        .filter_map(|l| Some((l["id"].as_str()?.to_string(), l.clone())))
        .collect()
}

fn local(id: &str, email: &str) -> Value {
    json!({"id": id, "displayName": "L", "givenName": "Lou", "surname": "Cal", "mail": null,
    "otherMails": [], "creationType": "LocalAccount",
    "identities": [
        {"signInType": "emailAddress", "issuer": TENANT, "issuerAssignedId": email},
        {"signInType": "userPrincipalName", "issuer": TENANT, "issuerAssignedId": format!("{id}@{TENANT}")}
    ]})
}

fn social(id: &str, provider: &str, mail: Option<&str>, other: &[&str]) -> Value {
    json!({"id": id, "mail": mail, "otherMails": other, "creationType": null,
    "identities": [
        {"signInType": "federated", "issuer": provider, "issuerAssignedId": format!("idp-{id}")},
        {"signInType": "userPrincipalName", "issuer": TENANT, "issuerAssignedId": format!("{id}@{TENANT}")}
    ]})
}

fn page(users: &[Value], next: bool) -> Value {
    let mut page = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,displayName,givenName,surname,mail,otherMails,identities,creationType)",
        "value": users,
    });
    if next {
        page["@odata.nextLink"] = json!("https://graph.microsoft.com/v1.0/users?$skiptoken=X");
    }
    page
}

/// Every kind of account, in two Graph pages and a JSON lines file, with what a sign-up decides.
struct Export {
    _dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    /// id -> (outcome of the real run, code)
    expected: Vec<(&'static str, &'static str, Option<&'static str>)>,
}

fn import_customers(app: &TestApp) {
    app.import_csv(&csv(&[
        "C-LOCAL,USRT,person,false,local@example.com,Lou,Cal",
        "C-GOOGLE,USRT,person,false,google@example.com,Gus,Gle",
        "C-FB,USRT,person,false,fb@example.com,Fay,Book",
        "C-UPPER,USRT,person,false,upper@example.com,Up,Per",
        "C-OTP,USRT,person,false,otp@example.com,O,Tp",
        "C-TWIN1,USRT,person,false,twin@example.com,Tw,In",
        "C-TWIN2,USRT,person,false,twin@example.com,Tw,In",
        "C-NAME,USRT,person,false,named@example.com,Na,Me",
    ]));
}

fn every_kind_of_account() -> Export {
    let dir = tempfile::tempdir().unwrap();
    let first = vec![
        local("u-local", "local@example.com"),
        social("u-google", "google.com", None, &["google@example.com"]),
        social("u-facebook", "facebook.com", Some("fb@example.com"), &[]),
        json!({"id": "u-username", "mail": "named@example.com", "otherMails": [],
            "identities": [{"signInType": "userName", "issuer": TENANT, "issuerAssignedId": "named"}]}),
        json!({"id": "u-otp", "mail": "otp@example.com", "otherMails": ["otp@example.com"],
            "identities": [{"signInType": "federated", "issuer": "mail", "issuerAssignedId": "otp@example.com"}]}),
    ];
    let second = vec![
        local("u-twin", "twin@example.com"),
        local("u-upper", "UPPER@Example.COM"),
        social("u-noemail", "google.com", None, &[]),
        local("u-new", "new@example.com"),
        // The same new address through Google: links to the customer u-new creates.
        social("u-new-google", "google.com", Some("New@Example.com"), &[]),
    ];
    let lines = [
        json!({"displayName": "no id", "mail": "nobody@example.com"}),
        local("u-lines", "lines@example.com"),
    ];
    let a = dir.path().join("users-1.json");
    let b = dir.path().join("users-2.json");
    let c = dir.path().join("users-3.jsonl");
    std::fs::write(&a, page(&first, true).to_string()).unwrap();
    std::fs::write(
        &b,
        serde_json::to_string_pretty(&page(&second, false)).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &c,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    Export {
        _dir: dir,
        files: vec![a, b, c],
        expected: vec![
            ("u-local", "Linked", None),
            ("u-google", "Linked", None),
            ("u-facebook", "Refused", Some("EmailNotVerified")),
            ("u-username", "Refused", Some("EmailNotVerified")),
            ("u-otp", "Linked", None),
            (
                "u-twin",
                "Refused",
                Some("Microsoft_Dynamics_Commerce_Runtime_MultipleCustomerAccountsFoundWithSameEmailAddress"),
            ),
            ("u-upper", "Linked", None),
            ("u-noemail", "Refused", Some("EmailMissing")),
            ("u-new", "Created", None),
            ("u-new-google", "Linked", None),
            ("u-lines", "Created", None),
        ],
    }
}

/// Everything the backfill may write, for comparing the database before and after.
#[derive(Debug, PartialEq)]
struct Contents {
    customers: Vec<Customer>,
    links: Vec<Link>,
    audit: Vec<AuditEvent>,
}

fn contents(app: &TestApp) -> Contents {
    let mut conn = app.db().get().unwrap();
    let customers = customers::table
        .order(customers::id)
        .select(Customer::as_select())
        .load(&mut *conn)
        .unwrap();
    let links = identity_links::table
        .order(identity_links::id)
        .select(Link::as_select())
        .load(&mut *conn)
        .unwrap();
    // Every event, newest first.
    let audit = autolink::storage::audit::recent(&mut conn, i64::MAX).unwrap();
    Contents {
        customers,
        links,
        audit,
    }
}

fn run(app: &TestApp, extra: &[&str], files: &[PathBuf]) -> (Output, Vec<Value>) {
    // Small batches: a user is decided after what the batches before it wrote (or, in a dry
    // run, would have written).
    run_in_batches(app, 2, extra, files)
}

fn run_in_batches(
    app: &TestApp,
    batch: usize,
    extra: &[&str],
    files: &[PathBuf],
) -> (Output, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.jsonl");
    let output = backfill(&app.db.url)
        .args(["--channel", "fabrikam-web", "--batch-size"])
        .arg(batch.to_string())
        .arg("--report")
        .arg(&report)
        .args(extra)
        .args(files)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = report_lines(&report);
    (output, lines)
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_the_real_run_then_does_what_it_said_and_a_second_run_nothing()
{
    let app = spawn_app().await;
    import_customers(&app);
    let export = every_kind_of_account();
    let before = contents(&app);

    // The dry run.
    let (output, dry) = run(&app, &["--dry-run"], &export.files);
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(summary.contains("nothing was written"), "{summary}");
    assert!(summary.contains("WouldLink: 5"), "{summary}");
    assert!(summary.contains("WouldCreate: 2"), "{summary}");
    assert!(summary.contains("EmailNotVerified: 2"), "{summary}");
    assert!(summary.contains("Skipped (no id): 1"), "{summary}");
    // Give the server's audit writer time to show anything the run might have queued.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(contents(&app), before, "the dry run changed the database");
    assert_eq!(dry.len(), export.expected.len() + 1);
    let skipped: Vec<&Value> = dry.iter().filter(|l| l["id"].is_null()).collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["outcome"], "Skipped");
    assert_eq!(skipped[0]["code"], "ObjectIdMissing");

    // The real run: user by user what the dry run said.
    let (output, real) = run(&app, &[], &export.files);
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(summary.contains("Linked: 5"), "{summary}");
    assert!(summary.contains("Created: 2"), "{summary}");
    let dry = by_id(&dry);
    let real = by_id(&real);
    for (id, outcome, code) in &export.expected {
        let line = &real[*id];
        assert_eq!(line["outcome"], *outcome, "{id}: {line}");
        assert_eq!(line["code"].as_str(), *code, "{id}: {line}");
        let would = match *outcome {
            "Linked" => "WouldLink",
            "Created" => "WouldCreate",
            other => other,
        };
        assert_eq!(dry[*id]["outcome"], would, "{id}: {}", dry[*id]);
        assert_eq!(dry[*id]["code"], line["code"], "{id}");
        if *outcome == "Linked" && !id.starts_with("u-new") {
            assert_eq!(dry[*id]["accountNumber"], line["accountNumber"], "{id}");
        }
    }
    assert_eq!(real["u-local"]["accountNumber"], "C-LOCAL");
    assert_eq!(real["u-google"]["accountNumber"], "C-GOOGLE");
    assert_eq!(real["u-otp"]["accountNumber"], "C-OTP");
    assert_eq!(real["u-upper"]["accountNumber"], "C-UPPER");
    assert_eq!(real["u-upper"]["email"], "UPPER@Example.COM");
    // One customer for the new address, holding both identities.
    let created = real["u-new"]["accountNumber"].as_str().unwrap();
    assert_eq!(real["u-new-google"]["accountNumber"], created);
    assert_eq!(app.customers_with_email("new@example.com").len(), 1);
    let links = app.links_of(created);
    assert_eq!(links.len(), 2);
    assert!(links
        .iter()
        .all(|l| l.issuer == TENANT_ISSUER && l.subject.starts_with("u-new")));
    // Every decision is audited in the name of the backfill.
    let after = contents(&app);
    let backfill_events: Vec<&AuditEvent> = after
        .audit
        .iter()
        .filter(|e| e.source == "backfill")
        .collect();
    assert_eq!(backfill_events.len(), export.expected.len());
    assert!(backfill_events
        .iter()
        .any(|e| e.subject.as_deref() == Some("u-facebook")
            && e.code.as_deref() == Some("EmailNotVerified")));

    // The second run: every linked user AlreadyLinked, nothing else written than its events.
    let (_, second) = run(&app, &[], &export.files);
    let second = by_id(&second);
    for (id, outcome, code) in &export.expected {
        let expected = if code.is_none() {
            "AlreadyLinked"
        } else {
            outcome
        };
        assert_eq!(second[*id]["outcome"], expected, "{id}");
        assert_eq!(
            second[*id]["accountNumber"], real[*id]["accountNumber"],
            "{id}"
        );
    }
    let again = contents(&app);
    assert_eq!(again.customers, after.customers);
    assert_eq!(again.links, after.links);

    // A sign-in of a backfilled identity resolves to the same customer.
    let (status, body) = app
        .connector(&token_step(
            "local@example.com",
            "u-local",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_CustomerAccountNumber"], "C-LOCAL");
    assert_eq!(body["extension_AutoLinkOutcome"], "AlreadyLinked");
}

/// Every event of the feed (`GET /admin/v1/events`), read page by page.
async fn feed(app: &TestApp) -> Vec<Value> {
    let mut events = Vec::new();
    let mut path = "/admin/v1/events?limit=5".to_string();
    loop {
        let (status, body) = app.admin_get(&path).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return events;
        }
        events.extend(items);
        path = format!(
            "/admin/v1/events?limit=5&after={}",
            body["nextCursor"].as_str().unwrap()
        );
    }
}

#[tokio::test]
async fn the_backfill_tells_the_store_of_its_links_and_customers_and_a_dry_run_of_nothing() {
    let app = spawn_app().await;
    import_customers(&app);
    let export = every_kind_of_account();
    // The import's own events, if any, come before.
    let before = feed(&app).await;

    let (_, dry) = run(&app, &["--dry-run"], &export.files);
    assert_eq!(dry.len(), export.expected.len() + 1);
    assert_eq!(feed(&app).await, before, "the dry run wrote events");

    let (_, real) = run(&app, &[], &export.files);
    let real = by_id(&real);
    let all = feed(&app).await;
    assert_eq!(all[..before.len()], before[..]);
    let events = all[before.len()..].to_vec();
    // customer.created for each customer the run created, identity.linked for each link, the
    // customer's event before its link's. The feed is in commit order: on PostgreSQL the lanes
    // commit independently, so the events of different customers may come in any order, and
    // those of one customer (one email address, one lane) come in the export's order.
    let mut expected: Vec<(String, String, Option<String>)> = Vec::new();
    for (id, outcome, _) in &export.expected {
        let number = real[*id]["accountNumber"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match *outcome {
            "Created" => {
                expected.push(("customer.created".into(), number.clone(), None));
                expected.push(("identity.linked".into(), number, Some(id.to_string())));
            }
            "Linked" => expected.push(("identity.linked".into(), number, Some(id.to_string()))),
            _ => {}
        }
    }
    let got: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["data"]["accountNumber"].as_str().unwrap().to_string(),
                e["data"]["subject"].as_str().map(str::to_string),
            )
        })
        .collect();
    let of_customer = |events: &[(String, String, Option<String>)], number: &str| {
        events
            .iter()
            .filter(|(_, n, _)| n == number)
            .cloned()
            .collect::<Vec<_>>()
    };
    if app.db().backend() == autolink::storage::BackendKind::Sqlite {
        // One writer: the export's order exactly.
        assert_eq!(got, expected, "{events:#?}");
    }
    assert_eq!(got.len(), expected.len(), "{events:#?}");
    for (_, number, _) in &expected {
        assert_eq!(
            of_customer(&got, number),
            of_customer(&expected, number),
            "{events:#?}"
        );
    }
    for event in &events {
        assert_eq!(event["data"]["legalEntity"], "USRT", "{event}");
        assert_eq!(event["data"]["channel"], "fabrikam-web", "{event}");
        if event["type"] == "identity.linked" {
            assert_eq!(event["data"]["issuer"], TENANT_ISSUER, "{event}");
            let subject = event["data"]["subject"].as_str().unwrap();
            assert_eq!(
                event["data"]["outcome"], real[subject]["outcome"],
                "{event}"
            );
            let link = app
                .links_of(event["data"]["accountNumber"].as_str().unwrap())
                .into_iter()
                .find(|l| l.subject == subject)
                .unwrap();
            assert_eq!(event["data"]["linkId"], link.id, "{event}");
        } else {
            assert_eq!(event["data"]["origin"], "autolink", "{event}");
        }
    }

    // The second run changes nothing and tells nothing.
    run(&app, &[], &export.files);
    assert_eq!(feed(&app).await, all);
}

#[tokio::test]
async fn bad_input_is_refused_with_status_2_and_nothing_written() {
    let app = spawn_app().await;
    import_customers(&app);
    let export = every_kind_of_account();
    let before = contents(&app);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        "{\"value\": [\n  {\"id\": \"a\"},\n  {\"id\": \"b\",\n",
    )
    .unwrap();
    let not_users = dir.path().join("array.json");
    std::fs::write(&not_users, "[1, 2, 3]\n").unwrap();
    let missing = dir.path().join("missing.json");

    let cases: Vec<(Vec<String>, Vec<PathBuf>, &str)> = vec![
        // The malformed file comes last: the good ones before it are not written either.
        (
            vec![],
            vec![export.files[0].clone(), broken.clone()],
            "broken.json: line 4, column 0",
        ),
        (
            vec![],
            vec![not_users.clone()],
            "array.json: line 1, column 1",
        ),
        // The files are checked by several threads at once: the first malformed one in the
        // order given is named, whichever thread read it.
        (
            vec![],
            vec![
                export.files[0].clone(),
                not_users.clone(),
                export.files[0].clone(),
                broken.clone(),
            ],
            "array.json: line 1, column 1",
        ),
        (
            vec![],
            vec![
                export.files[0].clone(),
                export.files[0].clone(),
                broken.clone(),
                not_users.clone(),
            ],
            "broken.json: line 4, column 0",
        ),
        (vec![], vec![missing.clone()], "missing.json"),
        (
            vec!["--channel".into(), "nowhere".into()],
            vec![missing.clone()],
            "unknown channel \"nowhere\"",
        ),
        (
            vec!["--issuer".into(), "https://evil.example/v2.0/".into()],
            vec![missing.clone()],
            "unknown issuer",
        ),
    ];
    for (extra, files, message) in cases {
        let mut command = backfill(&app.db.url);
        if !extra.iter().any(|a| a == "--channel") {
            command.args(["--channel", "fabrikam-web"]);
        }
        let output = command.args(&extra).args(&files).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(stderr.contains(message), "{message}: {stderr}");
        assert_eq!(contents(&app), before, "{message}");
    }
}

/// `n` users in pages of 500: even ones match an imported customer, odd ones are new.
fn large_export(dir: &Path, n: usize) -> Vec<PathBuf> {
    let users: Vec<Value> = (0..n)
        .map(|i| local(&format!("big-{i:06}"), &format!("big{i}@example.com")))
        .collect();
    users
        .chunks(500)
        .enumerate()
        .map(|(p, chunk)| {
            let path = dir.join(format!("page-{p:04}.json"));
            std::fs::write(&path, page(chunk, true).to_string()).unwrap();
            path
        })
        .collect()
}

/// The backfill of `files` on the web channel in batches of 100, with its report at `report`.
fn backfill_by_hundreds(app: &TestApp, report: &Path, files: &[PathBuf]) -> Command {
    let mut command = backfill(&app.db.url);
    command
        .args([
            "--channel",
            "fabrikam-web",
            "--batch-size",
            "100",
            "--report",
        ])
        .arg(report)
        .args(files);
    command
}

fn import_even(app: &TestApp, n: usize) {
    let rows: Vec<String> = (0..n)
        .step_by(2)
        .map(|i| format!("B-{i:06},USRT,person,false,big{i}@example.com,Big,User"))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    app.import_csv(&csv(&rows));
}

/// Whole users after a run that stopped with `linked` links: every customer the run created holds
/// its link, every link its audit event.
fn assert_whole_users(app: &TestApp, linked: usize) {
    let mut conn = app.db().get().unwrap();
    let orphans: i64 = customers::table
        .filter(customers::origin.eq("autolink"))
        .filter(diesel::dsl::not(diesel::dsl::exists(
            identity_links::table.filter(identity_links::customer_id.eq(customers::id)),
        )))
        .count()
        .get_result(&mut *conn)
        .unwrap();
    assert_eq!(orphans, 0, "customers created without their link");
    let link_events: i64 = audit_events::table
        .filter(audit_events::source.eq("backfill"))
        .filter(audit_events::outcome.eq_any(["Linked", "Created"]))
        .count()
        .get_result(&mut *conn)
        .unwrap();
    assert_eq!(
        link_events as usize, linked,
        "links without their audit event"
    );
}

#[tokio::test]
async fn a_run_killed_in_the_middle_leaves_whole_users_and_a_rerun_finishes_it() {
    let app = spawn_app().await;
    let n = 40_000;
    import_even(&app, n);
    let dir = tempfile::tempdir().unwrap();
    let files = large_export(dir.path(), n);
    let mut child = backfill(&app.db.url)
        .args(["--channel", "fabrikam-web", "--batch-size", "100"])
        .args(&files)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some batches are committed and before it is done.
    let started = Instant::now();
    loop {
        let linked = app.active_links();
        if linked > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backfill ended before it was killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nothing was linked in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: nothing of the process runs after it.
    let killed = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "the backfill was not killed but ended: {status:?}"
    );
    let linked = app.active_links() as usize;
    assert!(
        linked > 0 && linked < n,
        "killed after {linked} of {n} links: not in the middle"
    );

    assert_whole_users(&app, linked);
    let mut conn = app.db().get().unwrap();
    let linked_before: Vec<String> = identity_links::table
        .select(identity_links::subject)
        .load(&mut *conn)
        .unwrap();
    drop(conn);

    // The rerun finishes: what was linked is AlreadyLinked, the rest is linked now.
    let (_, lines) = run_in_batches(&app, 1000, &[], &files);
    let lines = by_id(&lines);
    assert_eq!(lines.len(), n);
    for subject in &linked_before {
        assert_eq!(lines[subject]["outcome"], "AlreadyLinked", "{subject}");
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in lines.values() {
        *counts
            .entry(line["outcome"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(counts.get("AlreadyLinked").copied().unwrap_or(0), linked);
    assert_eq!(
        counts.get("Linked").copied().unwrap_or(0) + counts.get("Created").copied().unwrap_or(0),
        n - linked,
        "{counts:?}"
    );
    assert_eq!(app.active_links() as usize, n);
    assert_eq!(app.customer_count() as usize, n, "one customer per address");
}

#[tokio::test]
async fn sign_ups_during_a_backfill_get_the_same_answers_as_without_it() {
    // What is tested is the answers, not how fast they come: a loaded machine (a debug build, the
    // test suite beside it) can keep a sign-up waiting for a batch's transaction beyond the
    // default time limit of 1.5 s.
    let app = spawn_app_with(|s| s.database.request_timeout_ms = 10_000).await;
    let n = 6_000;
    import_even(&app, n);
    let dir = tempfile::tempdir().unwrap();
    let files = large_export(dir.path(), n);
    let report = dir.path().join("report.jsonl");
    let child = backfill_by_hundreds(&app, &report, &files)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile, users of the export sign in (every 7th, from the end, so that some come before
    // the backfill reaches them and some after), and new users sign up.
    let mut answers = Vec::new();
    for i in (0..n).rev().step_by(7) {
        let (status, body) = app
            .connector(&token_step(
                &format!("big{i}@example.com"),
                &format!("big-{i:06}"),
                local_identity(),
                B2C_CLIENT,
            ))
            .await;
        assert_continue(status, &body);
        answers.push((format!("big-{i:06}"), body));
        let (status, body) = app
            .connector(&token_step(
                &format!("fresh{i}@example.com"),
                &format!("fresh-{i}"),
                local_identity(),
                B2C_CLIENT,
            ))
            .await;
        assert_continue(status, &body);
        assert_eq!(body["extension_AutoLinkOutcome"], "Created", "{body}");
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = by_id(&report_lines(&report));
    let mut raced = 0;
    for (id, body) in &answers {
        let number = body["extension_CustomerAccountNumber"].as_str().unwrap();
        assert_eq!(
            lines[id]["accountNumber"], number,
            "{id}: {body} / {}",
            lines[id]
        );
        let i: usize = id.trim_start_matches("big-").parse().unwrap();
        if i % 2 == 0 {
            assert_eq!(number, format!("B-{i:06}"), "{id}");
        }
        if lines[id]["outcome"] == "AlreadyLinked" {
            raced += 1;
        }
    }
    assert!(
        raced > 0,
        "no sign-up came before the backfill reached its user"
    );
    let fresh = answers.len();
    assert_eq!(app.active_links() as usize, n + fresh);
    assert_eq!(
        app.customer_count() as usize,
        n + fresh,
        "one customer per address"
    );
}

#[tokio::test]
async fn users_of_one_address_in_one_batch_are_decided_in_the_export_s_order() {
    // One batch of 300 users: 100 addresses, each given by three users (the second in capitals,
    // the third through Google), spread over the batch. On PostgreSQL the batch is written by
    // several connections at once: every user of one address must still be decided after the
    // users of it before them, as one writer decides them and as the dry run said.
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let mut users = Vec::new();
    for round in 0..3 {
        for k in 0..100 {
            let id = format!("same-{k:03}-{round}");
            users.push(match round {
                0 => local(&id, &format!("same{k}@example.com")),
                1 => local(&id, &format!("SAME{k}@Example.COM")),
                _ => social(
                    &id,
                    "google.com",
                    Some(&format!("Same{k}@example.com")),
                    &[],
                ),
            });
        }
    }
    let file = dir.path().join("users.json");
    std::fs::write(&file, page(&users, false).to_string()).unwrap();
    let files = vec![file];

    let (_, dry) = run_in_batches(&app, 1000, &["--dry-run"], &files);
    let (output, real) = run_in_batches(&app, 1000, &[], &files);
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(summary.contains("Created: 100"), "{summary}");
    assert!(summary.contains("Linked: 200"), "{summary}");
    // The report keeps the export's order.
    let ids: Vec<&str> = real.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let expected: Vec<String> = users
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected);
    let dry = by_id(&dry);
    let real = by_id(&real);
    for k in 0..100 {
        let first = &real[&format!("same-{k:03}-0")];
        assert_eq!(first["outcome"], "Created", "{first}");
        for round in 1..3 {
            let id = format!("same-{k:03}-{round}");
            assert_eq!(real[&id]["outcome"], "Linked", "{}", real[&id]);
            assert_eq!(real[&id]["accountNumber"], first["accountNumber"]);
            assert_eq!(dry[&id]["outcome"], "WouldLink", "{}", dry[&id]);
        }
        assert_eq!(dry[&format!("same-{k:03}-0")]["outcome"], "WouldCreate");
    }
    assert_eq!(app.customer_count(), 100, "one customer per address");
    assert_eq!(app.active_links(), 300);
}

/// Makes the database refuse the link of `subject` (a trigger that raises), as a failing disk or
/// a constraint the service does not know of would.
fn refuse_link_of(app: &TestApp, subject: &str) {
    let mut conn = app.db().get().unwrap();
    let statements = match app.db().backend() {
        autolink::storage::BackendKind::Sqlite => vec![format!(
            "CREATE TRIGGER refuse_one_link BEFORE INSERT ON identity_links \
             WHEN NEW.subject = '{subject}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )],
        autolink::storage::BackendKind::Postgres => vec![
            "CREATE FUNCTION refuse_one_link() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                .to_string(),
            format!(
                "CREATE TRIGGER refuse_one_link BEFORE INSERT ON identity_links FOR EACH ROW \
                 WHEN (NEW.subject = '{subject}') EXECUTE FUNCTION refuse_one_link()"
            ),
        ],
    };
    for statement in statements {
        diesel::sql_query(statement).execute(&mut *conn).unwrap();
    }
}

fn drop_refusal(app: &TestApp) {
    let mut conn = app.db().get().unwrap();
    let statement = match app.db().backend() {
        autolink::storage::BackendKind::Sqlite => "DROP TRIGGER refuse_one_link",
        autolink::storage::BackendKind::Postgres => {
            "DROP TRIGGER refuse_one_link ON identity_links"
        }
    };
    diesel::sql_query(statement).execute(&mut *conn).unwrap();
}

#[tokio::test]
async fn a_database_failure_stops_the_run_with_status_1_after_whole_users_and_a_rerun_finishes_it()
{
    let app = spawn_app().await;
    let n = 4000;
    import_even(&app, n);
    let dir = tempfile::tempdir().unwrap();
    let files = large_export(dir.path(), n);
    // A new user (odd: no imported customer) in the 21st batch of 100: its customer is written
    // before its link fails.
    let failing = 2051;
    refuse_link_of(&app, &format!("big-{failing:06}"));
    let report = dir.path().join("report.jsonl");
    let output = backfill_by_hundreds(&app, &report, &files)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reported: usize = stderr
        .split("the database failed after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of the users written: {}", text(&output)));
    assert!(
        stderr.contains("run the backfill again"),
        "{}",
        text(&output)
    );

    let mut conn = app.db().get().unwrap();
    let linked: Vec<String> = identity_links::table
        .select(identity_links::subject)
        .load(&mut *conn)
        .unwrap();
    let linked: std::collections::BTreeSet<usize> = linked
        .iter()
        .map(|s| s.trim_start_matches("big-").parse().unwrap())
        .collect();
    // Every user the run reported before it stopped is linked; the failing one is not, nor any
    // of the batches after those that were being written when it failed (one batch on SQLite,
    // at most three on PostgreSQL's two lanes, see src/backfill/lanes.rs).
    assert!(reported <= failing / 100 * 100, "{reported} reported");
    for user in 0..reported {
        assert!(
            linked.contains(&user),
            "user {user} was reported but is not linked"
        );
    }
    assert!(!linked.contains(&failing));
    let beyond = linked.iter().filter(|&&user| user >= 2300).count();
    assert_eq!(beyond, 0, "users linked after the run stopped");
    drop(conn);
    assert_whole_users(&app, linked.len());

    // Once the database accepts it again, a rerun finishes.
    drop_refusal(&app);
    let (_, lines) = run_in_batches(&app, 1000, &[], &files);
    let lines = by_id(&lines);
    assert_eq!(lines.len(), n);
    for user in &linked {
        assert_eq!(
            lines[&format!("big-{user:06}")]["outcome"],
            "AlreadyLinked",
            "{user}"
        );
    }
    assert_eq!(lines[&format!("big-{failing:06}")]["outcome"], "Created");
    assert_eq!(app.active_links() as usize, n);
    assert_eq!(app.customer_count() as usize, n, "one customer per address");
}
