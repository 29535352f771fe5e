//! `ceso-docs`: writes the Registry documentation in `docs/` from the provider's schemas,
//! `templates/` and `examples/`; with `--check`, fails if `docs/` differs from what it would write.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Generate ceso's Registry documentation.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Output directory.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Repository root (where templates/ and examples/ are).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Compare instead of writing; exit 1 if docs/ is stale.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let provider = ceso::provider::Ceso::new();
    let pages = match ceso::docs::render(&provider, &args.root) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ceso-docs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = Vec::new();
    for page in &pages {
        let path = args.out.join(&page.path);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(page.content.as_str()) {
            continue;
        }
        if args.check {
            stale.push(path.display().to_string());
            continue;
        }
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("ceso-docs: {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = std::fs::write(&path, &page.content) {
            eprintln!("ceso-docs: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    if !stale.is_empty() {
        eprintln!(
            "ceso-docs: docs/ is stale (run `make docs` and commit): {}",
            stale.join(", ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
