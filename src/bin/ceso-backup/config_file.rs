//! The configuration file: the repository and vSphere settings the flags and environment
//! variables give, in TOML, used only where neither a flag nor a variable gives the setting.
//!
//! Found at `--config PATH` (or CESO_BACKUP_CONFIG), else `$XDG_CONFIG_HOME/ceso/backup.toml`
//! or `~/.config/ceso/backup.toml` when that exists. A file holding the vSphere password must
//! be private to its owner, as ssh demands of its keys; unknown keys are errors, so a typo
//! never silently drops a setting.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::failure::Failure;
use crate::settings::parse_duration;

/// The default file below the configuration directory.
const DEFAULT_FILE: &str = "ceso/backup.toml";

/// An example, for `--help` (and the README shows the same).
pub const EXAMPLE: &str = r#"repo = "/srv/backups/vsphere"        # or file:///path, s3://bucket/prefix
password_file = "repo.pass"          # or key_file; relative to this file's directory

[vsphere]
url = "vcenter.example.com"
user = "backup@vsphere.local"
password = "..."                     # only in a file others cannot read (chmod 600)
thumbprint = "AB:CD:..."             # or allow_unverified_ssl = true
api_timeout = "60s"
"#;

/// The file's settings (every one optional).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The repository (as `--repo`).
    pub repo: Option<String>,
    /// The repository's passphrase file (as `--password-file`).
    pub password_file: Option<PathBuf>,
    /// The repository's key file (as `--key-file`).
    pub key_file: Option<PathBuf>,
    /// The vSphere endpoint.
    #[serde(default)]
    pub vsphere: VsphereSection,
}

/// The `[vsphere]` table: the endpoint, as the `--url` ... `--api-timeout` flags.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsphereSection {
    /// ESXi host or vCenter.
    pub url: Option<String>,
    /// User name.
    pub user: Option<String>,
    /// Password (the file must then be private: mode 600).
    pub password: Option<String>,
    /// SHA-256 thumbprint of the server certificate.
    pub thumbprint: Option<String>,
    /// Accept any server certificate.
    pub allow_unverified_ssl: Option<bool>,
    /// Time limit of each vSphere API call: `"90s"`, `"2m"`, or seconds as a number.
    #[serde(default, deserialize_with = "duration")]
    pub api_timeout: Option<Duration>,
}

/// A duration as text (`"90s"`, `"2m"`) or a number of seconds.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration like \"60s\" or \"2m\", or a number of seconds")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(|e| E::custom(format!("{v:?} is {e}")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a negative duration"))
        }
    }
    d.deserialize_any(Visitor).map(Some)
}

/// Which file to read: the one given (`--config` or CESO_BACKUP_CONFIG), which must exist;
/// else the default one when it exists; else none. `xdg_config_home` and `home` are those
/// environment variables.
pub fn locate(
    given: Option<&Path>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_path_buf());
    }
    let path = default_path(xdg_config_home, home)?;
    path.is_file().then_some(path)
}

/// `$XDG_CONFIG_HOME/ceso/backup.toml` (when that is an absolute path, as the XDG
/// specification asks), else `$HOME/.config/ceso/backup.toml`.
pub fn default_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let dir = match xdg {
        Some(dir) => dir,
        None => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(dir.join(DEFAULT_FILE))
}

impl ConfigFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, Failure> {
        let unreadable = |e: std::io::Error| {
            Failure::usage(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        };
        let mut file = std::fs::File::open(path).map_err(unreadable)?;
        // The mode of the file read, not of whatever the path names a moment later.
        let mode = file.metadata().map_err(unreadable)?.permissions().mode();
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(unreadable)?;
        let mut config = ConfigFile::parse(path, &text)?;
        if config.vsphere.password.is_some() {
            check_private(path, mode)?;
        }
        config.resolve_paths(path, std::env::var_os("HOME"));
        Ok(config)
    }

