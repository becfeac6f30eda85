//! The `ckpt` side of the peer benchmark, driven by `scripts/bench_peers.sh` (see
//! docs/PERFORMANCE.md); run alone (`cargo bench`), it does nothing.
//!
//! ```text
//! peers write DIR f32|bf16      TinyLlama-1.1B-shaped checkpoint, random weights (seed 1)
//! peers forward DIR TOKENS REPS one warm-up, then REPS timed forwards (logits of the last
//!                               position, as llama-bench and candle compute); prints the median s
//! peers pair A B TOKENS REPS ROUNDS
//!                               both models loaded in one process, ROUNDS rounds alternating which
//!                               goes first, each the median of REPS forwards; one line per round:
//!                               A s, B s
//! peers peak                    f32 FMA peak on all rayon threads, GFLOP/s
//! peers isa                     the active ISA's name (the one the peak loop and the kernels use)
//! peers bf16-dot-peak           the `vdpbf16ps` (AVX512_BF16) loop's peak on all rayon threads,
//!                               GFLOP/s, or `n/a` when the CPU lacks it
//! peers stream FILE             seconds to stream FILE once from the (warm) page cache, and the
//!                               memory read bandwidth on all rayon threads
//! peers settle FILE...          drop each FILE's pages from the page cache, then read it once in
//!                               order: the state a model is in after its first load from disk
//! ```
//!
//! The f32 and bf16 checkpoints draw the same random sequence, so the bf16 one is the f32 one
//! rounded. Token ids are the same formula as `benches/forward.rs` and the script's.

use std::hint::black_box;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use ckpt::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::kernels;
use ckpt::mapping::View;
use ckpt::reference::{Logits, Model, Outputs};
use ckpt::synth::{Dims, Fill, llama_tensors, write_checkpoint};
use rayon::prelude::*;

mod common;
use common::peak::{bf16_dot_run, peak_run};

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["write", dir, dtype] => write(Path::new(dir), dtype),
        ["forward", dir, tokens, reps] => forward(Path::new(dir), tokens.parse()?, reps.parse()?),
        ["pair", a, b, tokens, reps, rounds] => pair(
            [Path::new(a), Path::new(b)],
            tokens.parse()?,
            reps.parse()?,
            rounds.parse()?,
        ),
        ["peak"] => {
            let isa = kernels::active_isa();
            println!("{:.1}", all_threads_best(|iters| peak_run(isa, iters)));
            Ok(())
        }
        ["isa"] => {
            println!("{}", kernels::active_isa().name());
            Ok(())
        }
        ["bf16-dot-peak"] => {
            match bf16_dot_run(0) {
                Some(_) => println!(
                    "{:.1}",
                    all_threads_best(|i| bf16_dot_run(i).unwrap_or(0.0))
                ),
                None => println!("n/a"),
            }
            Ok(())
        }
        ["stream", file] => stream(Path::new(file)),
        ["settle", files @ ..] => files.iter().try_for_each(|f| settle(Path::new(f))),
        _ => {
            println!(
                "peers: driven by scripts/bench_peers.sh (docs/PERFORMANCE.md); nothing to do"
            );
            Ok(())
        }
    }
}

fn write(dir: &Path, dtype: &str) -> R<()> {
    let (dt, name) = match dtype {
        "f32" => (Dtype::F32, "float32"),
        "bf16" => (Dtype::BF16, "bfloat16"),
        _ => return Err(format!("dtype `{dtype}`: expected f32 or bf16").into()),
    };
    let d = Dims::TINYLLAMA;
    let config = d.config_json("llama", "LlamaForCausalLM", name);
    write_checkpoint(
        dir,
        Some(&config),
        &llama_tensors(&d, dt, false),
        1,
        Fill::Random(1),
    )?;
    Ok(())
}

/// The ids every peer is given: `(i * 7919 + 1) % vocab`.
fn ids(tokens: usize, vocab: usize) -> Vec<u32> {
    (0..tokens)
        .map(|i| ((i * 7919 + 1) % vocab) as u32)
        .collect()
}

fn forward(dir: &Path, tokens: usize, reps: usize) -> R<()> {
    let ck = Checkpoint::open(dir)?;
    let view = View::identity(&ck);
    // Forward-only as the peers measure it: weights resident between passes (llama.cpp keeps its
    // mmap mapped, candle holds the tensors in memory). The process column includes the faults.
    let model = Model::new(&view)?.keep_mapped(true);
    let batch = vec![ids(tokens, Dims::TINYLLAMA.vocab)];
    black_box(last(&model, &batch)?); // warm-up: page the weights in
    println!("{:.6}", median_forward(&model, &batch, reps)?);
    Ok(())
}

/// One forward pass computing the logits of each sequence's last position: the work of
/// llama-bench's prompt processing (which outputs the last token's logits) and of the candle
/// runner (`Llama::forward` returns the last position's).
fn last(model: &Model<'_>, batch: &[Vec<u32>]) -> ckpt::Result<Logits> {
    model.forward_outputs(batch, kernels::active_isa(), Outputs::Last, &|_, _| {})
}

