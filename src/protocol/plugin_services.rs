//! go-plugin's own services: `GRPCController` (Shutdown ends the process cleanly), `GRPCStdio`
//! (our stdout/stderr are not captured, so the stream stays open and empty until shutdown) and
//! `GRPCBroker` (no sub-plugins: the stream is held open until the client closes it).

use std::pin::Pin;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::proto::plugin as pb;

type BoxStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A stream that yields nothing and ends when `shutdown` is cancelled.
fn idle_until<T: Send + 'static>(shutdown: CancellationToken) -> BoxStream<T> {
    Box::pin(
        futures::stream::once(async move { shutdown.cancelled_owned().await })
            .filter_map(|_| async { None }),
    )
}

/// `plugin.GRPCController`.
pub struct Controller {
    /// Cancelled by Shutdown.
    pub shutdown: CancellationToken,
}

#[tonic::async_trait]
impl pb::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _req: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        tracing::debug!("GRPCController.Shutdown received");
        self.shutdown.cancel();
        Ok(Response::new(pb::Empty {}))
    }
}

/// `plugin.GRPCStdio`.
pub struct Stdio {
    /// Ends the stream.
    pub shutdown: CancellationToken,
}

#[tonic::async_trait]
impl pb::grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<pb::StdioData>;

    async fn stream_stdio(
        &self,
        _req: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(idle_until(self.shutdown.clone())))
    }
}

/// `plugin.GRPCBroker`.
pub struct Broker {
    /// Ends the stream.
    pub shutdown: CancellationToken,
}

#[tonic::async_trait]
impl pb::grpc_broker_server::GrpcBroker for Broker {
    type StartStreamStream = BoxStream<pb::ConnInfo>;

    async fn start_stream(
        &self,
        req: Request<Streaming<pb::ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut incoming = req.into_inner();
        let shutdown = self.shutdown.clone();
        // Drain what the client sends (ceso asks for no broker connections) until it closes.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = incoming.next() => if !matches!(msg, Some(Ok(_))) { break },
                    _ = shutdown.cancelled() => break,
                }
            }
        });
        Ok(Response::new(idle_until(self.shutdown.clone())))
    }
}
