//! The provider block's model: configured values with their environment fallbacks, checked and
//! turned into the vSphere client's connection settings.

use std::time::Duration;

use serde::Deserialize;

use crate::framework::{AttrPath, Diagnostics};
use crate::units::parse_duration;
use crate::vsphere::client::parse_endpoint_url;
use crate::vsphere::tls::parse_thumbprint;
use crate::vsphere::{ConnectConfig, Secret, TlsPolicy};

/// The default time limit of one vSphere API call.
pub const DEFAULT_API_TIMEOUT: &str = "60s";

/// The provider block as configured (null = unset).
#[derive(Debug, Default, Deserialize)]
pub struct ProviderModel {
    /// `url`
    pub url: Option<String>,
    /// `user`
    pub user: Option<String>,
    /// `password`
    pub password: Option<String>,
    /// `allow_unverified_ssl`
    pub allow_unverified_ssl: Option<bool>,
    /// `thumbprint`
    pub thumbprint: Option<String>,
    /// `api_timeout`
    pub api_timeout: Option<String>,
    /// `session_keepalive`
    pub session_keepalive: Option<String>,
    /// `backup_repository`
    pub backup_repository: Option<String>,
    /// `backup_password`
    pub backup_password: Option<String>,
    /// `endpoint` blocks (several endpoints).
    #[serde(default)]
    pub endpoint: Option<Vec<EndpointBlock>>,
}

/// One `endpoint` block.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct EndpointBlock {
    /// `name`
    pub name: String,
    /// `url`
    pub url: String,
    /// `user` (default: the provider's)
    pub user: Option<String>,
    /// `password` (default: the provider's)
    pub password: Option<String>,
    /// `thumbprint`
    pub thumbprint: Option<String>,
    /// `allow_unverified_ssl` (default: the provider's)
    pub allow_unverified_ssl: Option<bool>,
    /// `api_timeout` (default: the provider's)
    pub api_timeout: Option<String>,
}

