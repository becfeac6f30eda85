//! Issue 16, one regression test per class: outputs that alias inputs or special files, planted
//! journals, links and loops among auxiliary files, `--force` on user data, quadratic blow-ups,
//! in-place concurrency, non-UTF-8 names, config rewrite exactness and the "low" list. Every test
//! asserts the exit code, the message, and that the inputs and unrelated files are byte-identical
//! afterwards (docs/RELIABILITY.md, "Issue 16 classes").

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ckpt::checkpoint::Checkpoint;
use ckpt::mapping::view::View;
use ckpt::write::inplace;

const BIN: &str = env!("CARGO_BIN_EXE_ckpt");

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures")).join(name)
}

fn run(args: &[&OsStr]) -> Output {
    Command::new(BIN).args(args).output().expect("run ckpt")
}

/// Run with string-ish arguments.
macro_rules! ckpt {
    ($($a:expr),* $(,)?) => { run(&[$(AsRef::<OsStr>::as_ref(&$a)),*]) };
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Every entry under `dir` (recursively, links not followed): relative path -> kind and bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>)> {
    let mut m = BTreeMap::new();
    fn walk(root: &Path, d: &Path, m: &mut BTreeMap<PathBuf, (String, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                m.insert(rel, ("link".into(), t.as_os_str().as_bytes().to_vec()));
            } else if ft.is_dir() {
                m.insert(rel, ("dir".into(), Vec::new()));
                walk(root, &p, m);
            } else if ft.is_file() {
                m.insert(rel, ("file".into(), std::fs::read(&p).unwrap()));
            } else {
                m.insert(rel, ("special".into(), Vec::new()));
            }
        }
    }
    walk(dir, dir, &mut m);
    m
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// A temp dir with a copy of the llama-mha fixture at `ck` and an unrelated file `notes.txt`.
struct Scene {
    t: tempfile::TempDir,
    ck: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let t = tempfile::tempdir().unwrap();
        let ck = t.path().join("ck");
        copy_dir(&fixture("llama-mha"), &ck);
        std::fs::write(t.path().join("notes.txt"), b"unrelated user data\n").unwrap();
        Scene { t, ck }
    }
    fn root(&self) -> &Path {
        self.t.path()
    }
    fn snap(&self) -> BTreeMap<PathBuf, (String, Vec<u8>)> {
        snapshot(self.t.path())
    }
}

// ---- 1. one output-path guard -----------------------------------------------------------------

#[test]
fn logits_out_never_replaces_an_input_or_a_special_file() {
    let sc = Scene::new();
    let ck = &sc.ck;
    let fifo = sc.root().join("fifo");
    mkfifo(&fifo);
    std::fs::create_dir(sc.root().join("adir")).unwrap();
    std::fs::create_dir(sc.root().join("other")).unwrap();
    std::fs::hard_link(ck.join("config.json"), sc.root().join("hardlink.json")).unwrap();
    std::os::unix::fs::symlink(ck.join("model.safetensors"), sc.root().join("link")).unwrap();
    let before = sc.snap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (ck.join("model.safetensors"), "input"),
        (ck.join("config.json"), "input"),
        // Through `..` and through a hard link: same inode.
        (sc.root().join("other/../ck/model.safetensors"), "input"),
        (sc.root().join("hardlink.json"), "input of this command"),
        (sc.root().join("link"), "symlink"),
        (PathBuf::from("/dev/null"), "character device"),
        (fifo.clone(), "FIFO"),
        (sc.root().join("adir"), "a directory"),
        (sc.root().join("notes.txt"), "already exists"),
        (ck.join("new.safetensors"), "inside the input checkpoint"),
        (sc.root().join("missing/x.safetensors"), "does not exist"),
    ];
    for (out, want) in &cases {
        let o = ckpt!("logits", ck, "--ids", "1,2", "--out", out);
        assert_eq!(code(&o), 2, "{}: {}", out.display(), text(&o));
        let t = text(&o);
        assert!(t.contains("error[cannot-create]"), "{}: {t}", out.display());
        assert!(t.contains(want), "{}: want {want:?}: {t}", out.display());
        assert!(!t.contains("ckpt-tmp"), "no temp name: {t}");
        assert_eq!(sc.snap(), before, "{}", out.display());
    }
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // --force replaces a regular non-input file, and only that.
    let o = ckpt!(
        "logits",
        ck,
        "--ids",
        "1,2",
        "--out",
        sc.root().join("notes.txt"),
        "--force"
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let after = sc.snap();
    assert_ne!(
        after[Path::new("notes.txt")],
        before[Path::new("notes.txt")]
    );
    for (k, v) in &before {
        if k != Path::new("notes.txt") {
            assert_eq!(&after[k], v, "{}", k.display());
        }
    }
    let o = ckpt!(
        "logits",
        ck,
        "--ids",
        "1,2",
        "--out",
        ck.join("model.safetensors"),
        "--force"
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
}

#[test]
fn convert_destination_goes_through_the_same_guard() {
    let sc = Scene::new();
    let fifo = sc.root().join("fifo");
    mkfifo(&fifo);
    let before = sc.snap();
    for (dst, want) in [
        (PathBuf::from("/dev/null"), "character device"),
        (fifo.clone(), "FIFO"),
        (sc.root().join("notes.txt"), "not a directory"),
        (sc.ck.join("sub"), "inside the source"),
        (sc.root().join("no/such/dir"), "does not exist"),
    ] {
        for force in [false, true] {
            let mut args: Vec<&OsStr> = vec![
                "convert".as_ref(),
                sc.ck.as_os_str(),
                dst.as_os_str(),
                "-q".as_ref(),
            ];
            if force {
                args.push("--force".as_ref());
            }
            let o = run(&args);
            assert_eq!(code(&o), 2, "{}: {}", dst.display(), text(&o));
            assert!(text(&o).contains(want), "{}: {}", dst.display(), text(&o));
            assert!(!text(&o).contains("ckpt-tmp"), "{}", text(&o));
            assert_eq!(sc.snap(), before);
        }
    }
}

// ---- 4. --force replaces only a checkpoint directory ------------------------------------------

#[test]
fn force_replaces_only_a_checkpoint_directory() {
    let sc = Scene::new();
    let docs = sc.root().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("thesis.txt"), b"years of work").unwrap();
    std::fs::create_dir(docs.join("photos")).unwrap();
    let before = sc.snap();
    let o = ckpt!("convert", &sc.ck, &docs, "--force", "-q");
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains("--force replaces only a checkpoint directory"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("thesis.txt") || text(&o).contains("photos"));
    assert_eq!(sc.snap(), before);
    // A ckpt output is replaced.
    let out = sc.root().join("out");
    assert_eq!(code(&ckpt!("convert", &sc.ck, &out, "-q")), 0);
    let o = ckpt!("convert", &sc.ck, &out, "--force", "-q");
    assert_eq!(code(&o), 0, "{}", text(&o));
    // An empty directory is replaced too.
    let empty = sc.root().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(code(&ckpt!("convert", &sc.ck, &empty, "--force", "-q")), 0);
    assert!(empty.join("model.safetensors").exists());
}

