// figment's Jail returns its own large error type from test closures.
#![allow(clippy::result_large_err)]

use super::*;

#[test]
fn zero_configuration_has_one_default_b2c_channel() {
    let settings = Settings::default().finish().unwrap();
    assert_eq!(settings.bind, "127.0.0.1:8080");
    assert_eq!(settings.database_url, "sqlite://autolink.db");
    let dir = settings.channel_directory().unwrap();
    let channel = dir.resolve(Some("any-client")).unwrap();
    assert_eq!(channel.id, DEMO_CHANNEL_ID);
    assert_eq!(channel.customer_type, CustomerType::B2C);
}

#[test]
fn the_file_and_the_environment_layer_over_the_defaults() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "autolink.toml",
            r#"
            bind = "0.0.0.0:9000"
            default_channel = "b2b"
            [linking]
            email_verifying_idps = ["google.com", "facebook.com"]
            [[channels]]
            id = "b2b"
            legal_entity = "usrt"
            customer_type = "B2B"
            client_ids = ["93fd07aa-333c-409d-955d-96008fd08dd9"]
            linking_enabled = false
            [auth.basic]
            username = "b2c"
            password = "secret"
            "#,
        )?;
        jail.set_env("AUTOLINK_BIND", "127.0.0.1:9001");
        jail.set_env("AUTOLINK_LINKING__ENABLED", "false");
        jail.set_env("AUTOLINK_CONFIG", "ignored.toml");
        let settings = Settings::load(Some(Path::new("autolink.toml"))).unwrap();
        assert_eq!(settings.bind, "127.0.0.1:9001");
        assert!(!settings.linking.enabled);
        assert_eq!(settings.linking.email_verifying_idps.len(), 2);
        let dir = settings.channel_directory().unwrap();
        let channel = dir
            .resolve(Some("93FD07AA-333C-409D-955D-96008FD08DD9"))
            .unwrap();
        assert_eq!(channel.legal_entity, "USRT");
        assert_eq!(channel.linking_enabled, Some(false));
        Ok(())
    });
}

#[test]
fn unknown_keys_are_errors() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("autolink.toml", "bnid = \"0.0.0.0:9000\"\n")?;
        assert!(Settings::load(Some(Path::new("autolink.toml"))).is_err());
        Ok(())
    });
}

#[test]
fn a_body_has_five_seconds_by_default_and_the_limit_is_checked() {
    let settings = Settings::default().finish().unwrap();
    assert_eq!(settings.limits.body_timeout_ms, 5000);
    for bad in [0, 99, 60_001] {
        let mut settings = Settings::default();
        settings.limits.body_timeout_ms = bad;
        assert!(settings.finish().is_err(), "{bad}");
    }
}

#[test]
fn basic_auth_needs_exactly_one_secret() {
    let mut settings = Settings::default();
    settings.auth.basic = Some(BasicSettings {
        username: "b2c".into(),
        password_hash: Some("$argon2id$x".into()),
        password: Some("y".into()),
    });
    assert!(settings.finish().is_err());
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let basic = BasicSettings {
        username: "b2c".into(),
        password_hash: None,
        password: Some("hunter2".into()),
    };
    assert!(!format!("{basic:?}").contains("hunter2"));
}
