//! Name patterns: the `model.layers.{i}.ln1.weight` templates of mapping files, and the ad-hoc
//! `--rename 'REGEX=REPLACEMENT'` rules of the command line.
//!
//! A template is literal text with `{name}` placeholders that each match a decimal index (`{i}` the
//! layer, `{e}` an expert, ...). It is matched directly, part by part (about 20x fewer instructions
//! than a regex per name, and no compilation: start-up matches every tensor name against every
//! family's rules), and renders back from the captured values, so the same template works in both
//! directions of a rule. Its anchored regex text (`^lit(?P<i>[0-9]+)lit$`, the exact equivalent,
//! checked by a property test) is kept for the `RegexSet` overlap checks of large rule lists.
//! Patterns are input: every regex is built with a size limit.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};

use crate::error::{Cause, Error, Result, escape};

/// Largest compiled regex accepted for one pattern, in bytes (`RegexBuilder::size_limit`).
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Longest pattern text accepted.
pub const MAX_PATTERN_LEN: usize = 1000;

/// Placeholder values captured from a name: placeholder -> digits as written.
pub type Bindings = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

/// A compiled name template (`model.layers.{i}.self_attn.q_proj.weight`).
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
    /// The anchored regex equivalent to `parts`, for `RegexSet`s.
    re: String,
    /// A literal starting with a digit follows a placeholder, so a placeholder's run of digits may
    /// have to stop short ([`Pattern::spans_dp`]); otherwise one linear pass decides.
    ambiguous: bool,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Pattern {
    /// Compile a template. Placeholders are `{name}` with a lower-case ASCII name; a placeholder may
    /// appear once; `{` and `}` are not allowed elsewhere.
    pub fn parse(text: &str) -> Result<Pattern> {
        if text.is_empty() {
            return Err(Error::bad_data("empty name pattern"));
        }
        if text == "__metadata__" {
            return Err(Error::bad_data(
                "`__metadata__` is reserved by the safetensors format and cannot name a tensor",
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(Error::bad_data(format!(
                "name pattern `{}` contains control characters",
                escape(text)
            )));
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(Error::bad_data(format!(
                "name pattern is {} characters, over the limit of {MAX_PATTERN_LEN}",
                text.len()
            )));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        let mut seen: Vec<String> = Vec::new();
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Lit(rest.to_string()));
                    rest = "";
                }
                Some(p) => {
                    if p > 0 {
                        parts.push(Part::Lit(rest[..p].to_string()));
                    }
                    let tail = &rest[p..];
                    let close = tail.find('}').filter(|_| tail.starts_with('{'));
                    let Some(c) = close else {
                        return Err(Error::bad_data(format!(
                            "unbalanced brace in name pattern `{}`",
                            escape(text)
                        )));
                    };
                    let var = &tail[1..c];
                    if var.is_empty() || !var.chars().all(|ch| ch.is_ascii_lowercase()) {
                        return Err(Error::bad_data(format!(
                            "placeholder `{{{}}}` in `{}` must be a lower-case name like {{i}}",
                            escape(var),
                            escape(text)
                        )));
                    }
                    if seen.iter().any(|s| s == var) {
                        return Err(Error::bad_data(format!(
                            "placeholder `{{{var}}}` appears twice in `{}`",
                            escape(text)
                        )));
                    }
                    if matches!(parts.last(), Some(Part::Var(_))) {
                        return Err(Error::bad_data(format!(
                            "two placeholders must be separated by text in `{}`",
                            escape(text)
                        )));
                    }
                    seen.push(var.to_string());
                    parts.push(Part::Var(var.to_string()));
                    rest = tail.get(c.saturating_add(1)..).unwrap_or_default();
                }
            }
        }
        let mut re = String::from("^");
        for p in &parts {
            match p {
                Part::Lit(s) => re.push_str(&regex::escape(s)),
                Part::Var(v) => re.push_str(&format!("(?P<{v}>[0-9]+)")),
            }
        }
        re.push('$');
        let ambiguous = parts.windows(2).any(|w| {
            matches!(w, [Part::Var(_), Part::Lit(l)] if l.as_bytes().first().is_some_and(u8::is_ascii_digit))
        });
        Ok(Pattern {
            text: text.to_string(),
            parts,
            re,
            ambiguous,
        })
    }

    /// The anchored regex the template compiles to.
    pub(crate) fn regex_str(&self) -> &str {
        &self.re
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The placeholder names, in order.
    pub fn placeholders(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Var(v) => Some(v.as_str()),
                Part::Lit(_) => None,
            })
            .collect()
    }

    /// True when the template has no placeholders.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Match a whole name; the captured placeholder values on success.
    pub fn matches(&self, name: &str) -> Option<Bindings> {
        let spans = self.spans(name)?;
        let mut b = Bindings::new();
        let vars = self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        });
        for (v, (from, to)) in vars.zip(spans) {
            b.insert(v.clone(), name.get(from..to)?.to_string());
        }
        Some(b)
    }

    /// True when the name matches.
    pub fn is_match(&self, name: &str) -> bool {
        self.walk(name.as_bytes(), None)
    }

    /// Match a whole name: the byte range of each placeholder's digits, in order. The same answer
    /// as the anchored regex with its greedy groups: each placeholder takes the longest run of
    /// digits that lets the rest match.
    fn spans(&self, name: &str) -> Option<Vec<(usize, usize)>> {
        let mut caps = Vec::new();
        self.walk(name.as_bytes(), Some(&mut caps)).then_some(caps)
    }

    /// [`Pattern::spans`], pushing the spans into `caps` when given (`is_match` allocates nothing).
    fn walk(&self, name: &[u8], mut caps: Option<&mut Vec<(usize, usize)>>) -> bool {
        // After a placeholder comes a literal or the end. Unless that literal starts with a digit,
        // the placeholder's run of digits must be the whole run: one linear pass decides.
        if self.ambiguous {
            return match (self.spans_dp(name), caps) {
                (Some(found), Some(c)) => {
                    *c = found;
                    true
                }
                (found, _) => found.is_some(),
            };
        }
        let mut pos = 0usize;
        for p in &self.parts {
            let Some(rest) = name.get(pos..) else {
                return false;
            };
            match p {
                Part::Lit(l) => {
                    if !rest.starts_with(l.as_bytes()) {
                        return false;
                    }
                    pos = pos.saturating_add(l.len());
                }
                Part::Var(_) => {
                    let run = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                    if run == 0 {
                        return false;
                    }
                    if let Some(c) = caps.as_deref_mut() {
                        c.push((pos, pos.saturating_add(run)));
                    }
                    pos = pos.saturating_add(run);
                }
            }
        }
        pos == name.len()
    }

    /// [`Pattern::spans`] for templates where a literal starting with a digit follows a
    /// placeholder, in O(parts x name length): `ok[p][i]` tells whether parts `p..` match
    /// `name[i..]`, filled from the end (a placeholder at `i` matches when `name[i]` is a digit and
    /// the rest matches at `i + 1`, or the placeholder goes on at `i + 1`); then each placeholder
    /// takes its longest run for which the rest matches.
    fn spans_dp(&self, name: &[u8]) -> Option<Vec<(usize, usize)>> {
        let n = name.len().checked_add(1)?;
        let rows = self.parts.len().checked_add(1)?;
        let mut ok = vec![false; rows.checked_mul(n)?];
        let at = |p: usize, i: usize| p.checked_mul(n).and_then(|x| x.checked_add(i));
        *ok.get_mut(at(self.parts.len(), name.len())?)? = true;
        for (p, part) in self.parts.iter().enumerate().rev() {
            let next = p.checked_add(1)?;
            for i in (0..n).rev() {
                let rest = name.get(i..).unwrap_or_default();
                let after = |k: usize| i.checked_add(k).and_then(|j| at(next, j));
                let v = match part {
                    Part::Lit(l) => {
                        rest.starts_with(l.as_bytes())
                            && after(l.len()).and_then(|x| ok.get(x)).copied() == Some(true)
                    }
                    Part::Var(_) => {
                        rest.first().is_some_and(u8::is_ascii_digit)
                            && (after(1).and_then(|x| ok.get(x)).copied() == Some(true)
                                || i.checked_add(1)
                                    .and_then(|j| at(p, j))
                                    .and_then(|x| ok.get(x))
                                    .copied()
                                    == Some(true))
                    }
                };
                *ok.get_mut(at(p, i)?)? = v;
            }
        }
        if ok.first() != Some(&true) {
            return None;
        }
        let mut pos = 0usize;
        let mut caps = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            let next = p.checked_add(1)?;
            match part {
                Part::Lit(l) => pos = pos.checked_add(l.len())?,
                Part::Var(_) => {
                    let run = name
                        .get(pos..)?
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                    let len = (1..=run).rev().find(|&k| {
                        pos.checked_add(k)
                            .and_then(|j| at(next, j))
                            .and_then(|x| ok.get(x))
                            .copied()
                            == Some(true)
                    })?;
                    caps.push((pos, pos.checked_add(len)?));
                    pos = pos.checked_add(len)?;
                }
            }
        }
        Some(caps)
    }

    /// Render with placeholder values (a missing value renders as `{name}`).
    pub fn render(&self, b: &Bindings) -> String {
        let mut s = String::with_capacity(self.text.len());
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Var(v) => match b.get(v) {
                    Some(x) => s.push_str(x),
                    None => {
                        s.push('{');
                        s.push_str(v);
                        s.push('}');
                    }
                },
            }
        }
        s
    }

    /// A concrete name this template matches (every placeholder `0`), for overlap checks.
    pub fn sample(&self) -> String {
        let b = self
            .placeholders()
            .into_iter()
            .map(|v| (v.to_string(), "0".to_string()))
            .collect();
        self.render(&b)
    }

    /// True when some name could match both templates (checked on each one's sample name, which is
    /// exact for templates whose placeholders stand for whole dot-separated components).
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.is_match(&other.sample()) || other.is_match(&self.sample())
    }

    /// The value of placeholder `var` in `name`, as a number.
    pub fn index_of(&self, name: &str, var: &str) -> Option<usize> {
        let k = self
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Var(_)))
            .position(|p| matches!(p, Part::Var(v) if v == var))?;
        let (from, to) = *self.spans(name)?.get(k)?;
        name.get(from..to)?.parse().ok()
    }
}

