//! The acceptance test bed: VMware's simulator on a free loopback port, the real Terraform CLI
//! pointed at the freshly built provider through a local filesystem mirror, and helpers to run
//! `terraform` and read its JSON output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the slow suites that need the simulator and Terraform run (CI sets `TF_ACC=1`).
pub fn acceptance_enabled() -> bool {
    std::env::var("TF_ACC").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skips the calling test (with a note) unless `TF_ACC` is set.
#[macro_export]
macro_rules! require_acc {
    () => {
        if !$crate::harness::acceptance_enabled() {
            eprintln!("skipped: set TF_ACC=1 (and run `make testbed`) to run acceptance tests");
            return;
        }
    };
}

fn testbed_bin(name: &str) -> PathBuf {
    repo_root().join(".testbed/bin").join(name)
}

/// The provider binary cargo built for these tests.
pub fn provider_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_terraform-provider-ceso"))
}

/// A running simulator, killed when dropped.
pub struct Vcsim {
    child: Child,
    /// The SDK URL without credentials, e.g. `http://127.0.0.1:40123/sdk`.
    pub url: String,
    /// `host:port`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// The simulator launcher: `CESO_VCSIM` when set (a launcher built elsewhere, e.g. while
/// changing it), else `.testbed/bin/vcsim`.
fn vcsim_binary() -> PathBuf {
    std::env::var_os("CESO_VCSIM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| testbed_bin("vcsim"))
}

impl Vcsim {
    /// Starts the simulator launcher with `args` (e.g. `["-esx"]`) on a free loopback port.
    pub fn start(args: &[&str]) -> Self {
        let bin = vcsim_binary();
        assert!(
            bin.exists(),
            "{} is missing: run `make testbed`",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let url_file = dir.path().join("url.txt");
        // The simulator's datastores are temp directories: in `dir`, they go with it even
        // though the simulator is killed.
        let child = Command::new(&bin)
            .env("TMPDIR", dir.path())
            .args(["-l", "127.0.0.1:0", "-url-file"])
            .arg(&url_file)
            .args(args)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("VCSIM_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start vcsim");
        let deadline = Instant::now() + Duration::from_secs(30);
        let raw = loop {
            if let Ok(text) = std::fs::read_to_string(&url_file) {
                if text.ends_with('\n') {
                    break text.trim().to_string();
                }
            }
            assert!(Instant::now() < deadline, "vcsim did not start within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut url = url::Url::parse(&raw).expect("vcsim URL");
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        assert!(
            addr.starts_with("127.0.0.1:"),
            "vcsim must listen on loopback only"
        );
        Vcsim {
            child,
            url: url.to_string(),
            addr,
            _dir: dir,
        }
    }

    /// SOAP calls served so far: `{"total": {path: n}, "methods": {path: {method: n}}}`.
    pub fn counts(&self) -> serde_json::Value {
        let scheme = if self.url.starts_with("https") {
            "https"
        } else {
            "http"
        };
        let body = http_get(&format!("{scheme}://{}/vcsim-counts", self.addr));
        serde_json::from_str(&body).expect("counts JSON")
    }

    /// Total SOAP calls to `/sdk` so far.
    pub fn sdk_calls(&self) -> u64 {
        self.counts()["total"]["/sdk"].as_u64().unwrap_or(0)
    }

    /// Posts a raw SOAP body to the simulator (independently of ceso's client) and returns the
    /// response text: assertions read the simulator's state this way.
    pub fn soap(&self, body: &str) -> String {
        ceso::vsphere::tls::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(true)
                .build()
                .unwrap();
            client
                .post(&self.url)
                .header("Content-Type", "text/xml")
                .header("SOAPAction", "urn:vim25/6.5")
                .body(body.to_string())
                .send()
                .await
                .expect("SOAP POST")
                .text()
                .await
                .expect("SOAP body")
        })
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET of `url` (loopback only), returning the body.
pub fn http_get(url: &str) -> String {
    let url = url.to_string();
    // On a thread of its own, so async tests may call it too.
    std::thread::spawn(move || http_get_blocking(&url))
        .join()
        .expect("GET thread")
}

fn http_get_blocking(url: &str) -> String {
    ceso::vsphere::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body")
    })
}

/// The Terraform binary: `TF_ACC_TERRAFORM_PATH`, else `.testbed/bin/terraform`, else PATH.
pub fn terraform_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TF_ACC_TERRAFORM_PATH") {
        return PathBuf::from(p);
    }
    let local = testbed_bin("terraform");
    if local.exists() {
        return local;
    }
    PathBuf::from("terraform")
}

/// A local filesystem mirror holding the provider under test, made once per test process.
fn mirror_dir() -> &'static Path {
    static MIRROR: OnceLock<PathBuf> = OnceLock::new();
    MIRROR.get_or_init(|| {
        let root = repo_root()
            .join("target/acc-mirror")
            .join(std::process::id().to_string());
        let version = env!("CARGO_PKG_VERSION");
        for host in ["registry.terraform.io", "registry.opentofu.org"] {
            let dir = root.join(format!("{host}/choiceomg/ceso/{version}/linux_amd64"));
            std::fs::create_dir_all(&dir).unwrap();
            let target = dir.join(format!("terraform-provider-ceso_v{version}"));
            let _ = std::fs::remove_file(&target);
            std::fs::copy(provider_binary(), &target).expect("copy provider into mirror");
        }
        root
    })
}

