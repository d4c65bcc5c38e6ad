//! Reading policy XML with roxmltree: parsing as B2C accepts it, lines, and elements of the
//! policy namespace.

use std::path::Path;

use super::{PolicyError, POLICY_NAMESPACE};

/// Parses XML the way B2C accepts it (a byte-order mark is allowed).
pub fn parse_xml<'a>(path: &Path, text: &'a str) -> Result<roxmltree::Document<'a>, PolicyError> {
    roxmltree::Document::parse(text.trim_start_matches('\u{feff}'))
        .map_err(|e| PolicyError::at(path, Some(e.pos().row), format!("not well-formed XML: {e}")))
}

/// The 1-based line of a node. (Lines count from the text after a byte-order mark, which is
/// on the first line, so they are the file's lines.)
pub fn line_of(doc: &roxmltree::Document<'_>, node: roxmltree::Node<'_, '_>) -> u32 {
    doc.text_pos_at(node.range().start).row
}

/// True for an element of the policy namespace with this local name.
pub fn is_policy(node: &roxmltree::Node<'_, '_>, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && node.tag_name().namespace() == Some(POLICY_NAMESPACE)
}

/// The first child element of the policy namespace with this name.
pub fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| is_policy(n, name))
}

/// Child elements of the policy namespace with this name.
pub fn children<'a, 'i: 'a>(
    node: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    node.children().filter(move |n| is_policy(n, name))
}
