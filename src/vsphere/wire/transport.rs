//! The HTTP side of SOAP: one reqwest client per endpoint, the session cookie, the SOAPAction
//! header with the negotiated API version, timeouts, retries of idempotent calls, and the
//! redacted wire log (`RUST_LOG=ceso::vsphere::wire=trace`).

use std::sync::RwLock;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use url::Url;

use crate::vsphere::envelope::response_inner;
use crate::vsphere::error::{Error, ErrorKind, Result};
use crate::vsphere::methods::{request_body, Method};
use crate::vsphere::secret::Secret;
use crate::vsphere::tls::{self, TlsPolicy};

/// The name of the session cookie ESXi and vCenter set at login.
const SESSION_COOKIE: &str = "vmware_soap_session";
/// How many times an idempotent call is retried after a transport error.
const READ_RETRIES: u32 = 2;
/// The longest wait a server's `Retry-After` gets before a read is retried.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The HTTP transport of one endpoint.
pub struct Transport {
    http: reqwest::Client,
    url: Url,
    timeout: Duration,
    soap_action: RwLock<String>,
    cookie: RwLock<Option<Secret>>,
    unverified: tls::UnverifiedHandshake,
}

impl Transport {
    /// A transport for the SDK URL `url` (e.g. `https://esx1/sdk`) with this TLS policy; every
    /// SOAP call gives up after `timeout` (plus a long poll's own wait). The limit is set per
    /// request, not on the client, so byte transfers choose their own (a stall limit).
    pub fn new(url: Url, policy: &TlsPolicy, timeout: Duration) -> Result<Self> {
        tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("ceso/", env!("CARGO_PKG_VERSION")));
        let unverified = tls::UnverifiedHandshake::default();
        if let Some(config) = tls::client_config(policy, &unverified) {
            builder = builder.tls_backend_preconfigured(config);
        }
        let http = builder.build().map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        Ok(Self {
            http,
            url,
            timeout,
            soap_action: RwLock::new("urn:vim25/6.5".to_string()),
            cookie: RwLock::new(None),
            unverified,
        })
    }

    /// Why the server's handshake signature was accepted without verifying it (only with
    /// `TlsPolicy::Insecure`, when it did not verify), if that happened.
    pub fn unverified_handshake(&self) -> Option<String> {
        self.unverified.reason()
    }

    /// The SDK URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Uses `version` (e.g. `8.0.2.0`) in the SOAPAction header from now on.
    pub fn set_api_version(&self, version: &str) {
        *self.soap_action.write().expect("lock") = format!("urn:vim25/{version}");
    }

    /// Forgets the session cookie (after logout).
    pub fn clear_session(&self) {
        *self.cookie.write().expect("lock") = None;
    }

    /// Whether a session cookie is held.
    pub fn has_session(&self) -> bool {
        self.cookie.read().expect("lock").is_some()
    }

    /// The HTTP client (for datastore file transfers and REST calls, which set their own
    /// limits).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The API timeout: the longest a SOAP call, or a stalled transfer, may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Adds the session cookie to a request.
    pub fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.cookie.read().expect("lock").as_ref() {
            Some(cookie) => req.header(COOKIE, cookie.expose()),
            None => req,
        }
    }

    /// Classifies an HTTP error of a request to this endpoint.
    pub fn error(&self, e: reqwest::Error) -> Error {
        classify(&self.url, e)
    }

    /// Calls `method`, retrying idempotent calls on transport errors and when the server says
    /// it is busy (HTTP 503 or 429, honouring a short `Retry-After`); writes are never retried.
    pub async fn call<M: Method>(&self, method: &M) -> Result<M::Response> {
        self.with_retries(method, |body, limit| {
            self.post::<M>(body, method.method_name(), limit)
        })
        .await
    }

    /// Calls `method` (retried as [`Transport::call`] retries) and hands back the response of a
    /// call that succeeded, its body unread, for the caller to stream; a SOAP fault or any
    /// other answer is read and becomes its error.
    pub async fn call_streamed<M: Method>(&self, method: &M) -> Result<reqwest::Response> {
        self.with_retries(method, |body, limit| {
            self.send_streamed::<M>(body, method.method_name(), limit)
        })
        .await
    }

    /// Runs `once` (one attempt with the request body and its time limit) until it succeeds,
    /// fails for good, or an idempotent call has used its retries.
    async fn with_retries<M, T, F, Fut>(&self, method: &M, mut once: F) -> Result<T>
    where
        M: Method,
        F: FnMut(Vec<u8>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let body = request_body(method);
        log_request(method.method_name(), &body, method.has_secrets());
        let mut attempt = 0;
        loop {
            let limit = self.timeout.saturating_add(method.extra_time());
            match once(body.clone(), limit).await {
                Err(e)
                    if method.is_idempotent()
                        && e.kind == ErrorKind::Transport
                        && attempt < READ_RETRIES =>
                {
                    attempt += 1;
                    tracing::debug!(method = method.method_name(), attempt, error = %e, "retrying a read after a transport error");
                    let wait = e
                        .retry_after
                        .unwrap_or(Duration::from_millis(200 * u64::from(attempt)));
                    tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`Transport::call_streamed`]: the response when it succeeded, else its
    /// fault (or a decode error for an answer that is neither data nor a fault).
    async fn send_streamed<M: Method>(
        &self,
        body: Vec<u8>,
        name: &str,
        limit: Duration,
    ) -> Result<reqwest::Response> {
        let resp = self.send(body, limit).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.map_err(|e| classify(&self.url, e))?;
        self.decode::<M>(name, status, &text)?;
        Err(Error::new(
            ErrorKind::Decode,
            format!(
                "{} answered a SOAP call with neither data nor a fault",
                self.url
            ),
        ))
    }

    async fn post<M: Method>(
        &self,
        body: Vec<u8>,
        name: &str,
        limit: Duration,
    ) -> Result<M::Response> {
        let resp = self.send(body, limit).await?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| classify(&self.url, e))?;
        self.decode::<M>(name, status, &text)
    }

    /// Sends a SOAP body; keeps the session cookie; a busy server (HTTP 429/503) is an error
    /// that says when to come back.
    async fn send(&self, body: Vec<u8>, limit: Duration) -> Result<reqwest::Response> {
        let soap_action = self.soap_action.read().expect("lock").clone();
        let req = self
            .http
            .post(self.url.clone())
            .timeout(limit)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", soap_action)
            .body(body);
        let req = self.authed(req);
        let resp = req.send().await.map_err(|e| classify(&self.url, e))?;
        let status = resp.status();
        for value in resp.headers().get_all(SET_COOKIE) {
            if let Some(pair) = value
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .filter(|pair| pair.trim_start().starts_with(SESSION_COOKIE))
            {
                *self.cookie.write().expect("lock") = Some(Secret::new(pair.trim()));
            }
        }
        if matches!(status.as_u16(), 429 | 503) {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let mut e = Error::new(
                ErrorKind::Transport,
                format!("{} is busy (HTTP {status}); try again later", self.url),
            );
            e.fault = Some("ServerBusy".to_string());
            e.retry_after = retry_after;
            return Err(e);
        }
        Ok(resp)
    }

    /// Decodes a response's text: its data, or the SOAP fault it carries as a typed error.
    fn decode<M: Method>(
        &self,
        name: &str,
        status: reqwest::StatusCode,
        text: &str,
    ) -> Result<M::Response> {
        tracing::trace!(target: "ceso::vsphere::wire", method = name, status = status.as_u16(), body = %redact(text), "SOAP response");
        if !(status.is_success() || status.as_u16() == 500) {
            return Err(Error::new(
                ErrorKind::NotVsphere,
                format!(
                    "{} is not a vSphere API endpoint: it answered HTTP {status} to a SOAP call",
                    self.url
                ),
            ));
        }
        let inner = response_inner(text).map_err(|e| {
            if e.kind == ErrorKind::NotVsphere {
                Error::new(
                    ErrorKind::NotVsphere,
                    format!("{} is not a vSphere API endpoint: {}", self.url, e.message),
                )
            } else {
                e
            }
        })?;
        M::decode(inner)
    }
}

fn log_request(name: &str, body: &[u8], has_secrets: bool) {
    if tracing::enabled!(target: "ceso::vsphere::wire", tracing::Level::TRACE) {
        let text = String::from_utf8_lossy(body);
        let shown = if has_secrets {
            redact(&text)
        } else {
            text.to_string()
        };
        tracing::trace!(target: "ceso::vsphere::wire", method = name, body = %shown, "SOAP request");
    }
}

/// Replaces the content of secret-bearing elements (`password`, session keys) with `***`.
pub fn redact(xml: &str) -> String {
    static SECRET_ELEMENTS: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = SECRET_ELEMENTS.get_or_init(|| {
        regex::Regex::new(r"(?is)<(password|key|sessionKey|newPassword)>[^<]*</")
            .expect("valid regex")
    });
    re.replace_all(xml, "<$1>***</").into_owned()
}

/// Turns a reqwest error into a typed error whose message says what to check.
fn classify(url: &Url, e: reqwest::Error) -> Error {
    let chain = error_chain(&e);
    if e.is_timeout() {
        return Error::new(
            ErrorKind::Timeout,
            format!("{url} did not answer within the API timeout"),
        );
    }
    let lower = chain.to_lowercase();
    if lower.contains("certificate") || lower.contains("thumbprint") || lower.contains("tls") {
        return Error::new(
            ErrorKind::Tls,
            format!("TLS verification of {url} failed: {chain}. Set `thumbprint` to pin the server's certificate, or `allow_unverified_ssl = true` to skip verification (not recommended)."),
        );
    }
    if e.is_connect() {
        return Error::new(
            ErrorKind::Transport,
            format!("cannot connect to {url}: {chain}"),
        );
    }
    Error::new(
        ErrorKind::Transport,
        format!("request to {url} failed: {chain}"),
    )
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let xml = "<Login><userName>root</userName><password>s3cr3t&amp;x</password></Login>";
        let r = redact(xml);
        assert!(!r.contains("s3cr3t"));
        assert!(r.contains("<userName>root</userName>"));
        assert!(r.contains("<password>***</password>"));
    }
}
