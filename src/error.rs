//! The one error type of the library.
//!
//! Every error carries a [`ErrorKind`] (what class of failure it is: bad input data, a missing input,
//! an output that cannot be created, an I/O failure, ...), the file it is about and, where there is
//! one, the tensor. The safetensors crate's own error type is weakest exactly where a variant forgets
//! which tensor or file it is about, so here the location is part of the struct, not of each variant.
//!
//! Rendering: `error[bad-data]: path/to/model.safetensors: tensor "x": what is wrong` followed by an
//! optional `  hint: ...` line. Strings that come from a file are escaped with [`escape`].

use std::fmt;
use std::path::{Path, PathBuf};

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The class of an error. The CLI exits 2 for every kind; the kind is named in the message and in
/// JSON output so scripts can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An input (safetensors file, index, config, mapping file) is malformed or inconsistent.
    BadData,
    /// The input is a different format (git-LFS pointer, pickle, GGUF, ...) that `ckpt` does not read.
    WrongFormat,
    /// An input is missing, unreadable, or not a regular file.
    MissingInput,
    /// The input is valid but asks for something `ckpt` does not support (a dtype, an activation, ...).
    Unsupported,
    /// The output cannot be created: it exists, aliases an input, is a symlink, or is not writable.
    CannotCreate,
    /// An I/O error while reading or writing (disk full, EIO, fsync failure).
    Io,
    /// The command line or the requested operation is inconsistent.
    Usage,
    /// The operation was interrupted (Ctrl-C); everything it had started was cleaned up.
    Interrupted,
    /// A bug in `ckpt` itself (a broken invariant).
    Internal,
}

