//! Customer import: CSV and JSON lines, bad rows, re-import.

use autolink::import::{self, Format, ImportError, OnError};

use crate::helpers::*;

#[tokio::test]
async fn a_file_with_a_bad_row_is_rejected_whole_with_line_numbers() {
    let app = spawn_app().await;
    let text = csv(&[
        "A-1,USRT,person,false,a1@example.com,A,One",
        "A-2,USRT,robot,false,a2@example.com,A,Two",
        "A-3,USRT,person,false,not-an-email,A,Three",
        "A-4,USRT,person,maybe,a4@example.com,A,Four",
        "A-5,USRT,person,false",
        "A-1,USRT,person,false,again@example.com,A,Again",
    ]);
    let error = import::import_reader(app.db(), text.as_bytes(), Format::Csv, OnError::RejectFile)
        .unwrap_err();
    let ImportError::Rejected(report) = error else {
        panic!("expected a rejection, got {error}")
    };
    assert!(!report.committed);
    assert_eq!(report.rows, 6);
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7], "{:?}", report.errors);
    assert!(report.errors[0].reason.contains("party_type"));
    assert!(report.errors[1].reason.contains("primary_email"));
    assert!(report.errors[2].reason.contains("is_b2b"));
    assert!(report.errors[4].reason.contains("more than once"));
    assert_eq!(
        app.customer_count(),
        0,
        "nothing of a rejected file is imported"
    );
}

#[tokio::test]
async fn skip_invalid_imports_the_good_rows_and_reports_the_bad_ones() {
    let app = spawn_app().await;
    let text = csv(&[
        "A-1,USRT,person,false,a1@example.com,A,One",
        "A-2,USRT,robot,false,a2@example.com,A,Two",
    ]);
    let report =
        import::import_reader(app.db(), text.as_bytes(), Format::Csv, OnError::SkipInvalid)
            .unwrap();
    assert!(report.committed);
    assert_eq!(report.counts.inserted, 1);
    assert_eq!(report.error_count, 1);
    assert_eq!(report.errors[0].line, 3);
    assert_eq!(app.customer_count(), 1);
}

#[tokio::test]
async fn reimporting_the_same_file_changes_nothing_and_a_change_updates_by_account_number() {
    let app = spawn_app().await;
    let text = csv(&[
        "A-1,usrt,Person,TRUE,A1@Example.com,A,One",
        "A-2,USRT,organization,false,,,",
    ]);
    let first =
        import::import_reader(app.db(), text.as_bytes(), Format::Csv, OnError::RejectFile).unwrap();
    assert_eq!(first.counts.inserted, 2);
    let again =
        import::import_reader(app.db(), text.as_bytes(), Format::Csv, OnError::RejectFile).unwrap();
    assert_eq!(
        (
            again.counts.inserted,
            again.counts.updated,
            again.counts.unchanged
        ),
        (0, 0, 2)
    );
    let changed = csv(&["A-1,USRT,person,true,a1@example.com,Anna,One"]);
    let third = import::import_reader(
        app.db(),
        changed.as_bytes(),
        Format::Csv,
        OnError::RejectFile,
    )
    .unwrap();
    assert_eq!(third.counts.updated, 1);
    let customers = app.customers_with_email("a1@example.com");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].legal_entity, "USRT");
    assert!(customers[0].is_b2b);
    assert_eq!(customers[0].first_name.as_deref(), Some("Anna"));
}

#[tokio::test]
async fn json_lines_import_and_report_bad_lines() {
    let app = spawn_app().await;
    let text = concat!(
        r#"{"account_number":"J-1","legal_entity":"USRT","party_type":"person","is_b2b":true,"primary_email":"j1@example.com","first_name":"J","last_name":"One"}"#,
        "\n\n",
        r#"{"account_number":"J-2","legal_entity":"USRT","party_type":"person","is_b2b":"false","primary_email":"j2@example.com"}"#,
        "\n",
        r#"{"account_number":"J-3","legal_entity":"USRT","party_type":"person","colour":"blue"}"#,
        "\n",
        "{broken\n",
    );
    let error = import::import_reader(
        app.db(),
        text.as_bytes(),
        Format::Jsonl,
        OnError::RejectFile,
    )
    .unwrap_err();
    let ImportError::Rejected(report) = error else {
        panic!("expected a rejection")
    };
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 5]);
    let report = import::import_reader(
        app.db(),
        text.as_bytes(),
        Format::Jsonl,
        OnError::SkipInvalid,
    )
    .unwrap();
    assert_eq!(report.counts.inserted, 2);
    assert!(app.customers_with_email("j1@example.com")[0].is_b2b);
}

#[tokio::test]
async fn a_csv_header_without_the_required_columns_is_refused() {
    let app = spawn_app().await;
    let text = "account,legal_entity\nA-1,USRT\n";
    let error = import::import_reader(app.db(), text.as_bytes(), Format::Csv, OnError::RejectFile)
        .unwrap_err();
    assert!(
        matches!(error, ImportError::File(ref m) if m.contains("account_number")),
        "{error}"
    );
}
