//! Rendering helpers shared by every command: human sizes and counts, tables, and the collapsing of
//! per-layer repetition (`model.layers.{0..59}.mlp.up_proj.weight`). Computing and rendering are kept
//! apart: commands build plain data, this module turns it into text.

use std::collections::BTreeMap;

use comfy_table::{ContentArrangement, LineStyle, Table, presets};

use crate::error::escape;

/// A bytes count in human units (`1.50 GB`, decimal like the Hub shows).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A parameter count in human units (`34.39B`, `115.20K`).
pub fn human_count(n: u128) -> String {
    let v = n as f64;
    if v >= 1e12 {
        format!("{:.2}T", v / 1e12)
    } else if v >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2}K", v / 1e3)
    } else {
        n.to_string()
    }
}

/// An integer with thousands separators.
pub fn thousands(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The width output should fit: `COLUMNS` when set to a number (as shells export it, and for
/// tests), else the terminal's width when stdout is a terminal, else `None` (no limit: output piped
/// to a file keeps whole lines).
pub fn terminal_width() -> Option<usize> {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&w| w >= 20)
    {
        return Some(w);
    }
    Table::new().width().map(usize::from)
}

/// A new table in the house style (no outer borders, header underlined), arranged to fit
/// [`terminal_width`] (long cells wrap inside their column).
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING.header_separator(LineStyle::none().fill('-').junction(' ')))
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    if let Some(w) = terminal_width() {
        t.set_width(u16::try_from(w).unwrap_or(u16::MAX));
    }
    t
}

/// Wrap `text` to [`terminal_width`] (no wrapping without one): the first line starts with
/// `first`, the following ones with `rest` (usually spaces of the same width). Words longer than a
/// line are kept whole.
pub fn wrap(first: &str, rest: &str, text: &str) -> Vec<String> {
    wrap_to(terminal_width(), first, rest, text)
}

/// [`wrap`] to a given width. Spacing inside a line is kept (aligned columns stay aligned); only
/// the whitespace where a line breaks is dropped.
pub fn wrap_to(width: Option<usize>, first: &str, rest: &str, text: &str) -> Vec<String> {
    let Some(width) = width else {
        return vec![format!("{first}{text}")];
    };
    // Words with the whitespace that precedes them.
    let mut words: Vec<(String, &str)> = Vec::new();
    let mut gap = String::new();
    for piece in text.split(' ') {
        if piece.is_empty() {
            gap.push(' ');
            continue;
        }
        words.push((std::mem::take(&mut gap), piece));
        gap.push(' ');
    }
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut empty = true;
    for (mut space, word) in words {
        if empty {
            space.clear();
        } else if line.chars().count() + space.len() + word.chars().count() > width {
            lines.push(std::mem::replace(&mut line, rest.to_string()));
            space.clear();
        }
        line.push_str(&space);
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

/// `1 tensor`, `2 tensors`: a count with its noun in the right number (nouns that take `s`).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Split a tensor name into its per-layer pattern and layer index:
/// `model.layers.12.mlp.up_proj.weight` -> (`model.layers.{i}.mlp.up_proj.weight`, Some(12)).
pub fn layer_pattern(name: &str) -> (String, Option<usize>) {
    let parts: Vec<&str> = name.split('.').collect();
    for i in 1..parts.len() {
        if matches!(parts[i - 1], "layers" | "h" | "blocks" | "layer")
            && let Ok(n) = parts[i].parse::<usize>()
        {
            let mut p = parts.clone();
            p[i] = "{i}";
            return (p.join("."), Some(n));
        }
    }
    (name.to_string(), None)
}

/// Format a set of layer indices compactly: `{0..59}`, `{0,2,4..7}`.
pub fn format_layers(idx: &[usize]) -> String {
    let mut v = idx.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        if j > i {
            parts.push(format!("{}..{}", v[i], v[j]));
        } else {
            parts.push(v[i].to_string());
        }
        i = j + 1;
    }
    format!("{{{}}}", parts.join(","))
}

/// One row of a collapsed listing: a name pattern with the layers it covers and the items merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Collapsed<K> {
    /// Display name, with `{0..59}` in place of the layer index when several layers merged.
    pub name: String,
    /// The attributes that were equal across the merged rows.
    pub key: K,
    /// How many rows merged.
    pub count: usize,
    /// Indices (into the input) of the merged rows.
    pub members: Vec<usize>,
}

/// Collapse rows whose names differ only in the layer index and whose attributes `key` are equal.
/// Rows whose attributes differ between layers stay separate (each with its own layer set). Output
/// order follows the first occurrence of each (pattern, key) in the input.
pub fn collapse<K: Clone + Ord>(names: &[String], keys: &[K]) -> Vec<Collapsed<K>> {
    // (pattern, key) -> (first input row, layer indices, member rows)
    type Group = (usize, Vec<usize>, Vec<usize>);
    let mut groups: BTreeMap<(String, K), Group> = BTreeMap::new();
    for (i, (name, key)) in names.iter().zip(keys).enumerate() {
        let (pat, layer) = layer_pattern(name);
        let pat = if layer.is_some() { pat } else { name.clone() };
        let e = groups
            .entry((pat, key.clone()))
            .or_insert((i, Vec::new(), Vec::new()));
        if let Some(l) = layer {
            e.1.push(l);
        }
        e.2.push(i);
    }
    let mut rows: Vec<(usize, Collapsed<K>)> = groups
        .into_iter()
        .map(|((pat, key), (first, layers, members))| {
            let name = if members.len() == 1 {
                names[members[0]].clone()
            } else {
                pat.replacen("{i}", &format_layers(&layers), 1)
            };
            (
                first,
                Collapsed {
                    name,
                    key,
                    count: members.len(),
                    members,
                },
            )
        })
        .collect();
    rows.sort_by_key(|(first, _)| *first);
    rows.into_iter().map(|(_, c)| c).collect()
}

/// Format a shape as `[4096, 4096]`.
pub fn shape(s: &[usize]) -> String {
    format!("{s:?}")
}

/// Escape a string from a file for display (re-exported for renderers).
pub fn esc(s: &str) -> String {
    escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_layers_and_keeps_differences() {
        let names: Vec<String> = (0..4)
            .map(|i| format!("model.layers.{i}.mlp.up_proj.weight"))
            .chain(["model.norm.weight".to_string()])
            .collect();
        let keys = vec![[8, 4], [8, 4], [16, 4], [8, 4], [4, 0]];
        let rows = collapse(&names, &keys);
        let shown: Vec<(&str, usize)> = rows.iter().map(|r| (r.name.as_str(), r.count)).collect();
        assert_eq!(
            shown,
            [
                ("model.layers.{0..1,3}.mlp.up_proj.weight", 3),
                ("model.layers.2.mlp.up_proj.weight", 1),
                ("model.norm.weight", 1)
            ]
        );
        assert_eq!(format_layers(&[0, 1, 2, 3, 59, 58]), "{0..3,58..59}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_count(34_388_917_248), "34.39B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000_000), "1.50 GB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(count(1, "tensor"), "1 tensor");
        assert_eq!(count(0, "tensor"), "0 tensors");
    }

    #[test]
    fn wraps_words_to_the_width() {
        let l = wrap_to(
            Some(20),
            "note: ",
            "      ",
            "one two three four five six seven",
        );
        assert!(l.iter().all(|x| x.chars().count() <= 20), "{l:?}");
        assert_eq!(l.join(" ").split_whitespace().count(), 8);
        assert_eq!(wrap_to(None, "a ", "  ", "b c"), vec!["a b c"]);
    }
}