/// Compile a user-supplied regex with the size limit.
pub fn build_regex(re: &str) -> Result<Regex> {
    RegexBuilder::new(re)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| {
            Error::bad_data(format!(
                "invalid or too large pattern `{}`: {}",
                escape(re),
                escape(&e.to_string())
            ))
        })
}

/// An ad-hoc rename from the command line, `--rename 'PATTERN=REPLACEMENT'`: a regex matched against
/// whole tensor names and a replacement with `$1` / `${name}` groups, e.g.
/// `base_model\.model\.(.*)=$1` strips a PEFT prefix. Applied to the physical names before the family
/// rules, with the same checks (a name matched by two rules, two names renamed onto one, a group
/// reference the pattern does not capture).
#[derive(Debug, Clone)]
pub struct RenameRule {
    /// The spec as given.
    pub spec: String,
    re: Regex,
    replacement: String,
}

impl RenameRule {
    /// Parse `PATTERN=REPLACEMENT` (split at the first `=`). The pattern is anchored at both ends.
    pub fn parse(spec: &str) -> Result<RenameRule> {
        let usage = |m: String| {
            Error::usage(m)
                .hint("a rename rule is PATTERN=REPLACEMENT, e.g. 'base_model\\.model\\.(.*)=$1'")
                .cause(Cause::RenameSyntax)
        };
        if spec.len() > MAX_PATTERN_LEN {
            return Err(usage(format!(
                "rename rule is {} characters, over the limit of {MAX_PATTERN_LEN}",
                spec.len()
            )));
        }
        let Some((pat, rep)) = spec.split_once('=') else {
            return Err(usage(format!("rename rule `{}` has no `=`", escape(spec))));
        };
        if pat.is_empty() {
            return Err(usage(format!(
                "rename rule `{}` has an empty pattern",
                escape(spec)
            )));
        }
        let re = RegexBuilder::new(&format!("^(?:{pat})$"))
            .size_limit(MAX_REGEX_BYTES)
            .dfa_size_limit(MAX_REGEX_BYTES)
            .build()
            .map_err(|e| {
                usage(format!(
                    "rename rule `{}`: invalid or too large regex: {}",
                    escape(spec),
                    escape(&e.to_string())
                ))
            })?;
        // Placeholders must agree between the sides: every group the replacement names exists.
        for g in replacement_groups(rep) {
            let ok = match g.parse::<usize>() {
                Ok(n) => n < re.captures_len(),
                Err(_) => re.capture_names().flatten().any(|n| n == g),
            };
            if !ok {
                return Err(usage(format!(
                    "rename rule `{}`: the replacement uses `${g}` but the pattern has no such group",
                    escape(spec)
                )));
            }
        }
        if rep.is_empty() {
            return Err(usage(format!(
                "rename rule `{}` renames tensors to an empty name",
                escape(spec)
            )));
        }
        Ok(RenameRule {
            spec: spec.to_string(),
            re,
            replacement: rep.to_string(),
        })
    }

