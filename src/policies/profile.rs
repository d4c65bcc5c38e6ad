//! A technical profile as B2C sees it: the sum of its definitions in every layer and of the
//! profile it includes.

use super::xml::{child, children};

/// A claim as a technical profile uses it (`InputClaim`, `OutputClaim`, `PersistedClaim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    /// `ClaimTypeReferenceId`.
    pub claim_type: String,
    /// `PartnerClaimType`: the name on the wire, when it differs from the claim type.
    pub partner_claim_type: Option<String>,
    /// `DefaultValue`.
    pub default_value: Option<String>,
    /// `AlwaysUseDefaultValue`.
    pub always_use_default_value: bool,
    /// `Required`.
    pub required: bool,
}

impl ClaimRef {
    /// The name on the wire: the partner claim type, or else the claim type.
    pub fn partner_name(&self) -> &str {
        self.partner_claim_type
            .as_deref()
            .unwrap_or(&self.claim_type)
    }

    fn from_node(node: roxmltree::Node<'_, '_>) -> Option<ClaimRef> {
        Some(ClaimRef {
            claim_type: node.attribute("ClaimTypeReferenceId")?.to_string(),
            partner_claim_type: node.attribute("PartnerClaimType").map(str::to_string),
            default_value: node.attribute("DefaultValue").map(str::to_string),
            always_use_default_value: node.attribute("AlwaysUseDefaultValue") == Some("true"),
            required: node.attribute("Required") == Some("true"),
        })
    }
}

/// A technical profile as B2C runs it: the sum of its definitions in every layer (lower layers
/// first, higher layers override) on top of the profile it includes.
///
/// Merge rules: `Protocol`, `DisplayName`, the include and the session-management profile are
/// replaced by a later definition; metadata items merge by `Key`, keys by `Id`, claims by claim
/// type (ignoring case, as B2C does), replaced in place or appended; claims transformations are
/// appended once each; validation technical profiles of a later definition run *before* the
/// earlier ones (B2C puts an extension's validation profiles at the top of the base's list).
#[derive(Debug, Clone, Default)]
pub struct TechnicalProfile {
    /// `Id`.
    pub id: String,
    /// `DisplayName`.
    pub display_name: Option<String>,
    /// `Protocol/@Name`.
    pub protocol: Option<String>,
    /// `Protocol/@Handler`.
    pub handler: Option<String>,
    /// `Metadata/Item`: key and value, in order.
    pub metadata: Vec<(String, String)>,
    /// `CryptographicKeys/Key`: id and storage reference id.
    pub cryptographic_keys: Vec<(String, String)>,
    /// `InputClaimsTransformations`.
    pub input_claims_transformations: Vec<String>,
    /// `InputClaims`.
    pub input_claims: Vec<ClaimRef>,
    /// `PersistedClaims`.
    pub persisted_claims: Vec<ClaimRef>,
    /// `OutputClaims`.
    pub output_claims: Vec<ClaimRef>,
    /// `OutputClaimsTransformations`.
    pub output_claims_transformations: Vec<String>,
    /// `ValidationTechnicalProfiles`, in the order they run.
    pub validation_technical_profiles: Vec<String>,
    /// `IncludeTechnicalProfile` of its own definitions (not of what it includes).
    pub include: Option<String>,
    /// `UseTechnicalProfileForSessionManagement`.
    pub session_management: Option<String>,
    /// The policies that define it, lowest first (not counting what it includes).
    pub defined_in: Vec<String>,
}

impl TechnicalProfile {
    /// A metadata item.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The RESTful provider's handler marks a REST call.
    pub fn is_restful(&self) -> bool {
        self.handler
            .as_deref()
            .is_some_and(|h| h.starts_with("Web.TPEngine.Providers.RestfulProvider"))
    }

    fn merge_claims(into: &mut Vec<ClaimRef>, from: Vec<ClaimRef>) {
        for claim in from {
            match into
                .iter_mut()
                .find(|c| c.claim_type.eq_ignore_ascii_case(&claim.claim_type))
            {
                Some(existing) => *existing = claim,
                None => into.push(claim),
            }
        }
    }

    fn merge_pairs(into: &mut Vec<(String, String)>, from: Vec<(String, String)>) {
        for (key, value) in from {
            match into.iter_mut().find(|(k, _)| *k == key) {
                Some(existing) => existing.1 = value,
                None => into.push((key, value)),
            }
        }
    }

    fn merge_list(into: &mut Vec<String>, from: Vec<String>) {
        for item in from {
            if !into.contains(&item) {
                into.push(item);
            }
        }
    }

    /// Applies one definition (`node`, a `TechnicalProfile` element) on top of this one.
    pub(super) fn apply(&mut self, node: roxmltree::Node<'_, '_>) {
        let claims = |list: &str, item: &str| -> Vec<ClaimRef> {
            child(node, list)
                .map(|l| children(l, item).filter_map(ClaimRef::from_node).collect())
                .unwrap_or_default()
        };
        let references = |list: &str, item: &str| -> Vec<String> {
            children(node, list)
                .flat_map(|l| children(l, item))
                .filter_map(|n| n.attribute("ReferenceId").map(str::to_string))
                .collect()
        };
        if let Some(name) = child(node, "DisplayName").and_then(|n| n.text()) {
            self.display_name = Some(name.trim().to_string());
        }
        if let Some(protocol) = child(node, "Protocol") {
            self.protocol = protocol.attribute("Name").map(str::to_string);
            self.handler = protocol.attribute("Handler").map(str::to_string);
        }
        if let Some(metadata) = child(node, "Metadata") {
            let items = children(metadata, "Item")
                .filter_map(|n| {
                    Some((
                        n.attribute("Key")?.to_string(),
                        n.text().unwrap_or("").trim().to_string(),
                    ))
                })
                .collect();
            Self::merge_pairs(&mut self.metadata, items);
        }
        if let Some(keys) = child(node, "CryptographicKeys") {
            let keys = children(keys, "Key")
                .filter_map(|n| {
                    Some((
                        n.attribute("Id")?.to_string(),
                        n.attribute("StorageReferenceId").unwrap_or("").to_string(),
                    ))
                })
                .collect();
            Self::merge_pairs(&mut self.cryptographic_keys, keys);
        }
        Self::merge_list(
            &mut self.input_claims_transformations,
            references("InputClaimsTransformations", "InputClaimsTransformation"),
        );
        Self::merge_claims(&mut self.input_claims, claims("InputClaims", "InputClaim"));
        Self::merge_claims(
            &mut self.persisted_claims,
            claims("PersistedClaims", "PersistedClaim"),
        );
        Self::merge_claims(
            &mut self.output_claims,
            claims("OutputClaims", "OutputClaim"),
        );
        Self::merge_list(
            &mut self.output_claims_transformations,
            references("OutputClaimsTransformations", "OutputClaimsTransformation"),
        );
        let mut validation =
            references("ValidationTechnicalProfiles", "ValidationTechnicalProfile");
        if !validation.is_empty() {
            for earlier in std::mem::take(&mut self.validation_technical_profiles) {
                if !validation.contains(&earlier) {
                    validation.push(earlier);
                }
            }
            self.validation_technical_profiles = validation;
        }
        if let Some(id) =
            child(node, "IncludeTechnicalProfile").and_then(|n| n.attribute("ReferenceId"))
        {
            self.include = Some(id.to_string());
        }
        if let Some(id) = child(node, "UseTechnicalProfileForSessionManagement")
            .and_then(|n| n.attribute("ReferenceId"))
        {
            self.session_management = Some(id.to_string());
        }
    }
}
