//! Generated service credentials: only their hashes are stored.

use diesel::prelude::*;

use super::schema::service_credentials;
use super::{DbConn, StorageError};

/// A stored credential: who, and the password hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// User name, for Basic credentials.
    pub username: Option<String>,
    /// PHC-format hash of the secret.
    pub secret_hash: String,
}

/// The stored credential of a kind (`connector`, `admin`).
pub fn find(conn: &mut DbConn, kind: &str) -> Result<Option<StoredCredential>, StorageError> {
    let row: Option<(Option<String>, String)> = service_credentials::table
        .filter(service_credentials::kind.eq(kind))
        .select((
            service_credentials::username,
            service_credentials::secret_hash,
        ))
        .first(conn)
        .optional()?;
    Ok(row.map(|(username, secret_hash)| StoredCredential {
        username,
        secret_hash,
    }))
}

/// Stores a credential; fails with a unique violation when one of that kind exists already.
pub fn insert(
    conn: &mut DbConn,
    kind: &str,
    credential: &StoredCredential,
) -> Result<(), StorageError> {
    diesel::insert_into(service_credentials::table)
        .values((
            service_credentials::kind.eq(kind),
            service_credentials::username.eq(credential.username.as_deref()),
            service_credentials::secret_hash.eq(&credential.secret_hash),
            service_credentials::created_at.eq(super::now()),
        ))
        .execute(conn)?;
    Ok(())
}
