//! Issue 12: PyTorch checkpoints (`.pth`, `.bin`, `.pt`, Meta's `consolidated.NN.pth` ranks) read
//! without unpickling. Fixtures and hostile files come from `scripts/make_torch_fixtures.py`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ckpt::Checkpoint;
use ckpt::checkpoint::{Dtype, Placement};
use ckpt::kernels::active_isa;
use ckpt::reference;
use common::fixture;

/// The torch fixtures and the safetensors fixture whose weights (and golden logits) they carry.
const CASES: &[(&str, &str)] = &[
    ("torch-bin", "llama-gqa"),
    ("torch-sharded", "llama-gqa"),
    ("torch-views", "llama-gqa"),
    ("torch-nested", "llama-gqa"),
    ("torch-legacy", "llama-gqa"),
    ("meta-llama2-2rank", "llama-meta"),
    ("meta-llama3-2rank", "llama-meta"),
];

fn corpus(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(sub)
}

fn expected(dir: &Path) -> (Vec<Vec<u32>>, Vec<f32>) {
    common::golden(dir)
}

fn logits_of(dir: &Path, batch: &[Vec<u32>]) -> Vec<f32> {
    let reg = ckpt::mapping::Registry::builtin().unwrap();
    let ck = Checkpoint::open(dir).unwrap();
    let (view, _) = ckpt::detect::open_view(&ck, &reg, None, &[]).unwrap();
    reference::forward(&view, batch, active_isa()).unwrap().data
}

/// Every torch fixture, read through its detected family: the golden logits, and bit-identical
/// logits to the safetensors fixture it was saved from.
#[test]
fn torch_fixtures_give_the_golden_logits_bit_identical_to_their_safetensors_twin() {
    for (case, twin) in CASES {
        let (batch, want) = expected(&fixture(case));
        let got = logits_of(&fixture(case), &batch);
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err <= 1e-4 * scale, "{case}: max abs error {err}");
        let same = logits_of(&fixture(twin), &batch);
        assert!(
            got.iter()
                .zip(&same)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{case}: logits differ from {twin}"
        );
    }
}

/// Shared storages are byte ranges, transposed tensors are gathered: every tensor reads exactly
/// the bytes of the safetensors original.
#[test]
fn shared_storage_views_and_transposed_tensors_read_exactly() {
    let ck = Checkpoint::open(fixture("torch-views")).unwrap();
    let src = Checkpoint::open(fixture("llama-gqa")).unwrap();
    assert_eq!(ck.container(), "torch");
    let lm = ck.get("lm_head.weight").unwrap();
    assert_eq!(
        lm.placement,
        Placement::Strided {
            strides: vec![1, 256]
        }
    );
    assert!(
        ck.data(lm).is_err(),
        "a strided tensor has no single byte range"
    );
    let (q, k) = (
        ck.get("model.layers.0.self_attn.q_proj.weight").unwrap(),
        ck.get("model.layers.0.self_attn.k_proj.weight").unwrap(),
    );
    assert!(q.is_contiguous() && k.is_contiguous());
    assert_eq!(k.begin, q.end, "k is the next rows of the fused storage");
    for t in &src.tensors {
        let ours = ck.get(&t.name).unwrap();
        assert_eq!((ours.dtype, &ours.shape), (t.dtype, &t.shape), "{}", t.name);
        assert_eq!(&*ck.read(ours).unwrap(), src.data(t).unwrap(), "{}", t.name);
    }
    // Row ranges of a strided tensor are gathered too.
    let rows = ck.read_rows(lm, 3, 2).unwrap();
    let full = src.data(src.get("lm_head.weight").unwrap()).unwrap();
    assert_eq!(&*rows, &full[3 * 64 * 4..5 * 64 * 4]);
}

/// The same views in the zip format and in the legacy (pre-1.6) format.
#[test]
fn small_views_archive_offsets_strides_and_dtypes() {
    for f in ["views.pth", "views-legacy.pth"] {
        small_views(&corpus("torch-good").join(f));
    }
}

