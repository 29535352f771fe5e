//! The layer rules of ARCHITECTURE.md, checked on the source text: each rule names what a
//! layer may not contain, and every file that breaks one is listed.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its code (comment lines left out: they may name what
/// the code may not use).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                let code: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                out.push((path, code.join("\n")));
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The files under `src/<inside>` (or outside it, with `outside`) whose text contains any of
/// `needles`, with the needle found.
fn offenders(inside: &str, outside: bool, needles: &[&str]) -> Vec<String> {
    let root = src();
    let layer = root.join(inside);
    sources(&root)
        .into_iter()
        .filter(|(p, _)| p.starts_with(&layer) != outside)
        .flat_map(|(p, text)| {
            needles
                .iter()
                .filter(|n| text.contains(*n))
                .map(|n| format!("{} contains {n:?}", p.display()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn vsphere_wire_names_live_only_in_vsphere() {
    // SOAP task methods and the raw property API (property paths are its arguments).
    let found = offenders(
        "vsphere",
        true,
        &[
            "_Task\"",
            ".properties(",
            ".retrieve_all(",
            ".read_batched(",
            "retrieve_in_view(",
            "PropertySpec::new(",
            "ObjectContent",
        ],
    );
    assert!(
        found.is_empty(),
        "vSphere method names and property paths belong in src/vsphere (add a typed helper there):\n{}",
        found.join("\n")
    );
}

#[test]
fn framework_knows_neither_vsphere_nor_the_protocol() {
    let found = offenders(
        "framework",
        false,
        &["crate::vsphere", "crate::protocol", "prost::", "tonic::"],
    );
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn only_protocol_sees_prost() {
    let found = offenders("protocol", true, &["prost::", "tonic::", "tfplugin5::"]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn shared_session_helpers_import_no_resource() {
    let found = offenders(
        "session",
        false,
        &[
            "crate::resources",
            "crate::data_sources",
            "crate::actions",
            "crate::provider",
        ],
    );
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn resources_and_data_sources_import_no_provider() {
    let mut found = offenders("resources", false, &["crate::provider"]);
    found.extend(offenders("data_sources", false, &["crate::provider"]));
    found.extend(offenders("actions", false, &["crate::provider"]));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_engines_know_neither_vsphere_nor_terraform() {
    let found = offenders(
        "engine/placement",
        false,
        &["crate::vsphere", "crate::framework", "crate::cty"],
    );
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn resources_share_through_vsphere_or_session_not_each_other() {
    let root = src();
    let mut found = Vec::new();
    for (p, code) in sources(&root.join("resources")) {
        let own = p
            .strip_prefix(root.join("resources"))
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .unwrap_or_default();
        for (i, _) in code.match_indices("crate::resources::") {
            let named = code[i + "crate::resources::".len()..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default();
            if named != own {
                found.push(format!("{} uses crate::resources::{named}", p.display()));
            }
        }
        if code.contains("crate::data_sources") {
            found.push(format!("{} uses crate::data_sources", p.display()));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn vsphere_wire_plumbing_uses_no_managed_object_helper() {
    let root = src();
    let allowed = [
        "batch",
        "envelope",
        "methods",
        "property",
        "task",
        "transport",
        "xml",
        "client",
        "error",
        "types",
        "tls",
        "secret",
        "fixtures_test",
    ];
    let mut found = Vec::new();
    for (p, code) in sources(&root.join("vsphere/wire")) {
        for (i, _) in code.match_indices("crate::vsphere::") {
            let named = code[i + "crate::vsphere::".len()..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default();
            if !allowed.contains(&named) {
                found.push(format!("{} uses crate::vsphere::{named}", p.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
