//! The provider's data: the registry of configured vSphere endpoints, each with one lazily
//! opened session per provider process shared by every resource, and the mapping of client
//! errors to diagnostics ("Unable to <action>: what vSphere said + what to do").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::framework::{AttrPath, Context, Diagnostics};
use crate::vsphere::{Client, ConnectConfig, Error, ErrorKind};

/// The name of the endpoint the single-endpoint provider form configures.
pub const DEFAULT_ENDPOINT: &str = "default";

/// One configured endpoint; the session opens on first use and is shared by every resource.
pub struct Connection {
    name: String,
    config: ConnectConfig,
    keepalive: Option<std::time::Duration>,
    client: OnceCell<Arc<Client>>,
    /// Whether the warning about an unverified TLS handshake was given (once per process).
    warned_unverified: AtomicBool,
}

impl Connection {
    /// A connection named `name` that has not logged in yet.
    pub fn new(name: impl Into<String>, config: ConnectConfig) -> Self {
        Self {
            name: name.into(),
            config,
            keepalive: None,
            client: OnceCell::new(),
            warned_unverified: AtomicBool::new(false),
        }
    }

    /// Keeps the session alive with a call every `every` once it is open.
    pub fn with_keepalive(mut self, every: Option<std::time::Duration>) -> Self {
        self.keepalive = every;
        self
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The logged-in client, logging in on first use (concurrent first uses share one login).
    pub async fn client(&self) -> Result<Arc<Client>, Error> {
        self.client
            .get_or_try_init(|| async {
                let client = Arc::new(Client::connect(self.config.clone()).await?);
                if let Some(every) = self.keepalive {
                    client.keep_alive(every);
                }
                Ok(client)
            })
            .await
            .cloned()
    }

    /// Logs out if a session was opened.
    pub async fn close(&self) {
        if let Some(client) = self.client.get() {
            client.logout().await;
        }
    }
}

/// Every configured endpoint, by name, in configuration order.
pub struct Endpoints {
    list: Vec<Connection>,
}

impl Endpoints {
    /// The registry of `list` (names are unique; the provider checks that).
    pub fn new(list: Vec<Connection>) -> Self {
        Self { list }
    }

    /// The endpoints, in configuration order.
    pub fn all(&self) -> &[Connection] {
        &self.list
    }

