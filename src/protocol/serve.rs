//! Running the plugin: listen on a unix socket, wrap connections in AutoMTLS when Terraform
//! asks for it, print the handshake line, serve the gRPC services, and exit cleanly on
//! `GRPCController.Shutdown`, SIGTERM, or when the parent process (Terraform) is gone.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::Server;

use crate::framework::Provider;

use super::handshake::{self, HandshakeError};
use super::mtls::{self, MtlsError};
use super::plugin_services::{Broker, Controller, Stdio};
use super::proto::{plugin as plugin_pb, tfplugin5 as pb};
use super::server::ProviderService;
use super::MAX_MESSAGE_BYTES;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Debug mode: no cookie needed, plain gRPC, prints `TF_REATTACH_PROVIDERS` and serves until
    /// Ctrl-C, so a developer can attach a debugger and run Terraform against it.
    pub debug: bool,
    /// The provider's registry address, e.g. `registry.terraform.io/choiceomg/ceso`.
    pub address: String,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The handshake was refused.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// AutoMTLS could not be set up.
    #[error(transparent)]
    Mtls(#[from] MtlsError),
    /// The socket could not be made.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Serves `provider` until shutdown.
pub async fn serve(provider: Arc<dyn Provider>, options: ServeOptions) -> Result<(), ServeError> {
    let env = |k: &str| std::env::var(k).ok();
    // Watch the parent from the start: Terraform may die before the handshake line is out.
    let shutdown = CancellationToken::new();
    watch_sigterm(shutdown.clone());
    let parent_watch = (!options.debug).then(ParentWatch::arm);
    if !options.debug {
        handshake::check_cookie(env(handshake::MAGIC_COOKIE_KEY).as_deref())?;
    }
    handshake::negotiate_version(env("PLUGIN_PROTOCOL_VERSIONS").as_deref())?;
    let tls = match env("PLUGIN_CLIENT_CERT").filter(|c| !c.is_empty() && !options.debug) {
        Some(pem) => Some(mtls::server_tls(&pem)?),
        None => None,
    };
    let socket = SocketFile::create()?;
    let listener = UnixListener::bind(&socket.path).map_err(|source| ServeError::Listen {
        path: socket.path.clone(),
        source,
    })?;

    let service = Arc::new(ProviderService::new(provider.clone()));
    let address = socket.path.display().to_string();
    if options.debug {
        print_reattach(&options.address, &address);
        watch_ctrl_c(shutdown.clone());
    } else {
        let line = handshake::handshake_line(
            "unix",
            &address,
            tls.as_ref().map(|t| t.handshake_field()).as_deref(),
        );
        println!("{line}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        ignore_interrupts();
        if let Some(watch) = parent_watch {
            watch.spawn(shutdown.clone());
        }
    }

    let incoming = accept_loop(
        listener,
        tls.map(|t| TlsAcceptor::from(t.config)),
        shutdown.clone(),
    );
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;

    let provider_service = pb::provider_server::ProviderServer::from_arc(service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let controller = plugin_pb::grpc_controller_server::GrpcControllerServer::new(Controller {
        shutdown: if options.debug {
            CancellationToken::new()
        } else {
            shutdown.clone()
        },
    });
    let stdio = plugin_pb::grpc_stdio_server::GrpcStdioServer::new(Stdio {
        shutdown: shutdown.clone(),
    });
    let broker = plugin_pb::grpc_broker_server::GrpcBrokerServer::new(Broker {
        shutdown: shutdown.clone(),
    });

    let server = Server::builder()
        .add_service(health_service)
        .add_service(provider_service)
        .add_service(controller)
        .add_service(stdio)
        .add_service(broker)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());

    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        // In-flight calls get a moment to finish once shutdown is asked for; then we go.
        _ = async { shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(2)).await } => Ok(()),
    };
    service.cancel_token().cancel();
    if let Some(data) = service.provider_data() {
        let _ = tokio::time::timeout(Duration::from_secs(2), provider.stop(data)).await;
    }
    drop(socket);
    result.map_err(ServeError::from)
}

/// The socket path, removed when dropped.
struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    fn create() -> Result<Self, ServeError> {
        let dir = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let nonce: u64 = rand_nonce();
        let path = dir.join(format!("ceso-plugin-{}-{nonce:x}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Ok(Self { path })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

fn print_reattach(provider_address: &str, socket: &str) {
    let reattach = serde_json::json!({
        provider_address: {
            "Protocol": "grpc",
            "ProtocolVersion": handshake::APP_PROTOCOL_VERSION,
            "Pid": std::process::id(),
            "Test": true,
            "Addr": { "Network": "unix", "String": socket },
        }
    });
    println!(
        "Provider started. To attach Terraform CLI, set the TF_REATTACH_PROVIDERS environment variable with the following:\n\n\tTF_REATTACH_PROVIDERS='{reattach}'\n\nServing until Ctrl-C."
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Terraform handles Ctrl-C itself and calls StopProvider; like every go-plugin plugin we
/// ignore SIGINT so the terminal's Ctrl-C doesn't kill us mid-apply.
fn ignore_interrupts() {
    tokio::spawn(async {
        let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            tracing::debug!("received SIGINT; ignoring it (Terraform sends StopProvider)");
        }
    });
}

fn watch_ctrl_c(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
}

/// Registers the SIGTERM handler at once (the kernel's parent-death signal may come early).
fn watch_sigterm(shutdown: CancellationToken) {
    if let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::spawn(async move {
            sig.recv().await;
            shutdown.cancel();
        });
    }
}

/// Exits when Terraform is gone (it may SIGKILL us, or be SIGKILLed itself): the kernel
/// signals us on the parent's death, and a slow check of the parent pid backs that up.
struct ParentWatch {
    parent: u32,
}

impl ParentWatch {
    /// Records the parent and asks the kernel for SIGTERM when it dies.
    fn arm() -> Self {
        let parent = std::os::unix::process::parent_id();
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with PR_SET_PDEATHSIG only sets a signal number for this process.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        }
        Self { parent }
    }

    /// Cancels `shutdown` once the parent is gone (also if it went before `arm`'s prctl).
    fn spawn(self, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if std::os::unix::process::parent_id() != self.parent {
                    tracing::info!("parent process is gone; shutting down");
                    shutdown.cancel();
                    return;
                }
            }
        });
    }
}

/// Accepts connections and performs TLS handshakes off the accept loop.
fn accept_loop(
    listener: UnixListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = io::Result<PluginConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<PluginConn>>(16);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                },
                _ = shutdown.cancelled() => return,
            };
            let tx = tx.clone();
            match tls.clone() {
                None => {
                    let _ = tx.send(Ok(PluginConn::Plain(stream))).await;
                }
                Some(acceptor) => {
                    tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Ok(PluginConn::Tls(Box::new(s)))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "TLS handshake with the client failed")
                            }
                            Err(_) => tracing::warn!("TLS handshake with the client timed out"),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One accepted connection, plain or TLS.
pub enum PluginConn {
    /// Without AutoMTLS (debug mode, or a client that asked for none).
    Plain(UnixStream),
    /// With AutoMTLS.
    Tls(Box<TlsStream<UnixStream>>),
}

impl Connected for PluginConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for PluginConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PluginConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PluginConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PluginConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PluginConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PluginConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PluginConn::Plain(s) => Pin::new(s).poll_flush(cx),
            PluginConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PluginConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PluginConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
