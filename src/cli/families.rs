//! `ckpt families`: the known family mapping files (built-in and `--mapping`), with whether each
//! converts to LLaMA exactly and where its names come from.

use std::path::PathBuf;

use ckpt::mapping::Registry;
use ckpt::report::{self, esc};

use super::args::exit_codes;
use super::{CmdResult, EXIT_OK, JSON_SCHEMA_VERSION, out};

/// List the known families: name, summary, LLaMA-exact or not, and sources.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::PLAIN)]
pub struct Args {
    /// Also load the family defined in this mapping file (TOML, see mappings/README.md;
    /// repeatable).
    #[arg(long = "mapping", value_name = "FILE")]
    pub mappings: Vec<PathBuf>,
    /// Print JSON instead of a table (schema: docs/JSON.md).
    #[arg(long)]
    pub json: bool,
}

/// Load the built-in families plus the `--mapping` files.
pub fn registry(mappings: &[PathBuf]) -> Result<Registry, ckpt::Error> {
    super::args::registry(mappings)
}

/// Run `families`.
pub fn run(a: Args) -> CmdResult {
    let reg = registry(&a.mappings)?;
    if a.json {
        let v: Vec<serde_json::Value> = reg
            .families()
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "summary": f.summary,
                    "llama_exact": f.exact && !f.detect_only,
                    "detect_only": f.detect_only,
                    "base": f.base,
                    "note": f.note,
                    "sources": f.sources,
                    "file": f.file,
                    "rules": f.rules.len(),
                })
            })
            .collect();
        let doc = serde_json::json!({"schema_version": JSON_SCHEMA_VERSION, "families": v});
        out(&serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    let mut t = report::table(&["family", "llama-exact", "use", "summary"]);
    for f in reg.families() {
        t.add_row(vec![
            esc(&f.name),
            if f.exact && !f.detect_only {
                "yes"
            } else {
                "no"
            }
            .to_string(),
            if f.detect_only {
                "detect only"
            } else if f.exact {
                "compute, convert"
            } else {
                "compute (converting: see note)"
            }
            .to_string(),
            esc(&f.summary),
        ]);
    }
    out(&t.to_string());
    out("");
    for f in reg.families() {
        out(&format!("{}  ({})", esc(&f.name), esc(&f.file)));
        if let Some(n) = &f.note {
            for l in report::wrap("  note: ", "        ", &esc(n)) {
                out(&l);
            }
        }
        for s in &f.sources {
            for l in report::wrap("  source: ", "          ", &esc(s)) {
                out(&l);
            }
        }
    }
    Ok(EXIT_OK)
}
