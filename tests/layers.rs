//! Every import in the library points down a layer (see the list in src/lib.rs): a module
//! may use only modules of lower layers, so the operator never reaches into a node's store,
//! the wire never depends on the sync code that speaks it, and so on.

use std::path::{Path, PathBuf};

/// The library's top-level modules, lowest layer first; modules in one layer may not use
/// each other.
const LAYERS: &[&[&str]] = &[
    &["hlc", "logging", "reload", "shutdown"],
    &["error", "model"],
    &["auth", "config", "http", "tls"],
    &["wire"],
    &["merge"],
    &["store"],
    &["sync"],
    &["node", "operator"],
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/layers.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().unwrap() != "bin" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source line names as `crate::<module>`.
fn used_modules(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &line[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn imports_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Tests may build on anything.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            for used in used_modules(line) {
                if used != module && layer(used) >= layer(module) {
                    wrong.push(format!("{}:{}: {module} uses {used}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_a_wrong_import() {
    assert_eq!(
        used_modules("use crate::store::{Store, X}; crate::wire::Y"),
        ["store", "wire"]
    );
    assert!(layer("store") > layer("wire"));
    assert_eq!(layer("node"), layer("operator"));
}