    /// The new name when this rule matches `name`.
    pub fn apply(&self, name: &str) -> Option<String> {
        let caps = self.re.captures(name)?;
        let mut out = String::new();
        caps.expand(&self.replacement, &mut out);
        Some(out)
    }
}

/// Group references in a regex replacement: `$1`, `${1}`, `$name`, `${name}` (`$$` is a literal).
fn replacement_groups(rep: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rep;
    while let Some(pos) = rest.find('$') {
        let after = rest.get(pos.saturating_add(1)..).unwrap_or_default();
        if let Some(r) = after.strip_prefix('$') {
            rest = r; // `$$`: a literal dollar
        } else if let Some(r) = after.strip_prefix('{') {
            match r.split_once('}') {
                Some((name, r2)) => {
                    out.push(name.to_string());
                    rest = r2;
                }
                None => rest = r,
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let (name, r) = after.split_at(end);
            if !name.is_empty() {
                out.push(name.to_string());
            }
            rest = r;
        }
    }
    out
}

/// Apply ad-hoc renames to a list of names: the new names, or an error naming the tensor and the rules
/// when two rules match one name or two names end up the same.
pub fn apply_renames(names: &[String], rules: &[RenameRule]) -> Result<Vec<String>> {
    apply_renames_inner(names, rules)
}

/// The rules of `rules` that match none of `names` (a rule that renames nothing is almost always a
/// pattern written as a substring: patterns match whole names).
pub fn unmatched_renames<'r>(names: &[String], rules: &'r [RenameRule]) -> Vec<&'r RenameRule> {
    rules
        .iter()
        .filter(|r| !names.iter().any(|n| r.apply(n).is_some()))
        .collect()
}

