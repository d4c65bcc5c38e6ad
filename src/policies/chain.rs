//! Reading a chain of policy files: the layers put in the order B2C needs (root first), and
//! the technical profiles they define together.

use std::path::{Path, PathBuf};

use super::profile::TechnicalProfile;
use super::xml::{child, is_policy, line_of, parse_xml};
use super::{Location, PolicyError};

/// One policy file: its text and the identity B2C gives it.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// `PolicyId`.
    pub policy_id: String,
    /// `TenantId` of the root element.
    pub tenant_id: String,
    /// `BasePolicy/PolicyId`, when it has a base.
    pub base_policy: Option<String>,
    /// `BasePolicy/TenantId`, when it has a base.
    pub base_tenant: Option<String>,
}

impl PolicyFile {
    /// Reads a policy file.
    pub fn read(path: &Path) -> Result<PolicyFile, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
        Self::parse(path, text)
    }

    /// Parses a policy's text; `path` is only for messages.
    pub fn parse(path: &Path, text: String) -> Result<PolicyFile, PolicyError> {
        let (policy_id, tenant_id, base_policy, base_tenant) = {
            let doc = parse_xml(path, &text)?;
            let root = doc.root_element();
            if !is_policy(&root, "TrustFrameworkPolicy") {
                return Err(PolicyError::at(
                    path,
                    Some(line_of(&doc, root)),
                    "the root element is not a TrustFrameworkPolicy",
                ));
            }
            let policy_id = root
                .attribute("PolicyId")
                .ok_or_else(|| PolicyError::at(path, Some(1), "no PolicyId"))?
                .to_string();
            let tenant_id = root.attribute("TenantId").unwrap_or("").to_string();
            let base = child(root, "BasePolicy");
            let text_of = |name: &str| {
                base.and_then(|b| child(b, name))
                    .and_then(|n| n.text())
                    .map(|t| t.trim().to_string())
            };
            (
                policy_id,
                tenant_id,
                text_of("PolicyId"),
                text_of("TenantId"),
            )
        };
        Ok(PolicyFile {
            path: path.to_path_buf(),
            text,
            policy_id,
            tenant_id,
            base_policy,
            base_tenant,
        })
    }
}

/// Policy files layered through `BasePolicy`, root first: the order B2C needs them uploaded in,
/// and the order in which later layers override earlier ones.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Root (no base) first, leaf (usually the relying party) last.
    pub layers: Vec<PolicyFile>,
}

/// The technical profiles of a policy document (those under `ClaimsProviders`, and the relying
/// party's).
fn technical_profile_nodes<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    doc.descendants().filter(|n| {
        is_policy(n, "TechnicalProfile")
            && n.parent().is_some_and(|p| {
                is_policy(&p, "TechnicalProfiles") || is_policy(&p, "RelyingParty")
            })
    })
}

