//! The messages users see when they are refused, per language.
//!
//! The locale comes from B2C's `ui_locales` (`en-US`, `fr`, ...) or `Accept-Language`; the first
//! language with a catalogue wins, English otherwise. The refusal's code always travels beside
//! the message, so a site can map it to its own text. A deployment can replace any message, or
//! add a language, with a TOML file (`[messages] file`): a table per language, code = message.

use std::collections::HashMap;
use std::path::Path;

use crate::domain::Refusal;

/// The built-in messages plus a deployment's replacements.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// language -> refusal code -> message.
    overrides: HashMap<String, HashMap<String, String>>,
}

impl Catalogue {
    /// Loads replacements from a TOML file. Unknown codes are errors (a typo would silently keep
    /// the built-in text); languages are two-letter tags.
    pub fn from_file(path: &Path) -> Result<Catalogue, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses replacements from TOML text.
    pub fn from_toml(text: &str) -> Result<Catalogue, String> {
        let parsed: HashMap<String, HashMap<String, String>> =
            toml::from_str(text).map_err(|e| e.to_string())?;
        let mut overrides = HashMap::new();
        for (language, messages) in parsed {
            let language = language.to_ascii_lowercase();
            if language.len() != 2 || !language.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(format!("{language:?} is not a two-letter language tag"));
            }
            for code in messages.keys() {
                if !Refusal::ALL.iter().any(|r| r.code() == code) {
                    return Err(format!("[{language}] {code:?} is not a refusal code"));
                }
            }
            overrides.insert(language, messages);
        }
        Ok(Catalogue { overrides })
    }

    /// Picks the language from a `ui_locales` or `Accept-Language` value: the first tag whose
    /// primary language has built-in or replacement messages; English otherwise.
    pub fn language(&self, locales: Option<&str>) -> String {
        let Some(locales) = locales else {
            return "en".into();
        };
        for tag in locales.split([' ', ',']) {
            let primary = tag.split([';', '-', '_']).next().unwrap_or_default().trim();
            let primary = primary.to_ascii_lowercase();
            if LANGUAGES.contains(&primary.as_str()) || self.overrides.contains_key(&primary) {
                return primary;
            }
        }
        "en".into()
    }

    /// The message for a refusal: the replacement if there is one, else the built-in text of the
    /// language, else English.
    pub fn message(&self, refusal: Refusal, language: &str) -> &str {
        self.overrides
            .get(language)
            .and_then(|messages| messages.get(refusal.code()))
            .map(String::as_str)
            .unwrap_or_else(|| message(refusal, language))
    }
}

/// Languages with a catalogue.
pub const LANGUAGES: [&str; 4] = ["en", "fr", "de", "es"];

/// Picks the language from a `ui_locales` or `Accept-Language` value (space- or comma-separated
/// tags, optional `;q=` weights are ignored in order of appearance).
pub fn language(locales: Option<&str>) -> &'static str {
    let Some(locales) = locales else { return "en" };
    for tag in locales.split([' ', ',']) {
        let primary = tag.split([';', '-', '_']).next().unwrap_or_default().trim();
        if let Some(lang) = LANGUAGES.iter().find(|l| l.eq_ignore_ascii_case(primary)) {
            return lang;
        }
    }
    "en"
}

/// The title of a block page (Entra External ID's `showBlockPage` has one), in a language
/// (English when the language has no catalogue).
pub fn block_page_title(language: &str) -> &'static str {
    match language {
        "fr" => "Inscription impossible",
        "de" => "Registrierung nicht möglich",
        "es" => "No es posible registrarse",
        _ => "We cannot sign you up",
    }
}

/// The message for a refusal in a language (English when the language has no catalogue).
pub fn message(refusal: Refusal, language: &str) -> &'static str {
    match language {
        "fr" => french(refusal),
        "de" => german(refusal),
        "es" => spanish(refusal),
        _ => english(refusal),
    }
}

fn english(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::CommerceIdentityNotFound => "We could not find a business account for this email address. Please sign up with the email address your company registered, or contact the store to request access.",
        Refusal::MultipleAccounts => "More than one customer account uses this email address, so we cannot sign you up automatically. Please contact customer service.",
        Refusal::EmailNotVerified => "Your email address has not been verified, so we cannot connect it to a customer account. Please sign up with a verified email address.",
        Refusal::UnknownChannel => "This application is not set up for sign-up. Please contact the store.",
        Refusal::LinkRequiresReview => "Your account needs to be reviewed by customer service before you can sign in. Please contact the store.",
        Refusal::EmailMissing => "Please enter your email address.",
        Refusal::InvalidEmail => "Please enter a valid email address.",
        Refusal::ObjectIdMissing | Refusal::InvalidRequest => "There was a problem with your request. Please try again later.",
        Refusal::ServiceUnavailable => "We cannot complete your sign-up right now. Please try again in a few minutes.",
    }
}

fn french(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::CommerceIdentityNotFound => "Aucun compte professionnel ne correspond à cette adresse e-mail. Inscrivez-vous avec l'adresse enregistrée par votre entreprise ou contactez le magasin pour demander l'accès.",
        Refusal::MultipleAccounts => "Plusieurs comptes client utilisent cette adresse e-mail : l'inscription automatique est impossible. Veuillez contacter le service client.",
        Refusal::EmailNotVerified => "Votre adresse e-mail n'a pas été vérifiée et ne peut donc pas être associée à un compte client. Inscrivez-vous avec une adresse vérifiée.",
        Refusal::UnknownChannel => "Cette application n'est pas configurée pour l'inscription. Veuillez contacter le magasin.",
        Refusal::LinkRequiresReview => "Votre compte doit être vérifié par le service client avant que vous puissiez vous connecter. Veuillez contacter le magasin.",
        Refusal::EmailMissing => "Veuillez saisir votre adresse e-mail.",
        Refusal::InvalidEmail => "Veuillez saisir une adresse e-mail valide.",
        Refusal::ObjectIdMissing | Refusal::InvalidRequest => "Un problème est survenu avec votre demande. Veuillez réessayer plus tard.",
        Refusal::ServiceUnavailable => "Nous ne pouvons pas terminer votre inscription pour le moment. Veuillez réessayer dans quelques minutes.",
    }
}

