//! One weight file on disk: opened read-only, checked to be a regular file, then memory-mapped
//! read-only for lazy tensor access. Two containers: a safetensors file (its header read with `pread`
//! into a bounded buffer and validated before mapping) or a `torch.save` ZIP archive (its central
//! directory and `data.pkl` read through the map by [`super::torch`]; tensors are byte ranges of the
//! file, so the data section starts at offset 0).
//!
//! A legacy (pre-1.6, non-zip) `torch.save` file is recognised by its magic number and read by
//! [`super::torch::read_legacy`]. When the bytes are none of these, the error says what they are
//! instead (git-LFS pointer, bare pickle, GGUF, empty file) rather than a JSON parse error.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::header::{self, Header, HeaderTensor};
use super::torch::{self, TorchArchive};
use crate::error::{Error, ErrorKind, Result};

/// The physical format of a weight file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// A safetensors file.
    Safetensors,
    /// A `torch.save` ZIP archive (`.pth`, `.bin`, `.pt`).
    Torch(Box<TorchArchive>),
    /// A llama.cpp GGUF file (its tensor table described as a header with a data section).
    Gguf,
}

impl Container {
    /// Lower-case name for reports (`safetensors`, `torch`).
    pub fn name(&self) -> &'static str {
        match self {
            Container::Safetensors => "safetensors",
            Container::Torch(_) => "torch",
            Container::Gguf => "gguf",
        }
    }
}

/// A validated, memory-mapped weight file.
#[derive(Debug)]
pub struct Shard {
    /// Path as the user gave it (joined to the checkpoint directory).
    pub path: PathBuf,
    /// The file name (one path component).
    pub file_name: String,
    /// File size in bytes (from `fstat`).
    pub size: u64,
    /// `(st_dev, st_ino)` of the file, to refuse outputs that alias an input.
    pub dev_ino: (u64, u64),
    /// The validated header. For a torch archive, a synthesized one: no JSON header (`header_len` 0,
    /// data section at offset 0), one entry per tensor with its absolute byte range, no metadata.
    pub header: Header,
    /// Which container the file is.
    pub container: Container,
    map: Option<Mmap>,
    _file: File,
}

impl Shard {
    /// Open and validate `path`. Only the header bytes are read (for a torch archive, the ZIP
    /// directory and `data.pkl`).
    pub fn open(path: &Path) -> Result<Shard> {
        Self::open_with(path, None)
    }

