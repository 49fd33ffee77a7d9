//! Label selector matching (the `metav1.LabelSelector` semantics), pure so that members can
//! be resolved from reflector caches without asking the API server.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An empty selector selects everything.
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &selector.match_labels {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(&[("app", "rag"), ("region", "eu")]);
        assert!(matches(&LabelSelector::default(), Some(&l)));
        assert!(matches(&LabelSelector::default(), None));
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "rag")])),
            match_expressions: Some(vec![req("region", "In", &["eu", "us"])]),
        };
        assert!(matches(&s, Some(&l)));
        assert!(!matches(
            &s,
            Some(&labels(&[("app", "rag"), ("region", "ap")]))
        ));
        assert!(!matches(&s, Some(&labels(&[("region", "eu")]))));
        let s = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                req("tier", "NotIn", &["cold"]),
                req("app", "Exists", &[]),
                req("legacy", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(&s, Some(&l)));
        assert!(!matches(
            &s,
            Some(&labels(&[("app", "x"), ("tier", "cold")]))
        ));
        assert!(!matches(
            &s,
            Some(&labels(&[("app", "x"), ("legacy", "1")]))
        ));
        let bad = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![req("app", "Bogus", &[])]),
        };
        assert!(!matches(&bad, Some(&l)));
    }
}
