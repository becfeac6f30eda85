//! Hints: the library's errors carry facts ([`ckpt::Cause`]); this turns them into advice that names
//! only flags the running command has (read from its clap definition, so a hint can never name a
//! flag the command lacks).

use ckpt::{Cause, Error};

/// The long flags (without `--`) of subcommand `name`.
pub fn flags_of(name: &str) -> Vec<String> {
    let cmd = <super::Cli as clap::CommandFactory>::command();
    cmd.find_subcommand(name)
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Replace the hint of an error that carries a [`Cause`] with one for command `name`.
pub fn advise(e: &mut Error, name: &str) {
    let Some(cause) = e.cause_info().cloned() else {
        return;
    };
    let flags = flags_of(name);
    let has = |f: &str| flags.iter().any(|x| x == f);
    // How this command names the family of its input(s).
    let family_flag = if has("family-a") {
        Some("--family-a/--family-b FAMILY")
    } else if has("family") {
        Some("--family FAMILY")
    } else if has("from") {
        Some("--from FAMILY")
    } else {
        None
    };
    let mut ways: Vec<String> = Vec::new();
    let hint = match cause {
        Cause::FamilyUndetected { strip } => {
            if let Some(p) = strip.as_deref().filter(|_| has("rename")) {
                // Detection found a family once the shared prefix was removed: the one way out.
                return e.set_hint(Some(format!(
                    "every tensor name starts with `{p}` (a wrapper's prefix, e.g. DistributedDataParallel's `module.`); without it the names fit a family: --rename '{}'",
                    ckpt::detect::strip_rule(p)
                )));
            }
            if let Some(f) = family_flag {
                ways.push(format!(
                    "name its family with {f} (`ckpt families` lists them)"
                ));
            }
            if has("rename") {
                ways.push("rename its tensors with --rename 'PATTERN=REPLACEMENT'".into());
            }
            if has("mapping") {
                ways.push("describe it in a mapping file and pass --mapping FILE".into());
            }
            join(&ways)
        }
        Cause::TensorUnmapped { family } => {
            if let Some(f) = family_flag {
                ways.push(format!(
                    "read it as another family than `{family}` with {f}"
                ));
            }
            if has("rename") {
                ways.push("strip a prefix with --rename 'PATTERN=REPLACEMENT'".into());
            }
            if has("mapping") {
                ways.push("load your own mapping with --mapping FILE".into());
            }
            join(&ways)
        }
        Cause::UnknownFamily { known, .. } => {
            let mut h = format!("known families: {}", known.join(", "));
            if has("mapping") {
                h.push_str("; a family of your own is loaded with --mapping FILE");
            }
            Some(h)
        }
        Cause::RenameSyntax => {
            Some("write --rename 'PATTERN=REPLACEMENT', e.g. 'base_model\\.model\\.(.*)=$1'".into())
        }
        Cause::RenameUnmatched { .. } => {
            Some("`ckpt inspect PATH --all` lists the tensor names".into())
        }
        Cause::ExternalLink => has("allow-external-links")
            .then(|| "pass --allow-external-links to read shards linked from elsewhere".into()),
        _ => None,
    };
    e.set_hint(hint);
}

fn join(ways: &[String]) -> Option<String> {
    match ways {
        [] => None,
        [one] => Some(one.clone()),
        [init @ .., last] => Some(format!("{}, or {last}", init.join(", "))),
    }
}
