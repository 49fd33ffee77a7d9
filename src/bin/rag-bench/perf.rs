//! `perf record` attached to a process for a phase of the bench (`--perf-dir`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::nodes::Node;

/// `perf record` attached to a process until stopped.
pub struct Perf(Option<Child>);

impl Perf {
    /// Records `node` into `dir/{node}-{phase}.data`; nothing without a directory.
    pub fn start(dir: Option<&Path>, node: &Node, phase: &str) -> Result<Perf> {
        Perf::attach(dir, node.pid(), &format!("{}-{phase}", node.name))
    }

    /// Records process `pid` into `dir/{label}.data`; nothing without a directory.
    pub fn attach(dir: Option<&Path>, pid: Option<u32>, label: &str) -> Result<Perf> {
        let (Some(dir), Some(pid)) = (dir, pid) else {
            return Ok(Perf(None));
        };
        std::fs::create_dir_all(dir)?;
        let out = dir.join(format!("{label}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "1999", "--call-graph", "dwarf,32768", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Perf(Some(child)))
    }

    pub fn stop(mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}
