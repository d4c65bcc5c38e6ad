//! Reading a Microsoft Graph user export: a page of `GET /users` as Graph returns it
//! (`{"@odata.context": ..., "value": [...], "@odata.nextLink": ...}`) or JSON lines of user
//! objects, streamed user by user. Any error names its position in the file.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Files up to this size are read whole and parsed from memory (several times faster than from
/// a reader); larger ones are streamed. A Graph page of 999 users is about half a megabyte.
const READ_WHOLE: u64 = 32 * 1024 * 1024;

/// One user object of the export, with the properties the backfill selects. Others are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    /// The object id: the identity's subject.
    #[serde(default)]
    pub id: Option<String>,
    /// Given name, for a customer the backfill creates.
    #[serde(default)]
    pub given_name: Option<String>,
    /// Surname, for a customer the backfill creates.
    #[serde(default)]
    pub surname: Option<String>,
    /// The `mail` property.
    #[serde(default)]
    pub mail: Option<String>,
    /// The `otherMails` property.
    #[serde(default)]
    pub other_mails: Option<Vec<String>>,
    /// The user's sign-in identities.
    #[serde(default)]
    pub identities: Option<Vec<ObjectIdentity>>,
}

/// One entry of a user's `identities`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectIdentity {
    /// `emailAddress`, `userName`, `federated`, `userPrincipalName`, ...
    #[serde(default)]
    pub sign_in_type: Option<String>,
    /// The tenant (local accounts) or the identity provider (`google.com`, `mail`, ...).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The sign-in name: the email of an `emailAddress` or `mail` identity.
    #[serde(default)]
    pub issuer_assigned_id: Option<String>,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a Graph page nor JSON lines of users; the message names the line and column.
    #[error("{0}")]
    Malformed(String),
    /// The caller stopped the reading.
    #[error("stopped")]
    Stopped,
}

/// The marker of a stop asked for by the caller inside the parser.
const STOP: &str = "\u{0}autolink: stopped by the caller";

/// Reads the users of the file at `path` in order, handing each to `each` (which returns false to
/// stop). Returns how many users the file holds.
pub fn read_users(path: &Path, mut each: impl FnMut(GraphUser) -> bool) -> Result<u64, FileError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size <= READ_WHOLE {
        let mut bytes = Vec::with_capacity(size as usize);
        std::io::BufReader::new(file).read_to_end(&mut bytes)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(0);
        }
        read(serde_json::Deserializer::from_slice(&bytes), &mut each)
    } else {
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        read(serde_json::Deserializer::from_reader(reader), &mut each)
    }
}

fn read<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    each: &mut dyn FnMut(GraphUser) -> bool,
) -> Result<u64, FileError> {
    let first = FirstValue { each: &mut *each }
        .deserialize(&mut de)
        .map_err(malformed)?;
    match first {
        First::Page(users) => {
            de.end().map_err(malformed)?;
            Ok(users)
        }
        First::User(user) => {
            if !each(*user) {
                return Err(FileError::Stopped);
            }
            let mut users = 1;
            for user in de.into_iter::<GraphUser>() {
                if !each(user.map_err(malformed)?) {
                    return Err(FileError::Stopped);
                }
                users += 1;
            }
            Ok(users)
        }
    }
}

fn malformed(error: serde_json::Error) -> FileError {
    let message = error.to_string();
    if message.starts_with(STOP) {
        return FileError::Stopped;
    }
    FileError::Malformed(format!(
        "line {}, column {}: {}",
        error.line(),
        error.column(),
        strip_position(&message)
    ))
}

/// serde_json's message without its own " at line L column C".
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    }
}

/// The first value of a file: a Graph page (its users handed over as they are read) or the first
/// user of JSON lines.
enum First {
    Page(u64),
    User(Box<GraphUser>),
}

struct FirstValue<'a> {
    each: &'a mut dyn FnMut(GraphUser) -> bool,
}

