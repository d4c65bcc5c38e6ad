//! Email addresses and the one comparison rule of DESIGN section 4.
//!
//! The rule, applied on write and on lookup: trim, Unicode NFC, lower-case the whole address, and
//! convert the domain to its ASCII (IDNA) form. Dots and `+tags` are kept: they are different
//! mailboxes at many providers, so folding them would be a silent match. The duplicate report may
//! point them out as warnings; the matcher never does.
//!
//! Before any of that, an address holding an invisible or control character is refused
//! ([`check_visible`]): IDNA would silently drop a zero-width space or a soft hyphen from the
//! domain, so `ana@exam\u{200B}ple.com` would otherwise match `ana@example.com`.

use std::fmt;

use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, NoncharacterCodePoint};
use icu_properties::{CodePointMapData, CodePointSetData};
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
    /// An invisible character (zero-width, bidi control, soft hyphen, other format or
    /// default-ignorable character), a noncharacter, or a control character: see
    /// [`check_visible`].
    #[error("the email address contains an invisible or control character")]
    InvisibleCharacter,
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
    ///
    /// The raw input is first checked by [`check_visible`], before it is trimmed or normalised.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        check_visible(raw)?;
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

/// Refuses a string holding a character that is invisible or a control, wherever it is: the one
/// check every email goes through ([`EmailAddress::parse`] calls it on the raw input, before any
/// trimming, normalisation or IDNA mapping could remove or fold the character). Refused:
///
/// - control characters (general category Cc: C0, DEL, C1), except the ASCII whitespace controls
///   (tab, line feed, vertical tab, form feed, carriage return), which are ordinary whitespace:
///   trimmed at either end, refused inside an address by the syntax rules;
/// - format characters (Cf): bidi controls (U+202A–202E, U+2066–2069, U+200E, U+200F, U+061C),
///   zero-width characters (U+200B–200D, U+2060–2064, U+FEFF), the soft hyphen (U+00AD), tag
///   characters (U+E0001, U+E0020–E007F) and the rest of the category;
/// - default-ignorable code points, which render as nothing and which IDNA maps away: beyond the
///   above, the combining grapheme joiner (U+034F), variation selectors (U+180B–180F,
///   U+FE00–FE0F, U+E0100–E01EF), Hangul fillers (U+115F, U+1160, U+3164, U+FFA0) and the
///   reserved ones;
/// - noncharacters: U+FDD0–FDEF and the last two code points of every plane (U+FFFE, U+FFFF,
///   U+1FFFE, U+1FFFF, ..., U+10FFFF).
///
/// Visible characters, spaces other than the ones above, private-use and unassigned code points
/// are left to the syntax rules and IDNA.
pub fn check_visible(raw: &str) -> Result<(), EmailError> {
    let refused = |c: char| {
        if c.is_ascii() {
            // The only ASCII characters refused here: controls other than whitespace, and DEL.
            c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
        } else {
            is_invisible_or_control(c)
        }
    };
    if raw.chars().any(refused) {
        return Err(EmailError::InvisibleCharacter);
    }
    Ok(())
}

