//! The go-plugin handshake: the magic cookie check, protocol version negotiation, and the line
//! printed on stdout that tells Terraform where and how to connect.

/// The cookie Terraform sets for provider plugins (go-plugin's `MagicCookieKey`/`Value`).
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// The value it must have.
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's core protocol version.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The Terraform plugin protocol major version this provider speaks.
pub const APP_PROTOCOL_VERSION: u32 = 5;

/// Why the handshake cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Started by hand rather than by Terraform.
    #[error(
        "This binary is a plugin. These are not meant to be executed directly.\n\
         Please execute the program that consumes these plugins, which will\n\
         load any plugins automatically.\n\n\
         terraform-provider-ceso is the ceso provider for Terraform and OpenTofu: add\n\
         `ceso = {{ source = \"choiceomg/ceso\" }}` to required_providers and run\n\
         `terraform init`. To attach a debugger, run it with --debug."
    )]
    NotLaunchedByTerraform,
    /// Terraform offered only protocol versions we don't speak.
    #[error("Terraform offered plugin protocol versions {offered:?}, but this provider speaks only version {APP_PROTOCOL_VERSION}; use Terraform 0.12 or newer (or OpenTofu)")]
    UnsupportedVersion {
        /// What Terraform offered.
        offered: String,
    },
}

/// Checks the magic cookie in the environment.
pub fn check_cookie(value: Option<&str>) -> Result<(), HandshakeError> {
    match value {
        Some(v) if v == MAGIC_COOKIE_VALUE => Ok(()),
        _ => Err(HandshakeError::NotLaunchedByTerraform),
    }
}

/// Picks our protocol version from `PLUGIN_PROTOCOL_VERSIONS` (comma-separated; absent means
/// the client accepts ours).
pub fn negotiate_version(offered: Option<&str>) -> Result<u32, HandshakeError> {
    let Some(offered) = offered.filter(|s| !s.trim().is_empty()) else {
        return Ok(APP_PROTOCOL_VERSION);
    };
    if offered
        .split(',')
        .filter_map(|v| v.trim().parse::<u32>().ok())
        .any(|v| v == APP_PROTOCOL_VERSION)
    {
        Ok(APP_PROTOCOL_VERSION)
    } else {
        Err(HandshakeError::UnsupportedVersion {
            offered: offered.to_string(),
        })
    }
}

/// The handshake line: `CORE|APP|NETWORK|ADDRESS|grpc|CERT` (CERT empty without AutoMTLS).
pub fn handshake_line(network: &str, address: &str, cert: Option<&str>) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|{network}|{address}|grpc|{}",
        cert.unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_must_match() {
        assert!(check_cookie(Some(MAGIC_COOKIE_VALUE)).is_ok());
        assert!(check_cookie(Some("x")).is_err());
        let e = check_cookie(None).unwrap_err().to_string();
        assert!(e.contains("not meant to be executed directly"), "{e}");
    }

    #[test]
    fn negotiates_five() {
        assert_eq!(negotiate_version(Some("5,6")).unwrap(), 5);
        assert_eq!(negotiate_version(None).unwrap(), 5);
        assert!(negotiate_version(Some("6")).is_err());
    }

    #[test]
    fn formats_the_line() {
        assert_eq!(
            handshake_line("unix", "/tmp/p.sock", Some("QUJD")),
            "1|5|unix|/tmp/p.sock|grpc|QUJD"
        );
        assert_eq!(
            handshake_line("tcp", "127.0.0.1:1", None),
            "1|5|tcp|127.0.0.1:1|grpc|"
        );
    }
}
