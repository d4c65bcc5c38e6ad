//! The fields of a customer record that every way in (import, admin API, CLI, prospects) checks
//! the same way: account numbers, legal entities, party types, names.

use std::fmt;

use rand::Rng;

/// Longest account number or legal entity accepted, in bytes.
const MAX_CODE_LEN: usize = 64;
/// Longest name accepted (first name, last name, company), in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A customer account number: 1 to 64 characters, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountNumber(String);

impl AccountNumber {
    /// Parses a trimmed account number.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        if value.is_empty() {
            return Err("account_number is empty".into());
        }
        if !is_code(value) {
            return Err("account_number must be at most 64 characters without spaces".into());
        }
        Ok(Self(value.to_string()))
    }

    /// A new random account number: the prefix and 12 digits. Callers retry on the (rare)
    /// unique violation.
    pub fn generate(prefix: &str) -> Self {
        let n: u64 = rand::thread_rng().gen_range(0..1_000_000_000_000);
        Self(format!("{prefix}{n:012}"))
    }

    /// The account number.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The owned account number.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A legal entity (Commerce data area): 1 to 64 characters without spaces, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LegalEntity(String);

impl LegalEntity {
    /// Parses and upper-cases a legal entity.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        if value.is_empty() {
            return Err("legal_entity is empty".into());
        }
        if !is_code(value) {
            return Err("legal_entity must be at most 64 characters without spaces".into());
        }
        Ok(Self(value.to_ascii_uppercase()))
    }

    /// The legal entity, upper-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LegalEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a customer record is a person or an organization; only persons are candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartyType {
    /// A person.
    Person,
    /// An organization (a business customer's company record).
    Organization,
}

impl PartyType {
    /// Parses `person` or `organization` (also `organisation`), in any case.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        if value.eq_ignore_ascii_case("person") {
            Ok(PartyType::Person)
        } else if value.eq_ignore_ascii_case("organization")
            || value.eq_ignore_ascii_case("organisation")
        {
            Ok(PartyType::Organization)
        } else {
            Err("party_type must be person or organization".into())
        }
    }

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            PartyType::Person => "person",
            PartyType::Organization => "organization",
        }
    }
}

/// A name (first name, last name, company): trimmed, at most [`MAX_NAME_CHARS`] characters, no
/// control characters. Empty means absent.
pub fn parse_name(raw: Option<&str>) -> Result<Option<String>, String> {
    let Some(value) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(Some(value.to_string()))
}

fn is_code(value: &str) -> bool {
    value.chars().count() <= MAX_CODE_LEN
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers_are_trimmed_and_refuse_spaces_and_overlong_values() {
        assert_eq!(AccountNumber::parse(" C-001 ").unwrap().as_str(), "C-001");
        assert!(AccountNumber::parse("").is_err());
        assert!(AccountNumber::parse("C 001").is_err());
        assert!(AccountNumber::parse(&"9".repeat(65)).is_err());
    }

    #[test]
    fn generated_account_numbers_carry_the_prefix_and_twelve_digits() {
        let number = AccountNumber::generate("AL");
        assert!(number.as_str().starts_with("AL"));
        assert_eq!(number.as_str().len(), 14);
        assert!(number.as_str()[2..].bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn legal_entities_are_upper_cased() {
        assert_eq!(LegalEntity::parse("usrt").unwrap().as_str(), "USRT");
        assert!(LegalEntity::parse("US RT").is_err());
    }

    #[test]
    fn party_types_accept_both_spellings_of_organization() {
        assert_eq!(PartyType::parse("Person").unwrap(), PartyType::Person);
        assert_eq!(
            PartyType::parse("organisation").unwrap(),
            PartyType::Organization
        );
        assert!(PartyType::parse("robot").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name(Some("  Ana ")).unwrap().as_deref(), Some("Ana"));
        assert_eq!(parse_name(Some("   ")).unwrap(), None);
        assert!(parse_name(Some(&"a".repeat(201))).is_err());
        assert!(parse_name(Some("a\u{7}b")).is_err());
    }
}
