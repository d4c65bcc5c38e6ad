//! Channels (online stores) and how a request's client id finds its channel.

use std::collections::HashMap;

use super::refusal::Refusal;

/// Whether a channel sells to businesses or to consumers; it selects a column of the rules table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CustomerType {
    /// Business buyers: only `is_b2b` customers are candidates and nothing is ever created.
    B2B,
    /// Consumers: a new customer is created when none matches.
    B2C,
}

/// One online store.
#[derive(Debug, Clone)]
pub struct Channel {
    /// The channel's id in the configuration (appears in logs and the audit).
    pub id: String,
    /// The legal entity (Commerce data area) whose customers are candidates; upper-case.
    pub legal_entity: String,
    /// B2B or B2C.
    pub customer_type: CustomerType,
    /// The relying-party application client ids that belong to this channel.
    pub client_ids: Vec<String>,
    /// Overrides the environment-wide linking switch for this channel when set.
    pub linking_enabled: Option<bool>,
}

impl Channel {
    /// Whether automatic linking applies on this channel, given the environment-wide switch.
    pub fn linking_enabled(&self, environment_switch: bool) -> bool {
        self.linking_enabled.unwrap_or(environment_switch)
    }
}

/// All channels, indexed by client id, with the optional default channel.
#[derive(Debug, Clone)]
pub struct ChannelDirectory {
    channels: Vec<Channel>,
    by_client_id: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    default: Option<usize>,
}

/// A configuration mistake found while building the directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelConfigError {
    /// Two channels share an id.
    #[error("channel id {0:?} is used twice")]
    DuplicateId(String),
    /// Two channels claim one client id.
    #[error("client id {0:?} belongs to two channels")]
    DuplicateClientId(String),
    /// `default_channel` names no channel.
    #[error("default_channel {0:?} is not a configured channel")]
    UnknownDefault(String),
}

impl ChannelDirectory {
    /// Builds the directory. Client ids compare case-insensitively (they are GUIDs).
    pub fn new(channels: Vec<Channel>, default: Option<&str>) -> Result<Self, ChannelConfigError> {
        let mut by_client_id = HashMap::new();
        let mut by_id = HashMap::new();
        for (index, channel) in channels.iter().enumerate() {
            if by_id.insert(channel.id.clone(), index).is_some() {
                return Err(ChannelConfigError::DuplicateId(channel.id.clone()));
            }
            for client_id in &channel.client_ids {
                let key = client_id.trim().to_ascii_lowercase();
                if by_client_id.insert(key, index).is_some() {
                    return Err(ChannelConfigError::DuplicateClientId(client_id.clone()));
                }
            }
        }
        let default = match default {
            Some(id) => Some(
                *by_id
                    .get(id)
                    .ok_or_else(|| ChannelConfigError::UnknownDefault(id.to_string()))?,
            ),
            None => None,
        };
        Ok(Self {
            channels,
            by_client_id,
            by_id,
            default,
        })
    }

    /// The channel a request belongs to: its client id's channel, else the default channel, else
    /// the request is refused with `UnknownChannel`.
    pub fn resolve(&self, client_id: Option<&str>) -> Result<&Channel, Refusal> {
        let found = client_id
            .map(|id| id.trim().to_ascii_lowercase())
            .and_then(|id| self.by_client_id.get(&id).copied())
            .or(self.default);
        found
            .map(|index| &self.channels[index])
            .ok_or(Refusal::UnknownChannel)
    }

    /// A channel by its configured id.
    pub fn by_id(&self, id: &str) -> Option<&Channel> {
        self.by_id.get(id).map(|&index| &self.channels[index])
    }

    /// Every channel, in configuration order.
    pub fn all(&self) -> &[Channel] {
        &self.channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str, client_ids: &[&str]) -> Channel {
        Channel {
            id: id.into(),
            legal_entity: "USRT".into(),
            customer_type: CustomerType::B2C,
            client_ids: client_ids.iter().map(|s| s.to_string()).collect(),
            linking_enabled: None,
        }
    }

    #[test]
    fn resolves_a_client_id_case_insensitively() {
        let dir = ChannelDirectory::new(vec![channel("web", &["ABC-1"])], None).unwrap();
        assert_eq!(dir.resolve(Some("abc-1")).unwrap().id, "web");
    }

    #[test]
    fn an_unknown_client_id_is_refused_without_a_default() {
        let dir = ChannelDirectory::new(vec![channel("web", &["abc"])], None).unwrap();
        assert_eq!(
            dir.resolve(Some("other")).unwrap_err(),
            Refusal::UnknownChannel
        );
        assert_eq!(dir.resolve(None).unwrap_err(), Refusal::UnknownChannel);
    }

    #[test]
    fn an_unknown_client_id_uses_the_default_channel() {
        let dir = ChannelDirectory::new(
            vec![channel("web", &["abc"]), channel("b2b", &["def"])],
            Some("b2b"),
        )
        .unwrap();
        assert_eq!(dir.resolve(Some("other")).unwrap().id, "b2b");
        assert_eq!(dir.resolve(None).unwrap().id, "b2b");
        assert_eq!(dir.resolve(Some("abc")).unwrap().id, "web");
    }

    #[test]
    fn configuration_mistakes_are_reported() {
        assert!(matches!(
            ChannelDirectory::new(vec![channel("a", &["x"]), channel("b", &["X"])], None),
            Err(ChannelConfigError::DuplicateClientId(_))
        ));
        assert!(matches!(
            ChannelDirectory::new(vec![channel("a", &[]), channel("a", &[])], None),
            Err(ChannelConfigError::DuplicateId(_))
        ));
        assert!(matches!(
            ChannelDirectory::new(vec![channel("a", &[])], Some("b")),
            Err(ChannelConfigError::UnknownDefault(_))
        ));
    }

    #[test]
    fn a_channel_override_beats_the_environment_switch() {
        let mut c = channel("web", &[]);
        assert!(c.linking_enabled(true));
        c.linking_enabled = Some(false);
        assert!(!c.linking_enabled(true));
        c.linking_enabled = Some(true);
        assert!(c.linking_enabled(false));
    }
}
