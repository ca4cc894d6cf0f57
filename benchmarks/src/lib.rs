//! Latency figures for the closing notes: run through `scripts/bench.sh`, which
//! starts the same local services the tests use. Nothing here asserts a time.

use std::time::{Duration, Instant};

/// Latency summary over many timed calls.
pub struct Summary {
    pub label: String,
    pub samples: Vec<Duration>,
}

impl Summary {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        let idx = ((p / 100.0) * (s.len() as f64 - 1.0)).round() as usize;
        s[idx.min(s.len() - 1)]
    }

    pub fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mean = self.samples.iter().sum::<Duration>() / self.samples.len() as u32;
        println!(
            "{:<48} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  mean={:>8.3} ms",
            self.label,
            self.samples.len(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(mean)
        );
    }
}

/// Time `n` calls of `f` after `warmup` untimed ones.
pub async fn measure<F, Fut, T>(label: &str, warmup: usize, n: usize, mut f: F) -> Summary
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for i in 0..warmup {
        f(i).await;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        std::hint::black_box(f(warmup + i).await);
        samples.push(t.elapsed());
    }
    Summary {
        label: label.into(),
        samples,
    }
}
