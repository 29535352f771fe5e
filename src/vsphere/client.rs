//! A logged-in connection to one vSphere endpoint (ESXi host or vCenter): service content,
//! login with the session cookie reused by every call, one re-login on an expired session,
//! and logout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

use super::batch::ReadBatcher;
use super::error::{Error, ErrorKind, Result};
use super::inventory::InventoryCache;
use super::methods::{CurrentTime, Login, Logout, Method, RetrieveServiceContent};
use super::prefetch::VmPrefetch;
use super::secret::Secret;
use super::task::TaskWaiter;

/// The answer to "does this environment browser support this guest id", shared by every caller
/// of the session that asks it (the first asks vSphere, the others wait for its answer).
pub(crate) type GuestIdCheck = Arc<tokio::sync::OnceCell<std::result::Result<(), Vec<String>>>>;
use super::tls::TlsPolicy;
use super::transport::Transport;
use super::types::{AboutInfo, ManagedObjectReference, ServiceContent};

/// How to reach and log in to an endpoint.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// The SDK URL, e.g. `https://esx1.example.com/sdk`.
    pub url: Url,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// How the server's certificate is trusted.
    pub tls: TlsPolicy,
    /// Time limit of each API call.
    pub timeout: Duration,
}

/// Parses an endpoint address: `https://host[:port]/sdk`, `http://...` (simulators), or a bare
/// `host[:port]` meaning `https://host[:port]/sdk`. A URL with no path gets `/sdk`.
pub fn parse_endpoint_url(text: &str) -> std::result::Result<Url, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the URL is empty".to_string());
    }
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("https://{text}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "{text:?} has scheme {:?}; use https:// (or http:// for a simulator)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host name"));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/sdk");
    }
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    Ok(url)
}