    /// The endpoint named `name`, or the only one when `name` is unset.
    pub fn get(&self, name: Option<&str>) -> Result<&Connection, Diagnostics> {
        let names = || {
            self.list
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.list.is_empty() {
            return Err(Diagnostics::from_error(
                "No vSphere endpoint",
                "The provider has no vSphere endpoint configured; set `url` (or CESO_URL), `user` and `password`, or `endpoint` blocks.",
            ));
        }
        match name {
            Some(n) => self.list.iter().find(|c| c.name == n).ok_or_else(|| {
                Diagnostics::from_attr_error(
                    crate::framework::AttrPath::attr("endpoint"),
                    "Unknown endpoint",
                    format!("No endpoint is named {n:?}; the provider has: {}.", names()),
                )
            }),
            None if self.list.len() == 1 => Ok(&self.list[0]),
            None => Err(Diagnostics::from_attr_error(
                crate::framework::AttrPath::attr("endpoint"),
                "Missing endpoint",
                format!(
                    "The provider has {} endpoints; set `endpoint` to one of: {}.",
                    self.list.len(),
                    names()
                ),
            )),
        }
    }

    /// Logs out of every endpoint that was used, in parallel.
    pub async fn close(&self) {
        futures::future::join_all(self.list.iter().map(Connection::close)).await;
    }
}

/// Where `ceso_backup_job` keeps job definitions: the backup repository and its key.
#[derive(Clone)]
pub struct BackupSettings {
    /// The repository URL (`file:///...`, a path, or `s3://bucket/prefix`).
    pub repository: String,
    /// Its passphrase, when given (used to check it opens before a job is written).
    pub password: Option<crate::vsphere::Secret>,
}

/// What `configure` hands every resource: the endpoints and the backup settings.
pub struct ProviderState {
    /// The vSphere endpoints.
    pub endpoints: Endpoints,
    /// The backup repository, when configured.
    pub backup: Option<BackupSettings>,
}

impl ProviderState {
    /// The backup settings, or a diagnostic saying how to give them.
    pub fn backup(&self) -> Result<&BackupSettings, Diagnostics> {
        self.backup.as_ref().ok_or_else(|| {
            Diagnostics::from_error(
                "No backup repository",
                "Set `backup_repository` in the provider block (or CESO_BACKUP_REPO), e.g. \"file:///srv/backups\" or \"s3://bucket/prefix\"; create it with `ceso-backup init`.",
            )
        })
    }
}

/// The logged-in client of `endpoint` (the only endpoint when unset), for a resource or data
/// source call. A failure names the endpoint, so an unreachable one fails only what needs it.
pub async fn client(ctx: &Context, endpoint: Option<&str>) -> Result<Arc<Client>, Diagnostics> {
    let state = ctx.data::<ProviderState>()?;
    let conn = state.endpoints.get(endpoint)?;
    connect(ctx, conn).await
}

/// The logged-in client of one endpoint, with its name in the error. The first call to find
/// the server's TLS handshake accepted unverified (`allow_unverified_ssl`) warns about it.
pub async fn connect(ctx: &Context, conn: &Connection) -> Result<Arc<Client>, Diagnostics> {
    let client = conn.client().await.map_err(|e| {
        let what = if conn.name == DEFAULT_ENDPOINT {
            "connect to the vSphere endpoint".to_string()
        } else {
            format!("connect to endpoint {:?} ({})", conn.name, conn.config.url)
        };
        error_diagnostics(&what, &e)
    })?;
    if let Some(why) = client.unverified_handshake() {
        if !conn.warned_unverified.swap(true, Ordering::Relaxed) {
            let which = if conn.name == DEFAULT_ENDPOINT {
                format!("The vSphere endpoint ({})", conn.config.url)
            } else {
                format!("Endpoint {:?} ({})", conn.name, conn.config.url)
            };
            ctx.warnings.warning(
                "TLS handshake signature not verified",
                format!("{which} signed the TLS handshake with a signature that does not verify ({why}); certificates with RSA keys shorter than 2048 bits, as on ESXi 5.x and 6.0 hosts, do this. ceso connected anyway because allow_unverified_ssl = true: the connection is encrypted, but nothing proves which server is at the other end. Give the host a certificate with a 2048-bit or larger key, then pin it with `thumbprint`."),
            );
        }
    }
    Ok(client)
}

/// Turns a client error into a diagnostic: summary "Unable to {action}", detail with vSphere's
/// message and what the user can do about it.
pub fn error_diagnostics(action: &str, e: &Error) -> Diagnostics {
    let hint = match e.kind {
        ErrorKind::Auth => " Check `user` and `password` (or CESO_USER / CESO_PASSWORD).",
        ErrorKind::Transport => " Check `url` and that the host is reachable.",
        ErrorKind::Timeout => " Check that the endpoint is reachable, or raise `api_timeout`.",
        ErrorKind::NotVsphere => " `url` must point at an ESXi host or vCenter Server, e.g. https://esx1.example.com/sdk.",
        ErrorKind::Permission => " The user needs more privileges for this.",
        _ => "",
    };
    let fault = e
        .fault
        .as_deref()
        .map(|f| format!(" (vSphere fault {f})"))
        .unwrap_or_default();
    Diagnostics::from_error(
        format!("Unable to {action}"),
        format!("{}{fault}.{hint}", e.message.trim_end_matches('.')),
    )
}

/// A failed lookup of what an attribute names. When vSphere says there is no such object (or
/// the name is ambiguous or malformed), the error sits on the attribute as `summary` (e.g.
/// "Unknown VM") with vSphere's message; any other failure (the connection, a timeout) goes
/// through [`error_diagnostics`], so it is never mistaken for a wrong name.
pub fn lookup_diagnostics(path: AttrPath, summary: &str, e: &Error) -> Diagnostics {
    match e.kind {
        ErrorKind::NotFound | ErrorKind::InvalidArgument | ErrorKind::AlreadyExists => {
            Diagnostics::from_attr_error(path, summary, e.message.clone())
        }
        _ => {
            let mut d = error_diagnostics(&format!("look up {path}"), e);
            d.0.iter_mut()
                .for_each(|diag| diag.path = Some(path.clone()));
            d
        }
    }
}