// ---- 2. journal trust -------------------------------------------------------------------------

/// A real journal written by ckpt's own code for `dir` (renaming lm_head), without applying it.
fn real_journal(dir: &Path) -> PathBuf {
    let ck = Checkpoint::open(dir).unwrap();
    let id = View::identity(&ck);
    let tensors = id
        .tensors
        .iter()
        .cloned()
        .map(|mut v| {
            v.name = v.name.replace("lm_head", "output");
            v
        })
        .collect();
    let mut cfg = ck.config.clone();
    if let Some(c) = cfg.as_mut() {
        c.raw.insert("planted".into(), serde_json::json!(1));
    }
    let view = View::new(&ck, "x", "x", tensors, cfg, vec![]).unwrap();
    let plan = inplace::plan_in_place(&view).unwrap();
    inplace::write_journal(&plan).unwrap().path
}

/// A padded copy of llama-mha whose header has room for renames.
fn padded(dir: &Path) {
    copy_dir(&fixture("llama-mha"), dir);
    let ck = Checkpoint::open(dir).unwrap();
    let sh = &ck.shards[0];
    let entries: Vec<_> = ck
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.begin, t.end))
        .collect();
    let h = ckpt::checkpoint::header::serialize_header(sh.header.metadata.as_deref(), &entries)
        .unwrap();
    let mut json = h[8..].to_vec();
    json.resize(json.len() + 256, b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&sh.bytes()[sh.data_start()..]);
    drop(ck);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

