//! A bounded reader of SentencePiece's `tokenizer.model` (a serialized `ModelProto`, protobuf wire
//! format), just deep enough to count the pieces and read the special-token ids.
//!
//! The fields read (from `sentencepiece_model.proto`): `ModelProto.pieces` (field 1, repeated
//! message: `piece` string = 1, `score` float = 2, `type` enum = 3), `ModelProto.trainer_spec`
//! (field 2: `model_type` = 3, `vocab_size` = 4, `byte_fallback` = 35, `unk_id` = 40, `bos_id` = 41,
//! `eos_id` = 42, `pad_id` = 43). Everything else is skipped by wire type. Every length is checked
//! against the bytes left, nesting is two levels, and the file size is capped by the caller: a
//! hostile file yields an error, never a panic or an unbounded allocation.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

/// Largest `tokenizer.model` read (real ones are 0.5-5 MB).
pub const MAX_SP_BYTES: u64 = 64 << 20;

/// Piece type `UNKNOWN` in `SentencePiece.Type`.
pub const TYPE_UNKNOWN: i64 = 2;
/// Piece type `CONTROL` (`<s>`, `</s>`).
pub const TYPE_CONTROL: i64 = 3;

/// What a SentencePiece model says about its vocabulary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpModel {
    /// The pieces, in id order.
    pub pieces: Vec<String>,
    /// The piece types (`NORMAL` 1, `UNKNOWN` 2, `CONTROL` 3, `USER_DEFINED` 4, `UNUSED` 5, `BYTE` 6).
    pub types: Vec<i64>,
    /// `trainer_spec.model_type` (1 unigram, 2 BPE, 3 word, 4 char); 1 when absent (the proto default).
    pub model_type: i64,
    /// `trainer_spec.byte_fallback`.
    pub byte_fallback: bool,
    /// `trainer_spec.unk_id` (default 0).
    pub unk_id: i64,
    /// `trainer_spec.bos_id` (default 1; -1 disables).
    pub bos_id: i64,
    /// `trainer_spec.eos_id` (default 2; -1 disables).
    pub eos_id: i64,
    /// `trainer_spec.pad_id` (default -1).
    pub pad_id: i64,
    /// `normalizer_spec.name` (`identity` for LLaMA, `nmt_nfkc` by default); empty when absent.
    pub normalizer: String,
    /// `normalizer_spec.add_dummy_prefix` (default true).
    pub add_dummy_prefix: bool,
    /// `normalizer_spec.remove_extra_whitespaces` (default true; LLaMA's model has false).
    pub remove_extra_whitespaces: bool,
}

impl SpModel {
    /// The id of a piece, by its text.
    pub fn id_of(&self, piece: &str) -> Option<usize> {
        self.pieces.iter().position(|p| p == piece)
    }

    /// `bos_id` as an index when enabled.
    pub fn bos(&self) -> Option<usize> {
        usize::try_from(self.bos_id).ok()
    }

    /// `eos_id` as an index when enabled.
    pub fn eos(&self) -> Option<usize> {
        usize::try_from(self.eos_id).ok()
    }

    /// Whether the model is built like LLaMA's (BPE, byte fallback, identity normalisation, spaces
    /// kept): the settings transformers' `LlamaTokenizer` reproduces exactly. transformers 5 builds
    /// `LlamaTokenizer` as a byte-fallback BPE with a Metaspace pre-tokenizer and no normaliser, so
    /// a model that normalises (NFKC, collapsing whitespace) or maps unknown characters to `<unk>`
    /// instead of bytes would tokenize differently through it.
    pub fn llama_like(&self) -> bool {
        self.model_type == 2
            && self.byte_fallback
            && !self.remove_extra_whitespaces
            && matches!(self.normalizer.as_str(), "identity" | "")
    }

    /// What differs from LLaMA's settings (for messages); empty when [`SpModel::llama_like`].
    pub fn unlike_llama(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.model_type != 2 {
            v.push(format!(
                "model type {} (LLaMA: BPE)",
                match self.model_type {
                    1 => "unigram",
                    3 => "word",
                    4 => "char",
                    _ => "unknown",
                }
            ));
        }
        if !self.byte_fallback {
            v.push("no byte fallback (unknown characters become <unk>)".into());
        }
        if self.remove_extra_whitespaces {
            v.push("extra whitespace removed".into());
        }
        if !matches!(self.normalizer.as_str(), "identity" | "") {
            v.push(format!("normalizer `{}`", self.normalizer));
        }
        v
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos = self.pos.saturating_add(1);
            if shift == 63 && b > 1 {
                return Err(format!("varint overflows 64 bits at byte {}", self.pos));
            }
            v |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length does not fit in memory".to_string())?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "a field of {n} bytes at byte {} runs past the end of the file ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    /// One field: (number, wire type, varint value or length-delimited bytes).
    fn field(&mut self) -> Result<(u64, Field<'a>), String> {
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        if num == 0 {
            return Err(format!("field number 0 at byte {}", self.pos));
        }
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.bytes(8)?;
                Field::Fixed
            }
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.bytes(n)?)
            }
            5 => {
                self.bytes(4)?;
                Field::Fixed
            }
            other => {
                return Err(format!(
                    "wire type {other} (field {num}) at byte {} is not used by SentencePiece models",
                    self.pos
                ));
            }
        };
        Ok((num, f))
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// protobuf int32 is sign-extended to 64 bits on the wire.
fn int32(v: u64) -> i64 {
    v as i64
}

