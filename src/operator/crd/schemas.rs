//! Hand-written structural schemas for k8s types (k8s-openapi is built without its `schemars`
//! feature) and for lists that need bounds for CEL's cost estimate.

use schemars::{json_schema, Schema, SchemaGenerator};

/// Collection names, as `crate::model::validate_name` accepts them.
pub const COLLECTION_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";
/// A Kubernetes object name (DNS subdomain).
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A label selector: matchLabels and matchExpressions are ANDed.",
        "type": "object",
        "properties": {
            "matchLabels": {
                "description": "Labels that must all match exactly.",
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 63},
                "maxProperties": 64
            },
            "matchExpressions": {
                "description": "Requirements that must all hold.",
                "type": "array",
                "maxItems": 64,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string", "maxLength": 317},
                        "operator": {
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"]
                        },
                        "values": {
                            "type": "array",
                            "maxItems": 256,
                            "x-kubernetes-list-type": "atomic",
                            "items": {"type": "string", "maxLength": 63}
                        }
                    }
                }
            }
        },
        "x-kubernetes-map-type": "atomic"
    })
}

pub fn collection_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "maxLength": 128, "pattern": COLLECTION_PATTERN}
    })
}

pub fn peer_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": NAME_PATTERN
    })
}

pub fn peer_name_set(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "x-kubernetes-list-type": "set",
        "items": peer_name(g)
    })
}

pub fn conflict_strategy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": super::policy::CONFLICT_STRATEGIES,
        "default": "LastWriterWins"
    })
}

pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time"})
}

/// `metav1.Condition`, as upstream defines it, as a list map keyed by `type`.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "lastTransitionTime is the last time the condition transitioned from one status to another.",
                    "type": "string",
                    "format": "date-time"
                },
                "message": {
                    "description": "message is a human readable message indicating details about the transition.",
                    "type": "string",
                    "maxLength": 32768
                },
                "observedGeneration": {
                    "description": "observedGeneration represents the .metadata.generation that the condition was set based upon.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "reason": {
                    "description": "reason contains a programmatic identifier indicating the reason for the condition's last transition.",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "status": {
                    "description": "status of the condition, one of True, False, Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "type": {
                    "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        }
    })
}