/// Build a journal by hand (what an attacker ships): valid magic, description and checksum.
fn forged_journal(desc: serde_json::Value, blobs: &[&[u8]]) -> Vec<u8> {
    use sha2::Digest;
    let d = serde_json::to_vec(&desc).unwrap();
    let mut out = b"CKPTJNL2".to_vec();
    out.extend_from_slice(&(d.len() as u64).to_le_bytes());
    out.extend_from_slice(&d);
    for b in blobs {
        out.extend_from_slice(b);
    }
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

#[test]
fn a_planted_journal_is_refused_never_applied() {
    let t = tempfile::tempdir().unwrap();
    // A journal ckpt really wrote for another copy of the same checkpoint, shipped inside this one.
    let a = t.path().join("a");
    let b = t.path().join("b");
    padded(&a);
    padded(&b);
    let j = real_journal(&a);
    // The attacker also changes the "old" bytes the journal would restore; the checksum is
    // simply recomputed (the file is parsed and re-signed).
    let jb = std::fs::read(&j).unwrap();
    std::fs::write(b.join(j.file_name().unwrap()), &jb).unwrap();
    let before = snapshot(t.path());
    let o = ckpt!("convert", "--recover", &b);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains("does not belong to this checkpoint"),
        "{}",
        text(&o)
    );
    assert_eq!(
        snapshot(t.path()),
        before,
        "nothing applied, nothing removed"
    );
    // An --in-place run on it never recovers implicitly.
    let o = ckpt!(
        "rename",
        &b,
        "--rename",
        "lm_head\\.weight=output.weight",
        "--in-place"
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("--recover"), "{}", text(&o));
    assert_eq!(snapshot(t.path()), before);

    // Hand-forged journals: deleting model.safetensors, overwriting another file, a path outside.
    let c = t.path().join("c");
    padded(&c);
    let m = std::fs::metadata(c.join("model.safetensors")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let dm = std::fs::metadata(&c).unwrap();
    let id = |m: &std::fs::Metadata| {
        serde_json::json!({"dev": m.dev(), "ino": m.ino(), "size": m.len(),
            "mtime": [m.mtime(), m.mtime_nsec()]})
    };
    let jpath = c.join(".c.ckpt-hdr-journal");
    let forged = [
        // A file entry naming the weights, "created by the run": recovery would delete them.
        forged_journal(
            serde_json::json!({"version": 2, "run": "0123456789ab", "dir": [dm.dev(), dm.ino()],
                "stamp": [0, 0], "entries": [{"kind": "file", "file": "model.safetensors",
                "old": null, "new": id(&m), "old_len": 0, "new_len": 1}]}),
            &[b"x"],
        ),
        // A header entry for a file outside the directory.
        forged_journal(
            serde_json::json!({"version": 2, "run": "0123456789ab", "dir": [dm.dev(), dm.ino()],
                "stamp": [0, 0], "entries": [{"kind": "header", "file": "../notes.safetensors",
                "id": id(&m), "len": 1}]}),
            &[b"x", b"y"],
        ),
        // config.json "restored" to attacker bytes, bound to identities the attacker guessed.
        forged_journal(
            serde_json::json!({"version": 2, "run": "0123456789ab", "dir": [dm.dev(), dm.ino()],
                "stamp": [0, 0], "entries": [{"kind": "file", "file": "config.json",
                "old": id(&m), "new": {"dev": 1, "ino": 2, "size": 3, "mtime": [0, 0]},
                "old_len": m.len(), "new_len": 3}]}),
            &[&vec![b'A'; m.len() as usize], b"abc"],
        ),
        // The v1 format of earlier releases.
        {
            let mut v = b"CKPTJNL1".to_vec();
            v.extend_from_slice(&[0u8; 40]);
            v
        },
    ];
    // A huge (sparse) planted journal is refused from its description, without reading 3 GiB.
    {
        let mut big = forged_journal(
            serde_json::json!({"version": 2, "run": "0123456789ab", "dir": [1, 2],
                "stamp": [0, 0], "entries": []}),
            &[],
        );
        big.truncate(big.len() - 32);
        std::fs::write(&jpath, &big).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&jpath)
            .unwrap()
            .set_len(3 << 30)
            .unwrap();
        let before = std::fs::read(c.join("model.safetensors")).unwrap();
        let o = ckpt!("convert", "--recover", &c);
        assert_eq!(code(&o), 2, "{}", text(&o));
        assert!(
            text(&o).contains("written for another directory"),
            "{}",
            text(&o)
        );
        assert_eq!(std::fs::read(c.join("model.safetensors")).unwrap(), before);
        std::fs::remove_file(&jpath).unwrap();
    }
    for (i, f) in forged.iter().enumerate() {
        std::fs::write(&jpath, f).unwrap();
        let before = snapshot(t.path());
        let o = ckpt!("convert", "--recover", &c);
        assert_eq!(code(&o), 2, "forged {i}: {}", text(&o));
        assert!(text(&o).contains("not applied"), "forged {i}: {}", text(&o));
        assert_eq!(snapshot(t.path()), before, "forged {i}");
    }
}

#[test]
fn journal_parser_refuses_malformed_input_without_panicking() {
    let ok = forged_journal(
        serde_json::json!({"version": 2, "run": "0123456789ab", "dir": [1, 2],
            "stamp": [0, 0], "entries": []}),
        &[],
    );
    assert!(inplace::parse_journal(&ok).is_ok());
    for n in 0..ok.len() {
        assert!(inplace::parse_journal(&ok[..n]).is_err());
    }
    let bad_run = forged_journal(
        serde_json::json!({"version": 2, "run": "../x", "dir": [1, 2], "stamp": [0, 0],
            "entries": []}),
        &[],
    );
    assert!(inplace::parse_journal(&bad_run).is_err());
    let extra = forged_journal(
        serde_json::json!({"version": 2, "run": "0123456789ab", "dir": [1, 2],
            "stamp": [0, 0], "entries": [], "exec": "rm -rf"}),
        &[],
    );
    assert!(inplace::parse_journal(&extra).is_err());
    // The fuzz target's seed: parses, names only allowed files, re-serialises exactly; every
    // single-byte corruption of the description (re-framed with a valid checksum) never panics.
    let desc = br#"{"version":2,"run":"0123456789ab","dir":[1,2],"stamp":[0,0],"entries":[{"kind":"header","file":"model.safetensors","id":{"dev":1,"ino":2,"size":3,"mtime":[0,0]},"len":2},{"kind":"file","file":"config.json","old":null,"new":{"dev":1,"ino":3,"size":2,"mtime":[0,0]},"old_len":0,"new_len":2}]}"#;
    let j = inplace::parse_journal(&inplace::frame_journal(desc, b"abcd{}")).unwrap();
    assert_eq!(j.entries.len(), 2);
    assert_eq!(inplace::parse_journal(&j.to_bytes()).unwrap(), j);
    for i in 0..desc.len() {
        for b in [b'"', b'.', b'/', b'9', b'x'] {
            let mut d = desc.to_vec();
            d[i] = b;
            if let Ok(j) = inplace::parse_journal(&inplace::frame_journal(&d, b"abcd{}")) {
                for (e, _, _) in &j.entries {
                    let f = match e {
                        inplace::JournalEntry::Header { file, .. }
                        | inplace::JournalEntry::File { file, .. } => file,
                    };
                    assert!(!f.contains('/') && !f.starts_with('.'), "{f}");
                }
            }
        }
    }
}