impl ErrorKind {
    /// Short stable identifier used in messages and JSON (`bad-data`, `missing-input`, ...).
    pub fn id(self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad-data",
            ErrorKind::WrongFormat => "wrong-format",
            ErrorKind::MissingInput => "missing-input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::CannotCreate => "cannot-create",
            ErrorKind::Io => "io",
            ErrorKind::Usage => "usage",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Facts about why an operation failed, for a program to turn into advice. The library states what
/// failed and what was expected; the `ckpt` binary turns a cause into a hint that names only the
/// flags the running command has (the library never names command-line flags).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// No family fits the checkpoint (detection found none).
    FamilyUndetected {
        /// A prefix every tensor name shares (`module.`, as `DistributedDataParallel` saves
        /// them) whose removal lets detection find a family, if there is one.
        strip: Option<String>,
    },
    /// A tensor matched no rule of the family the checkpoint was read through.
    TensorUnmapped {
        /// The family whose rules were tried.
        family: String,
    },
    /// A family name that no loaded mapping file defines.
    UnknownFamily {
        /// The name asked for.
        name: String,
        /// The families that are loaded.
        known: Vec<String>,
    },
    /// A rename rule is not `PATTERN=REPLACEMENT`, or its pattern or replacement is invalid.
    RenameSyntax,
    /// A rename rule matched no tensor name (patterns match whole names).
    RenameUnmatched {
        /// The rule as given.
        rule: String,
    },
    /// A shard is a symlink that leaves the checkpoint directory (and not into a cache `blobs/`).
    ExternalLink,
}

/// The rarely-set parts of an [`Error`].
#[derive(Debug, Default)]
struct Extra {
    hint: Option<String>,
    cause: Option<Cause>,
}

/// An error with its kind, the file and tensor it concerns, a message and an optional hint.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    file: Option<PathBuf>,
    tensor: Option<String>,
    message: String,
    // Boxed: most errors have neither, and `Result<T, Error>` stays small.
    extra: Option<Box<Extra>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of the given kind with a message (lower case, names in backticks).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            file: None,
            tensor: None,
            message: message.into(),
            extra: None,
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::BadData`].
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadData, message)
    }

    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// Shorthand for [`ErrorKind::Usage`].
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An I/O error about `path`, classified by its OS error (not found -> missing input, ...).
    pub fn io(path: impl AsRef<Path>, what: &str, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound | K::PermissionDenied | K::IsADirectory | K::NotADirectory => {
                ErrorKind::MissingInput
            }
            K::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Io,
        };
        let message = format!("{what}: {err}");
        Error::new(kind, message).file(path).with_source(err)
    }

    /// The same as [`Error::io`] but for an output: permission and read-only errors become
    /// [`ErrorKind::CannotCreate`], disk-full stays [`ErrorKind::Io`].
    pub fn io_write(path: impl AsRef<Path>, what: &str, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::PermissionDenied | K::ReadOnlyFilesystem | K::AlreadyExists | K::NotFound => {
                ErrorKind::CannotCreate
            }
            K::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Io,
        };
        let message = format!("{what}: {err}");
        Error::new(kind, message).file(path).with_source(err)
    }

    /// Attach the file this error is about (keeps the first one set).
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        if self.file.is_none() {
            self.file = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Attach the tensor this error is about (keeps the first one set).
    pub fn tensor(mut self, name: impl Into<String>) -> Self {
        if self.tensor.is_none() {
            self.tensor = Some(name.into());
        }
        self
    }

    /// Attach an actionable one-sentence hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.extra.get_or_insert_default().hint = Some(hint.into());
        self
    }

    /// Attach the facts a program needs to advise the user (see [`Cause`]).
    pub fn cause(mut self, cause: Cause) -> Self {
        self.extra.get_or_insert_default().cause = Some(cause);
        self
    }

    /// The facts attached with [`Error::cause`], if any.
    pub fn cause_info(&self) -> Option<&Cause> {
        self.extra.as_ref().and_then(|x| x.cause.as_ref())
    }

    /// Replace the hint (the binary does this to name its own flags).
    pub fn set_hint(&mut self, hint: Option<String>) {
        self.extra.get_or_insert_default().hint = hint;
    }

    /// Attach an underlying cause.
    pub fn with_source(mut self, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(err));
        self
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The tensor the error is about, if any.
    pub fn tensor_name(&self) -> Option<&str> {
        self.tensor.as_deref()
    }

    /// The message without location or hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The hint, if any.
    pub fn hint_text(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|x| x.hint.as_deref())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", escape_path(file))?;
        }
        if let Some(t) = &self.tensor {
            write!(f, "tensor \"{}\": ", escape(t))?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = self.hint_text() {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Longest string taken from a file that messages print before truncating.
pub const MAX_PRINTED_NAME: usize = 200;

/// Escape a string that came from a file for printing on a terminal: control characters (escape
/// sequences included) and quotes are escaped, and anything longer than [`MAX_PRINTED_NAME`]
/// characters is cut with the original length shown.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_PRINTED_NAME + 16));
    for (count, c) in s.chars().enumerate() {
        if count == MAX_PRINTED_NAME {
            out.push_str(&format!("...({} chars)", s.chars().count()));
            return out;
        }
        if c.is_control() || c == '"' || c == '\\' || is_invisible_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Print a JSON value taken from a file: its JSON text, whose quotes and backslashes are the
/// value's own syntax (a string shows as `"64"`, not `\"64\"`); serde_json already escapes
/// control characters inside strings, and invisible layout characters are escaped like
/// [`escape`] does. Cut at [`MAX_PRINTED_NAME`] characters like [`escape`].
pub fn escape_value(v: &serde_json::Value) -> String {
    escape_json_text(&v.to_string())
}

/// Escape JSON text for printing, as [`escape_value`] does: quotes and backslashes are kept (they
/// are the text's own syntax), control and invisible layout characters escaped, long text cut.
pub fn escape_json_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_PRINTED_NAME + 16));
    for (count, c) in text.chars().enumerate() {
        if count == MAX_PRINTED_NAME {
            out.push_str(&format!("...({} chars)", text.chars().count()));
            return out;
        }
        if c.is_control() || is_invisible_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that change how a terminal lays text out without being control characters: bidi
/// embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069, the marks U+200E/U+200F,
/// U+061C), zero-width characters (U+200B–U+200D, U+2060, U+FEFF) and line/paragraph separators.
/// [`escape`] escapes them like control characters, so a name cannot hide or reorder text.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Escape a path for printing: like [`escape`], and bytes that are not UTF-8 are shown as `\xNN`
/// (never replaced by U+FFFD, which would name another path).
pub fn escape_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = p.as_os_str().as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        return escape(s);
    }
    let mut out = String::new();
    let mut count = 0usize;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if count == MAX_PRINTED_NAME {
                out.push_str("...");
                return out;
            }
            count += 1;
            if c.is_control() || c == '"' || c == '\\' || is_invisible_format(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            count += 1;
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_tensor() {
        let e = Error::bad_data("shape [3] needs 12 bytes but data_offsets span 8")
            .file("m.safetensors")
            .tensor("a\u{1b}[2J")
            .hint("re-download the file");
        let s = e.to_string();
        assert_eq!(
            s,
            "m.safetensors: tensor \"a\\u{1b}[2J\": shape [3] needs 12 bytes but data_offsets span 8\n  hint: re-download the file"
        );
    }

    #[test]
    fn escape_shows_format_characters_and_raw_bytes() {
        assert_eq!(
            escape("a\u{202e}b\u{2066}c\u{200b}"),
            "a\\u{202e}b\\u{2066}c\\u{200b}"
        );
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"dir/out\xff"));
        assert_eq!(escape_path(p), "dir/out\\xff");
        let e = Error::bad_data("x").file(p).to_string();
        assert!(e.starts_with("dir/out\\xff: "), "{e}");
    }

    #[test]
    fn escape_truncates_long_names() {
        let long = "x".repeat(1000);
        let e = escape(&long);
        assert!(e.ends_with("...(1000 chars)"));
        assert!(e.len() < 230);
    }

    #[test]
    fn values_print_as_json_without_doubled_escapes() {
        let v = serde_json::json!("64");
        assert_eq!(escape_value(&v), "\"64\"");
        let v = serde_json::json!({"k": "a\"b\u{1b}c\u{202e}"});
        assert_eq!(escape_value(&v), "{\"k\":\"a\\\"b\\u001bc\\u{202e}\"}");
        let long = serde_json::json!("x".repeat(1000));
        assert!(escape_value(&long).ends_with("...(1002 chars)"));
    }

    #[test]
    fn io_errors_are_classified() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(Error::io("x", "open", nf).kind(), ErrorKind::MissingInput);
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(Error::io_write("x", "write", full).kind(), ErrorKind::Io);
    }
}
