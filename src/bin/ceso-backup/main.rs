//! `ceso-backup`: hot, incremental, deduplicated backups of vSphere VMs, run out of band from
//! Terraform. Each command is a thin layer over `ceso::engine::backup`: parse flags, call the
//! engine, print the result as text or JSON lines, exit with a status scripts can use.

mod config_file;
mod failure;
mod job_commands;
mod output;
mod repo_commands;
mod settings;
mod vm_commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use config_file::ConfigFile;
use failure::{code, Failure};
use output::Output;
use settings::{parse_duration, parse_size, RepoArgs, VsphereArgs};

/// Chunk-sized buffers come and go on every worker thread; mimalloc returns them to the system
/// rather than keeping them per thread, so memory stays near what is in flight.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "\
Exit status:
  0    success
  1    the command failed
  2    usage error (unknown flag, missing setting, bad value)
  3    verify found missing or corrupt data
  4    the repository is locked (prune/gc running, or a backup during prune/gc)
  5    another backup of the same VM is running (it holds the VM's lease)
  130  interrupted (Ctrl-C/SIGTERM): snapshots were removed, leases given back, nothing
       half-done was committed

Environment:
  CESO_BACKUP_REPO        repository (--repo)
  CESO_BACKUP_PASSWORD    repository passphrase (or --password-file / --key-file, which
                          must not be readable by group or others)
  CESO_URL, CESO_USER, CESO_PASSWORD, CESO_THUMBPRINT, CESO_ALLOW_UNVERIFIED_SSL,
  CESO_API_TIMEOUT        the vSphere endpoint, as for the Terraform provider
  AWS_*                   S3 endpoint, region and credentials for s3:// repositories
  CESO_LOG                log filter, e.g. ceso=debug
  CESO_BACKUP_CONFIG      the configuration file (--config)

Configuration file:
  --config PATH, CESO_BACKUP_CONFIG, else $XDG_CONFIG_HOME/ceso/backup.toml or
  ~/.config/ceso/backup.toml when it exists. TOML with the settings of the flags and
  variables above; a flag beats its variable, which beats the file, which beats the default.
  Unknown keys are errors. A file holding the vSphere password must be private (chmod 600).
  Relative paths in it are relative to its directory. For example:

";

/// Hot, incremental, deduplicated backups of VMware vSphere VMs.
///
/// A backup snapshots the running VM, reads its disks through the datastore interface (only the
/// blocks changed since the last backup when changed block tracking is on), stores them as
/// compressed, optionally encrypted 4 MiB chunks in a local or S3 repository, and removes the
/// snapshot. Every backup is a full one logically: any can be restored, verified or pruned on
/// its own.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_long_help = long_help(), after_help = "See --help for exit codes, environment variables and the configuration file.")]
struct Cli {
    /// Configuration file (TOML; default: ~/.config/ceso/backup.toml when it exists).
    #[arg(long, global = true, env = "CESO_BACKUP_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(flatten)]
    repo: RepoArgs,
    /// Print JSON lines on stdout (one object per event, then a result or error) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The text after `--help`'s options: exit statuses, variables, the configuration file.
fn long_help() -> String {
    let example: Vec<String> = config_file::EXAMPLE
        .lines()
        .map(|l| format!("  {l}").trim_end().to_string())
        .collect();
    format!("{EXIT_CODES}{}", example.join("\n"))
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
    /// Restore a backup to a new VM (or over a powered-off one with --force), or one disk to a
    /// raw image file.
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

impl Command {
    /// The command's vSphere settings, if it talks to vSphere.
    fn vsphere_mut(&mut self) -> Option<&mut VsphereArgs> {
        match self {
            Command::Backup(a) => Some(&mut a.vsphere),
            Command::Restore(a) => Some(&mut a.vsphere),
            Command::Serve(a) => Some(&mut a.daemon.vsphere),
            Command::Run(a) => Some(&mut a.daemon.vsphere),
            Command::Init(_)
            | Command::List(_)
            | Command::Show(_)
            | Command::Verify(_)
            | Command::Prune(_)
            | Command::Gc(_)
            | Command::Jobs => None,
        }
    }
}

/// Whether clap found argument `id` on the command line or in its environment variable (not
/// a default, not absent).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Reads the configuration file, if any, into the settings neither a flag nor a variable gave.
fn apply_config_file(cli: &mut Cli, matches: &ArgMatches) -> Result<(), Failure> {
    let Some(path) = config_file::locate(
        cli.config.as_deref(),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    ) else {
        return Ok(());
    };
    let file = ConfigFile::load(&path)?;
    let env_passphrase = std::env::var_os("CESO_BACKUP_PASSWORD").is_some_and(|p| !p.is_empty());
    cli.repo
        .fill_from(&file, |id| given(matches, id), env_passphrase);
    if let (Some(vsphere), Some((_, sub))) = (cli.command.vsphere_mut(), matches.subcommand()) {
        vsphere.fill_from(&file, |id| given(sub, id));
    }
    Ok(())
}

/// The settings of a parsed command line, with the configuration file applied.
fn settle(matches: &ArgMatches) -> Result<Cli, Failure> {
    let mut cli = Cli::from_arg_matches(matches).map_err(|e| Failure::usage(e.to_string()))?;
    apply_config_file(&mut cli, matches)?;
    Ok(cli)
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
    /// Wait this long for another backup of the VM to finish (or for a dead one's lease to
    /// lapse) instead of failing with status 5 at once; also how long to wait for a prune/gc.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    wait: std::time::Duration,
    /// How long this backup's leases (of the VM, of the repository) last unless renewed; a
    /// killed backup's VM can be backed up again this long (plus --clock-skew) after.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    lease_ttl: std::time::Duration,
    /// Clock difference tolerated with other hosts: another's lease counts as lapsed this long
    /// after it expires.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    clock_skew: std::time::Duration,
    /// Require a quiesced snapshot: fail if VMware Tools do not run or quiescing fails
    /// (default: quiesce when Tools run, else crash-consistent, and say so).
    #[arg(long)]
    quiesce: bool,
    /// Read every disk in full even when an incremental is possible.
    #[arg(long)]
    full: bool,
    /// Read at most this many bytes per second from the datastore, e.g. 50M or 100MiB.
    #[arg(long, value_parser = parse_size, value_name = "RATE")]
    max_rate: Option<u64>,
    /// Chunks fetched ahead per disk (each is a ranged GET of the datastore file in flight).
    #[arg(long, default_value_t = 2)]
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
    /// Replace the VM named by --to if it exists; it must be powered off. The backup is
    /// restored under a temporary name first; the original is destroyed and the new VM renamed
    /// only once that restore is complete.
    #[arg(long, requires = "to", conflicts_with = "to_file")]
    force: bool,
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
    /// Only the backups this scheduled job made.
    #[arg(long)]
    job: Option<String>,
    /// Only the backups read from this vSphere endpoint (as `list` shows it).
    #[arg(long = "endpoint-name", value_name = "NAME")]
    endpoint_name: Option<String>,
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

/// Runs `work` unless `cancel` fires first; then the command stops with status 130. For
/// commands that hold nothing needing clean-up (no lease, no snapshot, no partial file).
async fn interruptible(
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = Result<(), Failure>>,
) -> Result<(), Failure> {
    tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Failure::new(failure::code::INTERRUPTED, "interrupted")),
    }
}

async fn run(cli: Cli, out: Output) -> Result<(), Failure> {
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let c = &cancel;
    match cli.command {
        Command::Init(a) => {
            interruptible(
                c,
                repo_commands::init(&cli.repo, a.encrypt, a.chunk_size, out),
            )
            .await
        }
        Command::Backup(a) => vm_commands::backup(&cli.repo, a, out, c).await,
        Command::List(a) => {
            interruptible(c, repo_commands::list(&cli.repo, a.vm.as_deref(), out)).await
        }
        Command::Show(a) => interruptible(c, repo_commands::show(&cli.repo, &a.id, out)).await,
        Command::Restore(a) => vm_commands::restore(&cli.repo, a, out, c).await,
        Command::Verify(a) => repo_commands::verify(&cli.repo, a.sample, out, c).await,
        Command::Prune(a) => repo_commands::prune(&cli.repo, a, out, c).await,
        Command::Gc(a) => repo_commands::gc(&cli.repo, a.grace, a.dry_run, out, c).await,
        Command::Serve(a) => job_commands::serve(&cli.repo, a, out, c).await,
        Command::Jobs => interruptible(c, job_commands::list(&cli.repo, out)).await,
        Command::Run(a) => job_commands::run(&cli.repo, a, out, c).await,
    }
}

fn main() -> ExitCode {
    ceso::memory::opt_out_of_huge_pages();
    let matches = Cli::command().get_matches();
    let out = Output::new(matches.get_flag("json"));
    let cli = match settle(&matches) {
        Ok(cli) => cli,
        Err(failure) => {
            out.error(&failure);
            return ExitCode::from(failure.code);
        }
    };
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
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Serialises the tests that read or change the process environment (clap reads it).
    static ENV: Mutex<()> = Mutex::new(());

    /// Runs `f` with no CESO_* variables but `vars`, and no default config file; restores the
    /// environment afterwards.
    fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let saved: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                k.to_str()
                    .is_some_and(|k| k.starts_with("CESO_") || k == "XDG_CONFIG_HOME")
            })
            .collect();
        for (k, _) in &saved {
            std::env::remove_var(k);
        }
        std::env::set_var("XDG_CONFIG_HOME", "/nonexistent/ceso-test-config");
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        std::env::remove_var("XDG_CONFIG_HOME");
        for (k, v) in saved {
            std::env::set_var(k, v);
        }
        out.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Parses `args` (after the program name) and applies the config file.
    fn settled(args: &[&str]) -> Result<Cli, Failure> {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("ceso-backup").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        settle(&matches)
    }

    fn vsphere(cli: &Cli) -> &VsphereArgs {
        match &cli.command {
            Command::Backup(a) => &a.vsphere,
            Command::Restore(a) => &a.vsphere,
            Command::Serve(a) => &a.daemon.vsphere,
            Command::Run(a) => &a.daemon.vsphere,
            other => panic!("no vSphere settings in {other:?}"),
        }
    }

    /// A private config file in a new directory.
    fn config(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = path.to_str().unwrap().to_string();
        (dir, path)
    }

    const FULL: &str = r#"
        repo = "/file/repo"
        password_file = "/file/pass"
        [vsphere]
        url = "file.example.com"
        user = "file-user"
        password = "file-pass"
        thumbprint = "AA:BB"
        api_timeout = "5m"
    "#;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_config_file_fills_what_flags_and_environment_leave_unset() {
        let (_dir, path) = config(FULL);
        with_env(&[], || {
            let cli = settled(&["--config", &path, "backup", "--vm", "a"]).unwrap();
            assert_eq!(cli.repo.repo.as_deref(), Some("/file/repo"));
            assert_eq!(cli.repo.password_file, Some("/file/pass".into()));
            assert_eq!(cli.repo.key_file, None);
            let v = vsphere(&cli);
            assert_eq!(v.url.as_deref(), Some("file.example.com"));
            assert_eq!(v.user.as_deref(), Some("file-user"));
            assert_eq!(v.password.as_deref(), Some("file-pass"));
            assert_eq!(v.thumbprint.as_deref(), Some("AA:BB"));
            assert!(!v.allow_unverified_ssl);
            assert_eq!(
                v.api_timeout,
                Duration::from_secs(300),
                "the file beats the default"
            );
            // Every command that talks to vSphere gets the table; the global flag may follow
            // the subcommand.
            for args in [
                vec!["restore", "x", "--to", "y", "--config", &path],
                vec!["serve", "--config", &path],
                vec!["run", "job", "--config", &path],
            ] {
                let cli = settled(&args).unwrap();
                assert_eq!(vsphere(&cli).user.as_deref(), Some("file-user"), "{args:?}");
                assert_eq!(cli.repo.repo.as_deref(), Some("/file/repo"), "{args:?}");
            }
        });
    }

    #[test]
    fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
        let (_dir, path) = config(FULL);
        let env = [
            ("CESO_BACKUP_CONFIG", path.as_str()),
            ("CESO_BACKUP_REPO", "/env/repo"),
            ("CESO_USER", "env-user"),
            ("CESO_API_TIMEOUT", "7s"),
        ];
        with_env(&env, || {
            // The file comes from CESO_BACKUP_CONFIG here.
            let cli = settled(&["backup", "--vm", "a"]).unwrap();
            assert_eq!(cli.repo.repo.as_deref(), Some("/env/repo"));
            let v = vsphere(&cli);
            assert_eq!(v.user.as_deref(), Some("env-user"));
            assert_eq!(v.api_timeout, Duration::from_secs(7));
            assert_eq!(v.url.as_deref(), Some("file.example.com"));
            assert_eq!(v.password.as_deref(), Some("file-pass"));

            let cli = settled(&[
                "backup",
                "--vm",
                "a",
                "--repo",
                "/flag/repo",
                "--user",
                "flag-user",
                "--url",
                "flag.example.com",
                "--api-timeout",
                "9s",
            ])
            .unwrap();
            assert_eq!(cli.repo.repo.as_deref(), Some("/flag/repo"));
            let v = vsphere(&cli);
            assert_eq!(v.user.as_deref(), Some("flag-user"));
            assert_eq!(v.url.as_deref(), Some("flag.example.com"));
            assert_eq!(v.api_timeout, Duration::from_secs(9));
            assert_eq!(v.password.as_deref(), Some("file-pass"));
        });
        // With neither a file nor a flag: the default.
        with_env(&[], || {
            let cli = settled(&["backup", "--vm", "a"]).unwrap();
            assert_eq!(vsphere(&cli).api_timeout, Duration::from_secs(60));
            assert_eq!(cli.repo.repo, None);
        });
    }

    #[test]
    fn the_key_and_the_tls_mode_are_each_one_setting() {
        let (_dir, path) = config(FULL);
        with_env(&[], || {
            // A flag naming either key file replaces the file's choice.
            for args in [
                ["--config", &path, "--key-file", "/k", "list"],
                ["list", "--config", &path, "--key-file", "/k"],
            ] {
                let cli = settled(&args).unwrap();
                assert_eq!(
                    (cli.repo.key_file, cli.repo.password_file),
                    (Some("/k".into()), None),
                    "{args:?}"
                );
            }
            // Asking for no verification drops the file's pinned thumbprint...
            let cli = settled(&[
                "--config",
                &path,
                "backup",
                "--vm",
                "a",
                "--allow-unverified-ssl",
            ])
            .unwrap();
            let v = vsphere(&cli);
            assert!(v.allow_unverified_ssl);
            assert_eq!(v.thumbprint, None);
            // ... and a thumbprint given replaces the file's.
            let cli = settled(&[
                "--config",
                &path,
                "backup",
                "--vm",
                "a",
                "--thumbprint",
                "CC",
            ])
            .unwrap();
            assert_eq!(vsphere(&cli).thumbprint.as_deref(), Some("CC"));
        });
        with_env(&[("CESO_BACKUP_PASSWORD", "from-env")], || {
            let cli = settled(&["--config", &path, "list"]).unwrap();
            assert_eq!((cli.repo.key_file, cli.repo.password_file), (None, None));
        });
        with_env(&[("CESO_ALLOW_UNVERIFIED_SSL", "false")], || {
            let cli = settled(&["--config", &path, "backup", "--vm", "a"]).unwrap();
            assert_eq!(vsphere(&cli).thumbprint.as_deref(), Some("AA:BB"));
        });
        let (_dir, insecure) = config("[vsphere]\nallow_unverified_ssl = true\n");
        with_env(&[("CESO_ALLOW_UNVERIFIED_SSL", "false")], || {
            let cli = settled(&["--config", &insecure, "backup", "--vm", "a"]).unwrap();
            assert!(
                !vsphere(&cli).allow_unverified_ssl,
                "the variable beats the file"
            );
        });
        with_env(&[], || {
            let cli = settled(&["--config", &insecure, "backup", "--vm", "a"]).unwrap();
            assert!(vsphere(&cli).allow_unverified_ssl);
        });
    }

    #[test]
    fn a_bad_or_exposed_config_file_is_a_usage_error() {
        let (dir, path) = config(FULL);
        with_env(&[], || {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = settled(&["--config", &path, "list"]).unwrap_err();
            assert_eq!(e.code, code::USAGE);
            assert!(e.message.contains(&path), "{}", e.message);
            assert!(
                e.message.contains(&format!("chmod 600 {path}")),
                "{}",
                e.message
            );

            std::fs::write(&path, "[vsphere]\nurl = \"x\"\nusr = \"u\"\n").unwrap();
            let e = settled(&["--config", &path, "list"]).unwrap_err();
            assert_eq!(e.code, code::USAGE);
            assert!(
                e.message.contains(&path) && e.message.contains("`usr`"),
                "{}",
                e.message
            );

            let missing = dir.path().join("nope.toml");
            let e = settled(&["--config", missing.to_str().unwrap(), "list"]).unwrap_err();
            assert_eq!(e.code, code::USAGE);
            assert!(e.message.contains("nope.toml"), "{}", e.message);
        });
    }

    #[test]
    fn the_default_config_file_is_read_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ceso")).unwrap();
        std::fs::write(
            dir.path().join("ceso/backup.toml"),
            "repo = \"/default/repo\"\n",
        )
        .unwrap();
        let xdg = dir.path().to_str().unwrap();
        with_env(&[], || {
            std::env::set_var("XDG_CONFIG_HOME", xdg);
            let cli = settled(&["list"]).unwrap();
            assert_eq!(cli.repo.repo.as_deref(), Some("/default/repo"));
            // An empty file given explicitly turns the default one off.
            let cli = settled(&["--config", "/dev/null", "list"]).unwrap();
            assert_eq!(cli.repo.repo, None);
        });
    }

    #[test]
    fn restore_needs_a_target() {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        assert!(Cli::try_parse_from(["ceso-backup", "restore", "x"]).is_err());
        assert!(Cli::try_parse_from(["ceso-backup", "restore", "x", "--to", "y"]).is_ok());
        assert!(Cli::try_parse_from(["ceso-backup", "restore", "x", "--to-file", "f"]).is_err());
        assert!(
            Cli::try_parse_from(["ceso-backup", "restore", "x", "--to", "y", "--force"]).is_ok()
        );
        assert!(Cli::try_parse_from([
            "ceso-backup",
            "restore",
            "x",
            "--disk",
            "0",
            "--to-file",
            "f",
            "--force"
        ])
        .is_err());
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
