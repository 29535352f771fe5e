//! The provider binary as a person meets it: run by hand it explains itself; with --debug it
//! serves Terraform through TF_REATTACH_PROVIDERS.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::harness::{provider_binary, Vcsim, Workspace};
use crate::require_acc;

#[test]
fn run_by_hand_it_explains_itself() {
    let out = Command::new(provider_binary())
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("This binary is a plugin"), "{err}");
    assert!(err.contains("--debug"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout, which Terraform would read as a handshake"
    );
}

#[test]
fn wrong_protocol_version_is_refused() {
    let out = Command::new(provider_binary())
        .env(
            "TF_PLUGIN_MAGIC_COOKIE",
            "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "6")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("speaks only version 5"));
}

#[test]
fn debug_mode_serves_terraform_through_reattach() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let mut child = Command::new(provider_binary())
        .arg("--debug")
        .env("CESO_URL", &sim.url)
        .env("CESO_USER", "u")
        .env("CESO_PASSWORD", "p")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut reattach = None;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.trim().strip_prefix("TF_REATTACH_PROVIDERS='") {
            reattach = Some(rest.trim_end_matches('\'').to_string());
            break;
        }
        line.clear();
    }
    let reattach = reattach.expect("TF_REATTACH_PROVIDERS line");
    let parsed: serde_json::Value = serde_json::from_str(&reattach).unwrap();
    assert_eq!(
        parsed["registry.terraform.io/choiceomg/ceso"]["ProtocolVersion"],
        5
    );

    let ws = Workspace::from_example("data-sources/ceso_endpoint")
        .env("TF_REATTACH_PROVIDERS", &reattach);
    let plan = ws.run(&["plan", "-input=false", "-no-color"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("is_vcenter"), "{}", plan.stdout);
}