/// Parse a `tokenizer.model`. The message says what is wrong and at which byte; the caller adds
/// the file.
pub fn parse(buf: &[u8]) -> Result<SpModel, String> {
    if buf.is_empty() {
        return Err("empty file".into());
    }
    if buf.starts_with(b"version https://git-lfs") {
        return Err("a git-LFS pointer, not the SentencePiece model (run `git lfs pull`)".into());
    }
    let mut m = SpModel {
        model_type: 1,
        unk_id: 0,
        bos_id: 1,
        eos_id: 2,
        pad_id: -1,
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        ..SpModel::default()
    };
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(piece)) => {
                let (text, ty) = parse_piece(piece)?;
                m.pieces.push(text);
                m.types.push(ty);
            }
            (1, _) => return Err("field 1 (pieces) is not a message".into()),
            (2, Field::Bytes(spec)) => parse_trainer(spec, &mut m)?,
            (3, Field::Bytes(spec)) => parse_normalizer(spec, &mut m)?,
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err("no pieces: not a SentencePiece model".into());
    }
    Ok(m)
}

fn parse_piece(buf: &[u8]) -> Result<(String, i64), String> {
    let mut r = Reader::new(buf);
    let (mut text, mut ty) = (None, 1i64);
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(b)) => {
                text = Some(
                    std::str::from_utf8(b)
                        .map_err(|_| "a piece is not valid UTF-8".to_string())?
                        .to_string(),
                )
            }
            (3, Field::Varint(v)) => ty = int32(v),
            _ => {}
        }
    }
    Ok((text.ok_or("a piece without text")?, ty))
}

fn parse_normalizer(buf: &[u8], m: &mut SpModel) -> Result<(), String> {
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(b)) => {
                m.normalizer = std::str::from_utf8(b)
                    .map_err(|_| "the normalizer name is not valid UTF-8".to_string())?
                    .to_string()
            }
            (3, Field::Varint(v)) => m.add_dummy_prefix = v != 0,
            (4, Field::Varint(v)) => m.remove_extra_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(())
}

fn parse_trainer(buf: &[u8], m: &mut SpModel) -> Result<(), String> {
    let mut r = Reader::new(buf);
    while !r.done() {
        if let (num, Field::Varint(v)) = r.field()? {
            match num {
                3 => m.model_type = int32(v),
                35 => m.byte_fallback = v != 0,
                40 => m.unk_id = int32(v),
                41 => m.bos_id = int32(v),
                42 => m.eos_id = int32(v),
                43 => m.pad_id = int32(v),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn msg(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn model(pieces: &[(&str, u64)], trainer: &[(u64, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, ty) in pieces {
            let mut b = Vec::new();
            msg(1, p.as_bytes(), &mut b);
            b.extend_from_slice(&[0x15, 0, 0, 0, 0]); // score, fixed32
            varint(3 << 3, &mut b);
            varint(*ty, &mut b);
            msg(1, &b, &mut out);
        }
        let mut t = Vec::new();
        for (f, v) in trainer {
            varint(f << 3, &mut t);
            varint(*v as u64, &mut t);
        }
        msg(2, &t, &mut out);
        out
    }

    #[test]
    fn counts_pieces_and_reads_ids() {
        let b = model(
            &[("<unk>", 2), ("<s>", 3), ("</s>", 3), ("a", 1)],
            &[(3, 2), (35, 1), (41, 1), (42, 2), (43, -1)],
        );
        let m = parse(&b).unwrap();
        assert_eq!(m.pieces.len(), 4);
        assert_eq!((m.model_type, m.byte_fallback), (2, true));
        assert_eq!((m.bos(), m.eos(), m.pad_id), (Some(1), Some(2), -1));
        assert_eq!(m.id_of("</s>"), Some(2));
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let good = model(&[("a", 1)], &[]);
        // The first piece is a complete message of good[..2 + good[1]]; every other cut is inside
        // a field and must be an error, never a panic.
        let piece_end = 2 + good[1] as usize;
        for cut in 1..good.len() {
            let r = parse(&good[..cut]);
            assert_eq!(r.is_ok(), cut == piece_end, "cut at {cut}: {r:?}");
        }
        assert!(parse(b"").is_err());
        assert!(parse(b"version https://git-lfs.github.com/spec/v1\n").is_err());
        assert!(
            parse(&[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .is_err()
        );
        assert!(parse(&[0x0b]).is_err()); // wire type 3 (groups)
        assert!(parse(&[0xff; 12]).is_err());
        assert!(parse(b"{\"a\": 1}").is_err());
    }
}
