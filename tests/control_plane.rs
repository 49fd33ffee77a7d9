//! The local control plane (hack/control-plane.sh) is a real Kubernetes API server: real CRD
//! validation, real watches, real server-side apply and real RBAC.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{CustomResource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use support::cluster::{client_from_kubeconfig, cluster, TestCluster};

const TIMEOUT: Duration = Duration::from_secs(30);
const CRD_NAME: &str = "widgets.harness.ragsync.io";

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.harness.ragsync.io
spec:
  group: harness.ragsync.io
  scope: Namespaced
  names:
    kind: Widget
    listKind: WidgetList
    plural: widgets
    singular: widget
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size:
                  type: integer
                  minimum: 1
                color:
                  type: string
            status:
              type: object
              properties:
                phase:
                  type: string
                observedSize:
                  type: integer
"#;

/// The test resource, typed on the Rust side; its schema is the YAML above.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "harness.ragsync.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    schema = "disabled"
)]
pub struct WidgetSpec {
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_size: Option<i64>,
}

/// Installs the Widget CRD with `kubectl apply` once per test process and waits until the API
/// server reports it Established.
fn ensure_widget_crd(c: &TestCluster) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Server-side apply: idempotent, and race-free against another process applying it.
        let args = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=rag-sync-tests",
            "-f",
            "-",
        ];
        let out = c.kubectl_as(&c.kubeconfig, &args, Some(WIDGET_CRD));
        assert!(
            out.status.success(),
            "kubectl apply of the Widget CRD failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{CRD_NAME}"),
            "--timeout=60s",
        ]);
    });
}

fn widget(name: &str, size: i64, color: Option<&str>) -> Widget {
    let mut w = Widget::new(
        name,
        WidgetSpec {
            size,
            color: color.map(str::to_string),
        },
    );
    w.metadata.labels = Some([("app".to_string(), "harness".to_string())].into());
    w
}

