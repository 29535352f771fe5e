//! `ceso_endpoint` and the provider configuration through real Terraform, on both simulator
//! models, including the failures users hit first: bad credentials, untrusted certificates,
//! wrong thumbprints, wrong URLs.

use std::time::{Duration, Instant};

use crate::harness::{folded, resource_values, Vcsim, Workspace};
use crate::require_acc;

/// The full cycle on one simulator model: init, validate, plan, apply, an empty second plan,
/// show -json matching what the simulator says about itself, destroy.
fn endpoint_cycle(model_args: &[&str], expect_vcenter: bool) {
    let sim = Vcsim::start(model_args);
    let ws = Workspace::from_example("data-sources/ceso_endpoint").against(&sim);
    ws.init();
    ws.run(&["validate", "-no-color"]).ok("validate");
    ws.run(&["plan", "-input=false", "-no-color"]).ok("plan");
    ws.apply().ok("apply");
    let second = ws.plan_exit_code();
    assert_eq!(
        second.code, 0,
        "second plan is not empty:\n{}\n{}",
        second.stdout, second.stderr
    );

    // What the simulator says about itself, asked independently of ceso's client.
    let about = sim.soap(r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent></soapenv:Body></soapenv:Envelope>"#);
    let field = |name: &str| {
        let start = about
            .find(&format!("<{name}>"))
            .unwrap_or_else(|| panic!("{name} in {about}"))
            + name.len()
            + 2;
        let end = about[start..].find('<').unwrap() + start;
        about[start..end].to_string()
    };

    let show = ws.show_json();
    let v = resource_values(&show, "data.ceso_endpoint.this");
    assert_eq!(v["is_vcenter"], expect_vcenter);
    assert_eq!(v["api_type"], field("apiType").as_str());
    assert_eq!(v["full_name"], field("fullName").as_str());
    assert_eq!(v["version"], field("version").as_str());
    assert_eq!(v["build"], field("build").as_str());
    assert_eq!(v["api_version"], field("apiVersion").as_str());
    assert_eq!(v["url"], sim.url.as_str());
    if expect_vcenter {
        assert_eq!(v["instance_uuid"], field("instanceUuid").as_str());
        assert_eq!(v["id"], v["instance_uuid"]);
    } else {
        assert!(v["instance_uuid"].is_null());
    }
    let outputs = ws.outputs();
    assert_eq!(outputs["is_vcenter"]["value"], expect_vcenter);

    ws.run(&["destroy", "-auto-approve", "-input=false", "-no-color"])
        .ok("destroy");
    let show = ws.show_json();
    assert!(
        show["values"].is_null() || show["values"]["root_module"]["resources"].is_null(),
        "state not empty after destroy: {show}"
    );
}

#[test]
fn endpoint_on_esxi() {
    require_acc!();
    endpoint_cycle(&["-esx"], false);
}

#[test]
fn endpoint_on_vcenter() {
    require_acc!();
    endpoint_cycle(&[], true);
}

/// Expects `terraform plan` to fail within `limit`, with every one of `needles` in its output.
fn plan_fails_with(ws: &Workspace, limit: Duration, needles: &[&str]) -> String {
    let started = Instant::now();
    let out = ws.run(&["plan", "-input=false", "-no-color"]);
    let took = started.elapsed();
    // Terraform wraps diagnostics to the terminal width: compare with white space folded.
    let text = folded(&out);
    assert_eq!(out.code, 1, "plan should fail:\n{text}");
    for n in needles {
        assert!(text.contains(n), "expected {n:?} in:\n{text}");
    }
    assert!(
        !text.contains("panic") && !text.contains("stack backtrace"),
        "{text}"
    );
    assert!(took < limit, "took {took:?}, more than {limit:?}");
    text
}

#[test]
fn bad_credentials_are_a_clear_diagnostic() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-user", "root:SECRET"]);
    let ws = Workspace::from_example("data-sources/ceso_endpoint")
        .env("CESO_URL", &sim.url)
        .env("CESO_USER", "root")
        .env("CESO_PASSWORD", "wrong-password");
    ws.init();
    plan_fails_with(
        &ws,
        Duration::from_secs(20),
        &[
            "Unable to connect to the vSphere endpoint",
            "as \"root\" was refused",
            "InvalidLogin",
            "CESO_PASSWORD",
        ],
    );
    // And the right password works against the same simulator.
    let ws = ws.env("CESO_PASSWORD", "SECRET");
    ws.run(&["plan", "-input=false", "-no-color"])
        .ok("plan with the right password");
}