// ---- 6. in-place concurrency ------------------------------------------------------------------

#[test]
fn a_locked_directory_is_not_edited_in_place() {
    use std::os::unix::io::AsRawFd;
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("ck");
    padded(&d);
    let before = snapshot(t.path());
    let holder = std::fs::File::open(&d).unwrap();
    assert_eq!(
        unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let o = ckpt!(
        "rename",
        &d,
        "--rename",
        "lm_head\\.weight=output.weight",
        "--in-place"
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("locked"), "{}", text(&o));
    let o = ckpt!("convert", "--recover", &d);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert_eq!(snapshot(t.path()), before);
    drop(holder);
    let o = ckpt!(
        "rename",
        &d,
        "--rename",
        "lm_head\\.weight=output.weight",
        "--in-place"
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn in_place_never_leaves_an_index_naming_the_old_tensors() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("ck");
    padded(&d);
    let ck = Checkpoint::open(&d).unwrap();
    let wm: serde_json::Map<String, serde_json::Value> = ck
        .tensors
        .iter()
        .map(|t| (t.name.clone(), "model.safetensors".into()))
        .collect();
    drop(ck);
    let index = serde_json::json!({"metadata": {}, "weight_map": wm}).to_string();
    std::fs::write(d.join("model.safetensors.index.json"), &index).unwrap();
    let rename = |target: &Path| {
        ckpt!(
            "rename",
            target,
            "--rename",
            "lm_head\\.weight=output.weight",
            "--in-place"
        )
    };
    // One shard given on its own: the directory's index would keep `lm_head.weight`.
    let before = snapshot(t.path());
    let o = rename(&d.join("model.safetensors"));
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains("model.safetensors.index.json"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(t.path()), before);
    // An index by another name is not the one --in-place rewrites.
    std::fs::rename(
        d.join("model.safetensors.index.json"),
        d.join("custom.safetensors.index.json"),
    )
    .unwrap();
    let before = snapshot(t.path());
    let o = rename(&d.join("custom.safetensors.index.json"));
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains("custom.safetensors.index.json"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(t.path()), before);
    // The whole directory with its own index: renamed, index included, and it still opens.
    std::fs::rename(
        d.join("custom.safetensors.index.json"),
        d.join("model.safetensors.index.json"),
    )
    .unwrap();
    let o = rename(&d);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let ck = Checkpoint::open(&d).unwrap();
    assert!(ck.get("output.weight").is_some());
    assert!(ck.index.is_some());
}

#[test]
fn every_reader_refuses_a_checkpoint_with_a_pending_journal() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("ck");
    padded(&d);
    real_journal(&d);
    let before = snapshot(t.path());
    let out = t.path().join("out");
    let runs: Vec<Vec<&OsStr>> = vec![
        vec!["inspect".as_ref(), d.as_os_str()],
        vec![
            "inspect".as_ref(),
            d.join("model.safetensors").as_os_str().to_owned().leak(),
        ],
        vec!["detect".as_ref(), d.as_os_str()],
        vec!["check".as_ref(), d.as_os_str()],
        vec![
            "logits".as_ref(),
            d.as_os_str(),
            "--ids".as_ref(),
            "1".as_ref(),
        ],
        vec![
            "diff".as_ref(),
            d.as_os_str(),
            fixture("llama-mha").into_os_string().leak(),
        ],
        vec![
            "verify".as_ref(),
            fixture("llama-mha").into_os_string().leak(),
            d.as_os_str(),
        ],
        vec!["convert".as_ref(), d.as_os_str(), out.as_os_str()],
    ];
    for args in runs {
        let o = run(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("convert --recover"),
            "{args:?}: {}",
            text(&o)
        );
        assert_eq!(snapshot(t.path()), before, "{args:?}");
    }
    // --recover rolls the (real) journal back and the checkpoint reads again.
    let o = ckpt!("convert", "--recover", &d);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(code(&ckpt!("inspect", &d)), 0);
    assert!(
        snapshot(&d)
            .keys()
            .all(|k| !k.as_os_str().as_bytes().starts_with(b".")),
        "no temporaries left in the source directory"
    );
}

// ---- 3. auxiliary files: links, loops, special files, budgets, listed ------------------------

#[test]
fn auxiliary_links_never_leave_the_source_and_skips_are_listed() {
    let sc = Scene::new();
    let ck = &sc.ck;
    let secret = sc.root().join("secret.txt");
    std::fs::write(&secret, b"private key").unwrap();
    std::fs::write(ck.join("tokenizer.json"), b"{}").unwrap();
    std::os::unix::fs::symlink(".", ck.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", ck.join("up")).unwrap();
    std::os::unix::fs::symlink(&secret, ck.join("notes.txt")).unwrap();
    std::os::unix::fs::symlink("tokenizer.json", ck.join("tok-link.json")).unwrap();
    std::os::unix::fs::symlink("nowhere", ck.join("dangling")).unwrap();
    mkfifo(&ck.join("pipe"));
    // A user file whose name looks like a ckpt temporary, and a tree deeper than the budget.
    std::fs::write(ck.join("my.ckpt-tmp-notes"), b"mine").unwrap();
    let mut deep = ck.join("d");
    for i in 0..12 {
        deep = deep.join(format!("l{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("deep.txt"), b"deep").unwrap();
    let before = sc.snap();
    let out = sc.root().join("out");
    let o = ckpt!("convert", ck, &out, "-q");
    assert_eq!(code(&o), 0, "{}", text(&o));
    let t = text(&o);
    for (name, why) in [
        ("loop", "a link to a directory"),
        ("up", "leaves the source directory"),
        ("notes.txt", "leaves the source directory"),
        ("dangling", "dangling"),
        ("pipe", "a FIFO"),
        ("my.ckpt-tmp-notes", "temporary of a ckpt run"),
        ("d/l0/l1/l2/l3/l4/l5/l6/l7", "deeper than 8 levels"),
    ] {
        assert!(
            t.lines().any(|l| l.contains(name) && l.contains(why)),
            "{name}: {why}: {t}"
        );
    }
    assert_eq!(
        sc.snap()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("out"))
            .collect::<BTreeMap<_, _>>(),
        before
    );
    assert!(!out.join("notes.txt").exists() && !out.join("loop").exists());
    assert_eq!(std::fs::read(out.join("tok-link.json")).unwrap(), b"{}");
    let copied = snapshot(&out);
    assert!(
        copied
            .values()
            .all(|(kind, b)| kind != "link" && b != b"private key")
    );
    assert!(copied.len() < 40, "no nested copies: {}", copied.len());
}

// ---- 8. non-UTF-8 file names ------------------------------------------------------------------

#[test]
fn non_utf8_names_stay_exact_end_to_end() {
    let sc = Scene::new();
    let ck = &sc.ck;
    let tok = ck.join(OsStr::from_bytes(b"tok\xff.json"));
    std::fs::write(&tok, b"{\"t\": 1}").unwrap();
    let dst = sc.root().join(OsStr::from_bytes(b"out\xff"));
    let o = ckpt!("convert", ck, &dst, "-q");
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(dst.is_dir(), "written exactly at out\\xff");
    assert!(!sc.root().join("out\u{fffd}").exists());
    assert_eq!(
        std::fs::read(dst.join(OsStr::from_bytes(b"tok\xff.json"))).unwrap(),
        b"{\"t\": 1}"
    );
    // A shard with a non-UTF-8 name is readable, and displayed escaped.
    let single = sc.root().join("single");
    std::fs::create_dir(&single).unwrap();
    std::fs::copy(
        fixture("llama-mha").join("model.safetensors"),
        single.join(OsStr::from_bytes(b"model\xff.safetensors")),
    )
    .unwrap();
    let o = ckpt!("inspect", &single);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // An error about such a path shows the byte, not U+FFFD.
    let o = ckpt!("convert", ck, &dst, "-q");
    assert_eq!(code(&o), 2);
    assert!(text(&o).contains("out\\xff"), "{}", text(&o));
}

// ---- 5. complexity: every open/check/load near-linear ------------------------------------------
// The inputs are big enough that a quadratic loop takes minutes (10^10 steps); no wall clock is
// asserted.

/// A safetensors file of `names` F32 scalars (shape [1]).
fn many_tensors(path: &Path, names: &[String]) {
    let mut h = String::from("{");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            h.push(',');
        }
        h.push_str(&format!(
            "\"{n}\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[{},{}]}}",
            4 * i,
            4 * i + 4
        ));
    }
    h.push('}');
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(h.as_bytes());
    bytes.resize(bytes.len() + 4 * names.len(), 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_index_of_100k_tensors_in_one_shard_opens_and_checks_in_linear_time() {
    let t = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
    let shard = "model-00001-of-00001.safetensors";
    many_tensors(&t.path().join(shard), &names);
    let wm: serde_json::Map<String, serde_json::Value> =
        names.iter().map(|n| (n.clone(), shard.into())).collect();
    std::fs::write(
        t.path().join("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({"weight_map": wm})).unwrap(),
    )
    .unwrap();
    let ck = Checkpoint::open(t.path()).unwrap();
    assert_eq!(ck.tensors.len(), 100_000);
    drop(ck);
    let r = ckpt::check::run(t.path(), &ckpt::check::Options::default()).unwrap();
    assert!(
        !r.findings.is_empty(),
        "not a LLaMA checkpoint: findings expected"
    );
}

#[test]
fn an_index_of_200k_missing_shards_is_one_short_error() {
    let t = tempfile::tempdir().unwrap();
    let wm: serde_json::Map<String, serde_json::Value> = (0..200_000)
        .map(|i| (format!("t{i}"), format!("s{i}.safetensors").into()))
        .collect();
    std::fs::write(
        t.path().join("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({"weight_map": wm})).unwrap(),
    )
    .unwrap();
    let before = snapshot(t.path());
    let o = ckpt!("inspect", t.path());
    assert_eq!(code(&o), 2, "{}", text(&o));
    let e = text(&o);
    assert!(e.contains("lists 200000 shards that do not exist"), "{e}");
    assert!(e.contains("... and 199980 more"), "{e}");
    assert!(e.len() < 2_000, "capped: {} bytes", e.len());
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn a_4000_rule_mapping_file_loads_in_linear_time() {
    let t = tempfile::tempdir().unwrap();
    let mut toml = String::from(
        "name = \"big\"\nsummary = \"x\"\nexact = true\nsources = [\"x\"]\n\n[tensors]\n",
    );
    for i in 0..4000 {
        toml.push_str(&format!(
            "\"m.layers.{{i}}.p{i}.weight\" = \"model.layers.{{i}}.q{i}.weight\"\n"
        ));
    }
    let ok = t.path().join("big.toml");
    std::fs::write(&ok, &toml).unwrap();
    let mut reg = ckpt::mapping::Registry::builtin().unwrap();
    assert_eq!(reg.load_file(&ok).unwrap(), "big");
    // One clash among the 4,000 is still found, naming both rules.
    toml.push_str("\"m.layers.{i}.p7.weight_x\" = \"model.layers.{i}.q7.weight\"\n");
    let bad = t.path().join("bad.toml");
    std::fs::write(&bad, toml.replace("name = \"big\"", "name = \"bad\"")).unwrap();
    let e = ckpt::mapping::Registry::builtin()
        .unwrap()
        .load_file(&bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("two sources onto one target"), "{e}");
    assert!(e.contains("p7.weight"), "{e}");
}

#[test]
fn verify_structure_of_18k_tensors_is_linear() {
    let t = tempfile::tempdir().unwrap();
    let mut names = vec![
        "model.embed_tokens.weight".to_string(),
        "model.norm.weight".to_string(),
        "lm_head.weight".to_string(),
    ];
    for i in 0..2000 {
        for p in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
            "post_attention_layernorm",
        ] {
            names.push(format!("model.layers.{i}.{p}.weight"));
        }
    }
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    many_tensors(&a.join("model.safetensors"), &names);
    many_tensors(&b.join("model.safetensors"), &names[..names.len() - 1]);
    let o = ckpt!("verify", &a, &b, "--level", "structure");
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("1 only in A"), "{}", text(&o));
}

// ---- 7. check: vocab_size 0 ----------------------------------------------------------------------

fn with_config(sc: &Scene, edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = sc.ck.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn check_reports_vocab_size_zero() {
    let sc = Scene::new();
    with_config(&sc, |c| {
        c.insert("vocab_size".into(), 0.into());
    });
    let before = sc.snap();
    let o = ckpt!("check", &sc.ck);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        text(&o).contains("T006-vocab") && text(&o).contains("`vocab_size` is 0"),
        "{}",
        text(&o)
    );
    assert_eq!(sc.snap(), before);
}

// ---- 9. config rewrite exactness --------------------------------------------------------------

#[test]
fn a_config_rename_onto_an_existing_key_is_refused_and_sentinels_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("internlm2");
    copy_dir(&fixture("internlm2"), &src);
    let p = src.join("config.json");
    let text0 = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
    // `bias` is renamed to `attention_bias`, which the config already has with another value.
    std::fs::write(&p, text0.replacen("{", "{\n  \"attention_bias\": true,", 1)).unwrap();
    let before = snapshot(t.path());
    let o = ckpt!("convert", &src, t.path().join("out"), "-q");
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains("`bias` both become `attention_bias`")
            || text(&o).contains("`attention_bias` and `bias` both become"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(t.path()), before);

    // A string equal to the internal non-finite sentinel stays that string; a real Infinity stays
    // a token; a string containing a quote and the sentinel is untouched.
    std::fs::write(
        &p,
        text0.replacen(
            "{",
            "{\n  \"note\": \"__ckpt_nonfinite__:Infinity\",\n  \"limit\": Infinity,\n  \"q\": \"x\\\"__ckpt_nonfinite__:NaN\",",
            1,
        ),
    )
    .unwrap();
    let out = t.path().join("out2");
    // Keys internlm2 does not model: the family is asserted, so they are carried, not refused.
    let o = ckpt!("convert", &src, &out, "-q", "--from", "internlm2");
    assert_eq!(code(&o), 0, "{}", text(&o));
    let written = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        written.contains("\"note\": \"__ckpt_nonfinite__:Infinity\""),
        "{written}"
    );
    assert!(written.contains("\"limit\": Infinity"), "{written}");
    assert!(
        written.contains(r#""q": "x\"__ckpt_nonfinite__:NaN""#),
        "{written}"
    );
}

// ---- 10. the "low" list -----------------------------------------------------------------------

#[test]
fn special_shards_and_bad_indexes_get_clear_messages() {
    let t = tempfile::tempdir().unwrap();
    // A socket as a shard.
    let d = t.path().join("sock");
    std::fs::create_dir(&d).unwrap();
    let _l = std::os::unix::net::UnixListener::bind(d.join("model.safetensors")).unwrap();
    let o = ckpt!("inspect", &d);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains("not a regular file (a socket)"),
        "{}",
        text(&o)
    );
    // An index naming itself, or config.json, as a shard.
    for (shard, want) in [
        ("model.safetensors.index.json", "names itself as a shard"),
        ("config.json", "names `config.json` as a shard"),
    ] {
        let d = t.path().join(shard);
        copy_dir(&fixture("llama-mha"), &d);
        std::fs::write(
            d.join("model.safetensors.index.json"),
            format!(r#"{{"weight_map": {{"lm_head.weight": "{shard}"}}}}"#),
        )
        .unwrap();
        let before = snapshot(t.path());
        let o = ckpt!("inspect", &d);
        assert_eq!(code(&o), 2, "{}", text(&o));
        assert!(text(&o).contains(want), "{}", text(&o));
        assert!(text(&o).contains("lm_head.weight"), "{}", text(&o));
        assert!(!text(&o).contains("header length"), "{}", text(&o));
        assert_eq!(snapshot(t.path()), before);
    }
    // A BOM in the index.
    let d = t.path().join("bom");
    copy_dir(&fixture("llama-sharded"), &d);
    let ip = d.join("model.safetensors.index.json");
    let mut b = b"\xEF\xBB\xBF".to_vec();
    b.extend(std::fs::read(&ip).unwrap());
    std::fs::write(&ip, b).unwrap();
    let o = ckpt!("inspect", &d);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("byte-order mark"), "{}", text(&o));
}

#[test]
fn format_characters_in_names_are_escaped_everywhere() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("ck");
    std::fs::create_dir(&d).unwrap();
    let names: Vec<String> = [
        "evil\u{202e}gnp.exe",
        "iso\u{2066}late",
        "zero\u{200b}width",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    many_tensors(&d.join("model.safetensors"), &names);
    for args in [vec!["inspect", "--all"], vec!["detect"]] {
        let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        a.push(d.as_os_str());
        let o = run(&a);
        let t = text(&o);
        for c in ['\u{202e}', '\u{2066}', '\u{200b}'] {
            assert!(!t.contains(c), "{args:?} printed {c:?} raw: {t}");
        }
    }
    let o = ckpt!("inspect", "--all", &d);
    assert!(text(&o).contains("evil\\u{202e}gnp.exe"), "{}", text(&o));
}

#[test]
fn sub_byte_dtypes_are_named_not_taken_for_another_family() {
    let t = tempfile::tempdir().unwrap();
    let ck = Checkpoint::open(fixture("llama-mha")).unwrap();
    for (dt, bits) in [("F4", 4usize), ("F6_E2M3", 6)] {
        let d = t.path().join(dt);
        std::fs::create_dir(&d).unwrap();
        std::fs::copy(
            fixture("llama-mha").join("config.json"),
            d.join("config.json"),
        )
        .unwrap();
        let mut h = serde_json::Map::new();
        let mut off = 0usize;
        for ti in &ck.tensors {
            let nb = ti.numel() * bits / 8;
            h.insert(
                ti.name.clone(),
                serde_json::json!({"dtype": dt, "shape": ti.shape, "data_offsets": [off, off + nb]}),
            );
            off += nb;
        }
        let j = serde_json::to_vec(&h).unwrap();
        let mut bytes = (j.len() as u64).to_le_bytes().to_vec();
        bytes.extend(j);
        bytes.resize(bytes.len() + off, 0);
        std::fs::write(d.join("model.safetensors"), bytes).unwrap();
        let o = ckpt!("detect", &d);
        assert!(text(&o).contains("family      llama"), "{dt}: {}", text(&o));
        for cmd in ["logits", "verify"] {
            let o = if cmd == "logits" {
                ckpt!("logits", &d, "--ids", "1")
            } else {
                ckpt!("verify", &d, &d)
            };
            assert_eq!(code(&o), 2, "{dt} {cmd}: {}", text(&o));
            assert!(
                text(&o).contains(&format!(
                    "dtype {dt} ({bits} bits per element) is not supported"
                )),
                "{dt} {cmd}: {}",
                text(&o)
            );
        }
    }
}

#[test]
fn logits_warns_beyond_max_positions_and_names_the_config_on_refusal() {
    let sc = Scene::new();
    with_config(&sc, |c| {
        c.insert("max_position_embeddings".into(), 4.into());
    });
    let o = ckpt!("logits", &sc.ck, "--ids", "1,2,3,4,5,6");
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("6 token ids but the model has `max_position_embeddings` 4"),
        "{}",
        text(&o)
    );
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("mistral");
    copy_dir(&fixture("mistral"), &m);
    let p = m.join("config.json");
    let c = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        c.replace("\"sliding_window\": 4096", "\"sliding_window\": 2"),
    )
    .unwrap();
    // A window shorter than the input is computed (Mistral's own math), not refused.
    let o = ckpt!("logits", &m, "--ids", "1,2,3,4");
    assert_eq!(code(&o), 0, "{}", text(&o));
    // A refusal that comes from the config names the config file.
    std::fs::write(
        &p,
        c.replace("\"sliding_window\": 4096", "\"sliding_window\": 2")
            .replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"relu6\""),
    )
    .unwrap();
    let o = ckpt!("logits", &m, "--ids", "1,2,3,4");
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{}: ", p.display())) && text(&o).contains("relu6"),
        "{}",
        text(&o)
    );
}