    /// [`Shard::open`], with the key of the state dict to read from a torch archive that holds several.
    pub fn open_with(path: &Path, state_dict_key: Option<&str>) -> Result<Shard> {
        // O_NONBLOCK: opening a FIFO must not block forever; fstat then rejects it.
        let (file, meta) = open_regular(path)?;
        let size = meta.len();
        let mut magic = [0u8; 16];
        let got = read_at_most(&file, &mut magic, 0).map_err(|e| e.file(path))?;
        let magic = magic.get(..got).unwrap_or_default();
        if magic.starts_with(torch::LEGACY_MAGIC) {
            return Self::open_torch(path, file, &meta, state_dict_key, true);
        }
        if magic.starts_with(b"PK\x03\x04") {
            if path.extension().is_some_and(|e| e == "safetensors") {
                return Err(Error::new(
                    ErrorKind::WrongFormat,
                    "this is a zip archive (a PyTorch torch.save checkpoint?) named .safetensors, not safetensors",
                )
                .file(path)
                .hint("if it is a PyTorch checkpoint, name it .pth or .bin and ckpt reads it as one"));
            }
            return Self::open_torch(path, file, &meta, state_dict_key, false);
        }
        let header = read_header(&file, size).map_err(|e| {
            let e = e.file(path);
            diagnose(&file, size, path).unwrap_or(e)
        })?;
        let map = if size == 0 {
            None
        } else {
            // SAFETY: the file is opened read-only and the map is never written through. A concurrent
            // truncation by another process can still raise SIGBUS on access; this is documented in
            // docs/RELIABILITY.md (every mmap reader shares it).
            Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "cannot mmap", e))?)
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Shard {
            path: path.to_path_buf(),
            file_name,
            size,
            dev_ino: (meta.dev(), meta.ino()),
            header,
            container: Container::Safetensors,
            map,
            _file: file,
        })
    }

    fn open_torch(
        path: &Path,
        file: File,
        meta: &std::fs::Metadata,
        key: Option<&str>,
        legacy: bool,
    ) -> Result<Shard> {
        // SAFETY: as for safetensors files above: read-only map, never written through.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "cannot mmap", e))?;
        let archive = if legacy {
            torch::read_legacy(&map, key)
        } else {
            torch::read_archive(&map, key)
        }
        .map_err(|e| e.file(path))?;
        let tensors = archive
            .tensors
            .iter()
            .map(|t| HeaderTensor::located(&t.name, t.dtype, &t.shape, t.begin, t.end))
            .collect();
        let header = Header {
            header_len: 0,
            tensors,
            metadata: None,
            data_len: archive.storage_bytes,
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Shard {
            path: path.to_path_buf(),
            file_name,
            size: meta.len(),
            dev_ino: (meta.dev(), meta.ino()),
            header,
            container: Container::Torch(Box::new(archive)),
            map: Some(map),
            _file: file,
        })
    }

    /// The torch archive, when the file is one.
    pub fn torch(&self) -> Option<&TorchArchive> {
        match &self.container {
            Container::Torch(a) => Some(a),
            Container::Safetensors | Container::Gguf => None,
        }
    }

    /// Offset of the data section in the file (0 for a torch archive: its ranges are absolute).
    pub fn data_start(&self) -> usize {
        match self.container {
            Container::Safetensors | Container::Gguf => self.header.data_start(),
            Container::Torch(_) => 0,
        }
    }

    /// The bytes of a tensor's data range `[begin, end)` (relative to the data section). The range was
    /// validated against the file size when the header was parsed.
    pub fn data(&self, begin: usize, end: usize) -> Result<&[u8]> {
        let start = self.data_start();
        let range = start.checked_add(begin).zip(start.checked_add(end));
        let empty: &[u8] = &[];
        match (range, &self.map) {
            (Some((b, e)), _) if b == e => Ok(empty),
            (Some((b, e)), Some(m)) => m.get(b..e).ok_or_else(|| {
                Error::internal(format!("byte range [{b}, {e}) outside the mapped file"))
                    .file(&self.path)
            }),
            _ => Err(Error::internal("byte range outside the file").file(&self.path)),
        }
    }

    /// Tell the kernel this process is done with a data range `[begin, end)` (relative to the data
    /// section) for now: its pages leave this process's resident set (they stay in the page cache, and
    /// a later access reads them again). Streaming passes over a model call this after each tensor or
    /// layer, so peak RSS stays near one layer, not the model size. Advisory: errors are ignored.
    pub fn release(&self, begin: usize, end: usize) {
        let Some(map) = &self.map else { return };
        const PAGE: usize = 4096;
        let pos = self.data_start().saturating_add(begin);
        let start = pos.saturating_sub(pos % PAGE);
        let stop = self.data_start().saturating_add(end).min(map.len());
        if stop <= start {
            return;
        }
        // SAFETY: the map is a read-only shared file mapping; MADV_DONTNEED only drops this process's
        // page-table entries, and any later access (through slices still borrowed) faults the same file
        // bytes back in, so no visible memory changes.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start,
                stop.saturating_sub(start),
            )
        };
    }

    /// The whole mapped file (empty for an empty file).
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// The open file (for `copy_file_range` and `pread`).
    pub fn file(&self) -> &File {
        &self._file
    }
}

/// Open an input read-only without blocking (`O_NONBLOCK`: a FIFO must not hang the open) and
/// check it is a regular file. A FIFO, socket, device or directory is refused with its type named
/// (a socket otherwise fails the open with a confusing "No such device or address").
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata)> {
    let not_regular = |meta: &std::fs::Metadata| {
        Error::new(
            ErrorKind::MissingInput,
            format!("not a regular file ({})", file_type_name(meta)),
        )
        .file(path)
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            return Err(match std::fs::metadata(path) {
                Ok(m) if !m.is_file() => not_regular(&m),
                _ => Error::io(path, "cannot open", e),
            });
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io(path, "cannot stat", e))?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok((file, meta))
}