#[test]
fn tls_is_verified_by_default_and_thumbprints_pin() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-tls"]);
    assert!(sim.url.starts_with("https://"));
    let base = || {
        Workspace::from_example("data-sources/ceso_endpoint")
            .env("CESO_URL", &sim.url)
            .env("CESO_USER", "user")
            .env("CESO_PASSWORD", "pass")
    };
    // Default: the simulator's self-signed certificate is not trusted.
    let ws = base();
    ws.init();
    plan_fails_with(
        &ws,
        Duration::from_secs(20),
        &["TLS verification", "thumbprint"],
    );

    // A wrong thumbprint is refused and the error shows the one the server presented.
    let wrong = vec!["00"; 32].join(":");
    let ws = base().env("CESO_THUMBPRINT", &wrong);
    ws.init();
    let text = plan_fails_with(&ws, Duration::from_secs(20), &["thumbprint mismatch"]);
    let presented = text
        .split("presented SHA-256 ")
        .nth(1)
        .map(|rest| rest.chars().take(95).collect::<String>())
        .expect("presented thumbprint in the error");

    // The presented thumbprint, pinned, works.
    let ws = base().env("CESO_THUMBPRINT", &presented);
    ws.init();
    ws.apply().ok("apply with the pinned thumbprint");
}

#[test]
fn unreachable_and_non_vsphere_endpoints_fail_fast() {
    require_acc!();
    // Nothing listens on this port (bound and released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = Workspace::from_example("data-sources/ceso_endpoint")
        .env("CESO_URL", &format!("http://127.0.0.1:{port}/sdk"))
        .env("CESO_USER", "u")
        .env("CESO_PASSWORD", "p")
        .env("CESO_API_TIMEOUT", "5s");
    ws.init();
    plan_fails_with(
        &ws,
        Duration::from_secs(20),
        &["cannot connect to", "Check `url`"],
    );

    // The simulator's counter page is HTTP but not SOAP: not a vSphere endpoint.
    let sim = Vcsim::start(&["-esx"]);
    let ws = Workspace::from_example("data-sources/ceso_endpoint")
        .env("CESO_URL", &format!("http://{}/vcsim-counts", sim.addr))
        .env("CESO_USER", "u")
        .env("CESO_PASSWORD", "p")
        .env("CESO_API_TIMEOUT", "5s");
    ws.init();
    plan_fails_with(
        &ws,
        Duration::from_secs(20),
        &["not a vSphere API endpoint"],
    );
}

#[test]
fn bad_provider_settings_name_the_attribute() {
    require_acc!();
    let ws = Workspace::empty();
    ws.write(
        "main.tf",
        r#"
terraform {
  required_providers {
    ceso = { source = "choiceomg/ceso" }
  }
}
provider "ceso" {
  url         = "ftp://esx1"
  user        = "root"
  password    = "x"
  api_timeout = "soon"
}
data "ceso_endpoint" "this" {}
"#,
    );
    ws.init();
    let out = ws.run(&["plan", "-input=false", "-no-color"]);
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, 1, "{text}");
    assert!(
        text.contains("Invalid duration") && text.contains("api_timeout"),
        "{text}"
    );
    assert!(
        text.contains("on main.tf line 11"),
        "diagnostic should point at the api_timeout line:\n{text}"
    );
}

#[test]
fn secrets_never_reach_the_logs() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let secret = "pw-Zq8v-never-logged";
    let ws = Workspace::from_example("data-sources/ceso_endpoint")
        .against(&sim)
        .env("CESO_PASSWORD", secret)
        .env("TF_LOG", "TRACE")
        .env("CESO_LOG", "trace");
    ws.init();
    let out = ws.apply().ok("apply with trace logs");
    let logs = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        logs.contains("ceso.vsphere.wire"),
        "trace logs should include the SOAP wire log"
    );
    assert!(
        logs.contains("<password>***</password>"),
        "login body should be logged redacted"
    );
    assert!(!logs.contains(secret), "the password appeared in the logs");
    assert!(
        !logs.contains("vmware_soap_session="),
        "the session cookie appeared in the logs"
    );
}