/// A non-ASCII character that [`check_visible`] refuses.
fn is_invisible_or_control(c: char) -> bool {
    matches!(
        CodePointMapData::<GeneralCategory>::new().get(c),
        GeneralCategory::Control | GeneralCategory::Format
    ) || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointSetData::new::<NoncharacterCodePoint>().contains(c)
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

    /// Each refused character in the local part, in the domain, and at either end of the raw
    /// input (where a trim would otherwise have removed it).
    fn assert_refused_everywhere(class: &str, characters: &[char]) {
        for &c in characters {
            for raw in [
                format!("an{c}a@example.com"),
                format!("ana@exam{c}ple.com"),
                format!("{c}ana@example.com"),
                format!("ana@example.com{c}"),
                format!("  ana@example.com {c}"),
            ] {
                assert_eq!(
                    EmailAddress::parse(&raw),
                    Err(EmailError::InvisibleCharacter),
                    "{class}: U+{:04X} in {raw:?}",
                    c as u32
                );
            }
        }
    }

    #[test]
    fn refuses_bidi_controls() {
        assert_refused_everywhere(
            "bidi control",
            &[
                '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
                '\u{2068}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{61c}',
            ],
        );
    }

    #[test]
    fn refuses_zero_width_characters() {
        assert_refused_everywhere(
            "zero-width",
            &['\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}'],
        );
    }

    #[test]
    fn refuses_the_soft_hyphen() {
        assert_refused_everywhere("soft hyphen", &['\u{ad}']);
    }

    #[test]
    fn refuses_noncharacters_of_every_plane() {
        let mut noncharacters: Vec<char> = (0xFDD0..=0xFDEF).filter_map(char::from_u32).collect();
        for plane in 0..=0x10 {
            noncharacters.extend(
                [0xFFFE, 0xFFFF]
                    .into_iter()
                    .filter_map(|low| char::from_u32(plane << 16 | low)),
            );
        }
        assert_eq!(noncharacters.len(), 32 + 34);
        assert_refused_everywhere("noncharacter", &noncharacters);
    }

    #[test]
    fn refuses_control_characters_but_trims_ascii_whitespace() {
        let controls: Vec<char> = ('\u{0}'..='\u{1f}')
            .chain('\u{7f}'..='\u{9f}')
            .filter(|c| !matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r'))
            .collect();
        assert_eq!(controls.len(), 32 + 33 - 5);
        assert_refused_everywhere("control", &controls);
        // Tabs and line breaks around an address are ordinary whitespace...
        assert_eq!(key("\t ana@example.com\r\n"), "ana@example.com");
        // ...but not inside it.
        assert_eq!(
            EmailAddress::parse("ana@exam\tple.com"),
            Err(EmailError::InvalidCharacter)
        );
    }

    #[test]
    fn refuses_other_format_and_default_ignorable_characters() {
        assert_refused_everywhere(
            "format or default-ignorable",
            &[
                '\u{34f}',   // combining grapheme joiner
                '\u{180e}',  // Mongolian vowel separator
                '\u{180b}',  // Mongolian free variation selector
                '\u{2061}',  // function application
                '\u{2064}',  // invisible plus
                '\u{3164}',  // Hangul filler
                '\u{fe0f}',  // variation selector-16
                '\u{fff9}',  // interlinear annotation anchor
                '\u{e0001}', // language tag
                '\u{e0041}', // tag latin capital letter a
                '\u{e0100}', // variation selector-17
                '\u{1d173}', // musical symbol begin beam
            ],
        );
    }

    #[test]
    fn accepts_visible_unicode_and_ordinary_spaces_around_the_address() {
        assert_eq!(key("\u{a0}ana@example.com\u{3000}"), "ana@example.com");
        assert_eq!(
            key("jos\u{e9}@b\u{fc}cher.example"),
            "jos\u{e9}@xn--bcher-kva.example"
        );
        assert_eq!(
            key("\u{5d0}\u{5d1}@example.com"),
            "\u{5d0}\u{5d1}@example.com"
        );
    }

    #[test]
    fn nothing_that_idna_would_drop_from_a_domain_is_accepted() {
        // Every character that the domain's IDNA mapping removes without a trace would make two
        // different inputs one key: each must be refused before the mapping runs.
        let mut dropped = 0;
        for c in ('\u{80}'..=char::MAX).filter(|c| !c.is_whitespace()) {
            let domain = format!("ex{c}ample.com");
            if idna::domain_to_ascii(&domain).ok().as_deref() == Some("example.com") {
                dropped += 1;
                assert!(
                    EmailAddress::parse(&format!("ana@{domain}")).is_err(),
                    "U+{:04X} is dropped by IDNA and was accepted",
                    c as u32
                );
            }
        }
        assert!(
            dropped > 250,
            "only {dropped} characters are dropped by IDNA"
        );
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
