//! Shared support for integration tests: real processes, real ports, real clusters.
#![allow(dead_code)]

pub mod cluster;
pub mod helm;
pub mod node;
pub mod operator;
pub mod pki;
pub mod rbac;
pub mod tools;
pub mod yaml;
