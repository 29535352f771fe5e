//! Hot-backup throughput of `ceso-backup` against the simulator, beside restic (Debian's
//! `restic`, installed by `scripts/testbed.sh`) backing up the same raw image.
//!
//! `cargo bench --bench hot_backup` (needs `.testbed/bin/vcsim` and `restic`). For each of two
//! images, 20% and 100% non-zero (incompressible random data in 1 MiB runs), of
//! `BENCH_DISK_GIB` GiB (default 4): a VM with CBT on gets the image through the datastore
//! interface; then a full backup and, after changing 1% of the disk (64 KiB blocks in runs of
//! 1 MiB at random places), an incremental one, each into a fresh local repository (4 MiB
//! chunks); restic backs up the raw file before and after the same change into its own
//! repository. Printed per run: MB/s (disk size / wall time, MB = 10^6 B), CPU seconds (user +
//! system of the process), peak RSS, bytes ceso read from the datastore, and ceso/restic ratios.
//! ceso reads over HTTP from the simulator's datastore; restic reads a local file: both from
//! the page cache on this machine.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it prints a note and does nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ceso::vsphere::datastore_file::DatastoreFile;
use ceso::vsphere::{Client, ConnectConfig, Secret, TlsPolicy};

#[path = "../tests/support/cbt_vm.rs"]
mod cbt_vm;

const MIB: u64 = 1 << 20;
const MB: f64 = 1e6;

/// What one measured process did.
struct Run {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    stdout: String,
}

/// Runs `cmd` to completion, measuring wall time, CPU time (wait4's rusage) and peak RSS.
///
/// The RSS comes from a small intermediary (`python3`) that starts the command and reports
/// its child's `ru_maxrss`: Linux carries the peak RSS of the process that spawned a program
/// into the program's own `ru_maxrss` at exec, so measured from here it would never be below
/// this bench's own (which has held disk images).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also reports its rusage
fn measure(cmd: &mut Command) -> Run {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let mut probe = Command::new("python3");
    probe
        .args([
            "-S",
            "-c",
            "import resource, subprocess, sys\n\
             rc = subprocess.run(sys.argv[2:]).returncode\n\
             open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n\
             sys.exit(rc)",
        ])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => probe.env(key, v),
            None => probe.env_remove(key),
        };
    }
    let t = Instant::now();
    let child = probe
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout {
        use std::io::Read;
        out.read_to_string(&mut stdout).expect("read stdout");
    }
    let mut status = 0;
    // SAFETY: rusage is plain data filled by wait4 for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: {stdout}"
    );
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let rss_kib: f64 = std::fs::read_to_string(report.path())
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("the probe reports the peak RSS");
    Run {
        wall: t.elapsed().as_secs_f64(),
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_mib: rss_kib / 1024.0,
        stdout,
    }
}

