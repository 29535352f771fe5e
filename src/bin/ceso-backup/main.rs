//! `ceso-backup`: hot, incremental, deduplicated backups of vSphere VMs, run out of band from
//! Terraform. Each command is a thin layer over `ceso::engine::backup`: parse flags, call the
//! engine, print the result as text or JSON lines, exit with a status scripts can use.

mod failure;
mod job_commands;
mod output;
mod repo_commands;
mod settings;
mod vm_commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use failure::{code, Failure};
use output::Output;
use settings::{parse_duration, parse_size, RepoArgs, VsphereArgs};

const EXIT_CODES: &str = "\
Exit status:
  0    success
  1    the command failed
  2    usage error (unknown flag, missing setting, bad value)
  3    verify found missing or corrupt data
  4    the repository is locked (prune/gc running, or a backup during prune/gc)
  5    another backup of the same VM is running
  130  interrupted (Ctrl-C/SIGTERM): the snapshot was removed, nothing was committed

Environment:
  CESO_BACKUP_REPO        repository (--repo)
  CESO_BACKUP_PASSWORD    repository passphrase (or --password-file / --key-file)
  CESO_URL, CESO_USER, CESO_PASSWORD, CESO_THUMBPRINT, CESO_ALLOW_UNVERIFIED_SSL,
  CESO_API_TIMEOUT        the vSphere endpoint, as for the Terraform provider
  AWS_*                   S3 endpoint, region and credentials for s3:// repositories
  CESO_LOG                log filter, e.g. ceso=debug";

/// Hot, incremental, deduplicated backups of VMware vSphere VMs.
///
/// A backup snapshots the running VM, reads its disks through the datastore interface (only the
/// blocks changed since the last backup when changed block tracking is on), stores them as
/// compressed, optionally encrypted 4 MiB chunks in a local or S3 repository, and removes the
/// snapshot. Every backup is a full one logically: any can be restored, verified or pruned on
/// its own.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_long_help = EXIT_CODES, after_help = "See --help for exit codes and environment variables.")]
struct Cli {
    #[command(flatten)]
    repo: RepoArgs,
    /// Print JSON lines on stdout (one object per event, then a result or error) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository.
    Init(InitArgs),
    /// Back up a VM while it runs.
    Backup(BackupArgs),
    /// List backups, oldest first.
    List(ListArgs),
    /// Show one backup: its VM, configuration and disks.
    Show(ShowArgs),
    /// Restore a backup to a new VM, or one disk to a raw image file.
    Restore(RestoreArgs),
    /// Re-read and re-hash the chunks backups reference; exit 3 if any is missing or corrupt.
    Verify(VerifyArgs),
    /// Delete backups a retention policy does not keep (chunks are freed by gc).
    Prune(PruneArgs),
    /// Delete chunks no backup references.
    Gc(GcArgs),
    /// Run the repository's scheduled backup jobs (`ceso_backup_job`) as they fall due.
    Serve(job_commands::ServeArgs),
    /// List the repository's backup jobs with their next and last runs.
    Jobs,
    /// Run one backup job now, whatever its schedule says.
    Run(job_commands::RunArgs),
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Encrypt the repository with the passphrase (CESO_BACKUP_PASSWORD / --password-file) or
    /// key file (--key-file).
    #[arg(long)]
    encrypt: bool,
    /// Chunk size, a power of two from 64KiB to 64MiB (fixed for the repository's life).
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    chunk_size: u64,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// The VM: name, inventory path (/DC/vm/name), moid (vm-42) or instance UUID.
    #[arg(long)]
    vm: String,
    /// Read every disk in full even when an incremental is possible.
    #[arg(long)]
    full: bool,
    /// Read at most this many bytes per second from the datastore, e.g. 50M or 100MiB.
    #[arg(long, value_parser = parse_size, value_name = "RATE")]
    max_rate: Option<u64>,
    /// Chunks fetched ahead per disk.
    #[arg(long, default_value_t = 4)]
    read_ahead: usize,
    #[command(flatten)]
    vsphere: VsphereArgs,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only backups of this VM (name or instance UUID).
    #[arg(long)]
    vm: Option<String>,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// The backup's id (see `list`).
    id: String,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// The backup's id (see `list`).
    id: String,
    /// Restore as a new VM with this name.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "to_file",
        conflicts_with = "to_file"
    )]
    to: Option<String>,
    /// Datastore for the new VM (default: where the first disk was).
    #[arg(long, requires = "to")]
    datastore: Option<String>,
    /// Host for the new VM (default: the first host that sees the datastore).
    #[arg(long, requires = "to")]
    host: Option<String>,
    /// Power the new VM on.
    #[arg(long, requires = "to")]
    power_on: bool,
    /// The disk to restore to a file: its position in `show` (0, 1, ...) or its label.
    #[arg(long, requires = "to_file")]
    disk: Option<String>,
    /// Write the disk as a raw (sparse) image to this new file.
    #[arg(long, value_name = "PATH", requires = "disk")]
    to_file: Option<PathBuf>,
    #[command(flatten)]
    vsphere: VsphereArgs,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Check only this fraction (0-1) of the chunks, chosen at random.
    #[arg(long)]
    sample: Option<f64>,
}