impl<'de> DeserializeSeed<'de> for FirstValue<'_> {
    type Value = First;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<First, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstValue<'_> {
    type Value = First;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Graph page of users or a user object (JSON lines)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<First, A::Error> {
        let mut users = None;
        let mut odata = false;
        // The properties of a user, when the file is JSON lines.
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "value" {
                let seed = Users {
                    each: &mut *self.each,
                };
                users = Some(map.next_value_seed(seed)?);
            } else if key.starts_with("@odata.") {
                odata = true;
                map.next_value::<IgnoredAny>()?;
            } else {
                fields.insert(key, map.next_value()?);
            }
        }
        match users {
            Some(users) => Ok(First::Page(users)),
            None if odata => Err(de::Error::custom("a Graph page without \"value\"")),
            None => GraphUser::deserialize(serde_json::Value::Object(fields))
                .map(|user| First::User(Box::new(user)))
                .map_err(|e| de::Error::custom(format!("a user object: {e}"))),
        }
    }
}

/// The `value` array of a page, handed over user by user.
struct Users<'a> {
    each: &'a mut dyn FnMut(GraphUser) -> bool,
}

impl<'de> DeserializeSeed<'de> for Users<'_> {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Users<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of user objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut users = 0;
        while let Some(user) = seq.next_element::<GraphUser>()? {
            if !(self.each)(user) {
                return Err(de::Error::custom(STOP));
            }
            users += 1;
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users_of(text: &str) -> Result<Vec<GraphUser>, FileError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        std::fs::write(&path, text).unwrap();
        let mut users = Vec::new();
        let count = read_users(&path, |user| {
            users.push(user);
            true
        })?;
        assert_eq!(count as usize, users.len());
        Ok(users)
    }

    #[test]
    fn a_graph_page_gives_its_users_in_order() {
        let page = r#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(id,mail)",
            "value":[{"id":"a","mail":"A@example.com","userPrincipalName":"x"},{"id":"b","identities":[]}],
            "@odata.nextLink":"https://graph.microsoft.com/v1.0/users?$skiptoken=x"}"#;
        let users = users_of(page).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].id.as_deref(), Some("a"));
        assert_eq!(users[0].mail.as_deref(), Some("A@example.com"));
        assert_eq!(users[1].identities.as_ref().map(Vec::len), Some(0));
    }

    #[test]
    fn json_lines_give_their_users_and_a_blank_file_none() {
        let lines = "{\"id\":\"a\",\"otherMails\":[\"a@example.com\"]}\n{\"mail\":null}\n";
        let users = users_of(lines).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].id, None);
        assert!(users_of(" \n").unwrap().is_empty());
    }

    #[test]
    fn a_malformed_file_names_the_line_and_column() {
        let error = users_of("{\"id\":\"a\"}\n{\"id\":\"b\",\n").unwrap_err();
        assert!(
            matches!(&error, FileError::Malformed(m) if m.starts_with("line 3, column 0")),
            "{error}"
        );
        let error = users_of("{\"value\":[{\"id\":\"a\"},{\"id\":7}]}").unwrap_err();
        assert!(
            matches!(&error, FileError::Malformed(m) if m.starts_with("line 1, column ")),
            "{error}"
        );
        let error = users_of("[1,2]").unwrap_err();
        assert!(matches!(error, FileError::Malformed(_)), "{error}");
        let error = users_of("{\"@odata.context\":\"x\"}").unwrap_err();
        assert!(matches!(error, FileError::Malformed(_)), "{error}");
        let error = users_of("{\"value\":[]} trailing").unwrap_err();
        assert!(matches!(error, FileError::Malformed(_)), "{error}");
    }

    #[test]
    fn the_caller_can_stop_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page.json");
        std::fs::write(&path, r#"{"value":[{"id":"a"},{"id":"b"}]}"#).unwrap();
        let mut seen = 0;
        let result = read_users(&path, |_| {
            seen += 1;
            false
        });
        assert!(matches!(result, Err(FileError::Stopped)));
        assert_eq!(seen, 1);
    }
}