/// The median of `reps` timed forwards of a loaded model.
fn median_forward(model: &Model<'_>, batch: &[Vec<u32>], reps: usize) -> R<f64> {
    let mut s: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            let l = last(model, batch);
            let e = t.elapsed().as_secs_f64();
            black_box(l).map(|_| e)
        })
        .collect::<Result<_, _>>()?;
    s.sort_by(f64::total_cmp);
    Ok(s[s.len() / 2])
}

/// Two models' forward-only times paired round by round in one process (the bf16 and f32 files of
/// the same weights): measured minutes apart, as the main table's rows are, the machine's drift
/// between them can be larger than the difference.
fn pair(dirs: [&Path; 2], tokens: usize, reps: usize, rounds: usize) -> R<()> {
    let cks = [Checkpoint::open(dirs[0])?, Checkpoint::open(dirs[1])?];
    let views = [View::identity(&cks[0]), View::identity(&cks[1])];
    let models = [
        Model::new(&views[0])?.keep_mapped(true),
        Model::new(&views[1])?.keep_mapped(true),
    ];
    let batch = vec![ids(tokens, Dims::TINYLLAMA.vocab)];
    for m in &models {
        black_box(last(m, &batch)?);
    }
    for r in 0..rounds.max(1) {
        let mut s = [0.0; 2];
        for i in [r % 2, 1 - r % 2] {
            s[i] = median_forward(&models[i], &batch, reps)?;
        }
        println!("{:.6} {:.6}", s[0], s[1]);
    }
    Ok(())
}

/// Seconds to read FILE (already in the page cache) once with `read(2)` into one reused buffer,
/// seconds to sum it through a fresh mmap on all threads (page faults included, as a forward pass
/// that maps the checkpoint pays them), and the anonymous-memory read bandwidth in GB/s.
fn stream(file: &Path) -> R<()> {
    let read_once = || -> R<f64> {
        let mut f = std::fs::File::open(file)?;
        let mut buf = vec![0u8; 16 << 20];
        let t = Instant::now();
        while f.read(&mut buf)? > 0 {
            black_box(&buf);
        }
        Ok(t.elapsed().as_secs_f64())
    };
    read_once()?; // warm the cache
    let read_s = (0..3).map(|_| read_once()).collect::<R<Vec<f64>>>()?;
    let mmap_s = (0..3)
        .map(|_| -> R<f64> {
            let f = std::fs::File::open(file)?;
            let t = Instant::now();
            // SAFETY: the benchmark's own file, not modified while mapped.
            let m = unsafe { memmap2::Mmap::map(&f)? };
            black_box(sum_words(&m));
            Ok(t.elapsed().as_secs_f64())
        })
        .collect::<R<Vec<f64>>>()?;
    let mem: Vec<u8> = vec![1u8; 1 << 30];
    black_box(sum_words(&mem));
    let mem_s = (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(sum_words(&mem));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "{:.4} {:.4} {:.1}",
        min(&read_s),
        min(&mmap_s),
        mem.len() as f64 / mem_s / 1e9
    );
    Ok(())
}

/// Put `file`'s pages in the state of a first load from disk: written back, dropped from the page
/// cache, then read once in order, so the kernel's readahead fills the cache in its own (large)
/// pieces. How a file's cached pages were made decides what mapping them costs: the pages a
/// `write(2)` leaves behind can be small, and faulting them in takes about twice as long as those
/// of a readahead (docs/PERFORMANCE.md). Every tool's model file goes through this, so they
/// compete from the same state. Prints the file and the seconds the read took.
fn settle(file: &Path) -> R<()> {
    use std::os::fd::AsRawFd;
    let mut f = std::fs::File::open(file)?;
    f.sync_all()?;
    // SAFETY: a plain syscall on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!(
            "{}: posix_fadvise(DONTNEED) failed: errno {rc}",
            file.display()
        )
        .into());
    }
    let mut buf = vec![0u8; 16 << 20];
    let t = Instant::now();
    while f.read(&mut buf)? > 0 {
        black_box(&buf);
    }
    println!("{} {:.2}", file.display(), t.elapsed().as_secs_f64());
    Ok(())
}

/// Sum of all 8-byte words, split across the rayon threads (touches every cache line once).
fn sum_words(b: &[u8]) -> u64 {
    b.par_chunks(1 << 20)
        .map(|c| {
            c.chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
                .fold(0u64, u64::wrapping_add)
        })
        .reduce(|| 0, u64::wrapping_add)
}

/// A peak loop of `common::peak` (`run(iters)` returns the FLOPs it did) on every rayon thread at
/// once, best of 20 short samples (about 2 s in all, so one busy moment cannot set the figure);
/// GFLOP/s. 0 when the CPU lacks the loop's instructions.
fn all_threads_best(run: impl Fn(u64) -> f64 + Sync) -> f64 {
    let threads = rayon::current_num_threads();
    let iters = 25_000_000u64;
    let run = &run;
    (0..20)
        .map(|_| {
            let t = Instant::now();
            let flops: f64 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(move || run(iters))).collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
            });
            flops / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}