#[test]
fn one_login_per_provider_process() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let ws = Workspace::from_example("data-sources/ceso_endpoint").against(&sim);
    ws.init();
    ws.apply().ok("apply");
    let counts = sim.counts();
    let logins = counts["methods"]["/sdk"]["Login"].as_u64().unwrap_or(0);
    let total = counts["total"]["/sdk"].as_u64().unwrap_or(0);
    // apply reads the data source once in the plan walk and once... Terraform 1.0 reads data
    // sources during refresh/plan; each provider process logs in at most once.
    assert!((1..=2).contains(&logins), "logins: {counts}");
    assert!(
        total <= 3 * logins + 2,
        "round trips for one endpoint read: {counts}"
    );
    eprintln!("SOAP calls for init+apply of ceso_endpoint: {counts}");
}

/// Servers of four releases (6.5, 6.7, 7.0, 8.0; the simulator announcing each and refusing
/// newer SOAPActions, as such a server does): ceso negotiates the newest version each announces,
/// every call after the service content uses it, and the data source reports it.
#[test]
fn api_versions_6_5_to_8_0_are_negotiated() {
    require_acc!();
    for version in ["6.5", "6.7.3", "7.0.3.0", "8.0.2.0"] {
        let sim = Vcsim::start(&["-esx", "-api-version", version]);
        let ws = Workspace::from_example("data-sources/ceso_endpoint").against(&sim);
        ws.init();
        ws.apply().ok(&format!("apply against {version}"));
        assert_eq!(ws.outputs()["api_version"]["value"], version);
        let counts = sim.counts();
        let actions = counts["soap_actions"].as_object().unwrap();
        let negotiated = format!("urn:vim25/{version}");
        assert!(
            actions
                .get(&negotiated)
                .and_then(|n| n.as_u64())
                .unwrap_or(0)
                >= 2,
            "{version}: {actions:?}"
        );
        // Only the first call (RetrieveServiceContent) goes out before negotiation, with the
        // oldest version every server knows.
        for (action, n) in actions {
            if *action != negotiated {
                assert_eq!(action, "urn:vim25/6.5", "{version}: {actions:?}");
                assert_eq!(n.as_u64(), Some(1), "{version}: {actions:?}");
            }
        }
    }
}

/// A server whose certificate has an RSA-1024 key, as old ESXi 5.x/6.0 hosts and govmomi's
/// built-in simulator certificate have: its handshake signature never verifies. With
/// `allow_unverified_ssl` ceso connects anyway and warns why; pinned or verified, it refuses.
#[test]
fn unverified_ssl_connects_to_an_rsa1024_server_with_a_warning() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-tls", "-tls-rsa-bits", "1024"]);
    let base = |sim: &Vcsim| {
        Workspace::from_example("data-sources/ceso_endpoint")
            .env("CESO_URL", &sim.url)
            .env("CESO_USER", "user")
            .env("CESO_PASSWORD", "pass")
    };
    let warning = "Warning: TLS handshake signature not verified";

    let ws = base(&sim).env("CESO_ALLOW_UNVERIFIED_SSL", "true");
    ws.init();
    let applied = ws.apply().ok("apply with allow_unverified_ssl");
    let text = folded(&applied);
    assert!(
        text.contains(warning)
            && text.contains("BadSignature")
            && text.contains("allow_unverified_ssl = true"),
        "{text}"
    );
    let show = ws.show_json();
    let v = resource_values(&show, "data.ceso_endpoint.this");
    assert_eq!(v["url"], sim.url.as_str());
    assert_eq!(v["is_vcenter"], false);

    // Pinned, the handshake signature is still checked: refused, saying why.
    let ws = base(&sim).env("CESO_THUMBPRINT", &vec!["00"; 32].join(":"));
    ws.init();
    let text = plan_fails_with(&ws, Duration::from_secs(20), &["thumbprint mismatch"]);
    let presented = text
        .split("presented SHA-256 ")
        .nth(1)
        .map(|rest| rest.chars().take(95).collect::<String>())
        .expect("presented thumbprint in the error");
    let ws = base(&sim).env("CESO_THUMBPRINT", &presented);
    ws.init();
    plan_fails_with(
        &ws,
        Duration::from_secs(20),
        &["TLS verification", "BadSignature"],
    );
    // Verified by default: refused as before.
    let ws = base(&sim);
    ws.init();
    plan_fails_with(&ws, Duration::from_secs(20), &["TLS verification"]);

    // A server with a sound key: allow_unverified_ssl connects without the warning.
    let sound = Vcsim::start(&["-esx", "-tls"]);
    let ws = base(&sound).env("CESO_ALLOW_UNVERIFIED_SSL", "true");
    ws.init();
    let text = folded(&ws.apply().ok("apply against an RSA-2048 server"));
    assert!(!text.contains(warning), "{text}");
}

