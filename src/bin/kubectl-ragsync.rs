//! `kubectl ragsync`: a kubectl plugin for rag-sync (on PATH as `kubectl-ragsync`). The logic
//! is in `rag_sync::operator::plugin`; this parses arguments and prints.
//!
//! Exit status: 0 when everything was read; 1 when the command failed (e.g. the SyncPolicy
//! cannot be read: not found, Forbidden); 2 for bad usage; 3 when the report was printed
//! but some members' nodes could not be read (their rows say why).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rag_sync::operator::plugin::{self, render, view::Access, EXIT_PARTIAL};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-ragsync",
    bin_name = "kubectl ragsync",
    version,
    about = "Status, sync and conflicts of rag-sync SyncPolicies, read live from their nodes",
    after_help = "Exit status: 0 all read; 1 failed; 2 bad usage; 3 printed, but some members' nodes could not be read."
)]
struct Cli {
    /// Namespace of the SyncPolicy (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Read the nodes at their endpoints (pod IPs) instead of through the API server's pod
    /// proxy: for use from inside the pod network.
    #[arg(long, global = true)]
    direct: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The policy's topology, members, totals and conditions, and every edge's pending
    /// changes and lag read live from the nodes.
    Status {
        /// The SyncPolicy's name.
        policy: String,
        /// Show every edge (default: the worst 20).
        #[arg(long)]
        all_edges: bool,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Asks the operator for a sync round on every member now (sets the ragsync.io/sync-now
    /// annotation to a fresh timestamp).
    Sync {
        /// The SyncPolicy's name.
        policy: String,
    },
    /// The conflicts the members' nodes retain, deduplicated across members.
    Conflicts {
        /// The SyncPolicy's name.
        policy: String,
        /// Only this collection's conflicts.
        #[arg(long)]
        collection: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("reports serialize to JSON") + "\n"
}

async fn run(cli: Cli) -> Result<i32, String> {
    let (client, context_ns) =
        plugin::read::kube_client(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    let ns = cli.namespace.unwrap_or(context_ns);
    let access = if cli.direct {
        Access::Direct
    } else {
        Access::Proxy
    };
    let partial = |unread: usize| if unread > 0 { EXIT_PARTIAL } else { 0 };
    match cli.command {
        Command::Status {
            policy,
            all_edges,
            output,
        } => {
            let report = plugin::status(&client, &ns, &policy, access).await?;
            match output {
                Output::Table => {
                    let limit = (!all_edges).then_some(render::DEFAULT_EDGE_LIMIT);
                    print!("{}", render::status(&report, limit));
                }
                Output::Json => print!("{}", json(&report)),
            }
            Ok(partial(report.unread()))
        }
        Command::Sync { policy } => {
            let done = plugin::sync(&client, &ns, &policy).await?;
            print!("{}", done.describe());
            Ok(0)
        }
        Command::Conflicts {
            policy,
            collection,
            output,
        } => {
            let report =
                plugin::conflicts(&client, &ns, &policy, collection.as_deref(), access).await?;
            match output {
                Output::Table => print!("{}", render::conflicts(&report)),
                Output::Json => print!("{}", json(&report)),
            }
            Ok(partial(report.unread()))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
