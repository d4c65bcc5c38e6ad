//! The tenant's directory: the B2C accounts that journeys create and sign in to.
//!
//! Kept in a SQLite file (`MockSettings::directory_file`; the `mock-b2c` command's default is
//! `mock-b2c-directory.db`), so that users sign in again after a restart, as they would in a real
//! tenant, and a sign-up of an existing account is refused as B2C refuses it. Without a file the
//! directory lives in memory (the tests' default). Passwords are kept as argon2id hashes. The file
//! is written on every new user and read once at start; deleting it (or `mock-b2c
//! --reset-directory`) empties the directory.

use std::path::Path;
use std::sync::Mutex;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

/// One B2C user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// The object id (`oid`, the token's `sub`).
    pub object_id: String,
    /// A local account's sign-in email (`signInNames.emailAddress`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_in_email: Option<String>,
    /// A local account's password, as an argon2id hash (PHC string); never shown.
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// A social account's provider and the person's id there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_subject: Option<String>,
    /// The email on the account (the provider's, for social accounts).
    pub email: String,
    /// Whether the provider said the email is verified (social accounts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    /// The External ID tenant the user belongs to; `None` for the B2C tenant's users. Each
    /// tenant has its own sign-in names and social identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_tenant: Option<String>,
}

impl User {
    /// Whether `password` is this local account's password.
    pub fn has_password(&self, password: &str) -> bool {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let Some(stored) = self.password_hash.as_deref() else {
            return false;
        };
        PasswordHash::new(stored).is_ok_and(|hash| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    }

    pub fn display_name(&self) -> Option<String> {
        match (&self.given_name, &self.surname) {
            (Some(g), Some(s)) => Some(format!("{g} {s}")),
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        }
    }
}

/// All users: in memory, and in the directory file when there is one.
#[derive(Default)]
pub struct Directory {
    users: Mutex<Vec<User>>,
    file: Option<Mutex<SqliteConnection>>,
}

/// A user as the file keeps it: the user's JSON (which leaves the hash out) and the hash.
#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Text)]
    user: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    password_hash: Option<String>,
}

impl Directory {
    /// The directory kept in `path` (created when missing), with the users it holds.
    pub fn open(path: &Path) -> Result<Directory, String> {
        let shown = path.display();
        let url = path
            .to_str()
            .ok_or_else(|| format!("{shown}: not a UTF-8 path"))?;
        let mut conn = SqliteConnection::establish(url).map_err(|e| format!("{shown}: {e}"))?;
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS mock_b2c_users (
                 object_id TEXT PRIMARY KEY NOT NULL,
                 user TEXT NOT NULL,
                 password_hash TEXT
             );",
        )
        .map_err(|e| format!("{shown}: {e}"))?;
        let stored: Vec<Stored> =
            diesel::sql_query("SELECT user, password_hash FROM mock_b2c_users ORDER BY rowid")
                .load(&mut conn)
                .map_err(|e| format!("{shown}: {e}"))?;
        let mut users = Vec::with_capacity(stored.len());
        for row in stored {
            let mut user: User = serde_json::from_str(&row.user)
                .map_err(|e| format!("{shown}: a user that does not read back: {e}"))?;
            user.password_hash = row.password_hash;
            users.push(user);
        }
        Ok(Directory {
            users: Mutex::new(users),
            file: Some(Mutex::new(conn)),
        })
    }

    /// Deletes the directory file (and SQLite's files beside it); a missing file is no error.
    pub fn reset(path: &Path) -> std::io::Result<()> {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<User>) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut users)
    }

    /// The B2C tenant's local account signing in with this email (compared case-insensitively,
    /// as B2C does).
    pub fn local(&self, email: &str) -> Option<User> {
        self.local_in(None, email)
    }

    /// The local account of a tenant (`None`: the B2C tenant; else an External ID tenant's id)
    /// signing in with this email.
    pub fn local_in(&self, tenant: Option<&str>, email: &str) -> Option<User> {
        self.with(|users| {
            users
                .iter()
                .find(|u| {
                    u.external_tenant.as_deref() == tenant
                        && u.sign_in_email
                            .as_deref()
                            .is_some_and(|e| e.eq_ignore_ascii_case(email.trim()))
                })
                .cloned()
        })
    }

    /// The user with this object id.
    pub fn by_object_id(&self, object_id: &str) -> Option<User> {
        self.with(|users| users.iter().find(|u| u.object_id == object_id).cloned())
    }

    /// The B2C tenant's social account of this provider and subject.
    pub fn social(&self, provider: &str, subject: &str) -> Option<User> {
        self.social_in(None, provider, subject)
    }

    /// A tenant's social account of this provider and subject (tenant as in [`Self::local_in`]).
    pub fn social_in(&self, tenant: Option<&str>, provider: &str, subject: &str) -> Option<User> {
        self.with(|users| {
            users
                .iter()
                .find(|u| {
                    u.external_tenant.as_deref() == tenant
                        && u.provider.as_deref() == Some(provider)
                        && u.provider_subject.as_deref() == Some(subject)
                })
                .cloned()
        })
    }

    /// Writes a new user, unless one with the same sign-in name or social identity exists (the
    /// directory's own uniqueness): the user as stored, or `None` when it exists already. An
    /// error when the directory file cannot be written (the user is then not created).
    pub fn create(&self, user: User) -> Result<Option<User>, String> {
        self.with(|users| {
            let clash = users.iter().find(|u| {
                u.external_tenant == user.external_tenant
                    && ((user.sign_in_email.is_some()
                        && u.sign_in_email
                            .as_deref()
                            .zip(user.sign_in_email.as_deref())
                            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b)))
                        || (user.provider.is_some()
                            && u.provider == user.provider
                            && u.provider_subject == user.provider_subject))
            });
            if clash.is_some() {
                return Ok(None);
            }
            if let Some(file) = &self.file {
                let json = serde_json::to_string(&user).map_err(|e| e.to_string())?;
                let mut conn = file.lock().unwrap_or_else(|e| e.into_inner());
                diesel::sql_query(
                    "INSERT INTO mock_b2c_users (object_id, user, password_hash) VALUES (?, ?, ?)",
                )
                .bind::<diesel::sql_types::Text, _>(&user.object_id)
                .bind::<diesel::sql_types::Text, _>(&json)
                .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(
                    user.password_hash.as_deref(),
                )
                .execute(&mut *conn)
                .map_err(|e| format!("the directory file was not written: {e}"))?;
            }
            users.push(user.clone());
            Ok(Some(user))
        })
    }

    pub fn all(&self) -> Vec<User> {
        self.with(|users| users.clone())
    }
}
