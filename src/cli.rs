//! The `autolink` command line; its administrative commands are in [`admin`].

pub mod admin;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::import::{self, Format, ImportError, OnError};
use crate::linking::Answer;
use crate::startup::{self, Application};

/// Links Azure AD B2C identities to the customer accounts a store already holds.
#[derive(Debug, Parser)]
#[command(name = "autolink", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Every key can also be set as AUTOLINK_<KEY> (nested keys with
    /// a double underscore, e.g. AUTOLINK_LINKING__ENABLED=false).
    #[arg(long, global = true, env = "AUTOLINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Customer records.
    Customers {
        /// What to do with customers.
        #[command(subcommand)]
        command: CustomersCommand,
    },
    /// What would happen for this email on this channel, without writing (the decision is audited).
    Preview {
        /// Channel id from the configuration.
        #[arg(long)]
        channel: String,
        /// Email address.
        #[arg(long)]
        email: String,
    },
    /// Read a secret a person chose from standard input and print its argon2id hash, for
    /// `password_hash`, `token_hash` and `key_hashes` in the configuration.
    HashSecret,
    /// Generate a random 256-bit secret and print it and its keyed SHA-256 hash (for
    /// `password_hash`, `token_hash` and `key_hashes`; checked without argon2's cost).
    GenerateSecret,
    /// Links between B2C identities and customers: list, unlink, move.
    Links {
        /// What to do with links.
        #[command(subcommand)]
        command: admin::LinksCommand,
    },
    /// B2B prospects (business onboarding requests): add, list, show, approve, reject.
    Prospects {
        /// What to do with prospects.
        #[command(subcommand)]
        command: admin::ProspectsCommand,
    },
    /// Query the audit log, newest first (JSON).
    Audit(admin::AuditArgs),
    /// Webhook deliveries (list, retry) and the feed of events.
    Webhooks {
        /// What to do.
        #[command(subcommand)]
        command: admin::WebhooksCommand,
    },
    /// Link the users a tenant already has, from a Microsoft Graph export (pages of
    /// `GET /users` or JSON lines of user objects), by the rules of a sign-up. Exit status 0 when
    /// the run completed (refusals are outcomes), 2 for bad input (nothing written).
    Backfill(BackfillArgs),
    /// The sample custom policies in `policies/`.
    Policies {
        /// What to do with the policies.
        #[command(subcommand)]
        command: PoliciesCommand,
    },
}

/// `autolink backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The channel (configured id) the users belong to.
    #[arg(long)]
    pub channel: String,
    /// The issuer of the identities (default: `tenant_issuer`); an External ID tenant's is its
    /// `[entra] identity_issuer`.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Decide and report without writing anything (not even audit events).
    #[arg(long)]
    pub dry_run: bool,
    /// Write one JSON line per user: {"id","email","outcome","code","accountNumber"}.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Users per transaction (default: 5000 on SQLite, 1000 on PostgreSQL).
    #[arg(long, hide = true)]
    pub batch_size: Option<usize>,
    /// The export's files, in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `policies` subcommands.
#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// Write upload-ready policy files for one environment of `appsettings.json`: every
    /// `{Settings:Name}` replaced; a placeholder without a value is an error naming file and line.
    Render {
        /// The environment (`Name` in appsettings.json).
        #[arg(long)]
        env: String,
        /// Where to write the rendered files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The policies folder (with appsettings.json).
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// How B2C authenticates to autolink: which `AutolinkRestAuth.<AUTH>.xml` to render
        /// (`Basic`, `Bearer`, `ApiKeyHeader`, `ClientCertificate`). Default: the environment's
        /// `AutolinkRestAuth` setting in appsettings.json, else `Basic`.
        #[arg(long)]
        auth: Option<String>,
    },
}

