//! `mock-b2c`: a stand-in for Azure AD B2C that calls autolink as B2C does (see
//! `autolink::mock_b2c` and the README's QA section).

use std::path::PathBuf;
use std::process::ExitCode;

use autolink::mock_b2c::{
    default_providers, Application, CallerAuth, CustomPolicySettings, MockB2c, MockSettings,
};
use clap::Parser;

/// The tenant id of the mock's default tenant.
const TENANT_ID: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";

/// A stand-in for Azure AD B2C for QA: sign-up and sign-in journeys that call autolink.
#[derive(Parser)]
#[command(name = "mock-b2c", version)]
struct Args {
    /// A TOML file with every setting (see the README); the flags below are ignored with it.
    #[arg(long, env = "MOCK_B2C_CONFIG")]
    config: Option<PathBuf>,
    /// Where the mock listens.
    #[arg(long, default_value = "127.0.0.1:8081", env = "MOCK_B2C_BIND")]
    bind: String,
    /// autolink's base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "MOCK_B2C_SERVICE_URL"
    )]
    service_url: String,
    /// The connector's Basic user name (autolink prints it at first start).
    #[arg(
        long,
        default_value = "b2c-connector",
        env = "MOCK_B2C_CONNECTOR_USERNAME"
    )]
    connector_username: String,
    /// The connector's Basic password (autolink prints it at first start).
    #[arg(long, env = "MOCK_B2C_CONNECTOR_PASSWORD")]
    connector_password: Option<String>,
    /// The application's client id (autolink's channel for it).
    #[arg(
        long,
        default_value = "00000000-0000-0000-0000-00000000d3e0",
        env = "MOCK_B2C_CLIENT_ID"
    )]
    client_id: String,
    /// The project's policies folder: turns on custom-policy mode (B2C_1A_Autolink_signup_signin).
    #[arg(long, env = "MOCK_B2C_POLICIES")]
    policies: Option<PathBuf>,
    /// The tenant's domain name.
    #[arg(long, default_value = "fabrikamtest.onmicrosoft.com")]
    tenant: String,
    /// The directory file (SQLite): the users journeys create, kept across restarts.
    #[arg(
        long,
        default_value = "mock-b2c-directory.db",
        env = "MOCK_B2C_DIRECTORY"
    )]
    directory: PathBuf,
    /// Keep the directory in memory only: every start begins with no users.
    #[arg(long, conflicts_with = "reset_directory")]
    memory_directory: bool,
    /// Delete the directory file (of the flag or of the --config file) before starting.
    #[arg(long)]
    reset_directory: bool,
}

fn settings(args: &Args) -> anyhow::Result<MockSettings> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)?;
        return Ok(toml::from_str(&text)?);
    }
    let auth = match &args.connector_password {
        Some(password) => CallerAuth::Basic {
            username: args.connector_username.clone(),
            password: password.clone(),
        },
        None => CallerAuth::None,
    };
    let base = format!("http://{}", args.bind.replace("0.0.0.0", "127.0.0.1"));
    let custom_policy = args.policies.as_ref().map(|dir| CustomPolicySettings {
        dir: dir.clone(),
        environment: "Test".into(),
        rest_auth: "Basic".into(),
        policy_keys: match &auth {
            CallerAuth::Basic { username, password } => [
                ("B2C_1A_AutolinkRestUsername".to_string(), username.clone()),
                ("B2C_1A_AutolinkRestPassword".to_string(), password.clone()),
            ]
            .into_iter()
            .collect(),
            _ => Default::default(),
        },
    });
    Ok(MockSettings {
        bind: args.bind.clone(),
        tenant: args.tenant.clone(),
        tenant_id: TENANT_ID.into(),
        user_flows: vec!["B2C_1_signup_signin".into()],
        application_claims: autolink::mock_b2c::autolink_application_claims(),
        custom_policy_id: custom_policy
            .as_ref()
            .map(|_| "B2C_1A_Autolink_signup_signin".into()),
        custom_policy,
        service_url: args.service_url.clone(),
        connector_auth: auth,
        service_ca_file: None,
        timeout_ms: None,
        retries: None,
        local_email_verification: true,
        applications: vec![Application {
            client_id: args.client_id.clone(),
            redirect_uris: vec![format!("{base}/demo/callback")],
            client_secret: None,
            name: Some("Demo".into()),
        }],
        providers: default_providers(),
        entra_clients: Vec::new(),
        signing_key_file: None,
        directory_file: (!args.memory_directory).then(|| args.directory.clone()),
        verification_code_lifetime_s: None,
        external_id: None,
    })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let result = actix_web::rt::System::new().block_on(async {
        let settings = settings(&args)?;
        if let Some(file) = settings.directory_file.as_ref() {
            if args.reset_directory {
                autolink::mock_b2c::directory::Directory::reset(file)?;
                log::info!("mock B2C: directory {} emptied", file.display());
            }
        }
        if matches!(settings.connector_auth, CallerAuth::None) {
            log::warn!(
                "no connector password (--connector-password or MOCK_B2C_CONNECTOR_PASSWORD): \
                 autolink will answer 401"
            );
        }
        let (mock, server) = MockB2c::build(settings)?;
        println!(
            "mock B2C on {}: issuer {}, demo application {}/demo, driver POST {}/mock/journeys",
            mock.base_url(),
            mock.issuer(),
            mock.base_url(),
            mock.base_url()
        );
        server.await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-b2c: {e:#}");
            ExitCode::FAILURE
        }
    }
}
