//! Shared support for integration tests: real processes, real ports, real clusters.
#![allow(dead_code)]

pub mod cluster;
pub mod node;
pub mod operator;