    /// Parses the text of the file at `path` and checks that its settings fit together.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, Failure> {
        let config: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(", line {}", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            Failure::usage(format!(
                "config file {}{line}: {}",
                path.display(),
                e.message().trim_end()
            ))
        })?;
        let conflict = |a: &str, b: &str| {
            Failure::usage(format!(
                "config file {}: {a} and {b} exclude each other; keep one",
                path.display()
            ))
        };
        if config.password_file.is_some() && config.key_file.is_some() {
            return Err(conflict("password_file", "key_file"));
        }
        if config.vsphere.thumbprint.is_some() && config.vsphere.allow_unverified_ssl == Some(true)
        {
            return Err(conflict("thumbprint", "allow_unverified_ssl = true"));
        }
        Ok(config)
    }

    /// Makes relative paths (the key files, a repository that is a plain directory) relative
    /// to the file's directory, and `~/` the home directory.
    fn resolve_paths(&mut self, path: &Path, home: Option<OsString>) {
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| -> PathBuf {
            match (p.strip_prefix("~"), &home) {
                (Ok(rest), Some(home)) => Path::new(home).join(rest),
                _ => base.join(p),
            }
        };
        for p in [&mut self.password_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            *p = resolve(p);
        }
        if let Some(repo) = &mut self.repo {
            if !repo.contains("://") && !repo.is_empty() {
                *repo = resolve(Path::new(repo)).to_string_lossy().into_owned();
            }
        }
    }
}