fn small_views(path: &Path) {
    let ck = Checkpoint::open(path).unwrap();
    let t = ck.get("t").unwrap();
    assert_eq!((t.shape.clone(), t.dtype), (vec![4, 3], Dtype::F32));
    let vals: Vec<f32> = ck
        .read(t)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // arange(12).reshape(3, 4).t()
    assert_eq!(vals, vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
    let s = ck.get("slice").unwrap();
    let ints: Vec<i64> = ck
        .read(s)
        .unwrap()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!((s.dtype, ints), (Dtype::I64, vec![5, 6, 7, 8, 9, 10]));
    assert_eq!(ck.get("b").unwrap().dtype, Dtype::BF16);
}

/// Meta ranks merge into exactly the consolidated tensors: rows, columns, and the embedding by
/// columns (LLaMA 2) or rows (LLaMA 3), decided from the shapes.
#[test]
fn meta_ranks_merge_into_the_consolidated_tensors() {
    let src = Checkpoint::open(fixture("llama-meta")).unwrap();
    for (case, split) in [
        ("meta-llama2-2rank", "columns"),
        ("meta-llama3-2rank", "rows"),
    ] {
        let ck = Checkpoint::open(fixture(case)).unwrap();
        let m = ck.merge.as_ref().unwrap();
        assert_eq!((m.ranks, m.embedding_split), (2, Some(split)), "{case}");
        for t in &src.tensors {
            let ours = ck.get(&t.name).unwrap();
            assert_eq!(ours.shape, t.shape, "{case} {}", t.name);
            assert_eq!(
                &*ck.read(ours).unwrap(),
                src.data(t).unwrap(),
                "{case} {}",
                t.name
            );
        }
        let wo = ck.get("layers.0.attention.wo.weight").unwrap();
        assert!(matches!(wo.placement, Placement::Concat { axis: 1, .. }));
        let (code, out, err) = common::ckpt(&["inspect", fixture(case).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("2 tensor-parallel ranks merged") && out.contains(split),
            "{out}"
        );
    }
}

/// transformers 4's `save_pretrained(safe_serialization=False)` pickles a tied model's
/// `lm_head.weight` (sharing the embedding's storage); its safetensors twin has no such tensor.
/// Both are the same model: verify says equivalent in both directions. A stored head that is not
/// the embedding's bytes stays a structural difference.
#[test]
fn a_pickled_tied_lm_head_is_the_same_model_as_none() {
    let bin = common::fixture("torch-tied");
    let st = bin.join("st");
    for (a, b) in [(&st, &bin), (&bin, &st)] {
        let (code, out, err) = common::ckpt(&["verify", a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("0 only in A, 0 only in B"), "{out}");
        assert!(out.contains("verdict: equivalent"), "{out}");
    }
    // The same config with an untied config: the stored head is then a real tensor of B only.
    let tmp = tempfile::tempdir().unwrap();
    let untied = tmp.path().join("untied");
    std::fs::create_dir_all(&untied).unwrap();
    std::fs::copy(
        bin.join("pytorch_model.bin"),
        untied.join("pytorch_model.bin"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(bin.join("config.json")).unwrap();
    assert!(cfg.contains("\"tie_word_embeddings\": true"), "{cfg}");
    std::fs::write(
        untied.join("config.json"),
        cfg.replace(
            "\"tie_word_embeddings\": true",
            "\"tie_word_embeddings\": false",
        ),
    )
    .unwrap();
    let (code, out, err) =
        common::ckpt(&["verify", st.to_str().unwrap(), untied.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("1 only in B"), "{out}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn replicated_norms_must_be_equal_and_ranks_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("m");
    copy_dir(&fixture("meta-llama2-2rank"), &d);
    // Flip one byte of rank 1's final norm.
    let rank1 = d.join("consolidated.01.pth");
    let ck = Checkpoint::open(&rank1).unwrap();
    let norm = ck.get("norm.weight").unwrap().clone();
    drop(ck);
    let mut bytes = std::fs::read(&rank1).unwrap();
    bytes[norm.begin] ^= 0x40;
    std::fs::write(&rank1, bytes).unwrap();
    let err = Checkpoint::open(&d).unwrap_err().to_string();
    assert!(
        err.contains("norm.weight") && err.contains("rank 1"),
        "{err}"
    );
    // A missing rank.
    std::fs::remove_file(d.join("consolidated.00.pth")).unwrap();
    let (code, _, err) = common::ckpt(&["inspect", d.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("rank 0 is missing"), "{err}");
}

/// A directory with both formats (real Hub repositories often ship both): the safetensors files
/// are read, as transformers does, and the PyTorch files are named as not read.
#[test]
fn both_formats_in_one_directory_read_the_safetensors_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("both");
    copy_dir(&fixture("torch-bin"), &d);
    std::fs::copy(
        fixture("llama-gqa").join("model.safetensors"),
        d.join("model.safetensors"),
    )
    .unwrap();
    let (code, out, err) = common::ckpt(&["inspect", d.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("also holds PyTorch weights") && all.contains("pytorch_model.bin"),
        "{all}"
    );
    // The PyTorch file given directly is read as itself.
    let (code, _, _) = common::ckpt(&["inspect", d.join("pytorch_model.bin").to_str().unwrap()]);
    assert_eq!(code, 0);
}

#[test]
fn nested_state_dicts_are_found_listed_and_picked_by_key() {
    let (code, out, err) = common::ckpt(&["inspect", fixture("torch-nested").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state dict under `state_dict`"), "{out}");
    assert!(
        out.contains("`epoch` is not a tensor (int 3); skipped"),
        "{out}"
    );
    // The file given directly says so too (it was silent outside a directory).
    let file = fixture("torch-nested").join("model.pth");
    let (code, out, err) = common::ckpt(&["inspect", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        format!("{out}{err}").contains("`epoch` is not a tensor (int 3); skipped"),
        "{out}{err}"
    );
    let two = corpus("torch-good/two-dicts.pth");
    let (code, _, err) = common::ckpt(&["inspect", two.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`ema` (1 tensors), `model` (1 tensors)") && err.contains("--state-dict-key"),
        "{err}"
    );
    let (code, out, err) = common::ckpt(&[
        "inspect",
        two.to_str().unwrap(),
        "--state-dict-key",
        "ema",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"w\""), "{out}");
    let (code, _, err) =
        common::ckpt(&["--state-dict-key", "nope", "detect", two.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no dict of tensors under the key `nope`"),
        "{err}"
    );
}

/// The Done-when of issue 12: convert each fixture to Hub-ready safetensors, verify equivalence,
/// and get the golden logits from both the pickles and the output.
#[test]
fn convert_verify_and_logits_on_every_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    for (case, _) in CASES {
        let out = tmp.path().join(case);
        let src = fixture(case);
        let (code, stdout, err) = common::ckpt(&[
            "convert",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            "--to",
            "llama",
            "--verify",
            "--quiet",
        ]);
        assert_eq!(code, 0, "{case}: {stdout}{err}");
        assert!(out.join("model.safetensors").exists() && out.join("config.json").exists());
        let (code, stdout, err) =
            common::ckpt(&["verify", src.to_str().unwrap(), out.to_str().unwrap()]);
        assert_eq!(code, 0, "{case}: {stdout}{err}");
        assert!(stdout.contains("verdict: equivalent"), "{stdout}");
        let (batch, want) = expected(&src);
        let got = logits_of(&out, &batch);
        let direct = logits_of(&src, &batch);
        assert_eq!(
            got, direct,
            "{case}: converted logits differ from the pickles'"
        );
        let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * scale),
            "{case}"
        );
        // `ckpt logits` on the pickles writes the same logits.
        let lf = tmp.path().join(format!("{case}.logits.safetensors"));
        let mut args = vec!["logits".to_string(), src.to_str().unwrap().to_string()];
        for row in &batch {
            args.push("--ids".into());
            args.push(
                row.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        args.extend(["--out".into(), lf.to_str().unwrap().to_string()]);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = common::ckpt(&a);
        assert_eq!(code, 0, "{err}");
        let l = Checkpoint::open(&lf).unwrap();
        let vals: Vec<f32> = l
            .data(l.get("logits").unwrap())
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vals, direct, "{case}");
    }
    // LLaMA 3 params.json has vocab_size -1: the generated config says 256, from the shapes.
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("meta-llama3-2rank/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["vocab_size"], 256);
}

/// Run `ckpt` in `cwd` (so a payload that ran would leave its marker there).
fn ckpt_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every hostile archive is refused by every command: exit 2, the file named (and the global, for
/// code-running ones), no panic, nothing executed, nothing written.
#[test]
fn hostile_archives_are_refused_by_every_command_and_nothing_runs() {
    let good = fixture("llama-gqa");
    let good = good.to_str().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(corpus("torch")).unwrap() {
        let path = e.unwrap().path();
        let file = path.to_str().unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let global = match name.as_str() {
            "global-top-os-system.pth" | "legacy-global-os-system.pth" => Some("os.system"),
            "global-nested-builtins-eval.pth" => Some("builtins.eval"),
            "global-nested-subprocess-popen.bin" => Some("subprocess.Popen"),
            _ => None,
        };
        let cwd = tempfile::tempdir().unwrap();
        let out = cwd.path().join("out");
        let out_s = out.to_str().unwrap();
        let runs: Vec<Vec<&str>> = vec![
            vec!["inspect", file],
            vec!["inspect", "--json", file],
            vec!["detect", file],
            vec!["check", file],
            vec!["diff", file, good],
            vec!["diff", good, file],
            vec!["logits", file, "--ids", "1,2,3"],
            vec!["verify", file, good],
            vec!["convert", file, out_s, "--to", "llama"],
        ];
        for args in runs {
            let (code, stdout, err) = ckpt_in(cwd.path(), &args);
            assert_eq!(code, 2, "{args:?}: {stdout}{err}");
            assert!(
                err.contains(&name),
                "{args:?}: the file is not named: {err}"
            );
            assert!(
                !err.contains("panicked") && !err.contains("crashed"),
                "{args:?}: {err}"
            );
            if let Some(g) = global {
                assert!(
                    err.contains(g) && err.contains("refused global"),
                    "{args:?}: {err}"
                );
            }
            assert!(
                !cwd.path().join("ckpt-pwned-marker").exists(),
                "{name}: the payload ran"
            );
            assert!(!out.exists(), "{args:?}: something was written");
        }
        n += 1;
    }
    assert_eq!(n, 13);
}

/// Property: every truncation and every single-byte corruption of a valid archive is either read
/// (with every tensor inside the file) or refused with an error; never a panic.
#[test]
fn corrupted_archives_never_panic_and_ranges_stay_in_the_file() {
    use ckpt::checkpoint::torch::{TorchArchive, read_archive, read_legacy};
    type Reader = fn(&[u8], Option<&str>) -> ckpt::Result<TorchArchive>;
    for (file, read) in [
        ("views.pth", read_archive as Reader),
        ("views-legacy.pth", read_legacy as Reader),
    ] {
        let good = std::fs::read(corpus("torch-good").join(file)).unwrap();
        assert_eq!(read(&good, None).unwrap().tensors.len(), 3);
        let check = |b: &[u8]| {
            if let Ok(a) = read(b, None) {
                for t in &a.tensors {
                    assert!(t.begin <= t.end && t.end <= b.len(), "{t:?}");
                }
            }
        };
        for cut in 0..good.len() {
            check(&good[..cut]);
        }
        for i in 0..good.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut c = good.clone();
                c[i] ^= x;
                check(&c);
            }
        }
    }
}
