//! The provider's data: one lazily opened, shared vSphere session per provider process, and the
//! mapping of client errors to diagnostics ("Unable to <action>: what vSphere said + what to do").

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::framework::{Context, Diagnostics};
use crate::vsphere::{Client, ConnectConfig, Error, ErrorKind};

/// The configured endpoint; the session opens on first use and is shared by every resource.
pub struct Connection {
    config: ConnectConfig,
    client: OnceCell<Arc<Client>>,
}

impl Connection {
    /// A connection that has not logged in yet.
    pub fn new(config: ConnectConfig) -> Self {
        Self {
            config,
            client: OnceCell::new(),
        }
    }

    /// The logged-in client, logging in on first use.
    pub async fn client(&self) -> Result<Arc<Client>, Error> {
        self.client
            .get_or_try_init(|| async { Client::connect(self.config.clone()).await.map(Arc::new) })
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

/// The logged-in client of the configured endpoint, for a resource or data source call.
pub async fn client(ctx: &Context) -> Result<Arc<Client>, Diagnostics> {
    let conn = ctx.data::<Connection>()?;
    conn.client()
        .await
        .map_err(|e| error_diagnostics("connect to the vSphere endpoint", &e))
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