/// A logged-in connection to one endpoint.
pub struct Client {
    transport: Transport,
    content: ServiceContent,
    user: String,
    password: Secret,
    views: Mutex<HashMap<String, ManagedObjectReference>>,
    tasks: TaskWaiter,
    reads: ReadBatcher,
    inventory: InventoryCache,
    prefetch: VmPrefetch,
    guest_ids: Mutex<HashMap<String, GuestIdCheck>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.transport.url().as_str())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, reads the service content, negotiates the API version and logs in. The whole
    /// sequence gives up after the configured timeout.
    pub async fn connect(config: ConnectConfig) -> Result<Self> {
        let timeout = config.timeout;
        let url = config.url.clone();
        tokio::time::timeout(timeout, Self::connect_inner(config))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("{url} did not complete login within {timeout:?}"),
                )
            })?
    }

    async fn connect_inner(config: ConnectConfig) -> Result<Self> {
        let transport = Transport::new(config.url.clone(), &config.tls, config.timeout)?;
        let content = transport
            .call(&RetrieveServiceContent::default())
            .await?
            .returnval;
        if !content.about.api_version.is_empty() {
            transport.set_api_version(&content.about.api_version);
        }
        let client = Self {
            transport,
            content,
            user: config.user,
            password: config.password,
            views: Mutex::new(HashMap::new()),
            tasks: TaskWaiter::default(),
            reads: ReadBatcher::default(),
            inventory: InventoryCache::default(),
            prefetch: VmPrefetch::default(),
            guest_ids: Mutex::new(Default::default()),
        };
        client.login().await?;
        Ok(client)
    }

    async fn login(&self) -> Result<()> {
        let this = self.session_manager()?;
        let login = Login {
            this,
            user: self.user.clone(),
            password: self.password.clone(),
        };
        match self.transport.call(&login).await {
            Ok(session) => {
                tracing::debug!(user = %session.returnval.user_name, url = %self.transport.url(), "logged in");
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::Auth => Err(Error {
                kind: ErrorKind::Auth,
                fault: e.fault,
                message: format!(
                    "login to {} as {:?} was refused: {}",
                    self.transport.url(),
                    self.user,
                    e.message
                ),
                retry_after: None,
            }),
            Err(e) => Err(e),
        }
    }

    fn session_manager(&self) -> Result<ManagedObjectReference> {
        self.content
            .session_manager
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::NotVsphere, "the endpoint has no session manager"))
    }

    /// What the endpoint is.
    pub fn about(&self) -> &AboutInfo {
        &self.content.about
    }

    /// Why the server's TLS handshake signature was accepted unverified, if it was: only with
    /// `TlsPolicy::Insecure`, for a signature that did not verify (e.g. an RSA-1024 key).
    pub fn unverified_handshake(&self) -> Option<String> {
        self.transport.unverified_handshake()
    }

    /// The endpoint's service content.
    pub fn service_content(&self) -> &ServiceContent {
        &self.content
    }

    /// The SDK URL.
    pub fn url(&self) -> &Url {
        self.transport.url()
    }

    /// Calls a method in this session; when the session has expired (`NotAuthenticated`),
    /// logs in again once and repeats the call.
    pub async fn call<M: Method>(&self, method: &M) -> Result<M::Response> {
        if method.changes_inventory() {
            // A write that may change what the cached inventory says.
            self.inventory.clear();
        }
        if !method.is_idempotent() {
            self.prefetch.note_write(method);
        }
        match self.transport.call(method).await {
            Err(e) if e.fault.as_deref() == Some("NotAuthenticated") => {
                self.login_again().await?;
                self.transport.call(method).await
            }
            other => other,
        }
    }

    /// [`Client::call`] for a response the caller streams: the response of a call that
    /// succeeded, its body unread (an expired session is logged in again and the call repeated,
    /// as for `call`).
    pub async fn call_streamed<M: Method>(&self, method: &M) -> Result<reqwest::Response> {
        match self.transport.call_streamed(method).await {
            Err(e) if e.fault.as_deref() == Some("NotAuthenticated") => {
                self.login_again().await?;
                self.transport.call_streamed(method).await
            }
            other => other,
        }
    }

    /// Replaces an expired session: logs in again and forgets the views and collectors that
    /// belonged to the dead one.
    async fn login_again(&self) -> Result<()> {
        tracing::info!(url = %self.transport.url(), "session expired; logging in again");
        self.login().await?;
        self.views.lock().expect("lock").clear();
        self.tasks.reset();
        Ok(())
    }

    /// The server's clock: the cheapest authenticated call, used as a session keep-alive.
    pub async fn current_time(&self) -> Result<String> {
        Ok(self.call(&CurrentTime::default()).await?.returnval)
    }

    /// Keeps the session alive while the client lives: a `CurrentTime` call every `every`
    /// (servers end sessions idle for 30 minutes by default; long applies and daemons stay
    /// logged in). An expired session is logged in again by the call itself. The task ends when
    /// the last reference to the client is dropped.
    pub fn keep_alive(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(client) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = client.current_time().await {
                    tracing::debug!(error = %e, "session keep-alive failed");
                }
            }
        });
    }

    /// The container views this session keeps, by container and types.
    pub(crate) fn views(&self) -> &Mutex<HashMap<String, ManagedObjectReference>> {
        &self.views
    }

    /// Guest OS id checks of this session, by environment browser and id (each asked once).
    pub(crate) fn known_guest_ids(&self) -> &Mutex<HashMap<String, GuestIdCheck>> {
        &self.guest_ids
    }

    /// The inventory cache of this session.
    pub(crate) fn inventory_cache(&self) -> &InventoryCache {
        &self.inventory
    }

    /// The VM snapshot refreshes read from.
    pub(crate) fn vm_prefetch(&self) -> &VmPrefetch {
        &self.prefetch
    }

    /// The read batcher of this session.
    pub(crate) fn read_batcher(&self) -> &ReadBatcher {
        &self.reads
    }

    /// The task waiter of this session.
    pub(crate) fn task_waiter(&self) -> &TaskWaiter {
        &self.tasks
    }

    /// The user the session logs in as.
    pub(crate) fn user_name(&self) -> &str {
        &self.user
    }

    /// The password the session logs in with (for the REST login of the tagging service).
    pub(crate) fn password_text(&self) -> &str {
        self.password.expose()
    }

    /// The API timeout: every SOAP call's limit, and how long a transfer may move no byte.
    pub fn transport_timeout(&self) -> std::time::Duration {
        self.transport.timeout()
    }

    /// The transport, for datastore file access with the session cookie.
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Logs out (the session's views and collectors end with it); errors are ignored (the
    /// session expires on its own).
    pub async fn logout(&self) {
        self.views.lock().expect("lock").clear();
        if let Ok(this) = self.session_manager() {
            if let Err(e) = self.transport.call(&Logout { this }).await {
                tracing::debug!(error = %e, "logout failed");
            }
        }
        self.transport.clear_session();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoint_forms() {
        assert_eq!(
            parse_endpoint_url("esx1").unwrap().as_str(),
            "https://esx1/sdk"
        );
        assert_eq!(
            parse_endpoint_url("esx1:8443").unwrap().as_str(),
            "https://esx1:8443/sdk"
        );
        assert_eq!(
            parse_endpoint_url("http://127.0.0.1:1234/sdk")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:1234/sdk"
        );
        assert_eq!(
            parse_endpoint_url("https://u:p@vc.example.com")
                .unwrap()
                .as_str(),
            "https://vc.example.com/sdk"
        );
        assert!(parse_endpoint_url("ftp://x")
            .unwrap_err()
            .contains("https://"));
        assert!(parse_endpoint_url("").is_err());
    }
}