/// `customers` subcommands.
#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Import customers from CSV (with a header) or JSON lines; upserts by account number.
    Import {
        /// The file.
        file: PathBuf,
        /// The format (default: from the file name; .jsonl/.ndjson/.json are JSON lines).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Import the good rows and skip the bad ones (default: reject the whole file).
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Create, show, search, update, deactivate customers; the duplicate report.
    #[command(flatten)]
    Admin(admin::CustomerCommand),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("autolink: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::HashSecret = cli.command {
        let mut secret = String::new();
        std::io::stdin().lock().read_line(&mut secret)?;
        let secret = secret.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!secret.is_empty(), "no secret on standard input");
        println!(
            "{}",
            crate::auth::hash_secret(secret).map_err(anyhow::Error::msg)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::GenerateSecret = cli.command {
        let secret = crate::auth::generate_secret();
        println!("secret = {secret}");
        println!("hash   = {}", crate::auth::hash_generated_secret(&secret));
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Policies { command } = &cli.command {
        return policies(command);
    }
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(settings),
        Command::Migrate => {
            startup::open_database(&settings)?;
            println!(
                "migrations applied to {}",
                crate::storage::redact_url(&settings.database_url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Customers {
            command:
                CustomersCommand::Import {
                    file,
                    format,
                    skip_invalid,
                },
        } => {
            let db = startup::open_database(&settings)?;
            let format = format.unwrap_or_else(|| Format::from_path(&file));
            let on_error = if skip_invalid {
                OnError::SkipInvalid
            } else {
                OnError::RejectFile
            };
            let started = std::time::Instant::now();
            match import::import_file(&db, &file, format, on_error) {
                Ok(report) => {
                    for error in &report.errors {
                        eprintln!("line {}: skipped: {}", error.line, error.reason);
                    }
                    println!(
                        "imported {} rows in {:.2}s: {} inserted, {} updated, {} unchanged, {} skipped",
                        report.rows,
                        started.elapsed().as_secs_f64(),
                        report.counts.inserted,
                        report.counts.updated,
                        report.counts.unchanged,
                        report.error_count
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(ImportError::Rejected(report)) => {
                    for error in &report.errors {
                        eprintln!("line {}: {}", error.line, error.reason);
                    }
                    if report.error_count > report.errors.len() as u64 {
                        eprintln!(
                            "... and {} more",
                            report.error_count - report.errors.len() as u64
                        );
                    }
                    eprintln!(
                        "rejected: {} of {} rows are bad; nothing was imported (use --skip-invalid to import the good rows)",
                        report.error_count, report.rows
                    );
                    Ok(ExitCode::from(2))
                }
                Err(other) => Err(other.into()),
            }
        }
        Command::Preview { channel, email } => {
            let db = startup::open_database(&settings)?;
            let (linking, audit) = startup::build_linking(&settings, db)?;
            let request_id = crate::api::new_request_id();
            let answer = linking.preview(&request_id, "admin", &channel, &email)?;
            drop(linking);
            audit.join();
            println!("{}", serde_json::to_string_pretty(&answer_json(&answer))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Customers {
            command: CustomersCommand::Admin(command),
        } => admin::customers(&settings, command),
        Command::Links { command } => admin::links(&settings, command),
        Command::Prospects { command } => admin::prospects(&settings, command),
        Command::Audit(args) => admin::audit(&settings, args),
        Command::Webhooks { command } => admin::webhooks(&settings, command),
        Command::Backfill(args) => backfill(&settings, args),
        Command::HashSecret | Command::GenerateSecret => Ok(ExitCode::SUCCESS),
        Command::Policies { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// `autolink backfill`: the summary on standard output; exit status 2 for bad input.
fn backfill(settings: &Settings, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    use crate::backfill::{self, BackfillError, Options};
    // One line per unverified email is the linking service's log at info; a backfill would print
    // one per user. Warnings only, unless RUST_LOG says otherwise.
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let options = Options {
        channel: args.channel,
        issuer: args.issuer,
        dry_run: args.dry_run,
        report: args.report,
        batch: args.batch_size,
        files: args.files,
    };
    match backfill::run(settings, &options) {
        Ok(summary) => {
            let users = summary.report.users();
            println!(
                "{} of {users} users from {} files in {:.1} s ({:.0} users/s){}",
                if summary.dry_run {
                    "dry run"
                } else {
                    "backfill"
                },
                summary.files,
                summary.seconds,
                users as f64 / summary.seconds.max(0.001),
                if summary.dry_run {
                    ": nothing was written"
                } else {
                    ""
                }
            );
            print!("{}", summary.report);
            Ok(ExitCode::SUCCESS)
        }
        Err(BackfillError::BadInput(message)) => {
            eprintln!("autolink backfill: {message}");
            Ok(ExitCode::from(2))
        }
        Err(BackfillError::Storage(message)) => {
            eprintln!("autolink backfill: {message}");
            Ok(ExitCode::FAILURE)
        }
        Err(BackfillError::Other(error)) => Err(error),
    }
}

/// `autolink policies ...`: needs no service configuration.
fn policies(command: &PoliciesCommand) -> anyhow::Result<ExitCode> {
    match command {
        PoliciesCommand::Render {
            env,
            out,
            policies,
            auth,
        } => {
            let rendered = crate::policies::render_dir(policies, env, auth.as_deref(), out)?;
            for file in &rendered.files {
                println!("{}", file.display());
            }
            for file in &rendered.removed {
                println!(
                    "removed {} (another authentication variant)",
                    file.display()
                );
            }
            println!(
                "rendered {} policy files for environment {} with authentication {}",
                rendered.files.len(),
                rendered.environment,
                rendered.auth
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The JSON shape printed by `preview`.
pub fn answer_json(answer: &Answer) -> serde_json::Value {
    match answer {
        Ok(r) => serde_json::json!({
            "channel": r.channel,
            "outcome": r.outcome.as_str(),
            "customerAccountNumber": r.account_number,
        }),
        Err(refusal) => serde_json::json!({
            "outcome": "Refused",
            "code": refusal.code(),
            "error": refusal.error_name(),
        }),
    }
}

fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    actix_web::rt::System::new().block_on(async move {
        let mut app = Application::build(&settings)?;
        let generated = app.take_generated();
        let mut out = std::io::stdout().lock();
        if !generated.is_empty() {
            write!(out, "{}", generated.announcement())?;
        }
        let host = settings
            .bind
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or("127.0.0.1");
        writeln!(
            out,
            "autolink listening on {}://{host}:{}",
            app.scheme(),
            app.port()
        )?;
        out.flush()?;
        drop(out);
        app.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}
