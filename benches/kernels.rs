//! Kernel benchmark (`cargo bench --bench kernels`): the machine's measured f32 FMA peak, then
//! matmul GFLOP/s for LLaMA-7B-sized projections as a fraction of that peak.
//!
//! Plain `main` rather than criterion: the point is one table comparing against the peak, and the
//! whole run must stay under about two minutes.
//!
//! Two clocks: wall time (what a user waits for) and process CPU time. On a shared machine other
//! processes steal cores and wall-time figures drop; `cpu eff` (FLOPs per CPU-second against the
//! one-thread peak, also in CPU time) is what the kernel achieves on the cycles it actually got.
//!
//! To iterate on one case, comma-separated lists narrow the table: `CKPT_BENCH_N` (4096, 11008),
//! `CKPT_BENCH_DTYPE` (F32, BF16, F16), `CKPT_BENCH_T` (token counts, any), `CKPT_BENCH_SHAPES`
//! (`KxN` pairs in place of the two LLaMA-7B shapes, e.g. `2048x256,5632x2048` for TinyLlama's
//! K/V and down projections). When one is set the
//! scalar rows are left out and each row runs until its time budget, `CKPT_BENCH_MS` (default
//! 600), is spent.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ckpt::kernels::{self, Isa, WDtype, Weights};

mod common;
use common::peak::{bf16_dot_run, peak_run};

/// Seconds of CPU time used by this process so far (all threads).
fn cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Peak GFLOP/s on `threads` threads (each runs the loop), best of 5: (wall, per CPU-second).
fn peak_gflops(isa: Isa, threads: usize) -> (f64, f64) {
    let iters = 50_000_000u64;
    let (mut best_wall, mut best_cpu) = (0.0f64, 0.0f64);
    for _ in 0..5 {
        let (start, cpu0) = (Instant::now(), cpu_time());
        let flops: f64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || peak_run(isa, iters)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        best_wall = best_wall.max(flops / start.elapsed().as_secs_f64() / 1e9);
        best_cpu = best_cpu.max(flops / (cpu_time() - cpu0) / 1e9);
    }
    (best_wall, best_cpu)
}

/// One-thread GFLOP/s of the `vdpbf16ps` loop, best of 5; `None` without AVX512_BF16.
fn bf16_dot_gflops() -> Option<f64> {
    let iters = 20_000_000u64;
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let flops = bf16_dot_run(iters)?;
        best = best.max(flops / start.elapsed().as_secs_f64() / 1e9);
    }
    Some(best)
}

/// A cheap deterministic pseudo-random f32 in [-1, 1).
fn rand_f32(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn weight_bytes(dtype: WDtype, len: usize, seed: u64) -> Vec<u8> {
    let mut st = seed;
    let mut out = Vec::with_capacity(len * dtype.size());
    for _ in 0..len {
        let v = rand_f32(&mut st) * 0.05;
        match dtype {
            WDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            WDtype::Bf16 => out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes()),
            WDtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            other => panic!("no float encoding for block type {}", other.name()),
        }
    }
    out
}