/// Refuses a file holding a password that its group or others may read or write (`mode` is
/// the file's `st_mode`).
pub fn check_private(path: &Path, mode: u32) -> Result<(), Failure> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "config file {p} holds the vSphere password but its group or others may access it \
         (mode {mode:04o}); make it private with `chmod 600 {p}`, or keep the password in \
         CESO_PASSWORD instead",
        p = path.display(),
        mode = mode & 0o7777
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(Path::new("/etc/b.toml"), text).map_err(|f| {
            assert_eq!(f.code, 2, "{}", f.message);
            f.message
        })
    }

    #[test]
    fn the_example_is_valid() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.vsphere.api_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn reads_every_setting() {
        let c = parse(
            r#"
            repo = "s3://bucket/vms"
            key_file = "/k"
            [vsphere]
            url = "vc.example.com"
            user = "u"
            password = "p"
            thumbprint = "AB:CD"
            allow_unverified_ssl = false
            api_timeout = "2m"
            "#,
        )
        .unwrap();
        assert_eq!(c.repo.as_deref(), Some("s3://bucket/vms"));
        assert_eq!(c.key_file, Some(PathBuf::from("/k")));
        assert_eq!(c.password_file, None);
        assert_eq!(c.vsphere.url.as_deref(), Some("vc.example.com"));
        assert_eq!(c.vsphere.user.as_deref(), Some("u"));
        assert_eq!(c.vsphere.password.as_deref(), Some("p"));
        assert_eq!(c.vsphere.thumbprint.as_deref(), Some("AB:CD"));
        assert_eq!(c.vsphere.allow_unverified_ssl, Some(false));
        assert_eq!(c.vsphere.api_timeout, Some(Duration::from_secs(120)));
        let c = parse("[vsphere]\napi_timeout = 45\n").unwrap();
        assert_eq!(c.vsphere.api_timeout, Some(Duration::from_secs(45)));
        assert_eq!(parse("").unwrap(), ConfigFile::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let e = parse("repo = \"/r\"\nrepository = \"/r\"\n").unwrap_err();
        assert!(e.contains("/etc/b.toml, line 2"), "{e}");
        assert!(e.contains("unknown field `repository`"), "{e}");
        let e = parse("[vsphere]\nurl = \"x\"\npasword = \"p\"\n").unwrap_err();
        assert!(e.contains("/etc/b.toml, line 3"), "{e}");
        assert!(e.contains("`pasword`"), "{e}");
        let e = parse("[vcenter]\nurl = \"x\"\n").unwrap_err();
        assert!(e.contains("`vcenter`"), "{e}");
        let e = parse("[vsphere]\napi_timeout = \"soon\"\n").unwrap_err();
        assert!(e.contains("soon") && e.contains("line 2"), "{e}");
        let e = parse("[vsphere]\napi_timeout = -1\n").unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = parse("[vsphere]\nallow_unverified_ssl = \"yes\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("repo = \n").unwrap_err();
        assert!(e.contains("/etc/b.toml"), "{e}");
        let e = parse("password_file = \"a\"\nkey_file = \"b\"\n").unwrap_err();
        assert!(e.contains("exclude each other"), "{e}");
        let e = parse("[vsphere]\nthumbprint = \"AB\"\nallow_unverified_ssl = true\n").unwrap_err();
        assert!(e.contains("exclude each other"), "{e}");
    }

    #[test]
    fn a_password_needs_a_private_file() {
        let path = Path::new("/home/a/.config/ceso/backup.toml");
        assert!(check_private(path, 0o100600).is_ok());
        assert!(check_private(path, 0o100400).is_ok());
        assert!(check_private(path, 0o100700).is_ok());
        for mode in [0o100644, 0o100640, 0o100604, 0o100620, 0o100602, 0o100666] {
            let e = check_private(path, mode).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(
                e.message.contains(&path.display().to_string()),
                "{}",
                e.message
            );
            assert!(
                e.message
                    .contains("chmod 600 /home/a/.config/ceso/backup.toml"),
                "{}",
                e.message
            );
            assert!(e.message.contains(&format!("{:04o}", mode & 0o7777)));
        }
    }

    #[test]
    fn load_checks_the_mode_only_when_the_file_holds_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.toml");
        let set_mode = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        std::fs::write(&path, "[vsphere]\nuser = \"u\"\n").unwrap();
        set_mode(0o644);
        assert_eq!(
            ConfigFile::load(&path).unwrap().vsphere.user.as_deref(),
            Some("u")
        );
        std::fs::write(&path, "[vsphere]\npassword = \"secret\"\n").unwrap();
        let e = ConfigFile::load(&path).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("chmod 600"), "{}", e.message);
        assert!(!e.message.contains("secret"), "{}", e.message);
        set_mode(0o600);
        assert_eq!(
            ConfigFile::load(&path).unwrap().vsphere.password.as_deref(),
            Some("secret")
        );
        let e = ConfigFile::load(&dir.path().join("missing.toml")).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("missing.toml"), "{}", e.message);
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let mut c =
            parse("repo = \"repo\"\npassword_file = \"~/pass\"\n[vsphere]\nurl = \"u\"\n").unwrap();
        c.resolve_paths(Path::new("/etc/ceso/backup.toml"), Some("/home/a".into()));
        assert_eq!(c.repo.as_deref(), Some("/etc/ceso/repo"));
        assert_eq!(c.password_file, Some(PathBuf::from("/home/a/pass")));
        let mut c = parse("repo = \"s3://b/p\"\nkey_file = \"/abs/key\"\n").unwrap();
        c.resolve_paths(Path::new("/etc/ceso/backup.toml"), None);
        assert_eq!(c.repo.as_deref(), Some("s3://b/p"));
        assert_eq!(c.key_file, Some(PathBuf::from("/abs/key")));
    }

    #[test]
    fn the_default_file() {
        assert_eq!(
            default_path(Some("/x/conf".into()), Some("/home/a".into())),
            Some(PathBuf::from("/x/conf/ceso/backup.toml"))
        );
        // A relative or empty XDG_CONFIG_HOME is ignored, as the XDG specification says.
        for xdg in [None, Some("".into()), Some("rel".into())] {
            assert_eq!(
                default_path(xdg, Some("/home/a".into())),
                Some(PathBuf::from("/home/a/.config/ceso/backup.toml"))
            );
        }
        assert_eq!(default_path(None, None), None);
        let dir = tempfile::tempdir().unwrap();
        let xdg = || Some(dir.path().as_os_str().to_owned());
        assert_eq!(
            locate(None, xdg(), None),
            None,
            "none when it does not exist"
        );
        std::fs::create_dir_all(dir.path().join("ceso")).unwrap();
        std::fs::write(dir.path().join("ceso/backup.toml"), "").unwrap();
        assert_eq!(
            locate(None, xdg(), None),
            Some(dir.path().join("ceso/backup.toml"))
        );
        assert_eq!(
            locate(Some(Path::new("/given.toml")), xdg(), None),
            Some(PathBuf::from("/given.toml")),
            "the given file wins, existing or not"
        );
    }
}
