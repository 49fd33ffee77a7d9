//! `GET /openapi.json`: it covers every route the node serves, and schemathesis (installed
//! from PyPI into a cached virtualenv by `hack/test-tools.sh`) fuzzing a running node from
//! it finds no 5xx, no response the document does not describe, and no schema-valid request
//! refused without a reason the document gives.

mod support;

use std::collections::BTreeSet;

use support::cluster::repo_root;
use support::node::{NodeOptions, TestNode};
use support::tools::test_tool;

/// The `(METHOD, path)` of every `.route(...)` in the files that build the node's router.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for file in [
        "src/node/mod.rs",
        "src/node/data.rs",
        "src/node/admin.rs",
        "src/sync/server.rs",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for (start, _) in text.match_indices(".route(") {
            let call = &text[start + ".route(".len()..];
            // The call's text up to its closing parenthesis.
            let mut depth = 1;
            let end = call
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let call = &call[..end];
            let path = call.split('"').nth(1).unwrap().to_string();
            for method in ["get", "put", "post", "delete"] {
                let used = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0
                        || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && call.as_bytes()[i - 1] != b'_'
                });
                if used {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_covers_every_route_and_needs_no_token() {
    let node = TestNode::start(
        "openapi",
        1,
        NodeOptions {
            token: Some("sync-secret".into()),
            ..Default::default()
        },
    )
    .await;
    let resp = node
        .request_without_token("GET", "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served = routes_in_source();
    assert!(served.len() >= 20, "found too few routes: {served:?}");
    assert_eq!(
        documented, served,
        "the OpenAPI paths and the routes differ"
    );

    // Every operation behind a token says so, and says what an error looks like.
    for (method, path) in &served {
        let op = &doc["paths"][path][method.to_lowercase()];
        let open = op["security"].as_array().is_some_and(|s| s.is_empty());
        assert_eq!(
            open,
            rag_sync::auth::OPEN_PATHS.contains(&path.as_str()),
            "{method} {path}: security"
        );
        if !open {
            assert_eq!(
                op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}"
            );
        }
    }
}

/// Every route but those that make the node dial out (`PUT /admin/config` sets peers,
/// `POST /admin/sync` calls them), with every check but `negative_data_rejection`: serde
/// reads a JSON array as a struct of the same fields in order, so a few schema-invalid
/// bodies are accepted as their equivalent object.
#[tokio::test]
async fn schemathesis_finds_no_failure() {
    let bin = test_tool("schemathesis");
    let admin = "admin-secret";
    let node = TestNode::start(
        "fuzzed",
        2,
        NodeOptions {
            token: Some("sync-secret".into()),
            admin_token: Some(admin.into()),
            ..Default::default()
        },
    )
    .await;
    let seed = std::env::var("RAGSYNC_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let work = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&bin)
        .current_dir(work.path())
        .arg("--no-color")
        .arg("--config-file")
        .arg(repo_root().join("tests/fixtures/schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", node.url()))
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "negative_data_rejection",
        ])
        .args(["--exclude-name", "PUT /admin/config"])
        .args(["--exclude-name", "POST /admin/sync"])
        .args(["--max-examples", "40", "--seed", &seed])
        .args(["--generation-database", "none", "--workers", "1"])
        .args(["--request-timeout", "10"])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{report}\nnode log:\n{}",
        node.log_text()
    );
    let tested = report
        .lines()
        .find(|l| l.trim_start().starts_with("Tested:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        tested.contains("20"),
        "every route but two tested: {tested}\n{report}"
    );
    eprintln!(
        "{}",
        report
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
