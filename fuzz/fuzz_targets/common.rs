// Shared by the header targets: full validation of an accepted header, independent of the parser.
#![allow(dead_code)]

use ckpt::checkpoint::header::{Header, MAX_RANK, check_prefix, checked_nbytes, parse_header};

/// Parse a whole file held in memory, as `Shard::open` does after `fstat`.
pub fn parse_bytes(bytes: &[u8]) -> ckpt::Result<Header> {
    let n = check_prefix(bytes, bytes.len() as u64)?;
    let header = bytes
        .get(8..8 + n)
        .expect("check_prefix: header inside the file");
    parse_header(header, bytes.len() as u64)
}

/// `Ok` must mean: ranges tile `[0, data_len)` exactly, each matches shape x dtype, the data section
/// ends exactly at the end of the file, names are unique, non-empty, without control characters.
pub fn assert_fully_valid(h: &Header, file_len: usize) {
    let mut cursor = 0usize;
    let mut names = std::collections::HashSet::new();
    for t in &h.tensors {
        assert_eq!(t.begin, cursor, "tensors do not tile the data section");
        assert!(t.end >= t.begin);
        assert_eq!(
            checked_nbytes(t.dtype, &t.shape).expect("size"),
            t.end - t.begin
        );
        assert!(t.shape.len() <= MAX_RANK);
        assert!(!t.name.is_empty() && !t.name.chars().any(char::is_control));
        assert!(t.name != "__metadata__");
        assert!(names.insert(t.name.as_str()), "duplicate name accepted");
        cursor = t.end;
    }
    assert_eq!(cursor, h.data_len);
    assert_eq!(8 + h.header_len + h.data_len, file_len);
}

/// The reference crate's verdict; `None` when it panics (RELIABILITY.md A28, debug builds).
pub fn reference_accepts(bytes: &[u8]) -> Option<bool> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| safetensors::SafeTensors::read_metadata(bytes).is_ok());
    std::panic::set_hook(prev);
    r.ok()
}

/// Where we reject and the reference accepts, the reason must be a documented deviation
/// (docs/RELIABILITY.md "Differences from the reference reader").
pub fn documented_deviation(msg: &str) -> bool {
    [
        "duplicate tensor name",
        "twice",
        "control characters",
        "empty tensor name",
        "rank ",
        "over the limit",
        "more than",
        "BOM",
    ]
    .iter()
    .any(|p| msg.contains(p))
}
