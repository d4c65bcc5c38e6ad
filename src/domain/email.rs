//! Email addresses and the one comparison rule of DESIGN section 4.
//!
//! The rule, applied on write and on lookup: trim, Unicode NFC, lower-case the whole address, and
//! convert the domain to its ASCII (IDNA) form. Dots and `+tags` are kept: they are different
//! mailboxes at many providers, so folding them would be a silent match. The duplicate report may
//! point them out as warnings; the matcher never does.

use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Longest address accepted, in bytes of its normalised form (RFC 5321 path limit).
const MAX_ADDRESS_LEN: usize = 254;
/// Longest local part accepted, in bytes (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;

/// A syntactically valid email address with its normalised comparison key.
///
/// The constructor is private: the only way to get one is [`EmailAddress::parse`], so every value
/// in the program has passed the rule.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// The address as given, trimmed and NFC-normalised (what is stored as the primary email).
    display: String,
    /// The comparison key: lower-case local part, `@`, ASCII lower-case domain.
    key: String,
}

/// Why a string is not an email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing but whitespace.
    #[error("the email address is empty")]
    Empty,
    /// No `@`, or text on only one side of it.
    #[error("the email address has no local part or no domain")]
    MissingPart,
    /// Control characters, spaces, a second `@`, or other characters no mailbox has.
    #[error("the email address contains characters that are not allowed")]
    InvalidCharacter,
    /// The domain is not a valid internationalised domain name.
    #[error("the email domain is not a valid domain name")]
    InvalidDomain,
    /// Longer than RFC 5321 allows.
    #[error("the email address is too long")]
    TooLong,
}

impl EmailAddress {
    /// Parses and normalises an address. Quoted local parts and IP-literal domains are refused:
    /// B2C does not issue them and a store cannot mail them reliably.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        // ASCII is already in NFC; skipping the normaliser matters to bulk imports.
        let display: String = if trimmed.is_ascii() {
            trimmed.to_string()
        } else {
            trimmed.nfc().collect()
        };
        let (local, domain) = display.rsplit_once('@').ok_or(EmailError::MissingPart)?;
        if local.is_empty() || domain.is_empty() {
            return Err(EmailError::MissingPart);
        }
        if local.len() > MAX_LOCAL_LEN {
            return Err(EmailError::TooLong);
        }
        if !local.chars().all(is_local_part_char)
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(EmailError::InvalidCharacter);
        }
        if domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::InvalidCharacter);
        }
        let plain_domain = is_plain_ascii_domain(domain);
        let key = if plain_domain && local.is_ascii() {
            // Both parts lower-cased as below, in one allocation (the sign-in path's case).
            display.to_ascii_lowercase()
        } else {
            let ascii_domain = if plain_domain {
                // What IDNA does to such a domain: lower-case it (checked against idna in tests).
                domain.to_ascii_lowercase()
            } else {
                idna::domain_to_ascii(domain).map_err(|_| EmailError::InvalidDomain)?
            };
            let local_key: String = if local.is_ascii() {
                local.to_ascii_lowercase()
            } else {
                local.to_lowercase().nfc().collect()
            };
            format!("{local_key}@{ascii_domain}")
        };
        let ascii_domain = key.rsplit_once('@').map_or("", |(_, d)| d);
        if !is_valid_ascii_domain(ascii_domain) {
            return Err(EmailError::InvalidDomain);
        }
        if key.len() > MAX_ADDRESS_LEN {
            return Err(EmailError::TooLong);
        }
        Ok(Self { display, key })
    }

    /// The address as given (trimmed, NFC).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The normalised comparison key stored beside every email and used for every lookup.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key, without a copy.
    pub fn into_key(self) -> String {
        self.key
    }

    /// A form safe for logs at info level: first character of the local part and the domain.
    pub fn redacted(&self) -> String {
        redact_key(&self.key)
    }
}

