//! Backup repository benchmarks (plain `std::time`, no harness; prints tables).
//!
//! `cargo bench --bench backup -j1` runs both parts; pass `hash` or `repo` after `--` to run
//! one. Figures are MB/s with MB = 10^6 bytes, wall clock, on whatever else the machine runs.
//! Under `cargo test --all-targets` (no `--bench` argument) it runs as a quick smoke test on
//! 1/16 of the data, and its figures mean nothing (unoptimised build).
//!
//! (a) hash: one thread hashing 4 MiB buffers of random data (1 GiB in all) with BLAKE3
//!     (`blake3`, SIMD picked at run time) and SHA-256 (`sha2`, SHA-NI when the CPU has it),
//!     plus zstd level 3 on random and on text-like data: the per-chunk CPU costs of a backup.
//! (b) repo: `Repository` on a local directory (a temp dir), 4 MiB chunks, default
//!     parallelism: a 256 MiB random image and a 256 MiB image whose chunks are 80% zeros,
//!     written (full backup) and restored to a sink; plus the random image into an encrypted
//!     repository.

use std::sync::Arc;
use std::time::Instant;

use ceso::engine::backup::{
    Backend, BackupRequest, Consistency, DiskInfo, InitOptions, KdfParams, KeySource, LocalBackend,
    Passphrase, Repository, VmRef,
};
use sha2::Digest;

const MB: f64 = 1e6;
const CHUNK: usize = 4 << 20;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

fn rate(bytes: usize, secs: f64) -> String {
    format!("{:>8.0} MB/s", bytes as f64 / MB / secs)
}

fn hash_part(scale: usize) {
    let buf = random(CHUNK, 1);
    let rounds = 256 / scale; // 1 GiB
    let total = CHUNK * rounds;
    println!("(a) per-chunk CPU, one thread, {rounds} x 4 MiB");

    let mut sink = 0u8;
    let t = Instant::now();
    for _ in 0..rounds {
        sink ^= blake3::hash(&buf).as_bytes()[0];
    }
    let blake3_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..rounds {
        sink ^= sha2::Sha256::digest(&buf)[0];
    }
    let sha_secs = t.elapsed().as_secs_f64();
    println!("  BLAKE3            {}", rate(total, blake3_secs));
    println!("  SHA-256 (sha2)    {}", rate(total, sha_secs));
    println!("  BLAKE3 / SHA-256  {:>8.2}x", sha_secs / blake3_secs);

    // Log-like text: words picked at random from a small vocabulary, plus random numbers.
    const WORDS: [&str; 16] = [
        "vm",
        "disk",
        "snapshot",
        "backup",
        "ok",
        "error",
        "host",
        "esxi",
        "chunk",
        "write",
        "read",
        "lease",
        "2026-11-27",
        "INFO",
        "WARN",
        "\n",
    ];
    let noise = random(CHUNK, 4);
    let mut text = Vec::with_capacity(CHUNK + 64);
    let mut i = 0;
    while text.len() < CHUNK {
        let word = WORDS[usize::from(noise[i] & 15)];
        text.extend_from_slice(word.as_bytes());
        text.extend_from_slice(format!(" {} ", noise[i + 1]).as_bytes());
        i = (i + 2) % (CHUNK - 1);
    }
    text.truncate(CHUNK);
    for (name, data) in [("zstd-3 random", &buf), ("zstd-3 text", &text)] {
        let rounds = 32 / scale;
        let t = Instant::now();
        let mut out = 0;
        for _ in 0..rounds {
            out = zstd::bulk::compress(data, 3).unwrap().len();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  {name:<17} {} (ratio {:.2})",
            rate(CHUNK * rounds, secs),
            CHUNK as f64 / out as f64
        );
    }
    std::hint::black_box(sink);
}

async fn repo_case(name: &str, data: &[u8], key: Option<KeySource>) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
    let options = InitOptions {
        key,
        kdf: Some(KdfParams::with_costs(1024, 1, 1)),
        ..InitOptions::default()
    };
    let repo = Repository::init(backend, options).await.unwrap();
    let request = BackupRequest {
        vm: VmRef {
            name: "bench".into(),
            uuid: "bench".into(),
        },
        consistency: Consistency::CrashConsistent,
        vm_config: serde_json::Value::Null,
        parent: None,
        consistency_note: None,
        job: None,
        endpoint: None,
    };
    let t = Instant::now();
    let mut session = repo.begin_backup(request).await.unwrap();
    let info = DiskInfo {
        label: "disk0".into(),
        capacity: data.len() as u64,
        change_id: None,
    };
    let disk = session
        .write_disk(info, std::io::Cursor::new(data), None, None)
        .await
        .unwrap();
    session.commit().await.unwrap();
    let write_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let stats = repo.read_disk(&disk, tokio::io::sink()).await.unwrap();
    let read_secs = t.elapsed().as_secs_f64();
    assert_eq!(stats.bytes_written, data.len() as u64);
    println!(
        "  {name:<22} write {}  restore {}  stored {:>5.1} MB",
        rate(data.len(), write_secs),
        rate(data.len(), read_secs),
        disk.bytes_stored as f64 / MB
    );
}

async fn repo_part(scale: usize) {
    let len = (256 << 20) / scale;
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "(b) local repository, {} MiB images, 4 MiB chunks, {parallelism} cores",
        len >> 20
    );
    let random_image = random(len, 2);
    repo_case("random", &random_image, None).await;
    let mut sparse = random(len, 3);
    for (i, chunk) in sparse.chunks_mut(CHUNK).enumerate() {
        if i % 5 != 0 {
            chunk.fill(0); // 4 of every 5 chunks are zeros
        }
    }
    repo_case("80% zero chunks", &sparse, None).await;
    let key = KeySource::Passphrase(Passphrase::new("bench"));
    repo_case("random, encrypted", &random_image, Some(key)).await;
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` does not.
    let scale = if all.iter().any(|a| a == "--bench") {
        1
    } else {
        16
    };
    if scale > 1 {
        println!("smoke run at 1/{scale} size (use `cargo bench --bench backup` for figures)");
    }
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| *a == part);
    if want("hash") {
        hash_part(scale);
    }
    if want("repo") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(repo_part(scale));
    }
}