/// Waits (at most [`TIMEOUT`]) for the next watcher event that `pick` accepts; earlier events
/// are skipped. Panics on a watch error, the end of the stream or the timeout.
async fn next_matching<S, T>(
    stream: &mut S,
    what: &str,
    mut pick: impl FnMut(Event<Widget>) -> Option<T>,
) -> T
where
    S: Stream<Item = Result<Event<Widget>, watcher::Error>> + Unpin,
{
    let wait = async {
        loop {
            match stream.next().await {
                Some(Ok(ev)) => {
                    if let Some(found) = pick(ev) {
                        return found;
                    }
                }
                Some(Err(e)) => panic!("watch error while waiting for {what}: {e}"),
                None => panic!("the watch stream ended while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("no watch event for {what} within {TIMEOUT:?}"))
}

fn api_error_code<T: std::fmt::Debug>(res: kube::Result<T>) -> u16 {
    match res {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

#[tokio::test]
async fn cluster_is_a_local_v1_35_api_server() {
    let c = cluster().await;
    let kubeconfig = c.kubeconfig.canonicalize().unwrap();
    assert!(
        kubeconfig.ends_with("target/cluster/kubeconfig"),
        "{kubeconfig:?}"
    );
    let version = c.client.apiserver_version().await.expect("GET /version");
    // The minor version k8s-openapi's `v1_35` feature is generated for.
    assert!(
        version.git_version.starts_with("v1.35."),
        "unexpected API server version {}",
        version.git_version
    );
    assert_eq!(c.kubectl_ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    let server = c.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    assert!(
        server.starts_with("https://127.0.0.1:"),
        "the API server must listen on loopback only: {server}"
    );
    // `cluster()` is reusable: a second handle talks to the same server.
    let again = cluster().await;
    assert_eq!(again.kubeconfig, c.kubeconfig);
    again
        .client
        .apiserver_version()
        .await
        .expect("second client");
}

#[tokio::test]
async fn crd_objects_round_trip_and_the_watcher_sees_create_update_delete() {
    let c = cluster().await;
    ensure_widget_crd(&c);
    let ns = c.fresh_namespace("crd-watch").await;
    let api: Api<Widget> = Api::namespaced(c.client.clone(), &ns);

    // Watch first, and let the initial (empty) list finish, so the create arrives as a live
    // watch event.
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    next_matching(&mut events, "the initial list", |ev| {
        matches!(ev, Event::InitDone).then_some(())
    })
    .await;

    // Create with kubectl, read back with kube-rs.
    c.kubectl_apply(&format!(
        "apiVersion: harness.ragsync.io/v1\nkind: Widget\nmetadata:\n  name: gear\n  namespace: {ns}\n\
         spec:\n  size: 3\n  color: blue\n"
    ));
    let got = api.get("gear").await.expect("get the widget back");
    assert_eq!(
        got.spec,
        WidgetSpec {
            size: 3,
            color: Some("blue".into())
        }
    );
    assert_eq!(got.namespace().as_deref(), Some(ns.as_str()));
    assert!(got.uid().is_some());

    let created = next_matching(&mut events, "the create", |ev| match ev {
        Event::Apply(w) if w.name_any() == "gear" => Some(w),
        _ => None,
    })
    .await;
    assert_eq!(created.spec.size, 3);
    assert_eq!(created.uid(), got.uid());

    // Update through kube-rs.
    let patched = api
        .patch(
            "gear",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 7}})),
        )
        .await
        .expect("merge-patch the spec");
    assert_eq!(patched.spec.size, 7);
    let updated = next_matching(&mut events, "the update", |ev| match ev {
        Event::Apply(w) if w.name_any() == "gear" && w.spec.size == 7 => Some(w),
        _ => None,
    })
    .await;
    assert_eq!(updated.resource_version(), patched.resource_version());
    assert_ne!(updated.resource_version(), created.resource_version());

    // Delete.
    api.delete("gear", &DeleteParams::default())
        .await
        .expect("delete the widget");
    let deleted = next_matching(&mut events, "the delete", |ev| match ev {
        Event::Delete(w) if w.name_any() == "gear" => Some(w),
        _ => None,
    })
    .await;
    assert_eq!(deleted.uid(), got.uid());
    let gone = api.get_opt("gear").await.expect("get after delete");
    assert!(gone.is_none(), "the widget still exists: {gone:?}");
}

#[tokio::test]
async fn crd_schema_is_enforced_by_the_api_server() {
    let c = cluster().await;
    ensure_widget_crd(&c);
    let ns = c.fresh_namespace("crd-schema").await;
    let api: Api<Widget> = Api::namespaced(c.client.clone(), &ns);

    // `minimum: 1` in the CRD's schema: 422 Invalid.
    let code = api_error_code(
        api.create(&PostParams::default(), &widget("tiny", 0, None))
            .await,
    );
    assert_eq!(code, 422);
    // The required field is checked too (sent untyped, since the Rust type requires it).
    let out = c.kubectl_as(
        &c.kubeconfig,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: harness.ragsync.io/v1\nkind: Widget\nmetadata:\n  name: nosize\n  namespace: {ns}\nspec:\n  color: red\n"
        )),
    );
    assert!(
        !out.status.success(),
        "a Widget without spec.size was accepted"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.size"), "unexpected error: {stderr}");

    assert!(api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn server_side_apply_of_the_status_subresource_records_its_field_manager() {
    let c = cluster().await;
    ensure_widget_crd(&c);
    let ns = c.fresh_namespace("ssa-status").await;
    let api: Api<Widget> = Api::namespaced(c.client.clone(), &ns);

    api.create(&PostParams::default(), &widget("cog", 3, Some("red")))
        .await
        .expect("create the widget");

    let status_patch = |phase: &str| {
        Patch::Apply(json!({
            "apiVersion": "harness.ragsync.io/v1",
            "kind": "Widget",
            "metadata": {"name": "cog"},
            "status": {"phase": phase, "observedSize": 3},
        }))
    };
    let applied = api
        .patch_status(
            "cog",
            &PatchParams::apply("status-writer"),
            &status_patch("Ready"),
        )
        .await
        .expect("server-side apply of the status");
    assert_eq!(
        applied.status,
        Some(WidgetStatus {
            phase: Some("Ready".into()),
            observed_size: Some(3)
        })
    );

    let got = api.get("cog").await.unwrap();
    assert_eq!(
        got.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Ready")
    );
    assert_eq!(got.spec.size, 3, "a status apply must not touch the spec");
    let entry = got
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("status-writer"))
        .unwrap_or_else(|| {
            panic!(
                "no managedFields entry for status-writer: {:?}",
                got.managed_fields()
            )
        });
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    let fields = serde_json::to_string(&entry.fields_v1).unwrap();
    assert!(
        fields.contains("f:phase") && fields.contains("f:observedSize"),
        "status-writer should own the status fields: {fields}"
    );

    // Another manager cannot take the field over without forcing: a real 409 conflict.
    let conflict = api
        .patch_status(
            "cog",
            &PatchParams::apply("other-writer"),
            &status_patch("Broken"),
        )
        .await;
    assert_eq!(api_error_code(conflict), 409);
    let forced = api
        .patch_status(
            "cog",
            &PatchParams::apply("other-writer").force(),
            &status_patch("Broken"),
        )
        .await
        .expect("forced apply");
    assert_eq!(
        forced.status.and_then(|s| s.phase).as_deref(),
        Some("Broken")
    );
    let owners: Vec<_> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        owners.contains(&"other-writer".to_string()),
        "other-writer should own status fields now: {owners:?}"
    );
}

fn configmap_reader_role(ns: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    }
}

fn bind_to_service_account(ns: &str, role: &str, sa: &str) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{role}-{sa}")),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(ns.into()),
            ..Subject::default()
        }]),
    }
}