/// A SplitMix64 step: the bench's deterministic randomness.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes the image: each 1 MiB run is random with probability `fill_pct`%, else zero.
fn write_image(path: &Path, size: u64, fill_pct: u64, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; MIB as usize];
    for run in 0..size / MIB {
        if mix(seed ^ run) % 100 < fill_pct {
            blake3::Hasher::new()
                .update(&(seed ^ run).to_le_bytes())
                .finalize_xof()
                .fill(&mut buf);
        } else {
            buf.fill(0);
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

/// Changes 1% of the image in place: 64 KiB blocks in runs of 16 at random 1 MiB-aligned places.
fn change_one_percent(path: &Path, size: u64, seed: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let runs = (size / 100) / MIB;
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..runs {
        let at = (mix(seed.wrapping_add(i)) % (size / MIB)) * MIB;
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut buf);
        f.write_all_at(&buf, at).unwrap();
    }
    runs * MIB
}

struct Sim {
    child: std::process::Child,
    url: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_vcsim(root: &Path, dir: &Path) -> Sim {
    let url_file = dir.join("url.txt");
    let child = Command::new(root.join(".testbed/bin/vcsim"))
        .env("TMPDIR", dir) // its datastores go with `dir`
        .args(["-esx", "-l", "127.0.0.1:0", "-url-file"])
        .arg(&url_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vcsim (run scripts/testbed.sh)");
    let mut sim = Sim {
        child,
        url: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&url_file) {
            if text.ends_with('\n') {
                let mut url = url::Url::parse(text.trim()).unwrap();
                let _ = url.set_username("");
                let _ = url.set_password(None);
                sim.url = url.to_string();
                return sim;
            }
        }
        assert!(Instant::now() < deadline, "vcsim did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn upload_file(client: &Client, flat: &DatastoreFile, path: &Path, size: u64) {
    let file = tokio::fs::File::open(path).await.unwrap();
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    client.upload(flat, body, size).await.unwrap();
}

fn ceso(bin: &str, sim: &Sim, repo: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("CESO_URL", &sim.url)
        .env("CESO_USER", "user")
        .env("CESO_PASSWORD", "pass")
        .env("CESO_ALLOW_UNVERIFIED_SSL", "true")
        .env("CESO_BACKUP_REPO", repo)
        .arg("--json");
    cmd
}

fn restic(repo: &Path) -> Command {
    let mut cmd = Command::new("restic");
    cmd.env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", "bench")
        .env("RESTIC_CACHE_DIR", repo.with_extension("cache"))
        .arg("--quiet");
    cmd
}

fn bytes_read(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .and_then(|v| v["bytes_read"].as_u64())
        .unwrap_or(0)
}

fn row(what: &str, size: u64, run: &Run, extra: &str) {
    println!(
        "  {what:<28} {:>8.0} MB/s {:>7.1} s {:>7.1} CPU s {:>7.0} MiB RSS  {extra}",
        size as f64 / MB / run.wall,
        run.wall,
        run.cpu,
        run.rss_mib
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("hot_backup: run with `cargo bench --bench hot_backup` (needs vcsim and restic)");
        return;
    }
    ceso::vsphere::tls::install_crypto_provider();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_ceso-backup");
    let gib: u64 = std::env::var("BENCH_DISK_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let size = gib << 30;
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("hot backup of a {gib} GiB disk: ceso-backup (vs simulator, 4 MiB chunks) and restic (raw file)");
    for fill in [20u64, 100] {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_vcsim(&root, dir.path());
        let client = rt.block_on(async {
            Arc::new(
                Client::connect(ConnectConfig {
                    url: sim.url.parse().unwrap(),
                    user: "user".into(),
                    password: Secret::new("pass"),
                    tls: TlsPolicy::Insecure,
                    timeout: Duration::from_secs(600),
                })
                .await
                .unwrap(),
            )
        });
        let raw = dir.path().join("disk.raw");
        write_image(&raw, size, fill, fill);
        let (_, flat) = rt.block_on(cbt_vm::make_vm(&client, "bench", size as usize));
        rt.block_on(upload_file(&client, &flat, &raw, size));
        println!("{fill}% non-zero:");

        let repo = dir.path().join("ceso-repo");
        measure(ceso(bin, &sim, &repo).args(["init"]));
        let full = measure(ceso(bin, &sim, &repo).args(["backup", "--vm", "bench"]));
        row(
            "ceso full",
            size,
            &full,
            &format!("read {:.0} MB", bytes_read(&full.stdout) as f64 / MB),
        );
        let rrepo = dir.path().join("restic-repo");
        measure(restic(&rrepo).arg("init"));
        let rfull = measure(restic(&rrepo).arg("backup").arg(&raw));
        row("restic full", size, &rfull, "");

        let changed = change_one_percent(&raw, size, 99 + fill);
        rt.block_on(upload_file(&client, &flat, &raw, size));
        let inc = measure(ceso(bin, &sim, &repo).args(["backup", "--vm", "bench"]));
        row(
            "ceso incremental (1%)",
            size,
            &inc,
            &format!(
                "read {:.0} MB for {:.0} MB changed",
                bytes_read(&inc.stdout) as f64 / MB,
                changed as f64 / MB
            ),
        );
        let rinc = measure(restic(&rrepo).arg("backup").arg(&raw));
        row("restic incremental (1%)", size, &rinc, "");
        println!(
            "  ceso/restic throughput: full {:.1}x, incremental {:.1}x; CPU: full {:.2}x, incremental {:.2}x",
            rfull.wall / full.wall,
            rinc.wall / inc.wall,
            full.cpu / rfull.cpu,
            inc.cpu / rinc.cpu
        );
        rt.block_on(client.logout());
    }
}
