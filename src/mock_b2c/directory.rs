//! The tenant's directory: the B2C accounts that journeys create and sign in to.

use std::sync::Mutex;

use serde::Serialize;

/// One B2C user.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// The object id (`oid`, the token's `sub`).
    pub object_id: String,
    /// A local account's sign-in email (`signInNames.emailAddress`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_in_email: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
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
}

impl User {
    pub fn display_name(&self) -> Option<String> {
        match (&self.given_name, &self.surname) {
            (Some(g), Some(s)) => Some(format!("{g} {s}")),
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        }
    }
}

/// All users, in memory (the mock keeps nothing between runs).
#[derive(Default)]
pub struct Directory {
    users: Mutex<Vec<User>>,
}

impl Directory {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<User>) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut users)
    }

    /// The local account signing in with this email (compared case-insensitively, as B2C does).
    pub fn local(&self, email: &str) -> Option<User> {
        self.with(|users| {
            users
                .iter()
                .find(|u| {
                    u.sign_in_email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(email.trim()))
                })
                .cloned()
        })
    }

    /// The social account of this provider and subject.
    pub fn social(&self, provider: &str, subject: &str) -> Option<User> {
        self.with(|users| {
            users
                .iter()
                .find(|u| {
                    u.provider.as_deref() == Some(provider)
                        && u.provider_subject.as_deref() == Some(subject)
                })
                .cloned()
        })
    }

    /// Writes a new user, unless one with the same sign-in name or social identity exists (the
    /// directory's own uniqueness): the user as stored, or `None` when it exists already.
    pub fn create(&self, user: User) -> Option<User> {
        self.with(|users| {
            let clash = users.iter().find(|u| {
                (user.sign_in_email.is_some()
                    && u.sign_in_email
                        .as_deref()
                        .zip(user.sign_in_email.as_deref())
                        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b)))
                    || (user.provider.is_some()
                        && u.provider == user.provider
                        && u.provider_subject == user.provider_subject)
            });
            if clash.is_some() {
                return None;
            }
            users.push(user.clone());
            Some(user)
        })
    }

    pub fn all(&self) -> Vec<User> {
        self.with(|users| users.clone())
    }
}
