//! Arbitrary bytes as a whole GGUF file: the hardened GGUF parser (`checkpoint::gguf::parse`) and
//! the config built from its metadata. Invariants: no panic (built with overflow checks), and an
//! accepted file's tensors lie inside the data section, aligned, without overlap, each exactly the
//! size its type and shape imply.
#![no_main]

use ckpt::checkpoint::gguf;
use ckpt::checkpoint::header::checked_nbytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = gguf::parse(data) else { return };
    assert!(g.alignment.is_power_of_two());
    // The data section starts aligned, except when no tensor holds data: it is then clamped to
    // the end of the file (a header-only file need not be padded).
    let no_data = g.tensors.iter().all(|t| t.end == t.begin);
    assert!(g.data_start <= data.len());
    assert!(g.data_start % g.alignment == 0 || no_data);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for t in &g.tensors {
        assert_eq!(t.begin % g.alignment, 0);
        assert_eq!(checked_nbytes(t.dtype, &t.shape), Ok(t.end - t.begin));
        assert!(g.data_start + t.end <= data.len());
        spans.push((t.begin, t.end));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0 || w[0].0 == w[0].1 || w[1].0 == w[1].1, "overlap");
    }
    let _ = gguf::llama_config(&g, data);
});