/// Reads an environment variable, treating empty as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ProviderModel {
    /// Fills unset values from `CESO_*` environment variables.
    pub fn with_env_fallbacks(mut self) -> Self {
        // With endpoint blocks, CESO_URL (meant for the single-endpoint form) is not used.
        let several = self.endpoint.as_ref().is_some_and(|e| !e.is_empty());
        if !several {
            self.url = self.url.or_else(|| env("CESO_URL"));
        }
        self.user = self.user.or_else(|| env("CESO_USER"));
        self.password = self.password.or_else(|| env("CESO_PASSWORD"));
        self.thumbprint = self.thumbprint.or_else(|| env("CESO_THUMBPRINT"));
        self.api_timeout = self.api_timeout.or_else(|| env("CESO_API_TIMEOUT"));
        if self.allow_unverified_ssl.is_none() {
            self.allow_unverified_ssl = env("CESO_ALLOW_UNVERIFIED_SSL")
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        }
        self
    }

    /// The backup repository settings (`backup_repository` / `CESO_BACKUP_REPO`), if any.
    pub fn backup_settings(&self) -> Option<crate::session::connection::BackupSettings> {
        let repository = self
            .backup_repository
            .clone()
            .or_else(|| env("CESO_BACKUP_REPO"))?;
        Some(crate::session::connection::BackupSettings {
            repository,
            password: self
                .backup_password
                .clone()
                .or_else(|| env("CESO_BACKUP_PASSWORD"))
                .map(Secret::new),
        })
    }

    /// How often to keep sessions alive (`session_keepalive`, default 10 minutes; `0s` never).
    pub fn keepalive(&self) -> Result<Option<Duration>, Diagnostics> {
        let text = self.session_keepalive.as_deref().unwrap_or("10m");
        match parse_duration(text) {
            Ok(d) if d.is_zero() => Ok(None),
            Ok(d) if d >= Duration::from_millis(100) => Ok(Some(d)),
            Ok(_) => Err(Diagnostics::from_attr_error(
                AttrPath::attr("session_keepalive"),
                "Invalid session_keepalive",
                format!("{text:?} is too short; use at least \"1s\", or \"0s\" for none."),
            )),
            Err(why) => Err(Diagnostics::from_attr_error(
                AttrPath::attr("session_keepalive"),
                "Invalid session_keepalive",
                format!("{text:?}: {why}. Use e.g. \"10m\"."),
            )),
        }
    }

    /// The named endpoints to connect to: the `endpoint` blocks (user, password, TLS and
    /// timeout defaulting to the provider's), or the single endpoint of the top-level
    /// attributes, named `default`.
    pub fn endpoints(&self) -> Result<Vec<(String, ConnectConfig)>, Diagnostics> {
        let blocks = self.endpoint.clone().unwrap_or_default();
        if blocks.is_empty() {
            return Ok(vec![(
                crate::session::connection::DEFAULT_ENDPOINT.to_string(),
                self.connect_config()?,
            )]);
        }
        let mut diags = Diagnostics::new();
        let mut out: Vec<(String, ConnectConfig)> = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let here = AttrPath::attr("endpoint").join_index(i);
            if out.iter().any(|(n, _)| *n == b.name) {
                diags.attr_error(
                    here.join_attr("name"),
                    "Duplicate endpoint name",
                    format!("Another endpoint is already named {:?}; names must be unique (resources pick an endpoint by name).", b.name),
                );
                continue;
            }
            let one = ProviderModel {
                url: Some(b.url.clone()),
                user: b.user.clone().or_else(|| self.user.clone()),
                password: b.password.clone().or_else(|| self.password.clone()),
                allow_unverified_ssl: b.allow_unverified_ssl.or(self.allow_unverified_ssl),
                thumbprint: b.thumbprint.clone(),
                api_timeout: b.api_timeout.clone().or_else(|| self.api_timeout.clone()),
                session_keepalive: None,
                backup_repository: None,
                backup_password: None,
                endpoint: None,
            };
            match one.connect_config() {
                Ok(c) => out.push((b.name.clone(), c)),
                Err(d) => {
                    for mut diag in d.0 {
                        // Problems of the block's own attributes point into the block; an
                        // api_timeout it inherits points at the provider's.
                        if let Some(p) = diag.path.take() {
                            let attr = p.to_string();
                            diag.path = Some(if attr == "api_timeout" && b.api_timeout.is_none() {
                                p
                            } else {
                                here.clone().join_attr(&attr)
                            });
                        }
                        diags.0.push(diag);
                    }
                }
            }
        }
        if diags.has_errors() {
            Err(diags)
        } else {
            Ok(out)
        }
    }

    /// Checks the values and builds the connection settings; every problem is reported with
    /// the attribute it concerns.
    pub fn connect_config(&self) -> Result<ConnectConfig, Diagnostics> {
        let mut diags = Diagnostics::new();
        let missing = |diags: &mut Diagnostics, attr: &str, env: &str| {
            diags.attr_error(
                AttrPath::attr(attr),
                format!("Missing {attr}"),
                format!("Set `{attr}` in the provider block or the {env} environment variable."),
            )
        };
        let url = match self.url.as_deref() {
            None => {
                missing(&mut diags, "url", "CESO_URL");
                None
            }
            Some(text) => match parse_endpoint_url(text) {
                Ok(u) => Some(u),
                Err(why) => {
                    diags.attr_error(AttrPath::attr("url"), "Invalid url", why);
                    None
                }
            },
        };
        if self.user.is_none() {
            missing(&mut diags, "user", "CESO_USER");
        }
        if self.password.is_none() {
            missing(&mut diags, "password", "CESO_PASSWORD");
        }
        let insecure = self.allow_unverified_ssl.unwrap_or(false);
        let tls = match (&self.thumbprint, insecure) {
            (Some(_), true) => {
                diags.attr_error(
                    AttrPath::attr("thumbprint"),
                    "Conflicting TLS settings",
                    "`thumbprint` pins the server certificate and `allow_unverified_ssl = true` skips verification; set only one.",
                );
                TlsPolicy::Insecure
            }
            (Some(text), false) => match parse_thumbprint(text) {
                Ok(pin) => TlsPolicy::Thumbprint(pin),
                Err(why) => {
                    diags.attr_error(AttrPath::attr("thumbprint"), "Invalid thumbprint", why);
                    TlsPolicy::Verify
                }
            },
            (None, true) => TlsPolicy::Insecure,
            (None, false) => TlsPolicy::Verify,
        };
        let timeout_text = self.api_timeout.as_deref().unwrap_or(DEFAULT_API_TIMEOUT);
        let timeout = match parse_duration(timeout_text) {
            Ok(d) if d >= Duration::from_millis(100) => d,
            Ok(_) => {
                diags.attr_error(
                    AttrPath::attr("api_timeout"),
                    "Invalid api_timeout",
                    format!("{timeout_text:?} is too short; use at least \"1s\"."),
                );
                Duration::from_secs(60)
            }
            Err(why) => {
                diags.attr_error(
                    AttrPath::attr("api_timeout"),
                    "Invalid api_timeout",
                    format!("{timeout_text:?}: {why}. Use e.g. \"30s\" or \"2m\"."),
                );
                Duration::from_secs(60)
            }
        };
        match url {
            Some(url) if !diags.has_errors() => Ok(ConnectConfig {
                url,
                user: self.user.clone().unwrap_or_default(),
                password: Secret::new(self.password.clone().unwrap_or_default()),
                tls,
                timeout,
            }),
            _ => Err(diags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ProviderModel {
        ProviderModel {
            url: Some("esx1".into()),
            user: Some("root".into()),
            password: Some("pw".into()),
            ..Default::default()
        }
    }

    #[test]
    fn builds_a_verified_config_by_default() {
        let c = model().connect_config().unwrap();
        assert_eq!(c.url.as_str(), "https://esx1/sdk");
        assert_eq!(c.tls, TlsPolicy::Verify);
        assert_eq!(c.timeout, Duration::from_secs(60));
    }

    #[test]
    fn reports_each_problem_on_its_attribute() {
        let m = ProviderModel {
            url: Some("ftp://x".into()),
            thumbprint: Some("12".into()),
            api_timeout: Some("soon".into()),
            ..Default::default()
        };
        let d = m.connect_config().unwrap_err();
        let paths: Vec<String> =
            d.0.iter()
                .map(|d| d.path.clone().unwrap().to_string())
                .collect();
        for p in ["url", "user", "password", "thumbprint", "api_timeout"] {
            assert!(paths.contains(&p.to_string()), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn endpoint_blocks_take_their_own_api_timeout_or_the_providers() {
        let block = |name: &str, api_timeout: Option<&str>| EndpointBlock {
            name: name.into(),
            url: format!("{name}.example.com"),
            api_timeout: api_timeout.map(str::to_string),
            ..Default::default()
        };
        let m = ProviderModel {
            api_timeout: Some("2m".into()),
            endpoint: Some(vec![block("old", Some("5m")), block("new", None)]),
            ..model()
        };
        let e = m.endpoints().unwrap();
        assert_eq!(e[0].1.timeout, Duration::from_secs(300));
        assert_eq!(e[1].1.timeout, Duration::from_secs(120));

        // A bad value is reported where it was written.
        let m = ProviderModel {
            api_timeout: Some("soon".into()),
            endpoint: Some(vec![block("old", Some("later")), block("new", None)]),
            ..model()
        };
        let d = m.endpoints().unwrap_err();
        let paths: Vec<String> =
            d.0.iter()
                .map(|d| d.path.clone().unwrap().to_string())
                .collect();
        assert!(
            paths.contains(&"endpoint[0].api_timeout".to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&"api_timeout".to_string()), "{paths:?}");
    }

    #[test]
    fn thumbprint_and_insecure_conflict() {
        let m = ProviderModel {
            thumbprint: Some("AB".repeat(32)),
            allow_unverified_ssl: Some(true),
            ..model()
        };
        assert!(m.connect_config().is_err());
    }
}