/// Redacts a normalised key for logs: `j***@example.com`.
pub fn redact_key(key: &str) -> String {
    match key.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

impl fmt::Debug for EmailAddress {
    // Debug output ends up in logs; keep it redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.redacted())
    }
}

fn is_local_part_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
    } else {
        // RFC 6531 allows UTF-8 local parts; refuse only what is invisible or a separator.
        !c.is_control() && !c.is_whitespace()
    }
}

/// A domain of ASCII letters, digits, hyphens and dots with no punycode (`xn--`) label: IDNA
/// only lower-cases it, so the IDNA pass can be skipped.
fn is_plain_ascii_domain(domain: &str) -> bool {
    domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !domain
            .split('.')
            .any(|label| label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--"))
}

fn is_valid_ascii_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > 253 || !domain.contains('.') {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> String {
        EmailAddress::parse(raw).unwrap().key().to_string()
    }

    #[test]
    fn trims_and_lower_cases_the_whole_address() {
        assert_eq!(
            key("  John.Smith@Fabrikam.COM \n"),
            "john.smith@fabrikam.com"
        );
    }

    #[test]
    fn keeps_dots_and_plus_tags_as_different_mailboxes() {
        assert_ne!(key("john.smith@gmail.com"), key("johnsmith@gmail.com"));
        assert_ne!(key("john+shop@gmail.com"), key("john@gmail.com"));
    }

    #[test]
    fn converts_the_domain_to_ascii() {
        assert_eq!(key("anna@Bücher.example"), "anna@xn--bcher-kva.example");
        assert_eq!(
            key("anna@xn--bcher-kva.example"),
            key("anna@bücher.example")
        );
    }

    #[test]
    fn normalises_unicode_to_nfc_before_comparing() {
        // "é" precomposed and as "e" + combining acute accent are the same mailbox.
        assert_eq!(key("ren\u{e9}@example.com"), key("rene\u{301}@example.com"));
        assert_eq!(key("REN\u{c9}@example.com"), "ren\u{e9}@example.com");
    }

    #[test]
    fn keeps_the_display_form_without_lower_casing() {
        let email = EmailAddress::parse(" John@Example.com").unwrap();
        assert_eq!(email.as_str(), "John@Example.com");
    }

    #[test]
    fn rejects_things_that_are_not_addresses() {
        for bad in [
            "",
            "   ",
            "john",
            "@example.com",
            "john@",
            "john@localhost",
            "john smith@example.com",
            "john@exa mple.com",
            "john..smith@example.com",
            ".john@example.com",
            "john@-example.com",
            "john@example..com",
            "\"john\"@example.com",
            "john\u{0}@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_ascii_shortcut_gives_what_idna_gives() {
        for domain in [
            "Example.COM",
            "a-b.example.com",
            "EXAMPLE.com.",
            "ex--ample.com",
            "-example.com",
            "example..com",
            "123.example",
            "a.b",
        ] {
            assert!(is_plain_ascii_domain(domain), "{domain}");
            assert_eq!(
                idna::domain_to_ascii(domain)
                    .ok()
                    .filter(|d| is_valid_ascii_domain(d)),
                Some(domain.to_ascii_lowercase()).filter(|d| is_valid_ascii_domain(d)),
                "{domain}"
            );
        }
        assert!(!is_plain_ascii_domain("xn--bcher-kva.example"));
        assert!(!is_plain_ascii_domain("XN--bcher-kva.example"));
        assert!(!is_plain_ascii_domain("bücher.example"));
        assert!(!is_plain_ascii_domain("under_score.example"));
    }

    #[test]
    fn rejects_overlong_addresses() {
        let local = "a".repeat(65);
        assert_eq!(
            EmailAddress::parse(&format!("{local}@example.com")),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn redacts_for_logs() {
        assert_eq!(
            EmailAddress::parse("john@example.com").unwrap().redacted(),
            "j***@example.com"
        );
        assert!(
            !format!("{:?}", EmailAddress::parse("john@example.com").unwrap()).contains("john")
        );
    }
}
