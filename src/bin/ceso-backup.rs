//! `ceso-backup`: hot backups of vSphere VMs, run out of band from Terraform.
//!
//! The backup engine arrives with its own issue; until then every command says so and exits
//! with status 2 rather than pretending to work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Hot, incremental, deduplicated backups of VMware VMs.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository.
    Init,
    /// Back up a VM while it runs.
    Backup,
    /// List backups.
    List,
    /// Show one backup.
    Show,
    /// Restore a backup to a new VM.
    Restore,
    /// Re-hash the chunks backups reference.
    Verify,
    /// Apply a retention policy.
    Prune,
    /// Delete chunks no backup references.
    Gc,
    /// Run scheduled backup jobs.
    Serve,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let name = match args.command {
        Command::Init => "init",
        Command::Backup => "backup",
        Command::List => "list",
        Command::Show => "show",
        Command::Restore => "restore",
        Command::Verify => "verify",
        Command::Prune => "prune",
        Command::Gc => "gc",
        Command::Serve => "serve",
    };
    eprintln!(
        "ceso-backup {name}: not yet available in ceso {} (the backup engine is not built yet); nothing was done.",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