/// Each `endpoint` block may set its own `api_timeout` (a slow old host); blocks without one
/// use the provider's. A simulator answering every call after 1.5 s shows which applies.
#[test]
fn api_timeout_is_an_endpoint_setting() {
    require_acc!();
    let slow = Vcsim::start(&["-esx", "-delay", "1500"]);
    let fast = Vcsim::start(&["-esx"]);
    let ws = Workspace::empty()
        .env("CESO_USER", "user")
        .env("CESO_PASSWORD", "pass")
        .env("CESO_ALLOW_UNVERIFIED_SSL", "true");
    let config = |slow_timeout: &str| {
        format!(
            r#"
terraform {{
  required_providers {{
    ceso = {{ source = "choiceomg/ceso" }}
  }}
}}
provider "ceso" {{
  api_timeout = "1s"
  endpoint {{
    name        = "slow"
    url         = "{}"
    api_timeout = "{slow_timeout}"
  }}
  endpoint {{
    name = "fast"
    url  = "{}"
  }}
}}
data "ceso_endpoint" "slow" {{
  endpoint = "slow"
}}
data "ceso_endpoint" "fast" {{
  endpoint = "fast"
}}
"#,
            slow.url, fast.url
        )
    };
    ws.write("main.tf", &config("30s"));
    ws.init();
    ws.apply()
        .ok("the slow endpoint within its own api_timeout, the fast one within the provider's");
    let show = ws.show_json();
    assert_eq!(
        resource_values(&show, "data.ceso_endpoint.slow")["url"],
        slow.url.as_str()
    );

    // The slow endpoint's own limit below its latency: only it fails, as a timeout.
    ws.write("main.tf", &config("1s"));
    let text = plan_fails_with(
        &ws,
        Duration::from_secs(30),
        &["endpoint \"slow\"", "api_timeout"],
    );
    assert!(!text.contains("endpoint \"fast\""), "{text}");
}

/// A duration too large for any clock is refused by the validator, naming the attribute where
/// it is written; the plugin does not crash ("request was cancelled").
#[test]
fn huge_durations_are_refused_naming_the_attribute() {
    require_acc!();
    let huge = "99999999999999999999h";
    let cases = [
        (
            format!("provider \"ceso\" {{\n  url = \"esx1\"\n  user = \"u\"\n  password = \"p\"\n  api_timeout = \"{huge}\"\n}}\n"),
            "line 10",
        ),
        (
            format!("provider \"ceso\" {{\n  user = \"u\"\n  password = \"p\"\n  endpoint {{\n    name = \"a\"\n    url = \"esx1\"\n    api_timeout = \"{huge}\"\n  }}\n}}\n"),
            "line 12",
        ),
        (
            format!("provider \"ceso\" {{\n  url = \"esx1\"\n  user = \"u\"\n  password = \"p\"\n  session_keepalive = \"{huge}\"\n}}\n"),
            "line 10",
        ),
        (
            format!("provider \"ceso\" {{\n  url = \"esx1\"\n  user = \"u\"\n  password = \"p\"\n}}\nresource \"ceso_vm\" \"x\" {{\n  name = \"x\"\n  memory_mb = 1024\n  timeouts {{\n    create = \"{huge}\"\n  }}\n}}\n"),
            "line 15",
        ),
    ];
    for (body, line) in cases {
        let ws = Workspace::empty();
        ws.write(
            "main.tf",
            &format!("terraform {{\n  required_providers {{\n    ceso = {{ source = \"choiceomg/ceso\" }}\n  }}\n}}\n{body}data \"ceso_endpoint\" \"this\" {{}}\n"),
        );
        ws.init();
        let text = plan_fails_with(
            &ws,
            Duration::from_secs(20),
            &["Invalid duration", huge, "maximum of 8760h"],
        );
        assert!(
            text.contains(&format!("on main.tf {line}")),
            "{line}: {text}"
        );
        assert!(!text.contains("cancelled"), "{text}");
    }

    // From the environment, it is refused when the provider is configured.
    let ws = Workspace::from_example("data-sources/ceso_endpoint")
        .env("CESO_URL", "esx1")
        .env("CESO_USER", "u")
        .env("CESO_PASSWORD", "p")
        .env("CESO_API_TIMEOUT", huge);
    ws.init();
    plan_fails_with(
        &ws,
        Duration::from_secs(20),
        &["Invalid api_timeout", "maximum of 8760h"],
    );
}