fn german(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::CommerceIdentityNotFound => "Für diese E-Mail-Adresse wurde kein Geschäftskonto gefunden. Bitte registrieren Sie sich mit der von Ihrem Unternehmen hinterlegten Adresse oder wenden Sie sich an den Shop.",
        Refusal::MultipleAccounts => "Mehrere Kundenkonten verwenden diese E-Mail-Adresse, daher ist keine automatische Registrierung möglich. Bitte wenden Sie sich an den Kundendienst.",
        Refusal::EmailNotVerified => "Ihre E-Mail-Adresse wurde nicht bestätigt und kann daher keinem Kundenkonto zugeordnet werden. Bitte registrieren Sie sich mit einer bestätigten Adresse.",
        Refusal::UnknownChannel => "Diese Anwendung ist nicht für die Registrierung eingerichtet. Bitte wenden Sie sich an den Shop.",
        Refusal::LinkRequiresReview => "Ihr Konto muss vom Kundendienst geprüft werden, bevor Sie sich anmelden können. Bitte wenden Sie sich an den Shop.",
        Refusal::EmailMissing => "Bitte geben Sie Ihre E-Mail-Adresse ein.",
        Refusal::InvalidEmail => "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
        Refusal::ObjectIdMissing | Refusal::InvalidRequest => "Bei Ihrer Anfrage ist ein Problem aufgetreten. Bitte versuchen Sie es später erneut.",
        Refusal::ServiceUnavailable => "Ihre Registrierung kann gerade nicht abgeschlossen werden. Bitte versuchen Sie es in einigen Minuten erneut.",
    }
}

fn spanish(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::CommerceIdentityNotFound => "No encontramos una cuenta de empresa para esta dirección de correo. Regístrese con la dirección que registró su empresa o póngase en contacto con la tienda.",
        Refusal::MultipleAccounts => "Varias cuentas de cliente usan esta dirección de correo, por lo que no es posible el registro automático. Póngase en contacto con el servicio de atención al cliente.",
        Refusal::EmailNotVerified => "Su dirección de correo no está verificada, por lo que no puede asociarse a una cuenta de cliente. Regístrese con una dirección verificada.",
        Refusal::UnknownChannel => "Esta aplicación no está configurada para el registro. Póngase en contacto con la tienda.",
        Refusal::LinkRequiresReview => "El servicio de atención al cliente debe revisar su cuenta antes de que pueda iniciar sesión. Póngase en contacto con la tienda.",
        Refusal::EmailMissing => "Escriba su dirección de correo electrónico.",
        Refusal::InvalidEmail => "Escriba una dirección de correo electrónico válida.",
        Refusal::ObjectIdMissing | Refusal::InvalidRequest => "Hubo un problema con su solicitud. Inténtelo de nuevo más tarde.",
        Refusal::ServiceUnavailable => "No podemos completar su registro en este momento. Inténtelo de nuevo en unos minutos.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_supported_language() {
        assert_eq!(language(Some("en-US")), "en");
        assert_eq!(language(Some("fr-CA")), "fr");
        assert_eq!(language(Some("nl-NL de-DE")), "de");
        assert_eq!(language(Some("es-ES,en;q=0.8")), "es");
        assert_eq!(language(Some("ja")), "en");
        assert_eq!(language(None), "en");
    }

    #[test]
    fn a_deployment_replaces_messages_and_adds_languages() {
        let catalogue = Catalogue::from_toml(
            r#"
            [fr]
            Microsoft_Dynamics_CommerceIdentityNotFound = "Contactez votre acheteur principal."
            [nl]
            EmailNotVerified = "Uw e-mailadres is niet geverifieerd."
            "#,
        )
        .unwrap();
        assert_eq!(
            catalogue.message(Refusal::CommerceIdentityNotFound, "fr"),
            "Contactez votre acheteur principal."
        );
        assert_eq!(
            catalogue.message(Refusal::MultipleAccounts, "fr"),
            french(Refusal::MultipleAccounts)
        );
        assert_eq!(catalogue.language(Some("nl-BE")), "nl");
        assert_eq!(
            catalogue.message(Refusal::EmailNotVerified, "nl"),
            "Uw e-mailadres is niet geverifieerd."
        );
        assert_eq!(
            catalogue.message(Refusal::InvalidEmail, "nl"),
            english(Refusal::InvalidEmail)
        );
    }

    #[test]
    fn a_replacement_file_with_an_unknown_code_is_refused() {
        assert!(Catalogue::from_toml("[fr]\nNoSuchCode = \"x\"\n").is_err());
        assert!(Catalogue::from_toml("[french]\nEmailNotVerified = \"x\"\n").is_err());
    }

    #[test]
    fn every_refusal_has_a_message_in_every_language() {
        for lang in LANGUAGES {
            for refusal in Refusal::ALL {
                assert!(!message(refusal, lang).is_empty());
            }
        }
        assert_ne!(
            message(Refusal::CommerceIdentityNotFound, "fr"),
            message(Refusal::CommerceIdentityNotFound, "en")
        );
    }
}
