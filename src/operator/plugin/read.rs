//! The plugin's IO: the caller's kubeconfig, the policy and its SyncPeers, the sync token, and
//! the nodes, read through the API server's pod proxy (with the caller's own RBAC) or, with
//! `--direct`, at their endpoints.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde::de::DeserializeOwned;

use crate::auth::TOKEN_HEADER;
use crate::hlc::Hlc;
use crate::operator::crd::{SyncPeer, SyncPolicy};
use crate::operator::members;
use crate::operator::node_client::NodeClient;
use crate::wire::{Backlog, ConflictsResponse, NodeStatus};

use super::view::{Access, Target};

/// How long one node read may take (the proxy path included).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for the caller's cluster: `kubeconfig` (else `KUBECONFIG`, `~/.kube/config`, or
/// the in-cluster service account, as kubectl finds them) and its `context` (else the current
/// one). Also returns the context's namespace, the default for `-n`.
pub async fn kube_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(Client, String), String> {
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        (None, Some(ctx)) => Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| format!("kubeconfig context {ctx}: {e}"))?,
        (None, None) => Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
            )
        })?,
    };
    let ns = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    Ok((client, ns))
}

/// A failed API call, said plainly: `what` failed, with the API server's reason and message,
/// and a hint for the usual causes.
pub fn api_error(what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let hint = if s.is_forbidden() {
                " (your credentials lack this permission; README \"kubectl plugin\" lists the RBAC the plugin needs)"
            } else {
                ""
            };
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!("{} ", s.reason)
            };
            format!("{what}: {reason}({}): {}{hint}", s.code, s.message)
        }
        other => format!("{what}: {other}"),
    }
}

/// The SyncPolicy `ns/name`.
pub async fn policy(client: &Client, ns: &str, name: &str) -> Result<SyncPolicy, String> {
    Api::<SyncPolicy>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| api_error(&format!("cannot read SyncPolicy {ns}/{name}"), &e))
}

/// The SyncPolicies of namespace `ns`.
pub async fn policies(client: &Client, ns: &str) -> Result<Vec<SyncPolicy>, String> {
    Api::<SyncPolicy>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| api_error(&format!("cannot list SyncPolicies in {ns}"), &e))
}

/// The SyncPeers (in its namespace) that `policy` selects.
pub async fn peers_of(client: &Client, policy: &SyncPolicy) -> Result<Vec<SyncPeer>, String> {
    let ns = policy.namespace().unwrap_or_default();
    let list = Api::<SyncPeer>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&format!("cannot list SyncPeers in {ns}"), &e))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| members::matches(&policy.spec.peer_selector, p.labels()))
        .collect())
}

/// The pods of namespace `ns` (to decide the members as the operator does).
pub async fn pods(client: &Client, ns: &str) -> Result<Vec<Arc<Pod>>, String> {
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&format!("cannot list pods in {ns}"), &e))?;
    Ok(list.items.into_iter().map(Arc::new).collect())
}

/// The nodes' token from `spec.authSecretRef`, read with the caller's RBAC; a note instead
/// when it cannot be read (the nodes will then refuse the reads).
pub async fn token(client: &Client, policy: &SyncPolicy) -> (Option<String>, Option<String>) {
    let Some(r) = &policy.spec.auth_secret_ref else {
        return (None, None);
    };
    let ns = policy.namespace().unwrap_or_default();
    let what = format!("cannot read the nodes' token from Secret {ns}/{}", r.name);
    match Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&r.name)
        .await
    {
        Err(e) => (None, Some(api_error(&what, &e))),
        Ok(secret) => match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
            None => (None, Some(format!("{what}: it has no key '{}'", r.key))),
            Some(v) => match String::from_utf8(v.0.clone()) {
                Ok(t) => (Some(t.trim().to_string()), None),
                Err(_) => (None, Some(format!("{what}: key '{}' is not UTF-8", r.key))),
            },
        },
    }
}

/// Why a node was not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unread {
    /// Not asked (see [`Target::Skip`]).
    Skipped(String),
    Failed(String),
}

/// Reads nodes: through the pod proxy or directly, with the token.
#[derive(Clone)]
pub struct NodeReader {
    client: Client,
    namespace: String,
    access: Access,
    direct: NodeClient,
    token: Option<String>,
    /// The nodes serve HTTPS (the policy's `spec.tls`).
    https: bool,
}

impl NodeReader {
    pub fn new(
        client: Client,
        namespace: &str,
        access: Access,
        token: Option<String>,
        https: bool,
    ) -> Self {
        NodeReader {
            client,
            namespace: namespace.to_string(),
            access,
            direct: NodeClient::new(token.clone()),
            token,
            https,
        }
    }

