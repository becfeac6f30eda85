//! Mapping files and views: every fixture family to canonical LLaMA and back, byte for byte; the
//! canonical bytes against the fixture script's transforms; and each mapping-file error.

use ckpt::Checkpoint;
use ckpt::mapping::{Registry, RenameRule, canonical_view, to_family};

fn fixture(name: &str) -> Checkpoint {
    Checkpoint::open(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const CASES: &[(&str, &str)] = &[
    ("llama-mha", "llama"),
    ("llama-gqa", "llama"),
    ("llama-tied", "llama"),
    ("llama-bias", "llama"),
    ("llama-theta", "llama"),
    ("llama3-scaling", "llama"),
    ("llama-bf16", "llama"),
    ("llama-f16", "llama"),
    ("llama-sharded", "llama"),
    ("yi", "yi"),
    ("llama-meta", "llama-meta"),
    ("mistral", "mistral"),
    ("qwen2", "qwen2"),
    ("phi3", "phi3"),
    ("baichuan", "baichuan"),
    ("internlm2", "internlm2"),
];

#[test]
fn round_trip_reproduces_every_tensor() {
    let reg = Registry::builtin().unwrap();
    for (case, fam) in CASES {
        let ck = fixture(case);
        let f = reg.get(fam).unwrap();
        let canon = canonical_view(&ck, f, &[]).unwrap_or_else(|e| panic!("{case}: {e}"));
        let back = to_family(&canon, f).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(back.tensors.len(), ck.tensors.len(), "{case}");
        for t in &ck.tensors {
            let vt = back
                .get(&t.name)
                .unwrap_or_else(|| panic!("{case}: {} missing", t.name));
            assert_eq!(vt.shape, t.shape, "{case} {}", t.name);
            assert_eq!(
                &*back.read(vt).unwrap(),
                ck.data(t).unwrap(),
                "{case} {}",
                t.name
            );
            assert!(
                vt.is_whole_tensor(&ck).is_some(),
                "{case} {}: segments not merged back",
                t.name
            );
        }
    }
}