#[derive(Args, Debug)]
struct PruneArgs {
    /// Keep the newest N backups of each VM.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest backup of each of the last N hours with backups.
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// ... of each of the last N days.
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// ... of each of the last N ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    /// ... of each of the last N months.
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    /// ... of each of the last N years.
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
    /// Only this VM's backups (name or instance UUID).
    #[arg(long)]
    vm: Option<String>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct GcArgs {
    /// Keep unreferenced chunks younger than this (clock skew, running backups).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    grace: std::time::Duration,
    /// Count, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Cancels `token` on Ctrl-C or SIGTERM.
fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        token.cancel();
    });
}

async fn run(cli: Cli, out: Output) -> Result<(), Failure> {
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    match cli.command {
        Command::Init(a) => repo_commands::init(&cli.repo, a.encrypt, a.chunk_size, out).await,
        Command::Backup(a) => vm_commands::backup(&cli.repo, a, out, &cancel).await,
        Command::List(a) => repo_commands::list(&cli.repo, a.vm.as_deref(), out).await,
        Command::Show(a) => repo_commands::show(&cli.repo, &a.id, out).await,
        Command::Restore(a) => vm_commands::restore(&cli.repo, a, out, &cancel).await,
        Command::Verify(a) => repo_commands::verify(&cli.repo, a.sample, out).await,
        Command::Prune(a) => repo_commands::prune(&cli.repo, a, out).await,
        Command::Gc(a) => repo_commands::gc(&cli.repo, a.grace, a.dry_run, out).await,
        Command::Serve(a) => job_commands::serve(&cli.repo, a, out, &cancel).await,
        Command::Jobs => job_commands::list(&cli.repo, out).await,
        Command::Run(a) => job_commands::run(&cli.repo, a, out, &cancel).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let filter = tracing_subscriber::EnvFilter::try_from_env("CESO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&Failure::new(
                code::FAILURE,
                format!("cannot start the async runtime: {e}"),
            ));
            return ExitCode::from(code::FAILURE);
        }
    };
    match runtime.block_on(run(cli, out)) {
        Ok(()) => ExitCode::from(code::OK),
        Err(failure) => {
            out.error(&failure);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn restore_needs_a_target() {
        assert!(Cli::try_parse_from(["ceso-backup", "restore", "x"]).is_err());
        assert!(Cli::try_parse_from(["ceso-backup", "restore", "x", "--to", "y"]).is_ok());
        assert!(Cli::try_parse_from(["ceso-backup", "restore", "x", "--to-file", "f"]).is_err());
        assert!(Cli::try_parse_from([
            "ceso-backup",
            "restore",
            "x",
            "--disk",
            "0",
            "--to-file",
            "f"
        ])
        .is_ok());
    }
}