    /// `GET path_and_query` on the node of `target`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        target: &Target,
        path_and_query: &str,
    ) -> Result<T, Unread> {
        match (target, self.access) {
            (Target::Skip(why), _) => Err(Unread::Skipped(why.clone())),
            (Target::External { endpoint }, _)
            | (
                Target::Pod {
                    endpoint: Some(endpoint),
                    ..
                },
                Access::Direct,
            ) => self
                .direct
                .get(endpoint, path_and_query)
                .await
                .map_err(|e| Unread::Failed(e.to_string())),
            (Target::Pod { endpoint: None, .. }, Access::Direct) => Err(Unread::Failed(
                "its status lists no endpoint to read it at directly".into(),
            )),
            (Target::Pod { pod, port, .. }, Access::Proxy) => self
                .via_proxy(pod, *port, path_and_query)
                .await
                .map_err(Unread::Failed),
        }
    }

    /// The path of `path_and_query` on `pod:port` through the API server's pod proxy; with
    /// `https` the API server speaks HTTPS to the pod (it does not verify the pod's
    /// certificate, and presents no client certificate, so nodes with mutual TLS refuse it).
    pub fn proxy_path(
        namespace: &str,
        pod: &str,
        port: u16,
        https: bool,
        path_and_query: &str,
    ) -> String {
        let scheme = if https { "https:" } else { "" };
        format!("/api/v1/namespaces/{namespace}/pods/{scheme}{pod}:{port}/proxy{path_and_query}")
    }

    async fn via_proxy<T: DeserializeOwned>(
        &self,
        pod: &str,
        port: u16,
        path_and_query: &str,
    ) -> Result<T, String> {
        let path = Self::proxy_path(&self.namespace, pod, port, self.https, path_and_query);
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(&path)
            .header(http::header::ACCEPT, "application/json");
        // The API server consumes `Authorization` (the caller's own credentials) and does not
        // forward it; the node's token travels in its own header.
        if let Some(t) = &self.token {
            req = req.header(TOKEN_HEADER, t);
        }
        let req = req
            .body(kube::client::Body::empty())
            .map_err(|e| format!("GET {path}: {e}"))?;
        let call = async {
            let resp = self.client.send(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect_bytes()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            Ok::<_, String>((status, body))
        };
        let (status, body) = match tokio::time::timeout(READ_TIMEOUT, call).await {
            Err(_) => return Err(format!("GET {path}: timed out after {READ_TIMEOUT:?}")),
            Ok(Err(e)) => return Err(format!("GET {path}: {e}")),
            Ok(Ok(v)) => v,
        };
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| format!("GET {path}: unexpected answer: {e}"));
        }
        Err(format!("GET {path}: {}", proxy_failure(status, &body)))
    }

    pub async fn status(&self, target: &Target) -> Result<NodeStatus, Unread> {
        self.get(target, "/admin/status").await
    }

    /// The sender's backlog after `since` in `collections` (empty: all).
    pub async fn backlog(
        &self,
        target: &Target,
        since: Option<Hlc>,
        collections: &[String],
    ) -> Result<Backlog, Unread> {
        let mut q = format!(
            "/admin/backlog?since={}",
            since.unwrap_or(Hlc::ZERO).to_hex()
        );
        if !collections.is_empty() {
            q.push_str("&collections=");
            let names: Vec<String> = collections.iter().map(|c| encode(c)).collect();
            q.push_str(&names.join(","));
        }
        self.get(target, &q).await
    }

    pub async fn conflicts(
        &self,
        target: &Target,
        collection: Option<&str>,
    ) -> Result<ConflictsResponse, Unread> {
        let q = match collection {
            Some(c) => format!("/sync/conflicts?collection={}", encode(c)),
            None => "/sync/conflicts".to_string(),
        };
        self.get(target, &q).await
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A failed answer through the pod proxy, said plainly: either the API server refused (its
/// `Status`: forbidden, an address it will not proxy to, the pod unreachable) or the node
/// answered with its own JSON error.
pub fn proxy_failure(status: StatusCode, body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v[name].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let text = || String::from_utf8_lossy(body).trim().to_string();
    if json.as_ref().is_some_and(|v| v["kind"] == "Status") {
        let message = field("message");
        let hint = if status == StatusCode::FORBIDDEN {
            " (reading a node through the API server needs 'get' on pods/proxy in this namespace)"
        } else if message.contains("address not allowed") {
            " (the API server does not proxy to loopback, link-local or similar pod IPs; \
             from inside the pod network, read the nodes with --direct)"
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            " (the API server could not reach the pod)"
        } else {
            ""
        };
        return format!("the API server refused the proxy request ({status}): {message}{hint}");
    }
    let code = field("error");
    if !code.is_empty() {
        return format!("the node answered {status} ({code}): {}", field("message"));
    }
    format!("answered {status}: {}", text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_name_the_pod_and_port() {
        assert_eq!(
            NodeReader::proxy_path("rag", "rag-0", 8090, false, "/admin/backlog?since=00"),
            "/api/v1/namespaces/rag/pods/rag-0:8090/proxy/admin/backlog?since=00"
        );
        assert_eq!(
            NodeReader::proxy_path("rag", "rag-0", 8090, true, "/admin/status"),
            "/api/v1/namespaces/rag/pods/https:rag-0:8090/proxy/admin/status"
        );
    }

    #[test]
    fn proxy_failures_say_who_refused_and_what_to_do() {
        let refused = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"address not allowed","reason":"BadRequest","code":400}"#;
        let s = proxy_failure(StatusCode::BAD_REQUEST, refused);
        assert!(
            s.starts_with(
                "the API server refused the proxy request (400 Bad Request): address not allowed"
            ),
            "{s}"
        );
        assert!(s.contains("--direct"), "{s}");

        let forbidden = br#"{"kind":"Status","message":"pods \"rag-0\" is forbidden: User \"u\" cannot get resource \"pods/proxy\"","reason":"Forbidden","code":403}"#;
        let s = proxy_failure(StatusCode::FORBIDDEN, forbidden);
        assert!(
            s.contains("403 Forbidden")
                && s.contains("cannot get resource \"pods/proxy\"")
                && s.contains("'get' on pods/proxy"),
            "{s}"
        );

        let node = br#"{"error":"unauthorized","message":"the token in the X-RagSync-Token header is not valid"}"#;
        assert_eq!(
            proxy_failure(StatusCode::UNAUTHORIZED, node),
            "the node answered 401 Unauthorized (unauthorized): the token in the X-RagSync-Token header is not valid"
        );
        assert_eq!(
            proxy_failure(StatusCode::BAD_GATEWAY, b"upstream gone\n"),
            "answered 502 Bad Gateway: upstream gone"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("a b&c"), "a+b%26c");
    }
}