#[tokio::test]
async fn rbac_is_enforced_for_a_service_account() {
    let c = cluster().await;
    let ns = c.fresh_namespace("rbac").await;
    let kubeconfig = c.service_account_kubeconfig(&ns, "limited").await;
    let limited = client_from_kubeconfig(&kubeconfig).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(limited.clone(), &ns);

    // No binding yet: the real RBAC authorizer refuses.
    let refused = configmaps.list(&ListParams::default()).await;
    assert_eq!(api_error_code(refused), 403);
    // The same through a separate process (kubectl) using the minted kubeconfig.
    let out = c.kubectl_as(&kubeconfig, &["get", "configmaps", "-n", &ns], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("forbidden")
            && stderr.contains(&format!("system:serviceaccount:{ns}:limited")),
        "unexpected kubectl error: {stderr}"
    );

    // Grant read access to configmaps in this namespace.
    Api::<Role>::namespaced(c.client.clone(), &ns)
        .create(&PostParams::default(), &configmap_reader_role(&ns))
        .await
        .expect("create Role");
    Api::<RoleBinding>::namespaced(c.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &bind_to_service_account(&ns, "configmap-reader", "limited"),
        )
        .await
        .expect("create RoleBinding");
    Api::<ConfigMap>::namespaced(c.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("visible".into()),
                    ..ObjectMeta::default()
                },
                data: Some([("k".to_string(), "v".to_string())].into()),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create ConfigMap as admin");

    // The authorizer learns about new bindings from its informers: poll until allowed.
    let listed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match configmaps.list(&ListParams::default()).await {
                Ok(list) => return list,
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("unexpected error while waiting for the binding: {e}"),
            }
        }
    })
    .await
    .expect("the RoleBinding did not take effect");
    let names: Vec<_> = listed.items.iter().map(|cm| cm.name_any()).collect();
    assert!(names.contains(&"visible".to_string()), "{names:?}");
    let out = c.kubectl_as(
        &kubeconfig,
        &["get", "configmaps", "-n", &ns, "-o", "name"],
        None,
    );
    assert!(
        out.status.success(),
        "kubectl as the service account: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configmap/visible"));

    // Exactly what was granted, nothing more.
    let write = configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("nope".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await;
    assert_eq!(api_error_code(write), 403, "create was not granted");
    let secrets: Api<Secret> = Api::namespaced(limited.clone(), &ns);
    assert_eq!(
        api_error_code(secrets.list(&ListParams::default()).await),
        403,
        "secrets were not granted"
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(limited, "default");
    assert_eq!(
        api_error_code(elsewhere.list(&ListParams::default()).await),
        403,
        "the Role is namespaced"
    );
}