impl Chain {
    /// Reads policy files and orders them (see [`Chain::from_files`]).
    pub fn read(paths: &[PathBuf]) -> Result<Chain, PolicyError> {
        let files = paths
            .iter()
            .map(|p| PolicyFile::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_files(files)
    }

    /// Orders policy files into one chain, root first. Every file must be part of it: exactly one
    /// file is no other file's base (the leaf), each `BasePolicy` names a file of the set, policy
    /// ids are unique, and there is no cycle.
    pub fn from_files(files: Vec<PolicyFile>) -> Result<Chain, PolicyError> {
        Self::ordered(files, false)
    }

    /// Like [`Chain::from_files`], but the root may sit on a base policy that is not among the
    /// files (the project's layers without Microsoft's starter pack below them). What the
    /// missing layers define is unknown to such a chain.
    pub fn above_missing_base(files: Vec<PolicyFile>) -> Result<Chain, PolicyError> {
        Self::ordered(files, true)
    }

    fn ordered(files: Vec<PolicyFile>, open_root: bool) -> Result<Chain, PolicyError> {
        for (i, file) in files.iter().enumerate() {
            if let Some(other) = files[..i].iter().find(|f| f.policy_id == file.policy_id) {
                return Err(PolicyError::at(
                    &file.path,
                    None,
                    format!(
                        "policy id {} is also the id of {}",
                        file.policy_id,
                        other.path.display()
                    ),
                ));
            }
        }
        let leaves: Vec<&PolicyFile> = files
            .iter()
            .filter(|f| {
                !files
                    .iter()
                    .any(|g| g.base_policy.as_deref() == Some(f.policy_id.as_str()))
            })
            .collect();
        let leaf = match leaves.as_slice() {
            [leaf] => (*leaf).clone(),
            _ => {
                let names: Vec<String> = leaves.iter().map(|f| f.policy_id.clone()).collect();
                return Err(PolicyError::At {
                    location: Location {
                        path: files.first().map(|f| f.path.clone()).unwrap_or_default(),
                        line: None,
                    },
                    message: format!(
                        "the files do not form one chain: {} policies are no other's base ({})",
                        names.len(),
                        names.join(", ")
                    ),
                });
            }
        };
        let mut layers = vec![leaf];
        while let Some(base) = layers.last().and_then(|l| l.base_policy.clone()) {
            let Some(file) = files.iter().find(|f| f.policy_id == base) else {
                if open_root {
                    break;
                }
                let top = layers.last().map(|l| l.path.clone()).unwrap_or_default();
                return Err(PolicyError::at(
                    &top,
                    None,
                    format!("its base policy {base} is not among the files"),
                ));
            };
            if layers.iter().any(|l| l.policy_id == base) || layers.len() > files.len() {
                return Err(PolicyError::at(
                    &file.path,
                    None,
                    format!("the chain of base policies loops through {base}"),
                ));
            }
            layers.push(file.clone());
        }
        if layers.len() != files.len() {
            let unused: Vec<String> = files
                .iter()
                .filter(|f| !layers.iter().any(|l| l.policy_id == f.policy_id))
                .map(|f| f.path.display().to_string())
                .collect();
            return Err(PolicyError::at(
                &layers[0].path,
                None,
                format!("files outside the chain: {}", unused.join(", ")),
            ));
        }
        layers.reverse();
        Ok(Chain { layers })
    }

    /// The `DataType` of a claim type declared in the chain (`string`, `boolean`, ...), the
    /// highest layer winning; `None` when no layer declares it.
    pub fn claim_data_type(&self, id: &str) -> Result<Option<String>, PolicyError> {
        let mut found = None;
        for layer in &self.layers {
            let doc = parse_xml(&layer.path, &layer.text)?;
            for node in doc.descendants().filter(|n| {
                is_policy(n, "ClaimType")
                    && n.attribute("Id") == Some(id)
                    && n.parent().is_some_and(|p| is_policy(&p, "ClaimsSchema"))
            }) {
                if let Some(t) = child(node, "DataType").and_then(|d| d.text()) {
                    found = Some(t.trim().to_string());
                }
            }
        }
        Ok(found)
    }

    /// The leaf policy (usually the relying party).
    pub fn leaf(&self) -> Option<&PolicyFile> {
        self.layers.last()
    }

    /// Every technical profile id defined anywhere in the chain, in first-definition order.
    pub fn technical_profile_ids(&self) -> Result<Vec<String>, PolicyError> {
        let mut ids: Vec<String> = Vec::new();
        for layer in &self.layers {
            let doc = parse_xml(&layer.path, &layer.text)?;
            for node in technical_profile_nodes(&doc) {
                if let Some(id) = node.attribute("Id") {
                    if !ids.iter().any(|i| i == id) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        Ok(ids)
    }

    /// The technical profile `id` as B2C runs it, or `None` when no layer defines it. An include
    /// that does not resolve, or loops, is an error.
    pub fn technical_profile(&self, id: &str) -> Result<Option<TechnicalProfile>, PolicyError> {
        self.technical_profile_within(id, &mut Vec::new())
    }

    /// The technical profile `id` as its own definitions say, its include not resolved (a
    /// chain above a missing base cannot resolve an include of the base), or `None`.
    pub fn own_technical_profile(&self, id: &str) -> Result<Option<TechnicalProfile>, PolicyError> {
        let mut own = TechnicalProfile {
            id: id.to_string(),
            ..TechnicalProfile::default()
        };
        for layer in &self.layers {
            let doc = parse_xml(&layer.path, &layer.text)?;
            for node in technical_profile_nodes(&doc).filter(|n| n.attribute("Id") == Some(id)) {
                own.apply(node);
                if own.defined_in.last() != Some(&layer.policy_id) {
                    own.defined_in.push(layer.policy_id.clone());
                }
            }
        }
        Ok((!own.defined_in.is_empty()).then_some(own))
    }

    fn technical_profile_within(
        &self,
        id: &str,
        including: &mut Vec<String>,
    ) -> Result<Option<TechnicalProfile>, PolicyError> {
        // Its own definitions, lowest layer first, to find the include.
        let Some(own) = self.own_technical_profile(id)? else {
            return Ok(None);
        };
        let mut docs = Vec::new();
        for layer in &self.layers {
            docs.push((layer, parse_xml(&layer.path, &layer.text)?));
        }
        let Some(include) = own.include.clone() else {
            return Ok(Some(own));
        };
        if including.contains(&include) || include == id {
            return Err(PolicyError::at(
                &self.layers[0].path,
                None,
                format!("technical profile {id} includes {include}, which includes it again"),
            ));
        }
        including.push(id.to_string());
        let base = self.technical_profile_within(&include, including)?;
        including.pop();
        let Some(mut merged) = base else {
            return Err(PolicyError::at(
                &self.layers[0].path,
                None,
                format!("technical profile {id} includes {include}, which no layer defines"),
            ));
        };
        // The included profile is the base; this profile's definitions apply on top of it.
        merged.id = id.to_string();
        merged.display_name = None;
        merged.include = None;
        merged.defined_in = Vec::new();
        for (layer, doc) in &docs {
            for node in technical_profile_nodes(doc).filter(|n| n.attribute("Id") == Some(id)) {
                merged.apply(node);
                if merged.defined_in.last() != Some(&layer.policy_id) {
                    merged.defined_in.push(layer.policy_id.clone());
                }
            }
        }
        Ok(Some(merged))
    }
}
