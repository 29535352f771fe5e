//! Where things are and how to reach them: the repository (URL and key) and the vSphere
//! endpoint (URL, credentials, TLS), from flags with environment fallbacks, then the
//! configuration file ([`crate::config_file`]) for what neither gives; plus the parsers of sizes
//! and durations the flags take.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use ceso::engine::backup::{KeySource, Passphrase, Repository, RepositoryUrl};
use ceso::vsphere::client::parse_endpoint_url;
use ceso::vsphere::tls::parse_thumbprint;
use ceso::vsphere::{Client, ConnectConfig, Secret, TlsPolicy};

use crate::config_file::ConfigFile;
use crate::failure::Failure;

/// The repository and its key.
#[derive(Args, Debug, Clone)]
pub struct RepoArgs {
    /// Repository: a directory, file:///path, or s3://bucket/prefix (S3 settings from AWS_*).
    #[arg(long, env = "CESO_BACKUP_REPO", global = true, value_name = "URL")]
    pub repo: Option<String>,
    /// File whose first line is the repository passphrase (else CESO_BACKUP_PASSWORD).
    #[arg(long, global = true, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// Key file (32 random bytes as 64 hex digits) instead of a passphrase.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "password_file"
    )]
    pub key_file: Option<PathBuf>,
}

impl RepoArgs {
    /// Takes the config file's settings where neither a flag nor the environment gave one
    /// (`given(id)`: whether clap found argument `id` on the command line or in its variable).
    /// The key is one setting: the file's key or password file counts only when no flag names
    /// one and CESO_BACKUP_PASSWORD (`env_passphrase`) is not set.
    pub fn fill_from(
        &mut self,
        file: &ConfigFile,
        given: impl Fn(&str) -> bool,
        env_passphrase: bool,
    ) {
        if !given("repo") && file.repo.is_some() {
            self.repo = file.repo.clone();
        }
        if !given("password_file") && !given("key_file") && !env_passphrase {
            self.password_file = file.password_file.clone();
            self.key_file = file.key_file.clone();
        }
    }

    fn url(&self) -> Result<RepositoryUrl, Failure> {
        let text = self.repo.as_deref().ok_or_else(|| {
            Failure::usage(
                "no repository given: use --repo URL, set CESO_BACKUP_REPO, or set repo in the \
                 config file",
            )
        })?;
        RepositoryUrl::parse(text).map_err(|e| Failure::usage(e.to_string()))
    }

    /// The key source, if any was given. A key or password file that its group or others may
    /// read is refused, as ssh refuses such keys.
    pub fn key(&self) -> Result<Option<KeySource>, Failure> {
        if let Some(path) = &self.key_file {
            check_private(path, "key file")?;
            return Ok(Some(KeySource::KeyFile(path.clone())));
        }
        if let Some(path) = &self.password_file {
            let text = read_private(path, "password file")?;
            let line = text.lines().next().unwrap_or_default().to_string();
            if line.is_empty() {
                return Err(Failure::usage(format!(
                    "the password file {} is empty",
                    path.display()
                )));
            }
            return Ok(Some(KeySource::Passphrase(Passphrase::new(line))));
        }
        Ok(std::env::var("CESO_BACKUP_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .map(|p| KeySource::Passphrase(Passphrase::new(p))))
    }

    /// The repository's location, opened as a backend.
    pub fn backend(
        &self,
    ) -> Result<(RepositoryUrl, Arc<dyn ceso::engine::backup::Backend>), Failure> {
        let url = self.url()?;
        let backend = url.open().map_err(Failure::from)?;
        Ok((url, backend))
    }

    /// Opens the repository (with its key when encrypted).
    pub async fn open(&self) -> Result<Repository, Failure> {
        let (_, backend) = self.backend()?;
        Ok(Repository::open(backend, self.key()?).await?)
    }

    /// Opens the repository unless `cancel` fires first; its leased operations (verify,
    /// prune, gc) stop cleanly when `cancel` fires later.
    pub async fn open_until(&self, cancel: &CancellationToken) -> Result<Repository, Failure> {
        tokio::select! {
            r = self.open() => Ok(r?.with_cancel(cancel.clone())),
            () = cancel.cancelled() => Err(Failure::new(crate::failure::code::INTERRUPTED, "interrupted")),
        }
    }
}

/// The mode of the file at `path` as opened (not of whatever the path names a moment later),
/// refused when its group or others have any access.
fn check_private(path: &Path, what: &str) -> Result<std::fs::File, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::usage(format!("cannot read the {what} {}: {e}", path.display())))?;
    let mode = file
        .metadata()
        .map_err(|e| Failure::usage(format!("cannot read the {what} {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Failure::usage(format!(
            "the {what} {p} may be read by its group or others (mode {m:04o}); make it private \
             with `chmod 600 {p}`",
            p = path.display(),
            m = mode & 0o7777
        )));
    }
    Ok(file)
}

/// Reads a private file (see [`check_private`]).
fn read_private(path: &Path, what: &str) -> Result<String, Failure> {
    let mut file = check_private(path, what)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| Failure::usage(format!("cannot read the {what} {}: {e}", path.display())))?;
    Ok(text)
}