/// Run ckpt with resource limits set in the child (soft and hard).
fn run_limited(args: &[&OsStr], resource: libc::__rlimit_resource_t, limit: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(BIN);
    c.args(args);
    unsafe {
        c.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::setrlimit(resource, &r);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    c.output().unwrap()
}

#[test]
fn running_out_of_descriptors_or_file_size_leaves_nothing_behind() {
    let sc = Scene::new();
    let sharded = sc.root().join("sharded");
    copy_dir(&fixture("llama-sharded"), &sharded);
    std::fs::write(sharded.join("a.txt"), b"a").unwrap();
    std::fs::write(sharded.join("b.txt"), b"b").unwrap();
    let before = sc.snap();
    let mut failed = 0;
    for limit in 6..40u64 {
        let out = sc.root().join(format!("out{limit}"));
        let o = run_limited(
            &[
                "convert".as_ref(),
                sharded.as_os_str(),
                out.as_os_str(),
                "-q".as_ref(),
                "--max-shard-size".as_ref(),
                "20KB".as_ref(),
            ],
            libc::RLIMIT_NOFILE,
            limit,
        );
        let t = text(&o);
        assert!(
            !t.contains("panicked") && !t.contains("internal"),
            "{limit}: {t}"
        );
        if code(&o) != 0 {
            failed += 1;
            assert_eq!(code(&o), 2, "{limit}: {t}");
            assert!(!out.exists(), "{limit}");
        }
        let now = sc.snap();
        assert!(
            now.keys()
                .all(|k| !k.as_os_str().as_bytes().starts_with(b".out")),
            "{limit}: staging left: {t}"
        );
        for (k, v) in &before {
            assert_eq!(now.get(k), Some(v), "{limit}: {}", k.display());
        }
    }
    assert!(failed > 0, "some limits must fail");
    // EFBIG: named as such, not as "no space".
    let out = sc.root().join("big");
    let o = run_limited(
        &[
            "convert".as_ref(),
            sc.ck.as_os_str(),
            out.as_os_str(),
            "-q".as_ref(),
        ],
        libc::RLIMIT_FSIZE,
        4096,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("EFBIG"), "{}", text(&o));
    assert!(!text(&o).contains("no space"), "{}", text(&o));
    assert!(!out.exists());
    assert!(
        sc.snap()
            .keys()
            .all(|k| !k.as_os_str().as_bytes().starts_with(b".big"))
    );
}

#[test]
fn a_killed_logits_out_leaves_only_what_clean_removes() {
    use std::os::unix::process::CommandExt;
    let sc = Scene::new();
    let dir = sc.root().join("outdir");
    std::fs::create_dir(&dir).unwrap();
    let out = dir.join("l.safetensors");
    // The first write past 100 bytes raises SIGXFSZ, whose default action kills the process
    // mid-write, as `kill -9` would.
    let mut c = Command::new(BIN);
    c.args([
        "logits".as_ref(),
        sc.ck.as_os_str(),
        "--ids".as_ref(),
        "1,2,3".as_ref(),
    ])
    .arg("--out")
    .arg(&out);
    unsafe {
        c.pre_exec(|| {
            for (res, lim) in [(libc::RLIMIT_FSIZE, 100), (libc::RLIMIT_CORE, 0)] {
                let r = libc::rlimit {
                    rlim_cur: lim,
                    rlim_max: lim,
                };
                libc::setrlimit(res, &r);
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            Ok(())
        });
    }
    let o = c.output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "the killed run leaves its temporary");
    let o = ckpt!("convert", "--clean", &dir);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "--clean leaves {left:?}");
}