/// Milliseconds each table row may spend on repeated runs: 600, or `CKPT_BENCH_MS` (more runs
/// give steadier best-of figures on a busy machine).
fn budget_ms() -> u64 {
    std::env::var("CKPT_BENCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600)
}

/// Best GFLOP/s of `matmul` after a warm-up, over at most `max_runs` runs or ~0.6 s:
/// (wall clock, per CPU-second).
fn bench_matmul(
    isa: Isa,
    t: usize,
    k: usize,
    n: usize,
    w: &[u8],
    dtype: WDtype,
    max_runs: usize,
) -> (f64, f64) {
    let mut st = 7u64;
    let x: Vec<f32> = (0..t * k).map(|_| rand_f32(&mut st)).collect();
    let mut out = vec![0.0f32; t * n];
    let wts = Weights::new(dtype, w);
    let run = |out: &mut [f32]| {
        let (start, cpu0) = (Instant::now(), cpu_time());
        kernels::matmul(isa, &x, t, k, wts, n, out).expect("lengths are consistent");
        black_box(&out);
        (start.elapsed(), cpu_time() - cpu0)
    };
    run(&mut out);
    let (mut best, mut best_cpu) = (Duration::MAX, f64::MAX);
    let budget = Instant::now();
    for _ in 0..max_runs {
        let (wall, cpu) = run(&mut out);
        best = best.min(wall);
        best_cpu = best_cpu.min(cpu);
        if budget.elapsed() > Duration::from_millis(budget_ms()) {
            break;
        }
    }
    let flops = 2.0 * (t * n * k) as f64;
    (flops / best.as_secs_f64() / 1e9, flops / best_cpu / 1e9)
}

fn main() {
    let isa = kernels::active_isa();
    let threads = rayon::current_num_threads();
    println!(
        "active isa: {}  (available: {:?})  rayon threads: {threads}",
        isa.name(),
        kernels::available_isas()
    );
    let (p1, p1_cpu) = peak_gflops(isa, 1);
    let (pall, _) = peak_gflops(isa, threads);
    println!(
        "f32 FMA peak ({}): 1 thread {p1:.1} GFLOP/s (per CPU-second {p1_cpu:.1}), \
         {threads} threads {pall:.1} GFLOP/s",
        isa.name()
    );
    if let Some(dot) = bf16_dot_gflops() {
        println!(
            "bf16 dot-product peak (vdpbf16ps, AVX512_BF16): 1 thread {dot:.1} GFLOP/s = {:.2} x \
             the f32 FMA peak; a bf16 x bf16 kernel pays off only where this is above 1 \
             (it also rounds the activations to bf16)",
            dot / p1
        );
    }
    println!(
        "% peak = wall GFLOP/s / {threads}-thread peak; cpu eff = GFLOP per CPU-second / 1-thread peak"
    );
    println!(
        "(on a shared machine other processes steal cores: wall figures then vary from run to run \
         and can exceed 100%; cpu eff does not)"
    );
    println!();
    println!(
        "{:<7} {:>5} {:>6} {:>5} {:>4} {:>9} {:>7} {:>9}",
        "isa", "K", "N", "dtype", "T", "GFLOP/s", "% peak", "cpu eff"
    );
    let list = |var: &str| -> Option<Vec<String>> {
        std::env::var(var)
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    };
    let (n_only, dtype_only, t_only) = (
        list("CKPT_BENCH_N"),
        list("CKPT_BENCH_DTYPE"),
        list("CKPT_BENCH_T"),
    );
    let filtered = n_only.is_some() || dtype_only.is_some() || t_only.is_some();
    let shapes_only = list("CKPT_BENCH_SHAPES");
    let filtered = filtered || shapes_only.is_some();
    let shapes: Vec<(usize, usize)> = match &shapes_only {
        Some(l) => l
            .iter()
            .filter_map(|s| {
                let (k, n) = s.split_once('x')?;
                Some((k.parse().ok()?, n.parse().ok()?))
            })
            .collect(),
        None => vec![(4096usize, 4096usize), (4096, 11008)],
    }
    .into_iter()
    .filter(|(_, n)| n_only.as_ref().is_none_or(|l| l.contains(&n.to_string())))
    .collect();
    let dtypes: Vec<WDtype> = [WDtype::F32, WDtype::Bf16, WDtype::F16]
        .into_iter()
        .filter(|d| match &dtype_only {
            Some(l) => l.iter().any(|s| s.eq_ignore_ascii_case(d.name())),
            None => *d != WDtype::F16,
        })
        .collect();
    let tokens: Vec<usize> = match &t_only {
        Some(l) => l.iter().filter_map(|s| s.parse().ok()).collect(),
        None => vec![1, 8, 32, 128],
    };
    let row = |name: &str, k: usize, n: usize, dt: WDtype, t: usize, (g, gc): (f64, f64)| {
        let pct = if pall > 0.0 {
            100.0 * g / pall
        } else {
            f64::NAN
        };
        let eff = if p1_cpu > 0.0 {
            100.0 * gc / p1_cpu
        } else {
            f64::NAN
        };
        println!(
            "{name:<7} {k:>5} {n:>6} {:>5} {t:>4} {g:>9.1} {pct:>6.1}% {eff:>8.1}%",
            dt.name()
        );
    };
    for &(k, n) in &shapes {
        for &dt in &dtypes {
            let w = weight_bytes(dt, k * n, 42);
            for &t in &tokens {
                row(
                    isa.name(),
                    k,
                    n,
                    dt,
                    t,
                    bench_matmul(isa, t, k, n, &w, dt, if filtered { 1000 } else { 8 }),
                );
            }
            if isa != Isa::Scalar && n == 4096 && !filtered {
                row(
                    "scalar",
                    k,
                    n,
                    dt,
                    32,
                    bench_matmul(Isa::Scalar, 32, k, n, &w, dt, 1),
                );
            }
        }
    }
}
