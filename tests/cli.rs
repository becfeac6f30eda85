//! The command-line surface as one design (issue 15): one flag vocabulary, hints that name only the
//! running command's flags, documented JSON that validates against `docs/schema/`, path resolution
//! (file in a directory, Hugging Face cache repositories, links), output that fits the terminal,
//! and the packaging (completions, man page, README, licenses).

mod common;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ckpt, fixture};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run with extra environment variables.
fn ckpt_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A safetensors file with one F32 tensor `w` of 2 elements.
fn write_one_tensor(p: &Path) {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(p, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 1. One flag vocabulary
// ---------------------------------------------------------------------------------------------

/// The subcommands, from `ckpt --help`.
fn subcommands() -> Vec<String> {
    let (code, out, _) = ckpt(&["--help"]);
    assert_eq!(code, 0);
    let mut in_cmds = false;
    let mut v = Vec::new();
    for l in out.lines() {
        if l.starts_with("Commands:") {
            in_cmds = true;
            continue;
        }
        if in_cmds {
            if l.trim().is_empty() {
                break;
            }
            if let Some(name) = l.split_whitespace().next()
                && l.starts_with("  ")
                && !l.starts_with("   ")
                && name != "help"
            {
                v.push(name.to_string());
            }
        }
    }
    v
}

/// A command's long flags with their value names (`None` for switches), parsed from `--help`.
fn flags(cmd: &str) -> (BTreeMap<String, Option<String>>, String) {
    let (code, out, err) = ckpt(&[cmd, "--help"]);
    assert_eq!(code, 0, "{cmd} --help: {err}");
    let mut m = BTreeMap::new();
    for l in out.lines() {
        let t = l.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        let t = t.strip_prefix("-q, ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("--") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let name = parts.next().unwrap().to_string();
        let value = parts
            .next()
            .filter(|v| v.starts_with('<'))
            .map(|v| v.trim_end_matches("...").to_string());
        m.insert(name, value);
    }
    (m, out)
}

#[test]
fn every_help_uses_the_same_flag_names_for_the_same_ideas() {
    let cmds = subcommands();
    for c in [
        "inspect",
        "check",
        "diff",
        "convert",
        "rename",
        "detect",
        "families",
        "logits",
        "verify",
        "completions",
        "man",
    ] {
        assert!(cmds.iter().any(|x| x == c), "{c} missing from {cmds:?}");
    }
    let mut value_of: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let family_flags = ["family", "family-a", "family-b", "from", "to"];
    let mut helps = BTreeMap::new();
    for c in &cmds {
        let (f, text) = flags(c);
        assert!(
            text.contains("Exit codes:"),
            "`{c} --help` states no exit codes"
        );
        for (name, value) in &f {
            // One flag name, one value name, everywhere.
            if let Some((first, v)) = value_of.get(name) {
                assert_eq!(v, value, "--{name}: {first} says {v:?}, {c} says {value:?}");
            } else {
                value_of.insert(name.clone(), (c.clone(), value.clone()));
            }
            // A family is always a <FAMILY>, and only family flags take one.
            assert_eq!(
                value.as_deref() == Some("<FAMILY>"),
                family_flags.contains(&name.as_str()),
                "{c} --{name} {value:?}"
            );
        }
        helps.insert(c.clone(), f);
    }
    let has = |c: &str, flag: &str| helps[c].contains_key(flag);
    for c in [
        "inspect", "detect", "families", "logits", "verify", "diff", "check",
    ] {
        assert!(has(c, "json"), "{c} lacks --json");
    }
    for c in ["convert", "rename", "verify", "diff", "check", "logits"] {
        assert!(has(c, "quiet"), "{c} lacks -q/--quiet");
        let (_, text) = flags(c);
        assert!(
            text.contains("-q, --quiet"),
            "{c}: -q is not the short form"
        );
    }
    for c in ["verify", "diff", "check", "logits", "detect", "convert"] {
        assert!(has(c, "mapping"), "{c} lacks --mapping");
        assert!(has(c, "rename"), "{c} lacks --rename");
    }
    for c in [
        "inspect", "verify", "diff", "check", "logits", "detect", "convert", "rename",
    ] {
        assert!(has(c, "revision"), "{c} lacks --revision");
        assert!(
            has(c, "allow-external-links"),
            "{c} lacks --allow-external-links"
        );
    }
    // How a family is chosen: one checkpoint --family, two --family-a/--family-b, convert --from/--to.
    assert!(has("logits", "family"));
    for c in ["verify", "diff"] {
        assert!(has(c, "family-a") && has(c, "family-b"), "{c}");
    }
    assert!(has("convert", "from") && has("convert", "to"));
    assert_eq!(value_of["mapping"].1.as_deref(), Some("<FILE>"));
    assert_eq!(
        value_of["rename"].1.as_deref(),
        Some("<PATTERN=REPLACEMENT>")
    );
    // `rename` describes what it does, and has no family flags.
    let (_, text) = flags("rename");
    assert!(
        text.to_lowercase()
            .contains("no family mapping is involved"),
        "{text}"
    );
    assert!(!has("rename", "to") && !has("rename", "mapping"));
}

#[test]
fn check_json_is_format_json_and_old_spellings_still_work() {
    let yi = fixture("yi");
    let (c1, a, _) = ckpt(&["check", s(&yi), "--json"]);
    let (c2, b, _) = ckpt(&["check", s(&yi), "--format", "json"]);
    assert_eq!((c1, c2), (1, 1));
    assert_eq!(a, b);
    // `convert --family` is a hidden alias of `--from`.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    let (code, _, err) = ckpt(&["convert", s(&yi), s(&out), "--family", "yi", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_rename_rule_that_matches_nothing_is_an_error_and_a_warning_in_a_dry_run() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let yi = fixture("yi");
    let (code, _, err) = ckpt(&["rename", s(&yi), s(&out), "--rename", "ln1=input_layernorm"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`ln1=input_layernorm`"), "{err}");
    assert!(err.contains("whole names"), "{err}");
    assert!(!out.exists());
    let (code, stdout, err) = ckpt(&[
        "rename",
        s(&yi),
        s(&out),
        "--rename",
        "ln1=input_layernorm",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: rename rule `ln1=input_layernorm`"),
        "{err}"
    );
    assert!(stdout.contains("dry run"));
    assert!(!out.exists());
    // The same rule written for whole names works.
    let (code, _, err) = ckpt(&[
        "rename",
        s(&yi),
        s(&out),
        "--rename",
        r"(.*)\.ln1\.(.*)=$1.input_layernorm.$2",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    // Every command that takes --rename refuses an unmatched rule.
    for args in [
        vec!["detect", s(&yi)],
        vec!["verify", s(&yi), s(&yi)],
        vec!["diff", s(&yi), s(&yi)],
        vec!["check", s(&yi)],
        vec!["logits", s(&yi), "--ids", "1,2"],
    ] {
        let mut a = args.clone();
        a.extend(["--rename", "nothing=else"]);
        let (code, _, err) = ckpt(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("matches no tensor name"), "{args:?}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Hints name only the running command's flags
// ---------------------------------------------------------------------------------------------

#[test]
fn hints_name_only_flags_the_command_has() {
    let yi = fixture("yi");
    let gpt2 = fixture("gpt2");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    let cases: Vec<Vec<&str>> = vec![
        vec!["verify", s(&yi), s(&yi), "--family-a", "llama"],
        vec!["diff", s(&yi), s(&yi), "--family-b", "llama"],
        vec!["convert", s(&yi), s(&out), "--from", "llama"],
        vec!["logits", s(&yi), "--ids", "1", "--family", "llama"],
        vec!["verify", s(&yi), s(&yi), "--family-a", "nope"],
        vec!["convert", s(&yi), s(&out), "--to", "nope"],
        vec!["detect", s(&yi), "--rename", "(a=b"],
        vec!["verify", s(&gpt2), s(&gpt2), "--family-a", "llama"],
    ];
    for args in cases {
        let (code, _, err) = ckpt(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let hint = err
            .lines()
            .find_map(|l| l.trim().strip_prefix("hint: "))
            .unwrap_or_else(|| panic!("{args:?}: no hint in {err}"));
        let (f, _) = flags(args[0]);
        for word in hint.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if let Some(flag) = word.strip_prefix("--") {
                // `--family-a/--family-b` splits into both.
                assert!(
                    f.contains_key(flag),
                    "`ckpt {}` hints `--{flag}`, which it does not have: {hint}",
                    args[0]
                );
            }
        }
    }
    // The convert hint names --from, verify's names --family-a.
    let (_, _, err) = ckpt(&["convert", s(&yi), s(&out), "--from", "llama"]);
    assert!(err.contains("--from FAMILY"), "{err}");
    let (_, _, err) = ckpt(&["verify", s(&yi), s(&yi), "--family-a", "llama"]);
    assert!(err.contains("--family-a/--family-b FAMILY"), "{err}");
}

#[test]
fn library_errors_carry_facts_not_command_lines() {
    use ckpt::mapping::Registry;
    let ck = ckpt::Checkpoint::open(fixture("yi")).unwrap();
    let reg = Registry::builtin().unwrap();
    let e = ckpt::detect::open_view(&ck, &reg, Some("llama"), &[]).unwrap_err();
    assert_eq!(
        e.cause_info(),
        Some(&ckpt::Cause::TensorUnmapped {
            family: "llama".into()
        })
    );
    assert!(!e.hint_text().unwrap_or("").contains("--"), "{e}");
    let e = ckpt::detect::open_view(&ck, &reg, Some("nope"), &[]).unwrap_err();
    assert!(
        matches!(e.cause_info(), Some(ckpt::Cause::UnknownFamily { name, .. }) if name == "nope")
    );
    let e = ckpt::mapping::RenameRule::parse("no-equals").unwrap_err();
    assert_eq!(e.cause_info(), Some(&ckpt::Cause::RenameSyntax));
    assert!(!e.hint_text().unwrap_or("").contains("--"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 3. JSON: documented, versioned, validated
// ---------------------------------------------------------------------------------------------

fn json_of(schema_name: &str, args: &[&str], want: i32) -> serde_json::Value {
    let (code, out, err) = ckpt(args);
    assert_eq!(code, want, "{args:?}: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    let errs = schema::validate(&schema::load(schema_name), &v);
    assert!(errs.is_empty(), "{args:?} against {schema_name}: {errs:#?}");
    assert_eq!(v["schema_version"], 1);
    v
}

/// A copy of the yi fixture whose config has a non-finite value, a null and a key A lacks.
fn yi_with_odd_config(dir: &Path) -> PathBuf {
    let p = dir.join("yi-odd");
    copy_dir(&fixture("yi"), &p);
    let cfg = std::fs::read_to_string(p.join("config.json")).unwrap();
    let cfg = cfg.replacen(
        '{',
        "{\n  \"max_norm\": Infinity,\n  \"extra_null\": null,",
        1,
    );
    std::fs::write(p.join("config.json"), cfg).unwrap();
    p
}

#[test]
fn every_commands_json_validates_against_its_documented_schema() {
    let t = tempfile::tempdir().unwrap();
    let odd = yi_with_odd_config(t.path());
    let yi = fixture("yi");
    let sharded = fixture("llama-sharded");
    let gqa = fixture("llama-gqa");
    let scaling = fixture("llama3-scaling");
    json_of("inspect", &["inspect", s(&sharded), "--json"], 0);
    json_of(
        "inspect",
        &["inspect", s(&yi.join("model.safetensors")), "--json"],
        0,
    );
    json_of(
        "inspect",
        &["inspect", s(&fixture("llama-meta")), "--json"],
        0,
    );
    for f in ["yi", "gpt2", "llama-mha", "llama-meta"] {
        // gpt2 is detected too (as a detect-only family).
        json_of("detect", &["detect", s(&fixture(f)), "--json"], 0);
    }
    // The text says that a recognised-only family's computation is not read, and only for it.
    for (f, recognised_only) in [("gpt2", true), ("yi", false)] {
        let (code, text, err) = ckpt(&["detect", s(&fixture(f))]);
        assert_eq!(code, 0, "{f}: {err}");
        assert_eq!(
            text.contains(
                "math        not modelled: `gpt2` is recognised by its names and config only"
            ),
            recognised_only,
            "{f}: {text}"
        );
    }
    // Nothing detected: the family is null, not absent.
    let one = t.path().join("one.safetensors");
    write_one_tensor(&one);
    let v = json_of("detect", &["detect", s(&one), "--json"], 1);
    assert!(v["checkpoint"]["family"].is_null());
    json_of("families", &["families", "--json"], 0);
    json_of(
        "logits",
        &[
            "logits",
            s(&yi),
            "--ids",
            "1,2,3",
            "--ids",
            "4,5,6",
            "--json",
        ],
        0,
    );
    json_of("verify", &["verify", s(&yi), s(&yi), "--json"], 0);
    // GGUF bands: quantized, rounded to F16, and rounded but for one tensor.
    for (file, want) in [
        ("gqa-q8_0.gguf", 0),
        ("gqa-f16-rounded.gguf", 0),
        ("gqa-f16-truncated.gguf", 1),
    ] {
        let g = fixture("gguf").join(file);
        let v = json_of("verify", &["verify", s(&gqa), s(&g), "--json"], want);
        assert!(v["quant"].is_object(), "{file}: {v}");
    }
    let v = json_of("verify", &["verify", s(&yi), s(&scaling), "--json"], 1);
    // Config values are JSON values, never Rust Debug text.
    let text = v.to_string();
    assert!(
        !text.contains("Some(") && !text.contains("RopeScaling"),
        "{text}"
    );
    json_of(
        "verify",
        &["verify", s(&yi), s(&gqa), "--json", "--level", "bytes"],
        1,
    );
    json_of(
        "diff",
        &["diff", s(&yi), s(&sharded), "--json", "--values"],
        1,
    );
    let v = json_of("diff", &["diff", s(&yi), s(&odd), "--json"], 1);
    let rows = v["config"]["differing"].as_array().unwrap();
    let max_norm = rows.iter().find(|r| r["key"] == "max_norm").unwrap();
    assert!(max_norm.get("a").is_none(), "absent on A: {max_norm}");
    assert_eq!(max_norm["b"], "Infinity");
    let null_row = rows.iter().find(|r| r["key"] == "extra_null").unwrap();
    assert!(null_row.get("a").is_none());
    assert!(null_row["b"].is_null() && null_row.get("b").is_some());
    json_of("check", &["check", s(&yi), "--json"], 1);
    json_of("check", &["check", s(&gqa), "--json"], 1);
    json_of(
        "check",
        &["check", s(&gqa), "--json", "--target", "transformers"],
        0,
    );
    json_of("error", &["inspect", "/nonexistent/ckpt-test", "--json"], 2);
    json_of(
        "error",
        &["verify", s(&yi), s(&yi), "--family-a", "nope", "--json"],
        2,
    );
}

#[test]
fn the_validator_rejects_undocumented_and_mistyped_members() {
    let schema = schema::load("families");
    let (_, out, _) = ckpt(&["families", "--json"]);
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(schema::validate(&schema, &v).is_empty());
    v["surprise"] = serde_json::json!(1);
    assert!(!schema::validate(&schema, &v).is_empty());
    v.as_object_mut().unwrap().remove("surprise");
    v["families"][0]["rules"] = serde_json::json!("20");
    assert!(
        !schema::validate(&schema, &v).is_empty(),
        "a number as a string"
    );
}

#[test]
fn text_output_never_shows_debug_forms_or_the_internal_sentinel() {
    let t = tempfile::tempdir().unwrap();
    let odd = yi_with_odd_config(t.path());
    let (code, out, err) = ckpt(&["diff", s(&fixture("yi")), s(&odd)]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("Infinity"), "{out}");
    assert!(!out.contains("__ckpt_nonfinite__"), "{out}");
    let (code, out, _) = ckpt(&[
        "verify",
        s(&fixture("yi")),
        s(&fixture("llama3-scaling")),
        "--level",
        "structure",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("config rope_scaling"), "{out}");
    assert!(
        !out.contains("Some(") && !out.contains("RopeScaling {"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Paths: a file in a directory, cache repositories, links
// ---------------------------------------------------------------------------------------------

#[test]
fn a_file_inside_a_checkpoint_directory_reads_its_config_and_says_so() {
    let yi = fixture("yi");
    let (code, out, err) = ckpt(&["logits", s(&yi.join("model.safetensors")), "--ids", "1,2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("config.json") && err.contains("directory of the file"),
        "{err}"
    );
    assert!(out.contains("family yi"), "{out}");
    let index = fixture("llama-sharded").join("model.safetensors.index.json");
    let (code, out, _) = ckpt(&["inspect", s(&index)]);
    assert_eq!(code, 0);
    assert!(out.contains("model_type=llama"), "{out}");
    assert!(
        out.contains("read from the directory of the given file"),
        "{out}"
    );
}

/// A Hugging Face cache repository holding the yi fixture as two snapshots, files linked into
/// `blobs/`.
fn cache_repo(root: &Path) -> PathBuf {
    let repo = root.join("models--org--yi");
    let blobs = repo.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    for rev in ["1111", "2222"] {
        let snap = repo.join("snapshots").join(rev);
        std::fs::create_dir_all(&snap).unwrap();
        for e in std::fs::read_dir(fixture("yi")).unwrap() {
            let e = e.unwrap();
            let blob = blobs.join(format!("{rev}-{}", e.file_name().to_string_lossy()));
            std::fs::copy(e.path(), &blob).unwrap();
            let rel = Path::new("../../blobs").join(blob.file_name().unwrap());
            std::os::unix::fs::symlink(rel, snap.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(repo.join("refs/main"), "2222").unwrap();
    repo
}

#[test]
fn a_cache_repository_root_resolves_to_its_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let repo = cache_repo(t.path());
    let v = json_of("inspect", &["inspect", s(&repo), "--json"], 0);
    assert!(
        v["path"].as_str().unwrap().ends_with("snapshots/2222"),
        "{v}"
    );
    let (code, _, err) = ckpt(&["detect", s(&repo)]);
    assert_eq!(code, 0);
    assert!(err.contains("snapshot `2222` (refs/main)"), "{err}");
    let v = json_of(
        "inspect",
        &["inspect", s(&repo), "--revision", "1111", "--json"],
        0,
    );
    assert!(v["path"].as_str().unwrap().ends_with("snapshots/1111"));
    let (code, _, err) = ckpt(&["inspect", s(&repo), "--revision", "3333"]);
    assert_eq!(code, 2);
    assert!(err.contains("1111, 2222"), "{err}");
    // Without refs/main: the newest snapshot.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    let (code, _, err) = ckpt(&["check", s(&repo)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the newest"), "{err}");
    // A revision for something that is not a cache repository is a usage error.
    let (code, _, _) = ckpt(&["inspect", s(&fixture("yi")), "--revision", "main"]);
    assert_eq!(code, 2);
}

#[test]
fn links_leaving_the_checkpoint_are_refused_unless_allowed() {
    let t = tempfile::tempdir().unwrap();
    let elsewhere = t.path().join("elsewhere");
    copy_dir(&fixture("yi"), &elsewhere);
    let dir = t.path().join("linked");
    copy_dir(&fixture("yi"), &dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        elsewhere.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    for cmd in [vec!["inspect", s(&dir)], vec!["detect", s(&dir)]] {
        let (code, _, err) = ckpt(&cmd);
        assert_eq!(code, 2, "{cmd:?}");
        assert!(err.contains("leaves the checkpoint directory"), "{err}");
        assert!(err.contains("--allow-external-links"), "{err}");
        let mut allowed = cmd.clone();
        allowed.push("--allow-external-links");
        let (code, _, err) = ckpt(&allowed);
        assert_eq!(code, 0, "{allowed:?}: {err}");
    }
    let (code, _, _) = ckpt(&["check", s(&dir), "--allow-external-links"]);
    assert_eq!(code, 1, "yi has findings but the check ran");
}

// ---------------------------------------------------------------------------------------------
// 5. Output
// ---------------------------------------------------------------------------------------------

#[test]
fn tables_and_notes_fit_the_terminal_width() {
    for args in [
        vec!["families".to_string()],
        vec!["detect".to_string(), s(&fixture("yi")).to_string()],
        vec![
            "diff".to_string(),
            s(&fixture("yi")).to_string(),
            s(&fixture("llama-gqa")).to_string(),
        ],
        vec![
            "verify".to_string(),
            s(&fixture("yi")).to_string(),
            s(&fixture("llama-gqa")).to_string(),
        ],
        vec!["check".to_string(), s(&fixture("yi")).to_string()],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, wide, _) = ckpt_env(&a, &[]);
        let (_, out, err) = ckpt_env(&a, &[("COLUMNS", "80")]);
        assert!(!out.is_empty(), "{a:?}: {err}");
        for l in out.lines() {
            // A single unbreakable word (a path, a URL) may be longer than the line.
            let longest_word = l
                .split_whitespace()
                .map(|w| w.chars().count())
                .max()
                .unwrap_or(0);
            assert!(
                l.chars().count() <= 80 || longest_word > 60,
                "{a:?}: {} columns: {l}",
                l.chars().count()
            );
        }
        if args[0] == "families" {
            assert!(
                wide.lines().any(|l| l.chars().count() > 80),
                "unwrapped when piped"
            );
        }
    }
}

#[test]
fn one_unit_system_and_grammar() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    let (code, stdout, err) = ckpt(&["convert", s(&fixture("yi")), s(&out), "--to", "llama"]);
    assert_eq!(code, 0, "{err}");
    let (_, inspect, _) = ckpt(&["inspect", s(&out)]);
    for text in [&stdout, &inspect] {
        assert!(text.contains(" KB"), "{text}");
        assert!(!text.contains("KiB") && !text.contains("MiB"), "{text}");
    }
    // One tensor is `1 tensor`.
    let one = t.path().join("one.safetensors");
    write_one_tensor(&one);
    let (code, text, err) = ckpt(&["inspect", s(&one)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("1 tensor") && !text.contains("1 tensors"),
        "{text}"
    );
}

#[test]
fn an_adapter_is_an_adapter() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("lora.safetensors");
    let header = br#"{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&p, bytes).unwrap();
    let (code, _, err) = ckpt(&["verify", s(&p), s(&p)]);
    assert_eq!(code, 2);
    assert!(err.contains("this is an adapter"), "{err}");
    assert!(!err.contains("a adapter"), "{err}");
}

#[test]
fn mapping_file_errors_are_multi_line_as_toml_formats_them() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("bad.toml");
    std::fs::write(&m, "name = \"x\"\nrules = [\n").unwrap();
    let (code, _, err) = ckpt(&["detect", s(&fixture("yi")), "--mapping", s(&m)]);
    assert_eq!(code, 2);
    assert!(err.lines().count() >= 4, "{err}");
    assert!(err.lines().any(|l| l.trim_end().ends_with('^')), "{err}");
    assert!(!err.contains("\\n"), "{err}");
}

#[test]
fn detect_does_not_suggest_converting_llama_to_llama() {
    let (code, out, _) = ckpt(&["detect", s(&fixture("llama-gqa"))]);
    assert_eq!(code, 0);
    assert!(!out.contains("ckpt convert"), "{out}");
    assert!(out.contains("already LLaMA"), "{out}");
    let v = json_of("detect", &["detect", s(&fixture("llama-gqa")), "--json"], 0);
    assert!(v["convert"].is_null());
    let (_, out, _) = ckpt(&["detect", s(&fixture("yi"))]);
    assert!(out.contains("ckpt convert"), "{out}");
}

#[test]
fn check_github_format_annotates_an_unopenable_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("model.safetensors"), b"not a safetensors file").unwrap();
    let (code, out, _) = ckpt(&["check", s(&bad), "--format", "github"]);
    assert!(code == 1 || code == 2, "{code}");
    assert!(out.lines().any(|l| l.starts_with("::error ")), "{out}");
    let (code, out, _) = ckpt(&["check", "/nonexistent/ckpt-test", "--format", "github"]);
    assert_eq!(code, 2);
    assert!(
        out.starts_with("::error file=/nonexistent/ckpt-test,"),
        "{out}"
    );
}

#[test]
fn quiet_and_progress_flags_are_accepted_without_a_terminal() {
    let yi = fixture("yi");
    let (code, out, err) = ckpt(&["logits", s(&yi), "--ids", "1,2", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sequence 0"));
    assert!(err.is_empty(), "no progress off a terminal: {err}");
    let (code, _, err) = ckpt(&["verify", s(&yi), s(&yi), "--quiet"]);
    assert_eq!(code, 0, "{err}");
}

// ---------------------------------------------------------------------------------------------
// 6. Packaging: completions, man page, README, licenses
// ---------------------------------------------------------------------------------------------

#[test]
fn completions_and_man_pages_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = ckpt(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("ckpt") && out.contains("verify"), "{shell}");
        assert!(out.contains("allow-external-links"), "{shell}");
    }
    let (code, _, _) = ckpt(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    let (code, out, _) = ckpt(&["man"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie") || out.contains(".TH ckpt"),
        "{}",
        &out[..200.min(out.len())]
    );
    let (code, out, _) = ckpt(&["man", "convert"]);
    assert_eq!(code, 0);
    assert!(out.contains("ckpt\\-convert") || out.contains("ckpt-convert"));
    assert!(out.contains("max\\-shard\\-size") || out.contains("max-shard-size"));
    let (code, _, _) = ckpt(&["man", "nope"]);
    assert_eq!(code, 2);
}

fn repo_file(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn readme_licenses_and_docs_are_in_place() {
    let readme = repo_file("README.md");
    assert!(readme.contains("cargo install --path ."));
    assert!(readme.contains("ckpt completions"));
    assert!(readme.contains("ckpt man"));
    // The quick start's commands (its first code block) write to a fresh directory.
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|r| r.split("```sh").nth(1))
        .and_then(|r| r.split("```").next())
        .unwrap();
    assert!(quick.contains("mktemp -d"), "{quick}");
    assert!(
        !quick.contains("/tmp"),
        "a fixed /tmp path in the quick start: {quick}"
    );
    assert!(repo_file("LICENSE-MIT").contains("Permission is hereby granted"));
    assert!(repo_file("LICENSE-APACHE").contains("Apache License"));
    assert!(repo_file("Cargo.toml").contains("license = \"MIT OR Apache-2.0\""));
    assert!(!repo_file("docs/CHECKS.md").contains("OWNER"));
    let json_md = repo_file("docs/JSON.md");
    for c in [
        "inspect", "detect", "families", "logits", "verify", "diff", "check", "error",
    ] {
        assert!(json_md.contains(&format!("docs/schema/{c}.json")), "{c}");
        let _ = schema::load(c);
    }
    let cli_md = repo_file("docs/CLI.md");
    for flag in [
        "--family",
        "--family-a",
        "--from",
        "--to",
        "--mapping",
        "--rename",
        "--json",
        "--quiet",
        "--revision",
        "--allow-external-links",
    ] {
        assert!(cli_md.contains(flag), "docs/CLI.md lacks {flag}");
    }
    for ex in ["inspect", "convert", "verify"] {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("examples/{ex}.rs"))
                .exists()
        );
    }
}

#[test]
fn the_quick_start_works_twice_in_a_row() {
    // `OUT=$(mktemp -d)/yi-llama`: a fresh directory each time.
    for _ in 0..2 {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("yi-llama");
        let (code, stdout, err) = ckpt(&[
            "convert",
            s(&fixture("tokenizers/yi-sp")),
            s(&out),
            "--to",
            "llama",
            "--verify",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(stdout.contains("verdict: equivalent"), "{stdout}");
        // Every loader's rules, tokenizer included.
        let (code, out_text, _) = ckpt(&["check", s(&out)]);
        assert_eq!(code, 0, "{out_text}");
        let (code, _, _) = ckpt(&["check", s(&fixture("tokenizers/yi-sp"))]);
        assert_eq!(code, 1);
    }
}
