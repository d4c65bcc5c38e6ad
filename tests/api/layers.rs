//! The layers of `src/` point down: the HTTP layer and the command line use the administration
//! and the linking service, which use storage, which uses the domain; nothing below reaches up.
//! Read from the source (every `crate::` path outside comments), so that an import that closes a
//! cycle fails here rather than in a review.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules each module may not name.
const FORBIDDEN: [(&str, &[&str]); 6] = [
    (
        "domain",
        &[
            "storage", "linking", "admin", "api", "metrics", "cli", "startup",
        ],
    ),
    (
        "storage",
        &["linking", "admin", "api", "metrics", "cli", "startup"],
    ),
    ("linking", &["admin", "api", "cli", "startup"]),
    ("admin", &["api", "cli", "startup"]),
    // `linking` counts its decisions in `metrics`, which reads them in the domain's terms.
    ("metrics", &["linking", "admin", "api", "cli", "startup"]),
    ("api", &["cli", "startup"]),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules a module names, with one place each names it.
fn named_by(module: &str) -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(module), &mut files);
    rust_files(&src.join(format!("{module}.rs")), &mut files);
    assert!(!files.is_empty(), "no source for module {module}");
    let mut named = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split(['}', ','])
                        .map(|n| n.trim().split("::").next().unwrap_or_default())
                        .collect(),
                    None => vec![rest
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or_default()],
                };
                for name in names.into_iter().filter(|n| !n.is_empty()) {
                    let place = format!("{}:{}", file.display(), number + 1);
                    named.push((name.to_string(), place));
                }
            }
        }
    }
    named
}

#[test]
fn no_module_names_a_layer_above_it() {
    let mut violations = BTreeSet::new();
    for (module, forbidden) in FORBIDDEN {
        for (name, place) in named_by(module) {
            if forbidden.contains(&name.as_str()) {
                violations.insert(format!("{place}: {module} names crate::{name}"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_reader_sees_imports_in_every_form() {
    // The check is only as good as its reader: it must see each of the three forms used here.
    let api = named_by("api");
    for expected in ["admin", "linking", "domain"] {
        assert!(api.iter().any(|(n, _)| n == expected), "{expected}");
    }
    let cli = named_by("cli");
    assert!(cli.iter().any(|(n, _)| n == "startup"));
}
