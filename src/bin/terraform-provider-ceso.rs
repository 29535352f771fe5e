//! `terraform-provider-ceso`: builds the ceso provider and serves it to Terraform or OpenTofu.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// ceso: a Terraform/OpenTofu provider for VMware ESXi and vCenter.
///
/// Terraform starts this binary itself; run it by hand only with --debug.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Serve for a debugger: prints a TF_REATTACH_PROVIDERS value to use with terraform.
    #[arg(long)]
    debug: bool,
    /// The provider address printed in debug mode.
    #[arg(long, default_value = "registry.terraform.io/choiceomg/ceso")]
    address: String,
}

fn main() -> ExitCode {
    ceso::memory::opt_out_of_huge_pages();
    let args = Args::parse();
    ceso::protocol::hclog::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = ceso::protocol::ServeOptions {
        debug: args.debug,
        address: args.address,
    };
    let provider = Arc::new(ceso::provider::Ceso::new());
    match runtime.block_on(ceso::protocol::serve(provider, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