/// The vSphere endpoint.
#[derive(Args, Debug, Clone)]
pub struct VsphereArgs {
    /// ESXi host or vCenter: host[:port] or https://host/sdk.
    #[arg(long, env = "CESO_URL", value_name = "URL")]
    pub url: Option<String>,
    /// User name.
    #[arg(long, env = "CESO_USER")]
    pub user: Option<String>,
    /// Password (set CESO_PASSWORD rather than passing it on the command line).
    #[arg(long, env = "CESO_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Accept any server certificate.
    #[arg(long, env = "CESO_ALLOW_UNVERIFIED_SSL")]
    pub allow_unverified_ssl: bool,
    /// Pin the server certificate by its SHA-256 thumbprint.
    #[arg(long, env = "CESO_THUMBPRINT", conflicts_with = "allow_unverified_ssl")]
    pub thumbprint: Option<String>,
    /// Time limit of each vSphere API call.
    #[arg(long, env = "CESO_API_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub api_timeout: Duration,
}

impl VsphereArgs {
    /// Takes the config file's `[vsphere]` settings where neither a flag nor the environment
    /// gave one (`given(id)`, as for [`RepoArgs::fill_from`]). A pinned thumbprint from the file
    /// is not used when the flags or environment ask for `allow_unverified_ssl`.
    pub fn fill_from(&mut self, file: &ConfigFile, given: impl Fn(&str) -> bool) {
        let f = &file.vsphere;
        let take = |mine: &mut Option<String>, theirs: &Option<String>, id: &str| {
            if !given(id) && theirs.is_some() {
                *mine = theirs.clone();
            }
        };
        take(&mut self.url, &f.url, "url");
        take(&mut self.user, &f.user, "user");
        take(&mut self.password, &f.password, "password");
        let insecure_given = given("allow_unverified_ssl");
        if !(insecure_given && self.allow_unverified_ssl) {
            take(&mut self.thumbprint, &f.thumbprint, "thumbprint");
        }
        if !insecure_given && !given("thumbprint") {
            if let Some(insecure) = f.allow_unverified_ssl {
                self.allow_unverified_ssl = insecure;
            }
        }
        if let (false, Some(timeout)) = (given("api_timeout"), f.api_timeout) {
            self.api_timeout = timeout;
        }
    }

    /// The endpoint as manifests record it when no endpoint name is given: the server's host
    /// (and port, when not the default).
    pub fn endpoint_id(&self) -> Option<String> {
        let url = parse_endpoint_url(self.url.as_deref()?).ok()?;
        let host = url.host_str()?.to_string();
        Some(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }

    /// Logs in.
    pub async fn connect(&self) -> Result<Arc<Client>, Failure> {
        self.login()
            .await?
            .map_err(|e| Failure::new(1, format!("unable to log in to vSphere: {e}")))
    }

    /// Logs in: a usage failure (a missing or malformed setting), or vSphere's answer, whose
    /// kind tells a lasting refusal (credentials, certificate) from an outage.
    pub async fn login(&self) -> Result<Result<Arc<Client>, ceso::vsphere::Error>, Failure> {
        let missing = |what: &str, env: &str| {
            Failure::usage(format!(
                "no vSphere {what} given: use --{what}, set {env}, or set {what} in the \
                 config file's [vsphere] table"
            ))
        };
        let url = parse_endpoint_url(
            self.url
                .as_deref()
                .ok_or_else(|| missing("url", "CESO_URL"))?,
        )
        .map_err(Failure::usage)?;
        let user = self
            .user
            .clone()
            .ok_or_else(|| missing("user", "CESO_USER"))?;
        let password = self
            .password
            .clone()
            .ok_or_else(|| missing("password", "CESO_PASSWORD"))?;
        let tls = match (&self.thumbprint, self.allow_unverified_ssl) {
            (Some(t), _) => TlsPolicy::Thumbprint(parse_thumbprint(t).map_err(Failure::usage)?),
            (None, true) => TlsPolicy::Insecure,
            (None, false) => TlsPolicy::Verify,
        };
        ceso::vsphere::tls::install_crypto_provider();
        Ok(Client::connect(ConnectConfig {
            url,
            user,
            password: Secret::new(password),
            tls,
            timeout: self.api_timeout,
        })
        .await
        .map(Arc::new))
    }
}

pub use ceso::units::{parse_duration, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_password_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "secret\n").unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "00".repeat(32)).unwrap();
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let args = |password_file: Option<&Path>, key_file: Option<&Path>| RepoArgs {
            repo: None,
            password_file: password_file.map(Path::to_path_buf),
            key_file: key_file.map(Path::to_path_buf),
        };
        for mode in [0o644, 0o640, 0o604, 0o660] {
            set(&pass, mode);
            set(&key, mode);
            for a in [args(Some(&pass), None), args(None, Some(&key))] {
                let e = a.key().unwrap_err();
                assert_eq!(e.code, 2);
                assert!(e.message.contains("chmod 600"), "{}", e.message);
                assert!(!e.message.contains("secret"), "{}", e.message);
            }
        }
        set(&pass, 0o600);
        set(&key, 0o400);
        assert!(args(Some(&pass), None).key().unwrap().is_some());
        assert!(args(None, Some(&key)).key().unwrap().is_some());
    }
}