/// An error for the first rule of `rules` that matches none of `names`, naming the rule and saying
/// that patterns match whole names; `Ok` when every rule matches some name.
pub fn require_renames_match(names: &[String], rules: &[RenameRule]) -> Result<()> {
    match unmatched_renames(names, rules).first() {
        None => Ok(()),
        Some(r) => Err(unmatched_error(r)),
    }
}

/// The error (or, for a dry run, the warning text) for a rule that matches no tensor.
pub fn unmatched_error(r: &RenameRule) -> Error {
    Error::usage(format!(
        "rename rule `{}` matches no tensor name; patterns match whole names (`ln1` matches only a \
         tensor called exactly `ln1`; write `(.*)\\.ln1\\.(.*)=$1.input_layernorm.$2` to replace a part)",
        escape(&r.spec)
    ))
    .cause(Cause::RenameUnmatched {
        rule: r.spec.clone(),
    })
}

fn apply_renames_inner(names: &[String], rules: &[RenameRule]) -> Result<Vec<String>> {
    if rules.is_empty() {
        return Ok(names.to_vec());
    }
    let mut out = Vec::with_capacity(names.len());
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, n) in names.iter().enumerate() {
        let mut hit: Option<(&RenameRule, String)> = None;
        for r in rules {
            if let Some(new) = r.apply(n) {
                if let Some((first, _)) = &hit {
                    return Err(Error::usage(format!(
                        "matched by two rename rules: `{}` and `{}`",
                        escape(&first.spec),
                        escape(&r.spec)
                    ))
                    .tensor(n));
                }
                hit = Some((r, new));
            }
        }
        if let Some((r, new)) = &hit {
            // A replacement can expand to an empty name (`a()=$1`), a reserved one or one with
            // control characters; the header writer and reader would refuse those later, so say so
            // here, naming the rule.
            let bad = crate::checkpoint::header::validate_name(new)
                .err()
                .or_else(|| (new == "__metadata__").then(|| "reserved name `__metadata__`".into()));
            if let Some(why) = bad {
                return Err(Error::usage(format!(
                    "rename rule `{}` gives an invalid name: {why}",
                    escape(&r.spec)
                ))
                .tensor(n));
            }
        }
        let new = hit.map(|(_, s)| s).unwrap_or_else(|| n.clone());
        if let Some(&j) = seen.get(&new) {
            return Err(Error::usage(format!(
                "renamed to `{}`, the same name as `{}`: two sources onto one target",
                escape(&new),
                escape(names.get(j).map(String::as_str).unwrap_or_default())
            ))
            .tensor(n));
        }
        seen.insert(new.clone(), i);
        out.push(new);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    /// The direct matcher gives the anchored regex's answer, captures included, on templates and
    /// names built from a small alphabet of digits, dots and letters (where runs of digits next to
    /// placeholders make the greedy choice matter).
    #[test]
    fn direct_matching_is_the_regex() {
        use proptest::prelude::*;
        let part = prop_oneof![
            "[0-9a.]{1,3}".prop_map(|l| (true, l)),
            Just((false, String::new())),
        ];
        let cfg = ProptestConfig {
            cases: 4000,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(cfg, |(parts in proptest::collection::vec(part, 1..6), name in "[0-9a.]{0,12}")| {
            let mut text = String::new();
            let mut vars = 0u8;
            let mut last_var = false;
            for (lit, l) in &parts {
                if *lit {
                    text.push_str(l);
                    last_var = false;
                } else if !last_var {
                    text.push('{');
                    text.push(char::from(b'a' + vars));
                    text.push('}');
                    vars += 1;
                    last_var = true;
                }
            }
            let p = Pattern::parse(&text).unwrap();
            let re = build_regex(p.regex_str()).unwrap();
            let want = re.captures(&name).map(|c| {
                p.placeholders()
                    .into_iter()
                    .map(|v| (v.to_string(), c.name(v).unwrap().as_str().to_string()))
                    .collect::<Bindings>()
            });
            prop_assert_eq!(p.matches(&name), want, "template {} name {}", text, name);
            prop_assert_eq!(p.is_match(&name), re.is_match(&name));
        });
    }

    #[test]
    fn ambiguous_templates_match_in_linear_space() {
        // 190 placeholders each followed by a literal `0`, against 600 zeros with a miss at the
        // end: a backtracker tries exponentially many splits, the table 381 x 602 cells.
        let text: String = (0..190u32)
            .map(|i| {
                let a = char::from_u32(u32::from('a') + i / 26).unwrap();
                let b = char::from_u32(u32::from('a') + i % 26).unwrap();
                format!("{{{a}{b}}}0")
            })
            .collect();
        let p = Pattern::parse(&text).unwrap();
        assert!(!p.is_match(&("0".repeat(600) + "x")));
        let b = p.matches(&"0".repeat(600)).unwrap();
        // Greedy: the first placeholder takes the longest run that leaves 189 x "00" + "0".
        assert_eq!(b["aa"], "0".repeat(600 - 2 * 189 - 1));
        assert_eq!(b["ab"], "0");
    }

    #[test]
    fn replacement_group_references() {
        assert_eq!(replacement_groups("$1.x"), ["1"]);
        assert_eq!(replacement_groups("a${name}b$2_c"), ["name", "2_c"]);
        assert_eq!(replacement_groups("$$1 $"), Vec::<String>::new());
        assert_eq!(replacement_groups("${unclosed $3"), ["3"]);
        assert_eq!(replacement_groups("é$1é${2}"), ["1", "2"]);
        assert_eq!(replacement_groups("$-x"), Vec::<String>::new());
    }

    #[test]
    fn reserved_and_control_names_are_refused() {
        let e = Pattern::parse("__metadata__").unwrap_err();
        assert!(e.message().contains("reserved"), "{e}");
        let e = Pattern::parse("model.norm\0weight").unwrap_err();
        assert!(e.message().contains("control characters"), "{e}");
        assert!(e.message().contains("\\u{0}"), "{e}");
        assert!(Pattern::parse("model.__metadata__.weight").is_ok());
    }

    #[test]
    fn template_matches_and_renders() {
        let p = Pattern::parse("model.layers.{i}.ln1.weight").unwrap();
        let b = p.matches("model.layers.12.ln1.weight").unwrap();
        assert_eq!(b["i"], "12");
        assert!(p.matches("model.layers.x.ln1.weight").is_none());
        assert!(p.matches("model.layers.1.ln1.weightx").is_none());
        let q = Pattern::parse("model.layers.{i}.input_layernorm.weight").unwrap();
        assert_eq!(q.render(&b), "model.layers.12.input_layernorm.weight");
        assert_eq!(p.sample(), "model.layers.0.ln1.weight");
        assert!(Pattern::parse("a.{i}.{i}").is_err());
        assert!(Pattern::parse("a.{I}").is_err());
        assert!(Pattern::parse("a.{i").is_err());
        assert!(Pattern::parse("a.{i}{e}").is_err());
        // dots are literal
        assert!(!Pattern::parse("a.b").unwrap().is_match("axb"));
    }

    #[test]
    fn rename_rules() {
        let r = RenameRule::parse(r"base_model\.model\.(.*)=$1").unwrap();
        assert_eq!(
            r.apply("base_model.model.model.norm.weight").as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(r.apply("model.norm.weight"), None);
        assert!(RenameRule::parse("abc").is_err());
        assert!(RenameRule::parse("(a)=$2").is_err());
        assert!(RenameRule::parse("(?P<x>a)=${x}b").is_ok());
        assert!(RenameRule::parse("(?P<x>a)=${y}b").is_err());
        assert!(RenameRule::parse("a{1000}{1000}{1000}=b").is_err());
        let names = vec!["a.x".to_string(), "b.x".to_string()];
        let e = apply_renames(&names, &[RenameRule::parse(r"[ab]\.x=c").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("two sources onto one target"), "{e}");
        let e = apply_renames(
            &names,
            &[
                RenameRule::parse(r"a\.(.*)=q$1").unwrap(),
                RenameRule::parse(r"(.*)\.x=$1").unwrap(),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("matched by two rename rules"), "{e}");
    }

    #[test]
    fn rename_to_invalid_name_is_refused() {
        // Found by the `mapping_rules` fuzz target: the replacement is non-empty but expands to "".
        let names = vec!["lm_head.weight".to_string(), "b.x".to_string()];
        for (spec, why) in [
            (r"lm_head\.weight()=$1", "empty tensor name"),
            (r"lm_head\.weight=__metadata__", "reserved name"),
            ("lm_head\\.weight=a\tb", "control characters"),
        ] {
            let e = apply_renames(&names, &[RenameRule::parse(spec).unwrap()]).unwrap_err();
            assert!(e.to_string().contains(why), "{spec}: {e}");
            assert!(e.to_string().contains("lm_head.weight"), "{spec}: {e}");
        }
    }
}
