//! Pod DNS names from the pod cache: `<hostname>.<subdomain>.<namespace>.svc` (with or
//! without `.cluster.local`) resolves to the pod's IP, so the operator reaches a node at the
//! name its certificate holds without a DNS lookup, and at the pod it saw.

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};

/// A reqwest resolver over the pod cache, falling back to DNS for other names.
pub struct PodDns(pub Store<Pod>);

/// The pod name and namespace a pod DNS name stands for (hostname is the pod name for a
/// StatefulSet pod).
pub fn parse(name: &str) -> Option<(&str, &str, &str)> {
    let rest = name
        .strip_suffix(".svc.cluster.local")
        .or_else(|| name.strip_suffix(".svc"))?;
    let mut parts = rest.split('.');
    let (host, sub, ns) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some((host, sub, ns))
}

impl PodDns {
    fn lookup(&self, name: &str) -> Option<std::net::IpAddr> {
        let (host, sub, ns) = parse(name)?;
        let pod = self.0.get(&ObjectRef::new(host).within(ns))?;
        let spec = pod.spec.as_ref()?;
        if spec.hostname.as_deref() != Some(host) || spec.subdomain.as_deref() != Some(sub) {
            return None;
        }
        pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
    }
}

impl reqwest::dns::Resolve for PodDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        crate::sync::client::resolve_or_lookup(self.lookup(name.as_str()), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_parse() {
        assert_eq!(parse("rag-0.rag.ns.svc"), Some(("rag-0", "rag", "ns")));
        assert_eq!(
            parse("rag-0.rag.ns.svc.cluster.local"),
            Some(("rag-0", "rag", "ns"))
        );
        assert_eq!(parse("rag.ns.svc"), None);
        assert_eq!(parse("a.b.c.d.svc"), None);
        assert_eq!(parse("rag-0.rag.ns.example.com"), None);
    }
}