/// A Terraform working directory with the files of one example and a CLI config that installs
/// ceso from the local mirror (and nothing from the network).
pub struct Workspace {
    /// The working directory.
    pub dir: tempfile::TempDir,
    cli_config: PathBuf,
    env: Vec<(String, String)>,
}

/// What one terraform command did.
pub struct TfRun {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl TfRun {
    /// Panics with the output unless the command succeeded.
    pub fn ok(self, what: &str) -> Self {
        assert_eq!(
            self.code, 0,
            "terraform {what} failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Workspace {
    /// A workspace with the `.tf` files of `examples/<example>`.
    pub fn from_example(example: &str) -> Self {
        let ws = Self::empty();
        let src = repo_root().join("examples").join(example);
        for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "tf") {
                std::fs::copy(&path, ws.dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        ws
    }

    /// A workspace with no configuration yet.
    pub fn empty() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cli_config = dir.path().join("terraformrc");
        let mirror = mirror_dir();
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/choiceomg/ceso\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/choiceomg/ceso\"]\n  }}\n}}\ndisable_checkpoint = true\n",
                mirror.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            cli_config,
            env: Vec::new(),
        }
    }

    /// Writes a file into the workspace.
    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.dir.path().join(name), content).unwrap();
    }

    /// Sets an environment variable for every terraform command (and so for the provider).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Points the provider at `sim` through the `CESO_*` environment, as a user might.
    pub fn against(self, sim: &Vcsim) -> Self {
        self.env("CESO_URL", &sim.url)
            .env("CESO_USER", "user")
            .env("CESO_PASSWORD", "pass")
            .env("CESO_ALLOW_UNVERIFIED_SSL", "true")
    }

    /// Runs `terraform args...` in the workspace.
    pub fn run(&self, args: &[&str]) -> TfRun {
        let mut cmd = Command::new(terraform_binary());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env_remove("TF_LOG")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out: Output = cmd.output().expect("run terraform");
        TfRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `terraform init`.
    pub fn init(&self) -> TfRun {
        self.run(&["init", "-input=false", "-no-color"]).ok("init")
    }

    /// `terraform apply -auto-approve`.
    pub fn apply(&self) -> TfRun {
        self.run(&["apply", "-auto-approve", "-input=false", "-no-color"])
    }

    /// `terraform plan -detailed-exitcode`: 0 = no changes, 2 = changes, 1 = error.
    pub fn plan_exit_code(&self) -> TfRun {
        self.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"])
    }

    /// `terraform show -json` of the state.
    pub fn show_json(&self) -> serde_json::Value {
        let out = self.run(&["show", "-json", "-no-color"]).ok("show -json");
        serde_json::from_str(&out.stdout).expect("show -json output")
    }

    /// `terraform output -json`.
    pub fn outputs(&self) -> serde_json::Value {
        let out = self
            .run(&["output", "-json", "-no-color"])
            .ok("output -json");
        serde_json::from_str(&out.stdout).expect("output -json")
    }
}

/// Finds `name`'s values in `terraform show -json` output (root module resources and data).
pub fn resource_values<'a>(show: &'a serde_json::Value, address: &str) -> &'a serde_json::Value {
    show["values"]["root_module"]["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["address"] == address))
        .map(|r| &r["values"])
        .unwrap_or_else(|| panic!("{address} not in state: {show}"))
}

/// ceso's own vSphere client logged in to a simulator, for reading its state in assertions and
/// making out-of-band changes (drift); with a runtime of its own so plain tests can use it.
pub struct SimClient {
    /// The runtime the client's calls run on.
    pub rt: tokio::runtime::Runtime,
    /// The logged-in client.
    pub client: std::sync::Arc<ceso::vsphere::Client>,
}

impl SimClient {
    /// Logs in to `sim`.
    pub fn connect(sim: &Vcsim) -> Self {
        ceso::vsphere::tls::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(ceso::vsphere::Client::connect(
                ceso::vsphere::ConnectConfig {
                    url: sim.url.parse().unwrap(),
                    user: "u".into(),
                    password: ceso::vsphere::Secret::new("p"),
                    tls: ceso::vsphere::TlsPolicy::Insecure,
                    timeout: Duration::from_secs(10),
                },
            ))
            .expect("login to the simulator");
        Self {
            rt,
            client: std::sync::Arc::new(client),
        }
    }

    /// Runs a future on the client's runtime.
    pub fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }
}

/// Terraform's output with white space folded (it wraps diagnostics to the terminal width) and
/// the `│` gutter of its diagnostic boxes dropped, so a phrase reads the same wherever a line
/// broke it.
pub fn folded(out: &TfRun) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
