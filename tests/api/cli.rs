//! The `autolink` command: first start with zero configuration, import, preview, migrate.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::helpers::*;

fn autolink(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_autolink"));
    command
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("AUTOLINK_CONFIG");
    command
}

/// Starts `autolink serve` in `dir` with no configuration but a free port; returns the child,
/// the lines printed before "listening", and the address.
#[allow(clippy::zombie_processes)] // the caller kills and waits
fn serve_zero_config(dir: &Path) -> (std::process::Child, Vec<String>, String) {
    let mut child = autolink(dir)
        .arg("serve")
        .env("AUTOLINK_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "server exited early: {lines:?}"
        );
        if let Some(address) = line.trim().strip_prefix("autolink listening on ") {
            return (child, lines, address.to_string());
        }
        lines.push(line);
    }
}

#[tokio::test]
async fn the_first_start_generates_credentials_prints_them_once_and_stores_only_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, printed, address) = serve_zero_config(dir.path());
    let text = printed.join("");
    let password = text
        .split("password=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated password in {text:?}"))
        .to_string();
    assert!(text.contains("username=b2c-connector"), "{text}");
    assert!(text.contains("token="), "{text}");

    let client = reqwest::Client::new();
    let url = format!("{address}/b2c/api-connector");
    let body = attribute_collection("zero@example.com", "any-client-id");
    let response = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401, "it never starts open");
    let response = client
        .post(&url)
        .basic_auth("b2c-connector", Some(&password))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_continue(200, &answer);
    child.kill().unwrap();
    child.wait().unwrap();

    // Only the hash is in the database file.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let haystack = String::from_utf8_lossy(&bytes);
    // Generated secrets are 256-bit random values: kept as keyed SHA-256, not argon2id.
    assert!(haystack.contains("$hmac-sha256$"));
    assert!(!haystack.contains("$argon2id$"));
    assert!(
        !haystack.contains(&password),
        "the clear password was stored"
    );

    // The second start finds them and prints nothing.
    let (mut child, printed, address) = serve_zero_config(dir.path());
    assert!(printed.is_empty(), "printed again: {printed:?}");
    let response = client
        .post(format!("{address}/b2c/api-connector"))
        .basic_auth("b2c-connector", Some(&password))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn customers_import_reports_bad_rows_by_line_and_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(
        &file,
        csv(&[
            "A-1,USRT,person,false,a@example.com,A,One",
            "A-2,USRT,person,false,broken,B,Two",
        ]),
    )
    .unwrap();
    let output = autolink(dir.path())
        .args(["customers", "import"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3:"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");

    let output = autolink(dir.path())
        .args(["customers", "import", "--skip-invalid"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 inserted"), "{stdout}");
    assert!(stdout.contains("1 skipped"), "{stdout}");
}

#[test]
fn preview_says_what_would_happen_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.jsonl");
    std::fs::write(
        &file,
        r#"{"account_number":"P-1","legal_entity":"USRT","party_type":"person","is_b2b":false,"primary_email":"p@example.com"}"#,
    )
    .unwrap();
    assert!(autolink(dir.path())
        .args(["customers", "import"])
        .arg(&file)
        .status()
        .unwrap()
        .success());
    let preview = |email: &str| -> serde_json::Value {
        let output = autolink(dir.path())
            .args(["preview", "--channel", "web", "--email", email])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let answer = preview("P@example.com");
    assert_eq!(answer["outcome"], "WouldLink");
    assert_eq!(answer["customerAccountNumber"], "P-1");
    let answer = preview("new@example.com");
    assert_eq!(answer["outcome"], "WouldCreate");
    let answer = preview("not an email");
    assert_eq!(answer["code"], "InvalidEmail");
    // Nothing was created by the previews.
    let db = autolink::storage::Db::open(
        &format!("sqlite://{}", dir.path().join("autolink.db").display()),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        autolink::storage::customers::count(&mut db.get().unwrap()).unwrap(),
        1
    );
}

#[test]
fn migrate_applies_the_schema_and_a_bad_database_url_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = autolink(dir.path()).arg("migrate").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("autolink.db").exists());
    let output = autolink(dir.path())
        .arg("migrate")
        .env("AUTOLINK_DATABASE_URL", "mysql://x")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported database url"));
}

#[test]
fn hash_secret_prints_an_argon2id_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = autolink(dir.path())
        .arg("hash-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let hash = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}
