//! The SCRAM-SHA-256 login's client-side cost (`scripts/bench.sh scram`): PBKDF2 with
//! 4096 HMAC-SHA-256 rounds, which every new connection with a password pays once
//! (here through `postgres_protocol::password::scram_sha_256`, the same `Hi()` the
//! login's client proof uses). Build it with and without `--features
//! shared/fast-scram` (the patched crate's `keyed-hmac-reuse`, patches/README.md) to
//! compare: `SCRAM_N` rounds (default 300).

use std::time::Instant;

fn main() {
    let n: usize = std::env::var("SCRAM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let password = format!("password-{i}");
        let t = Instant::now();
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "scram_sha_256 (4096 rounds), keyed-hmac-reuse {}: p50 {:.3} ms, p99 {:.3} ms, n {n}",
        if cfg!(feature = "fast-scram") {
            "on"
        } else {
            "off"
        },
        at(0.5),
        at(0.99)
    );
}
