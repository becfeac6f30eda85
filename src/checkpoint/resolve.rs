//! Path resolution: what a user-given path means before any file is opened.
//!
//! * A Hugging Face cache repository root (`models--org--name/`, holding `snapshots/`, `refs/` and
//!   `blobs/`) resolves to one snapshot directory: the one a named revision points to (a ref under
//!   `refs/`, or a snapshot's commit hash), else the one `refs/main` names, else the newest.
//! * A `.safetensors` file or a `*.index.json` inside a checkpoint directory reads that directory's
//!   `config.json` (or `params.json`), and says so in a note.
//!
//! Kept apart from [`super::Checkpoint::open`]'s layout detection: this decides *which* path is
//! opened and which config goes with it; the opener decides how the files there are laid out.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result, escape};

/// How a checkpoint path is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// In a Hugging Face cache repository, the snapshot to read: a ref name under `refs/` (`main`)
    /// or a snapshot's commit hash. `None`: `refs/main`, else the newest snapshot.
    pub revision: Option<String>,
    /// Accept shard symlinks that leave the checkpoint directory. Links into the `blobs/` folder of
    /// the cache repository a snapshot belongs to are accepted without it.
    pub allow_external_links: bool,
    /// For torch archives holding several dicts of tensors (`{"model": ..., "ema": ...}`): the key
    /// of the one to read (nested keys joined with `/`).
    pub state_dict_key: Option<String>,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The path to open (a snapshot directory for a cache repository; else the given path).
    pub path: PathBuf,
    /// For a file inside a directory: the config file beside it (`config.json` or `params.json`).
    pub config_beside: Option<PathBuf>,
    /// What resolution did, one sentence each (empty when the path was taken as given).
    pub notes: Vec<String>,
}

/// Whether `dir` is the root of a Hugging Face cache repository (it holds `snapshots/` and `refs/`
/// or `blobs/`).
pub fn is_cache_repo(dir: &Path) -> bool {
    dir.join("snapshots").is_dir() && (dir.join("refs").is_dir() || dir.join("blobs").is_dir())
}

/// Resolve a user-given path (see the module documentation).
pub fn resolve(path: &Path, opts: &OpenOptions) -> Result<Resolved> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "cannot open", e))?;
    if meta.is_dir() {
        if is_cache_repo(path) {
            return resolve_cache_repo(path, opts.revision.as_deref());
        }
        if let Some(rev) = &opts.revision {
            return Err(Error::usage(format!(
                "a revision (`{}`) was given but this is not a Hugging Face cache repository (it has no `snapshots/` and `refs/` folders)",
                escape(rev)
            ))
            .file(path));
        }
        return Ok(Resolved {
            path: path.to_path_buf(),
            config_beside: None,
            notes: Vec::new(),
        });
    }
    if let Some(rev) = &opts.revision {
        return Err(Error::usage(format!(
            "a revision (`{}`) was given but the path is a file, not a Hugging Face cache repository",
            escape(rev)
        ))
        .file(path));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let config_beside = ["config.json", "params.json"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file());
    let notes = config_beside
        .iter()
        .map(|c| {
            format!(
                "read the config `{}` from the directory of the file",
                c.display()
            )
        })
        .collect();
    Ok(Resolved {
        path: path.to_path_buf(),
        config_beside,
        notes,
    })
}

fn resolve_cache_repo(repo: &Path, revision: Option<&str>) -> Result<Resolved> {
    let snapshots = repo.join("snapshots");
    let available = list_snapshots(&snapshots)?;
    let read_ref = |name: &str| -> Option<String> {
        // Ref names are paths under refs/ (`main`, `pr/1`); never let one climb out.
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "..") {
            return None;
        }
        let text = std::fs::read_to_string(repo.join("refs").join(name)).ok()?;
        let hash = text.trim().to_string();
        available.iter().any(|(h, _)| *h == hash).then_some(hash)
    };
    let (hash, how) = match revision {
        Some(rev) => {
            if let Some(h) = read_ref(rev) {
                (h, format!("refs/{}", escape(rev)))
            } else if available.iter().any(|(h, _)| h == rev) {
                (rev.to_string(), "as named".to_string())
            } else {
                return Err(Error::new(
                    ErrorKind::MissingInput,
                    format!(
                        "revision `{}` is neither a ref under `refs/` nor a snapshot; snapshots: {}",
                        escape(rev),
                        names(&available)
                    ),
                )
                .file(repo));
            }
        }
        None => match read_ref("main") {
            Some(h) => (h, "refs/main".to_string()),
            None => {
                let newest = available
                    .iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
                    .map(|(h, _)| h.clone())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::MissingInput,
                            "this Hugging Face cache repository has no snapshots",
                        )
                        .file(repo)
                    })?;
                (newest, "the newest; refs/main names none".to_string())
            }
        },
    };
    let path = snapshots.join(&hash);
    Ok(Resolved {
        notes: vec![format!(
            "Hugging Face cache repository: reading snapshot `{}` ({how})",
            escape(&hash)
        )],
        path,
        config_beside: None,
    })
}

fn names(available: &[(String, std::time::SystemTime)]) -> String {
    if available.is_empty() {
        return "(none)".into();
    }
    available
        .iter()
        .map(|(h, _)| escape(h))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The snapshot directories (name, modification time), sorted by name.
fn list_snapshots(dir: &Path) -> Result<Vec<(String, std::time::SystemTime)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list directory", e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, "cannot list directory", e))?;
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        out.push((entry.file_name().to_string_lossy().into_owned(), mtime));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_repo_resolves_refs_main_then_newest() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("models--org--name");
        for h in ["aaa", "bbb"] {
            std::fs::create_dir_all(repo.join("snapshots").join(h)).unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "aaa\n").unwrap();
        let r = resolve(&repo, &OpenOptions::default()).unwrap();
        assert_eq!(r.path, repo.join("snapshots/aaa"));
        let named = OpenOptions {
            revision: Some("bbb".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&repo, &named).unwrap().path,
            repo.join("snapshots/bbb")
        );
        let bad = OpenOptions {
            revision: Some("../x".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&repo, &bad).unwrap_err().kind(),
            ErrorKind::MissingInput
        );
        std::fs::remove_file(repo.join("refs/main")).unwrap();
        assert!(resolve(&repo, &OpenOptions::default()).is_ok());
    }
}
