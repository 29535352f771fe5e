//! The spawned provider binary driven by a gRPC client through the real go-plugin handshake
//! with AutoMTLS, for the RPCs Terraform 1.0.3 never calls, plus the plugin's process
//! lifecycle (Shutdown, parent death, refusing strangers' certificates).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ceso::protocol::handshake::MAGIC_COOKIE_VALUE;
use ceso::protocol::mtls::generate_client_certificate;
use ceso::protocol::proto::plugin as plugin_pb;
use ceso::protocol::proto::tfplugin5 as pb;
use futures::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::harness::provider_binary;

/// A provider process started as Terraform starts it.
struct Plugin {
    child: Child,
    socket: PathBuf,
    server_cert: CertificateDer<'static>,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Plugin {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let (client_cert_pem, client_key_pem) = generate_client_certificate().unwrap();
        let started = Instant::now();
        let mut child = Command::new(provider_binary())
            .env("TF_PLUGIN_MAGIC_COOKIE", MAGIC_COOKIE_VALUE)
            .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
            .env("PLUGIN_CLIENT_CERT", &client_cert_pem)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        eprintln!("handshake line after {:?}", started.elapsed());
        let parts: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(parts.len(), 6, "handshake line: {line:?}");
        assert_eq!(&parts[..3], &["1", "5", "unix"]);
        assert_eq!(parts[4], "grpc");
        let der = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(parts[5])
            .expect("certificate is base64 without padding");
        Plugin {
            child,
            socket: PathBuf::from(parts[3]),
            server_cert: CertificateDer::from(der),
            client_cert_pem,
            client_key_pem,
        }
    }

    async fn channel_with(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        let verifier = Arc::new(PinServer(self.server_cert.clone()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let socket = self.socket.clone();
        Endpoint::try_from("http://localhost")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let (socket, connector) = (socket.clone(), connector.clone());
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    let name = ServerName::try_from("localhost").unwrap();
                    let tls = connector.connect(name, stream).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
    }

    async fn channel(&self) -> Channel {
        self.channel_with(&self.client_cert_pem, &self.client_key_pem)
            .await
            .expect("mTLS connection")
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Trusts exactly the certificate from the handshake line, as go-plugin's client does.
#[derive(Debug)]
struct PinServer(CertificateDer<'static>);

impl ServerCertVerifier for PinServer {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if ee.as_ref() == self.0.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the handshake certificate".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn first_summary(diags: &[pb::Diagnostic]) -> String {
    diags
        .first()
        .map(|d| format!("{}: {}", d.summary, d.detail))
        .unwrap_or_default()
}

#[tokio::test]
async fn newer_rpcs_answer_with_diagnostics_not_errors() {
    let plugin = Plugin::start();
    let channel = plugin.channel().await;
    let mut client = pb::provider_client::ProviderClient::new(channel.clone());

    let meta = client
        .get_metadata(pb::get_metadata::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(meta
        .data_sources
        .iter()
        .any(|d| d.type_name == "ceso_endpoint"));
    let caps = meta.server_capabilities.unwrap();
    assert!(
        !caps.move_resource_state,
        "no resource supports MoveResourceState yet"
    );

    let schema = client
        .get_schema(pb::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    let provider = schema.provider.unwrap().block.unwrap();
    let password = provider
        .attributes
        .iter()
        .find(|a| a.name == "password")
        .unwrap();
    assert!(password.sensitive && password.optional);
    assert!(schema.data_source_schemas.contains_key("ceso_endpoint"));

    let functions = client
        .get_functions(pb::get_functions::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(functions.functions.is_empty() && functions.diagnostics.is_empty());
    let call = client
        .call_function(pb::call_function::Request {
            name: "nope".into(),
            arguments: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(call.error.unwrap().text.contains("no function \"nope\""));

    let moved = client
        .move_resource_state(pb::move_resource_state::Request::default())
        .await
        .unwrap()
        .into_inner();
    assert!(first_summary(&moved.diagnostics).contains("not supported by this provider"));

    let ids = client
        .get_resource_identity_schemas(pb::get_resource_identity_schemas::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(ids.identity_schemas.is_empty() && ids.diagnostics.is_empty());
    let up = client
        .upgrade_resource_identity(pb::upgrade_resource_identity::Request::default())
        .await
        .unwrap()
        .into_inner();
    assert!(first_summary(&up.diagnostics).contains("not supported"));

    let eph = client
        .validate_ephemeral_resource_config(pb::validate_ephemeral_resource_config::Request {
            type_name: "ceso_x".into(),
            config: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first_summary(&eph.diagnostics).contains("ceso_x"));
    let open = client
        .open_ephemeral_resource(pb::open_ephemeral_resource::Request::default())
        .await
        .unwrap()
        .into_inner();
    assert!(first_summary(&open.diagnostics).contains("not supported"));
    let gen = client
        .generate_resource_config(pb::generate_resource_config::Request::default())
        .await
        .unwrap()
        .into_inner();
    assert!(first_summary(&gen.diagnostics).contains("not supported"));

    let mut list = client
        .list_resource(pb::list_resource::Request {
            type_name: "ceso_vm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let event = list.next().await.unwrap().unwrap();
    assert!(first_summary(&event.diagnostic).contains("list resource"));
    assert!(list.next().await.is_none());

    let plan = client
        .plan_action(pb::plan_action::Request {
            action_type: "ceso_nope".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first_summary(&plan.diagnostics).contains("Unknown action type"));
    assert!(meta
        .actions
        .iter()
        .any(|a| a.type_name == "ceso_snapshot_revert"));
    assert!(schema.action_schemas.contains_key("ceso_snapshot_revert"));
    let mut invoke = client
        .invoke_action(pb::invoke_action::Request {
            action_type: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match invoke.next().await.unwrap().unwrap().r#type {
        Some(pb::invoke_action::event::Type::Completed(c)) => assert!(!c.diagnostics.is_empty()),
        other => panic!("unexpected event {other:?}"),
    }

    let unknown = client
        .read_data_source(pb::read_data_source::Request {
            type_name: "ceso_nope".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first_summary(&unknown.diagnostics).contains("Unknown data source type"));

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let stop = client
        .stop(pb::stop::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(stop.error.is_empty());
}

#[tokio::test]
async fn shutdown_ends_the_process_and_removes_the_socket() {
    let mut plugin = Plugin::start();
    let channel = plugin.channel().await;
    let mut stdio = plugin_pb::grpc_stdio_client::GrpcStdioClient::new(channel.clone())
        .stream_stdio(())
        .await
        .unwrap()
        .into_inner();
    let mut controller = plugin_pb::grpc_controller_client::GrpcControllerClient::new(channel);
    controller.shutdown(plugin_pb::Empty {}).await.unwrap();
    let status = plugin
        .wait_exit(Duration::from_secs(5))
        .expect("plugin exits after Shutdown");
    assert!(status.success(), "{status:?}");
    assert!(
        !plugin.socket.exists(),
        "socket {} left behind",
        plugin.socket.display()
    );
    // The stdio stream ended with the process.
    assert!(matches!(stdio.next().await, None | Some(Err(_))));
}

#[tokio::test]
async fn a_stranger_certificate_is_refused() {
    let plugin = Plugin::start();
    let (other_cert, other_key) = generate_client_certificate().unwrap();
    // Either the connection or the first call fails; never a served RPC.
    let served = match plugin.channel_with(&other_cert, &other_key).await {
        Err(_) => false,
        Ok(channel) => pb::provider_client::ProviderClient::new(channel)
            .get_metadata(pb::get_metadata::Request {})
            .await
            .is_ok(),
    };
    assert!(!served, "a client with another certificate was served");
}

#[test]
fn exits_when_terraform_is_killed() {
    // A shell stands in for Terraform: it starts the plugin and is then SIGKILLed.
    let (cert, _) = generate_client_certificate().unwrap();
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(format!("{} & wait", provider_binary().display()))
        .env("TF_PLUGIN_MAGIC_COOKIE", MAGIC_COOKIE_VALUE)
        .env("PLUGIN_CLIENT_CERT", cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let socket = PathBuf::from(line.split('|').nth(3).unwrap());
    let pid: u32 = socket
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('-')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(PathBuf::from(format!("/proc/{pid}")).exists());
    shell.kill().unwrap();
    shell.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while PathBuf::from(format!("/proc/{pid}/status")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
    {
        assert!(
            Instant::now() < deadline,
            "plugin {pid} outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!socket.exists(), "socket left behind");
}

/// The `ceso_snapshot_revert` action (Terraform 1.14+ only, so driven here by a gRPC client):
/// PlanAction checks the snapshot, InvokeAction streams progress and reverts the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_revert_action_streams_progress_and_reverts() {
    crate::require_acc!();
    let sim = crate::harness::Vcsim::start(&["-esx"]);
    let plugin = Plugin::start_with(&[
        ("CESO_URL", sim.url.as_str()),
        ("CESO_USER", "u"),
        ("CESO_PASSWORD", "p"),
    ]);
    let mut client = pb::provider_client::ProviderClient::new(plugin.channel().await);
    let schema = client
        .get_schema(pb::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    let provider_ty = ceso::cty::Type::from_json_bytes(&{
        // The provider block's type: every attribute null (the environment supplies them).
        let block = schema.provider.unwrap().block.unwrap();
        let attrs: serde_json::Map<String, serde_json::Value> = block
            .attributes
            .iter()
            .map(|a| (a.name.clone(), serde_json::from_slice(&a.r#type).unwrap()))
            .collect();
        serde_json::to_vec(&serde_json::json!(["object", attrs])).unwrap()
    })
    .unwrap();
    let null_config = ceso::cty::Value::Object(match &provider_ty {
        ceso::cty::Type::Object { attrs, .. } => attrs
            .keys()
            .map(|k| (k.clone(), ceso::cty::Value::Null))
            .collect(),
        _ => unreachable!(),
    });
    let configured = client
        .configure(pb::configure::Request {
            config: Some(pb::DynamicValue {
                msgpack: ceso::cty::to_msgpack(&null_config, &provider_ty).unwrap(),
                json: vec![],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        configured.diagnostics.is_empty(),
        "{:?}",
        configured.diagnostics
    );

    // A VM with two snapshots; the current one is the second.
    ceso::vsphere::tls::install_crypto_provider();
    let vs = std::sync::Arc::new(
        ceso::vsphere::Client::connect(ceso::vsphere::ConnectConfig {
            url: sim.url.parse().unwrap(),
            user: "u".into(),
            password: ceso::vsphere::Secret::new("p"),
            tls: ceso::vsphere::TlsPolicy::Insecure,
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap(),
    );
    let vm = vs.retrieve_all("VirtualMachine", &["name"]).await.unwrap()[0]
        .obj
        .clone();
    let never = tokio_util::sync::CancellationToken::new();
    let first = vs
        .create_snapshot(
            &vm,
            &ceso::vsphere::snapshot::NewSnapshot {
                name: "first",
                ..Default::default()
            },
            None,
            &never,
        )
        .await
        .unwrap();
    let _second = vs
        .create_snapshot(
            &vm,
            &ceso::vsphere::snapshot::NewSnapshot {
                name: "second",
                ..Default::default()
            },
            None,
            &never,
        )
        .await
        .unwrap();

    let action_ty = ceso::cty::Type::object([
        ("vm_id", ceso::cty::Type::String),
        ("snapshot_id", ceso::cty::Type::String),
        ("suppress_power_on", ceso::cty::Type::Bool),
    ]);
    let config = |snap: &str| {
        let v = ceso::cty::Value::Object(
            [
                (
                    "vm_id".to_string(),
                    ceso::cty::Value::String(vm.value.clone()),
                ),
                (
                    "snapshot_id".to_string(),
                    ceso::cty::Value::String(snap.to_string()),
                ),
                ("suppress_power_on".to_string(), ceso::cty::Value::Null),
            ]
            .into_iter()
            .collect(),
        );
        Some(pb::DynamicValue {
            msgpack: ceso::cty::to_msgpack(&v, &action_ty).unwrap(),
            json: vec![],
        })
    };
    let bad = client
        .plan_action(pb::plan_action::Request {
            action_type: "ceso_snapshot_revert".into(),
            config: config("snapshot-999"),
            client_capabilities: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        first_summary(&bad.diagnostics).contains("Unknown snapshot"),
        "{:?}",
        bad.diagnostics
    );
    let ok = client
        .plan_action(pb::plan_action::Request {
            action_type: "ceso_snapshot_revert".into(),
            config: config(&first.value),
            client_capabilities: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.diagnostics.is_empty(), "{:?}", ok.diagnostics);

    let mut events = client
        .invoke_action(pb::invoke_action::Request {
            action_type: "ceso_snapshot_revert".into(),
            config: config(&first.value),
            client_capabilities: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut progress = Vec::new();
    let mut completed = None;
    while let Some(event) = events.next().await {
        match event.unwrap().r#type {
            Some(pb::invoke_action::event::Type::Progress(p)) => progress.push(p.message),
            Some(pb::invoke_action::event::Type::Completed(c)) => completed = Some(c),
            None => {}
        }
    }
    let completed = completed.expect("a completed event");
    assert!(
        completed.diagnostics.is_empty(),
        "{:?}",
        completed.diagnostics
    );
    assert!(
        progress.len() >= 2 && progress[0].contains("Reverting"),
        "{progress:?}"
    );
    let current = vs
        .properties(&vm, &["snapshot.currentSnapshot"])
        .await
        .unwrap()
        .moref("snapshot.currentSnapshot");
    assert_eq!(
        current.as_ref(),
        Some(&first),
        "the VM is back at the first snapshot"
    );
}