impl Shard {
    /// Open a file of another container (GGUF): checked to be a regular file, mapped read-only,
    /// then `parse` validates the mapped bytes and describes them as a [`Header`] whose data section
    /// starts at `header_len + 8`. Nothing is read eagerly beyond what `parse` touches.
    pub fn open_mapped(path: &Path, parse: impl FnOnce(&[u8]) -> Result<Header>) -> Result<Shard> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(path, "cannot open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(path, "cannot stat", e))?;
        if !meta.is_file() {
            return Err(Error::new(
                ErrorKind::MissingInput,
                format!("not a regular file ({})", file_type_name(&meta)),
            )
            .file(path));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: as in `Shard::open`: read-only map, never written through.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "cannot mmap", e))?)
        };
        let header = parse(map.as_deref().unwrap_or_default()).map_err(|e| e.file(path))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Shard {
            path: path.to_path_buf(),
            file_name,
            size: meta.len(),
            dev_ino: (meta.dev(), meta.ino()),
            header,
            map,
            container: Container::Gguf,
            _file: file,
        })
    }
}

fn read_header(file: &File, size: u64) -> Result<Header> {
    let mut prefix = [0u8; 8];
    let got = read_at_most(file, &mut prefix, 0)?;
    let n = header::check_prefix(prefix.get(..got).unwrap_or_default(), size)?;
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, 8)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read the header: {e}")))?;
    header::parse_header(&buf, size)
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut done = 0usize;
    while done < buf.len() {
        let slot = buf.get_mut(done..).unwrap_or_default();
        match file.read_at(slot, offset.saturating_add(done as u64)) {
            Ok(0) => break,
            Ok(k) => done = done.saturating_add(k),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::new(ErrorKind::Io, format!("cannot read: {e}"))),
        }
    }
    Ok(done)
}

/// Recognise files that are not safetensors at all. `None` when the bytes look like an (invalid)
/// safetensors file, so the parser's own error stands.
fn diagnose(file: &File, size: u64, path: &Path) -> Option<Error> {
    let mut head = [0u8; 512];
    let got = read_at_most(file, &mut head, 0).ok()?;
    let head = head.get(..got)?;
    let wrong = |what: &str, hint: &str| {
        Some(
            Error::new(ErrorKind::WrongFormat, what.to_string())
                .file(path)
                .hint(hint.to_string()),
        )
    };
    if size == 0 {
        return Some(
            Error::bad_data("the file is empty (0 bytes)")
                .file(path)
                .hint("re-download the file"),
        );
    }
    if head.starts_with(b"version https://git-lfs") {
        return wrong(
            "this is a git-lfs pointer, not the weights",
            "run `git lfs pull` in the repository to fetch the real file",
        );
    }
    if head.starts_with(b"GGUF") {
        return wrong(
            "this is a GGUF file (llama.cpp's format), not safetensors",
            "rename it to `.gguf`: ckpt reads GGUF files by that name",
        );
    }
    if head.get(257..262) == Some(b"ustar".as_slice()) {
        return wrong(
            "this is a tar archive (the torch.save format of PyTorch 0.1-0.3?); ckpt does not read it",
            "re-save it with a current PyTorch in an isolated environment",
        );
    }
    if let [0x80, proto, ..] = head
        && (2..=5).contains(proto)
    {
        // The legacy format's magic number (a pickled long) after another protocol's frame:
        // `torch.save(..., _use_new_zipfile_serialization=False, pickle_protocol=N)`.
        let number = super::torch::LEGACY_MAGIC.get(2..).unwrap_or_default();
        if head.windows(number.len()).take(64).any(|w| w == number) {
            return wrong(
                &format!(
                    "this is a legacy (non-zip) torch.save file written with pickle protocol {proto}; ckpt reads that format with protocol 2 only (torch.save's default)"
                ),
                "re-save it with a current PyTorch (torch.save, zip format) or convert it to safetensors in an isolated environment",
            );
        }
        return wrong(
            "this is a bare Python pickle: neither safetensors nor a torch.save file (zip, or the legacy format with its magic number); ckpt never unpickles",
            "re-save it with a current PyTorch (torch.save) or convert it to safetensors in an isolated environment",
        );
    }
    None
}

fn file_type_name(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}
