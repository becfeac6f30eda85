//! A restricted pickle reader for `torch.save`'s `data.pkl` that executes nothing.
//!
//! Python's unpickler imports any `module.name` a `GLOBAL` opcode asks for and calls it through
//! `REDUCE`; that is how a checkpoint runs code (`os.system`, `builtins.exec`, ...). This reader is a
//! data-only interpreter of the opcodes `torch.save` emits (protocols 2-5, the subset listed in
//! [`run`]): a `GLOBAL` is resolved against a closed allow-list ([`Global`]) at the moment it is read,
//! and anything else is refused with its name and byte offset before a single further opcode runs.
//! Allowed "calls" are interpreted, not executed: `_rebuild_tensor_v2` records storage, offset, shape
//! and strides; `OrderedDict()` makes an empty dict; a persistent id names a storage entry of the
//! archive. Every resource is bounded by a named constant (stack, marks, memo, objects, nesting,
//! string and container sizes), and the interpreter never recurses, so no input can exhaust memory
//! or the call stack. Opcode semantics follow CPython's `Lib/pickle.py` and `Lib/pickletools.py`.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::collections::HashMap;

use crate::checkpoint::header::Dtype;
use crate::error::{Error, Result, escape};

/// Largest `data.pkl` accepted, in bytes.
pub const MAX_PICKLE_BYTES: usize = 256 * 1024 * 1024;
/// Deepest value stack accepted.
pub const MAX_STACK: usize = 1 << 20;
/// Most open `MARK`s at once.
pub const MAX_MARKS: usize = 1024;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 22;
/// Most objects (strings, containers, storages, tensors) one pickle may create.
pub const MAX_OBJECTS: usize = 1 << 22;
/// Deepest nesting of containers accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest string or bytes value, in bytes.
pub const MAX_STRING_BYTES: usize = 16 * 1024 * 1024;
/// Most elements in one container.
pub const MAX_ELEMENTS: usize = 1 << 22;
/// Highest tensor rank accepted.
pub const MAX_TENSOR_RANK: usize = 8;

/// The only globals a checkpoint may name. Anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict` (state dicts; backward-hook placeholders).
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `torch.<Type>Storage` / `torch.UntypedStorage`: a storage element type, only valid inside a
    /// persistent id.
    Storage(Dtype),
}

/// Resolve a global against the allow-list.
pub fn allowed_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", n) | ("torch.storage", n) => storage_dtype(n).map(Global::Storage),
        _ => None,
    }
}

/// Globals that `torch.save` itself writes for tensors ckpt does not read: refused as unsupported,
/// not as code a file tries to run. Returns what they are.
fn known_unsupported_global(module: &str, name: &str) -> Option<&'static str> {
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v3") => {
            "torch's rebuild function for storages tagged with a dtype (unsigned 16/32/64-bit integers, newer float8 and other types the legacy storages cannot name), which ckpt does not read"
        }
        ("torch._utils", "_rebuild_qtensor") => {
            "a quantized torch tensor, which ckpt does not read"
        }
        ("torch._utils", "_rebuild_sparse_tensor") | ("torch._utils", "_rebuild_sparse_csr") => {
            "a sparse torch tensor, which ckpt does not read"
        }
        // Storage types torch's weights-only unpickler accepts (so the file runs no code) whose
        // element types ckpt does not read.
        ("torch", "ComplexFloatStorage" | "ComplexDoubleStorage" | "ComplexHalfStorage") => {
            "a complex-valued storage, which ckpt does not read"
        }
        (
            "torch",
            "QInt8Storage" | "QUInt8Storage" | "QInt32Storage" | "QUInt4x2Storage"
            | "QUInt2x4Storage",
        ) => "a quantized torch storage, which ckpt does not read",
        ("torch._utils", "_rebuild_meta_tensor_no_storage") => {
            "a tensor on the `meta` device, which holds no data"
        }
        ("torch._utils", "_rebuild_wrapper_subclass")
        | ("torch._tensor", "_rebuild_from_type_v2")
        | ("torch._utils", "_rebuild_device_tensor_from_numpy") => {
            "a tensor subclass or device tensor, which ckpt does not read"
        }
        _ => return None,
    })
}

/// The element type of a `torch.*Storage` class name.
pub fn storage_dtype(name: &str) -> Option<Dtype> {
    Some(match name {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" | "UntypedStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        "Float8_e4m3fnStorage" => Dtype::F8_E4M3,
        "Float8_e5m2Storage" => Dtype::F8_E5M2,
        _ => return None,
    })
}

/// A small value: scalars inline, everything else an index into [`Pickle::objects`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// An allowed global.
    Global(Global),
    /// An object of the arena.
    Obj(usize),
}

/// A storage referenced by a persistent id: entry `data/<key>` of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The entry key (`data/<key>`).
    pub key: String,
    /// Element type.
    pub dtype: Dtype,
    /// Number of elements the pickle declares.
    pub numel: usize,
}

/// A tensor rebuilt by `_rebuild_tensor_v2`: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage object (an index into [`Pickle::objects`] holding an [`Object::Storage`]).
    pub storage: usize,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub strides: Vec<usize>,
}

/// A heap object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A `str`.
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict` or `OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A storage.
    Storage(StorageRef),
    /// A tensor or parameter.
    Tensor(TensorRef),
}

/// The result of reading a pickle.
#[derive(Debug)]
pub struct Pickle {
    /// Every object created.
    pub objects: Vec<Object>,
    /// The top-level value.
    pub root: Value,
    /// Offset just past the `STOP` opcode (where a following pickle in the same stream begins).
    pub end: usize,
}

impl Pickle {
    /// The object a value refers to.
    pub fn obj(&self, v: Value) -> Option<&Object> {
        match v {
            Value::Obj(i) => self.objects.get(i),
            _ => None,
        }
    }

    /// The string a value holds.
    pub fn str(&self, v: Value) -> Option<&str> {
        match self.obj(v)? {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short description of a value's type, for listings of skipped entries.
    pub fn describe(&self, v: Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {}", if b { "True" } else { "False" }),
            Value::Int(i) => format!("int {i}"),
            Value::Float(f) => format!("float {f}"),
            Value::Global(_) => "a type".into(),
            Value::Obj(_) => match self.obj(v) {
                Some(Object::Str(s)) if s.len() <= 40 => format!("str \"{}\"", escape(s)),
                Some(Object::Str(s)) => format!("str of {} bytes", s.len()),
                Some(Object::Bytes(b)) => format!("bytes of {} bytes", b.len()),
                Some(Object::List(l)) => format!("list of {}", l.len()),
                Some(Object::Tuple(l)) => format!("tuple of {}", l.len()),
                Some(Object::Dict(d)) => format!("dict of {}", d.len()),
                Some(Object::Storage(_)) => "storage".into(),
                Some(Object::Tensor(_)) => "tensor".into(),
                None => "?".into(),
            },
        }
    }
}

/// Resolves a persistent id's storage entry: `(key, dtype, numel) -> ()`, called once per id, so the
/// caller can check the entry exists and is large enough.
pub type StorageCheck<'a> = dyn FnMut(&StorageRef) -> Result<()> + 'a;

struct Machine<'a> {
    code: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Object>,
    depth: Vec<u8>,
    storages: HashMap<String, usize>,
}

/// The Python 3 module a protocol-2 pickle's Python 2 module name stands for (CPython's
/// `_compat_pickle`), so a refusal names what the file would really call.
fn py3_alias(module: &str) -> Option<&'static str> {
    Some(match module {
        "__builtin__" => "builtins",
        "posix" | "nt" => "os",
        "commands" => "subprocess",
        _ => return None,
    })
}

fn op_name(op: u8) -> String {
    match op {
        b'i' => "INST".into(),
        b'o' => "OBJ".into(),
        0x81 => "NEWOBJ".into(),
        0x92 => "NEWOBJ_EX".into(),
        0x82..=0x84 => "EXT".into(),
        b'P' => "PERSID".into(),
        0x97 | 0x98 => "buffer".into(),
        _ if op.is_ascii_graphic() => format!("`{}` (0x{op:02x})", op as char),
        _ => format!("0x{op:02x}"),
    }
}

impl<'a> Machine<'a> {
    fn err(&self, at: usize, msg: impl std::fmt::Display) -> Error {
        Error::bad_data(format!("pickle offset {at}: {msg}"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.code.len())
            .ok_or_else(|| {
                self.err(
                    self.pos,
                    "truncated (an opcode's argument runs past the end)",
                )
            })?;
        let s = self.code.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn line(&mut self, at: usize) -> Result<&'a str> {
        let rest = self.code.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .take(256)
            .position(|&c| c == b'\n')
            .ok_or_else(|| {
                self.err(
                    at,
                    "a GLOBAL name without its newline (or longer than 256 bytes)",
                )
            })?;
        let s = self.take(n)?;
        self.take(1)?;
        std::str::from_utf8(s).map_err(|_| self.err(at, "a GLOBAL name that is not UTF-8"))
    }

    fn push(&mut self, v: Value, at: usize) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(at, format!("the stack exceeds {MAX_STACK} values")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self, at: usize) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(at, "pop from an empty stack"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err(at, "pop from an empty stack"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err(at, "no MARK to pop to"))?;
        if m > self.stack.len() {
            return Err(self.err(at, "MARK beyond the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn depth_of(&self, v: Value) -> u8 {
        match v {
            Value::Obj(i) => self.depth.get(i).copied().unwrap_or(0),
            _ => 0,
        }
    }

    fn alloc(&mut self, o: Object, depth: u8, at: usize) -> Result<Value> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(self.err(at, format!("more than {MAX_OBJECTS} objects")));
        }
        if usize::from(depth) > MAX_DEPTH {
            return Err(self.err(at, format!("containers nested deeper than {MAX_DEPTH}")));
        }
        let i = self.objects.len();
        self.objects.push(o);
        self.depth.push(depth);
        Ok(Value::Obj(i))
    }

    fn container(&mut self, items: &[Value]) -> u8 {
        items
            .iter()
            .map(|&v| self.depth_of(v))
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    }

    fn tuple(&mut self, items: Vec<Value>, at: usize) -> Result<Value> {
        if items.len() > MAX_ELEMENTS {
            return Err(self.err(at, format!("a tuple of more than {MAX_ELEMENTS} elements")));
        }
        let d = self.container(&items);
        self.alloc(Object::Tuple(items), d, at)
    }

    fn string(&mut self, n: usize, at: usize) -> Result<Value> {
        if n > MAX_STRING_BYTES {
            return Err(self.err(
                at,
                format!("a string of {n} bytes (limit {MAX_STRING_BYTES})"),
            ));
        }
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err(at, "a string that is not UTF-8"))?;
        self.alloc(Object::Str(s.to_string()), 0, at)
    }

    fn bytes(&mut self, n: usize, at: usize) -> Result<Value> {
        if n > MAX_STRING_BYTES {
            return Err(self.err(
                at,
                format!("a bytes value of {n} bytes (limit {MAX_STRING_BYTES})"),
            ));
        }
        let b = self.take(n)?.to_vec();
        self.alloc(Object::Bytes(b), 0, at)
    }

    fn global(&mut self, module: &str, name: &str, at: usize) -> Result<Value> {
        if let Some(what) = known_unsupported_global(module, name) {
            return Err(Error::unsupported(format!(
                "`{module}.{name}` at pickle offset {at}: {what}; ckpt reads tensors pickled with `torch._utils._rebuild_tensor_v2` (F32, F64, F16, BF16, integer, bool and fp8 storages)"
            ))
            .hint("save the state dict as safetensors (`safetensors.torch.save_file`), or cast the tensors to a supported dtype before `torch.save`"));
        }
        match allowed_global(module, name) {
            Some(g) => Ok(Value::Global(g)),
            None => Err(Error::bad_data(format!(
                "refused global `{}.{}`{} at pickle offset {at}: a checkpoint may only name tensor-rebuilding functions, torch storage types and collections.OrderedDict (ckpt never imports or runs code from a file)",
                escape(module),
                escape(name),
                py3_alias(module)
                    .map(|m| format!(" (Python 3: `{m}.{}`)", escape(name)))
                    .unwrap_or_default()
            ))
            .hint("this file tries to run code when loaded with torch.load; do not load it with pickle")),
        }
    }

    /// Append `v` to the container `target` (list APPEND / dict SETITEM), checking sizes and depth.
    fn extend(&mut self, target: Value, items: Vec<Value>, dict: bool, at: usize) -> Result<()> {
        let d = self.container(&items);
        let i = match target {
            Value::Obj(i) => i,
            _ => return Err(self.err(at, "APPEND/SETITEM on a value that is not a container")),
        };
        if usize::from(d) > MAX_DEPTH {
            return Err(self.err(at, format!("containers nested deeper than {MAX_DEPTH}")));
        }
        match (self.objects.get_mut(i), dict) {
            (Some(Object::List(l)), false) => {
                if l.len().saturating_add(items.len()) > MAX_ELEMENTS {
                    return Err(
                        self.err(at, format!("a list of more than {MAX_ELEMENTS} elements"))
                    );
                }
                l.extend(items);
            }
            (Some(Object::Dict(m)), true) => {
                if !items.len().is_multiple_of(2) {
                    return Err(self.err(at, "SETITEMS with an odd number of values"));
                }
                if m.len().saturating_add(items.len() / 2) > MAX_ELEMENTS {
                    return Err(self.err(at, format!("a dict of more than {MAX_ELEMENTS} entries")));
                }
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    m.push((k, v));
                }
            }
            _ => {
                return Err(self.err(
                    at,
                    if dict {
                        "SETITEM on a value that is not a dict"
                    } else {
                        "APPEND on a value that is not a list"
                    },
                ));
            }
        }
        if let Some(slot) = self.depth.get_mut(i) {
            *slot = (*slot).max(d);
        }
        Ok(())
    }

    fn int_arg(&self, v: Value, what: &str, at: usize) -> Result<usize> {
        match v {
            Value::Int(i) => {
                usize::try_from(i).map_err(|_| self.err(at, format!("{what} is negative ({i})")))
            }
            _ => Err(self.err(at, format!("{what} is not an int"))),
        }
    }

    fn int_tuple(&self, v: Value, what: &str, at: usize) -> Result<Vec<usize>> {
        let items = match v {
            Value::Obj(i) => match self.objects.get(i) {
                Some(Object::Tuple(t)) => t.clone(),
                _ => return Err(self.err(at, format!("{what} is not a tuple"))),
            },
            _ => return Err(self.err(at, format!("{what} is not a tuple"))),
        };
        if items.len() > MAX_TENSOR_RANK {
            return Err(self.err(
                at,
                format!(
                    "{what} has {} dimensions (limit {MAX_TENSOR_RANK})",
                    items.len()
                ),
            ));
        }
        items
            .into_iter()
            .map(|x| self.int_arg(x, what, at))
            .collect()
    }

    fn is_empty_dict(&self, v: Value) -> bool {
        matches!(v, Value::Obj(i) if matches!(self.objects.get(i), Some(Object::Dict(d)) if d.is_empty()))
    }

    fn reduce(&mut self, func: Value, args: Value, at: usize) -> Result<Value> {
        let args = match args {
            Value::Obj(i) => match self.objects.get(i) {
                Some(Object::Tuple(t)) => t.clone(),
                _ => return Err(self.err(at, "REDUCE arguments are not a tuple")),
            },
            _ => return Err(self.err(at, "REDUCE arguments are not a tuple")),
        };
        match func {
            Value::Global(Global::OrderedDict) => {
                if !args.is_empty() {
                    return Err(self.err(at, "OrderedDict called with arguments (torch.save writes `OrderedDict()`)"));
                }
                self.alloc(Object::Dict(Vec::new()), 1, at)
            }
            Value::Global(Global::RebuildTensor) => {
                let [storage, offset, size, stride, grad, hooks, rest @ ..] = args.as_slice() else {
                    return Err(self.err(at, "_rebuild_tensor_v2 with fewer than 6 arguments"));
                };
                if rest.len() > 1 {
                    return Err(self.err(at, "_rebuild_tensor_v2 with more than 7 arguments"));
                }
                let storage = match *storage {
                    Value::Obj(i) if matches!(self.objects.get(i), Some(Object::Storage(_))) => i,
                    _ => return Err(self.err(at, "_rebuild_tensor_v2: the first argument is not a storage")),
                };
                if !matches!(grad, Value::Bool(_)) {
                    return Err(self.err(at, "_rebuild_tensor_v2: requires_grad is not a bool"));
                }
                if !self.is_empty_dict(*hooks) {
                    return Err(self.err(at, "_rebuild_tensor_v2: backward hooks are not an empty OrderedDict"));
                }
                let offset = self.int_arg(*offset, "the storage offset", at)?;
                let shape = self.int_tuple(*size, "the size", at)?;
                let strides = self.int_tuple(*stride, "the stride", at)?;
                if shape.len() != strides.len() {
                    return Err(self.err(at, "size and stride have different lengths"));
                }
                self.alloc(Object::Tensor(TensorRef { storage, offset, shape, strides }), 0, at)
            }
            Value::Global(Global::RebuildParameter) => {
                let [data, grad, hooks] = args.as_slice() else {
                    return Err(self.err(at, "_rebuild_parameter takes 3 arguments"));
                };
                let ok = matches!(*data, Value::Obj(i) if matches!(self.objects.get(i), Some(Object::Tensor(_))));
                if !ok || !matches!(grad, Value::Bool(_)) || !self.is_empty_dict(*hooks) {
                    return Err(self.err(at, "_rebuild_parameter: arguments are not (tensor, bool, empty hooks)"));
                }
                Ok(*data)
            }
            Value::Global(Global::Storage(_)) => {
                Err(self.err(at, "a storage type called as a function (torch.save only names storage types in persistent ids)"))
            }
            _ => Err(self.err(at, "REDUCE on a value that is not an allowed function")),
        }
    }

    fn persistent(&mut self, pid: Value, at: usize, check: &mut StorageCheck) -> Result<Value> {
        let items = match pid {
            Value::Obj(i) => match self.objects.get(i) {
                Some(Object::Tuple(t)) => t.clone(),
                _ => return Err(self.err(at, "a persistent id that is not a tuple")),
            },
            _ => return Err(self.err(at, "a persistent id that is not a tuple")),
        };
        // The legacy (pre-1.6) format adds a sixth field, view metadata, always None since 1.x.
        let [tag, ty, key, location, numel] = match items.as_slice() {
            [a, b, c, d, e] | [a, b, c, d, e, Value::None] => [a, b, c, d, e],
            _ => {
                return Err(self.err(
                    at,
                    "a persistent id that is not ('storage', type, key, location, numel)",
                ));
            }
        };
        let str_of = |v: Value| match v {
            Value::Obj(i) => match self.objects.get(i) {
                Some(Object::Str(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        if str_of(*tag).as_deref() != Some("storage") || str_of(*location).is_none() {
            return Err(self.err(
                at,
                "a persistent id that is not ('storage', type, key, location, numel)",
            ));
        }
        let Value::Global(Global::Storage(dtype)) = *ty else {
            return Err(self.err(
                at,
                "a persistent id whose storage type is not a torch storage type",
            ));
        };
        let key = str_of(*key).ok_or_else(|| self.err(at, "a storage key that is not a string"))?;
        if key.is_empty()
            || key.len() > 64
            || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Err(self.err(
                at,
                format!("storage key `{}` is not a plain entry name", escape(&key)),
            ));
        }
        let numel = self.int_arg(*numel, "the storage size", at)?;
        let s = StorageRef {
            key: key.clone(),
            dtype,
            numel,
        };
        if let Some(&prev) = self.storages.get(&key) {
            if self.objects.get(prev) != Some(&Object::Storage(s)) {
                return Err(self.err(
                    at,
                    format!(
                        "storage `{}` is declared twice with different types or sizes",
                        escape(&key)
                    ),
                ));
            }
            return Ok(Value::Obj(prev));
        }
        check(&s).map_err(|e| {
            let m = format!("pickle offset {at}: {}", e.message());
            Error::new(e.kind(), m)
        })?;
        let v = self.alloc(Object::Storage(s), 0, at)?;
        if let Value::Obj(i) = v {
            self.storages.insert(key, i);
        }
        Ok(v)
    }

    fn memo_put(&mut self, k: u32, at: usize) -> Result<()> {
        let v = *self
            .stack
            .last()
            .ok_or_else(|| self.err(at, "PUT with an empty stack"))?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&k) {
            return Err(self.err(at, format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(k, v);
        Ok(())
    }

    fn memo_get(&mut self, k: u32, at: usize) -> Result<()> {
        let v = *self
            .memo
            .get(&k)
            .ok_or_else(|| self.err(at, format!("GET of memo entry {k}, which was never set")))?;
        self.push(v, at)
    }
}

/// Interpret `code` (the bytes of `data.pkl`). `check` is called once for each distinct storage a
/// persistent id names (it checks the archive entry). Returns the object graph; nothing is executed.
///
/// Opcodes read: PROTO FRAME STOP MARK POP POP_MARK DUP, NONE NEWTRUE NEWFALSE BININT BININT1
/// BININT2 LONG1 BINFLOAT, BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES,
/// EMPTY_TUPLE TUPLE TUPLE1-3 EMPTY_LIST APPEND APPENDS EMPTY_DICT SETITEM SETITEMS, BINPUT
/// LONG_BINPUT MEMOIZE BINGET LONG_BINGET, GLOBAL STACK_GLOBAL (allow-listed), REDUCE (allow-listed
/// functions only), BUILD (state of an OrderedDict, ignored), BINPERSID (storages). Every other
/// opcode is refused by name.
pub fn run(code: &[u8], check: &mut StorageCheck) -> Result<Pickle> {
    if code.len() > MAX_PICKLE_BYTES {
        return Err(Error::bad_data(format!(
            "the pickle is {} bytes (limit {MAX_PICKLE_BYTES})",
            code.len()
        )));
    }
    let mut m = Machine {
        code,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
        depth: Vec::new(),
        storages: HashMap::new(),
    };
    loop {
        let at = m.pos;
        let op = m
            .take(1)
            .map_err(|_| m.err(at, "the pickle ends without STOP"))?;
        let op = op.first().copied().unwrap_or(0);
        match op {
            0x80 => {
                let p = m.u8()?;
                if !(2..=5).contains(&p) {
                    return Err(m.err(at, format!("pickle protocol {p} (torch.save writes 2)")));
                }
            }
            0x95 => {
                m.u64()?;
            }
            b'.' => {
                let root = m.pop(at)?;
                return Ok(Pickle {
                    objects: m.objects,
                    root,
                    end: m.pos,
                });
            }
            b'(' => {
                if m.marks.len() >= MAX_MARKS {
                    return Err(m.err(at, format!("more than {MAX_MARKS} nested MARKs")));
                }
                m.marks.push(m.stack.len());
            }
            b'0' => {
                m.pop(at)?;
            }
            b'1' => {
                m.pop_mark(at)?;
            }
            b'2' => {
                let v = *m
                    .stack
                    .last()
                    .ok_or_else(|| m.err(at, "DUP with an empty stack"))?;
                m.push(v, at)?;
            }
            b'N' => m.push(Value::None, at)?,
            0x88 => m.push(Value::Bool(true), at)?,
            0x89 => m.push(Value::Bool(false), at)?,
            b'J' => {
                let v = m.u32()?;
                m.push(
                    Value::Int(i64::from(i32::from_le_bytes(v.to_le_bytes()))),
                    at,
                )?;
            }
            b'K' => {
                let v = m.u8()?;
                m.push(Value::Int(i64::from(v)), at)?;
            }
            b'M' => {
                let v = m.u16()?;
                m.push(Value::Int(i64::from(v)), at)?;
            }
            0x8a => {
                let n = usize::from(m.u8()?);
                if n > 8 {
                    return Err(m.err(
                        at,
                        format!("an int of {n} bytes (ckpt reads ints up to 64 bits)"),
                    ));
                }
                let b = m.take(n)?;
                let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
                let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
                if let Some(dst) = buf.get_mut(..n) {
                    dst.copy_from_slice(b);
                }
                m.push(Value::Int(i64::from_le_bytes(buf)), at)?;
            }
            b'G' => {
                let b = m.take(8)?;
                let v = f64::from_be_bytes(b.try_into().unwrap_or_default());
                m.push(Value::Float(v), at)?;
            }
            b'X' => {
                let n = m.u32()?;
                let v = m.string(usize::try_from(n).unwrap_or(usize::MAX), at)?;
                m.push(v, at)?;
            }
            0x8c => {
                let n = m.u8()?;
                let v = m.string(usize::from(n), at)?;
                m.push(v, at)?;
            }
            0x8d => {
                let n = m.u64()?;
                let v = m.string(usize::try_from(n).unwrap_or(usize::MAX), at)?;
                m.push(v, at)?;
            }
            b'B' => {
                let n = m.u32()?;
                let v = m.bytes(usize::try_from(n).unwrap_or(usize::MAX), at)?;
                m.push(v, at)?;
            }
            b'C' => {
                let n = m.u8()?;
                let v = m.bytes(usize::from(n), at)?;
                m.push(v, at)?;
            }
            b')' => {
                let v = m.tuple(Vec::new(), at)?;
                m.push(v, at)?;
            }
            b't' => {
                let items = m.pop_mark(at)?;
                let v = m.tuple(items, at)?;
                m.push(v, at)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op.saturating_sub(0x84));
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(m.pop(at)?);
                }
                items.reverse();
                let v = m.tuple(items, at)?;
                m.push(v, at)?;
            }
            b']' => {
                let v = m.alloc(Object::List(Vec::new()), 1, at)?;
                m.push(v, at)?;
            }
            b'}' => {
                let v = m.alloc(Object::Dict(Vec::new()), 1, at)?;
                m.push(v, at)?;
            }
            b'a' => {
                let v = m.pop(at)?;
                let target = *m
                    .stack
                    .last()
                    .ok_or_else(|| m.err(at, "APPEND with an empty stack"))?;
                m.extend(target, vec![v], false, at)?;
            }
            b'e' => {
                let items = m.pop_mark(at)?;
                let target = m.pop(at)?;
                m.push(target, at)?;
                m.extend(target, items, false, at)?;
            }
            b's' => {
                let v = m.pop(at)?;
                let k = m.pop(at)?;
                let target = *m
                    .stack
                    .last()
                    .ok_or_else(|| m.err(at, "SETITEM with an empty stack"))?;
                m.extend(target, vec![k, v], true, at)?;
            }
            b'u' => {
                let items = m.pop_mark(at)?;
                let target = m.pop(at)?;
                m.push(target, at)?;
                m.extend(target, items, true, at)?;
            }
            b'q' => {
                let k = m.u8()?;
                m.memo_put(u32::from(k), at)?;
            }
            b'r' => {
                let k = m.u32()?;
                m.memo_put(k, at)?;
            }
            0x94 => {
                let k = u32::try_from(m.memo.len()).unwrap_or(u32::MAX);
                m.memo_put(k, at)?;
            }
            b'h' => {
                let k = m.u8()?;
                m.memo_get(u32::from(k), at)?;
            }
            b'j' => {
                let k = m.u32()?;
                m.memo_get(k, at)?;
            }
            b'c' => {
                let module = m.line(at)?;
                let name = m.line(at)?;
                let v = m.global(module, name, at)?;
                m.push(v, at)?;
            }
            0x93 => {
                let name = m.pop(at)?;
                let module = m.pop(at)?;
                let (Some(Object::Str(module)), Some(Object::Str(name))) = (
                    match module {
                        Value::Obj(i) => m.objects.get(i),
                        _ => None,
                    },
                    match name {
                        Value::Obj(i) => m.objects.get(i),
                        _ => None,
                    },
                ) else {
                    return Err(m.err(at, "STACK_GLOBAL with names that are not strings"));
                };
                let (module, name) = (module.clone(), name.clone());
                let v = m.global(&module, &name, at)?;
                m.push(v, at)?;
            }
            b'R' => {
                let args = m.pop(at)?;
                let func = m.pop(at)?;
                let v = m.reduce(func, args, at)?;
                m.push(v, at)?;
            }
            b'b' => {
                let state = m.pop(at)?;
                let target = *m
                    .stack
                    .last()
                    .ok_or_else(|| m.err(at, "BUILD with an empty stack"))?;
                let target_is_dict = matches!(target, Value::Obj(i) if matches!(m.objects.get(i), Some(Object::Dict(_))));
                let state_ok = matches!(state, Value::None)
                    || matches!(state, Value::Obj(i) if matches!(m.objects.get(i), Some(Object::Dict(_))));
                if !target_is_dict || !state_ok {
                    return Err(m.err(
                        at,
                        "BUILD on something other than an OrderedDict's attributes",
                    ));
                }
            }
            b'Q' => {
                let pid = m.pop(at)?;
                let v = m.persistent(pid, at, check)?;
                m.push(v, at)?;
            }
            _ => {
                return Err(m.err(
                    at,
                    format!(
                        "opcode {} is not one torch.save writes for tensors; refused",
                        op_name(op)
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn ok(_: &StorageRef) -> Result<()> {
        Ok(())
    }

    #[test]
    fn torch_globals_it_does_not_read_are_unsupported_not_hostile() {
        // {'w': _rebuild_tensor_v3(...)}: refused at the global, named as torch's own, exit 2
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v3\nq\x02.";
        let e = run(p, &mut ok).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("_rebuild_tensor_v3") && msg.contains("does not read"),
            "{msg}"
        );
        assert!(!msg.contains("refused global"), "{msg}");
        assert_eq!(e.kind(), crate::error::ErrorKind::Unsupported);
        // a complex storage (torch.load(weights_only=True) reads it: no code runs)
        let p = b"\x80\x02ctorch\nComplexFloatStorage\nq\x00.";
        let e = run(p, &mut ok).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("complex-valued"), "{e}");
        // an unknown global is still refused as one
        let p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v9\nq\x00.";
        let msg = run(p, &mut ok).unwrap_err().to_string();
        assert!(msg.contains("refused global"), "{msg}");
    }

    #[test]
    fn reads_a_tensor_dict() {
        // {'w': _rebuild_tensor_v2(persistent(('storage', FloatStorage, '0', 'cpu', 6)), 0, (2, 3), (3, 1), False, OrderedDict())}
        let mut p = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x06tq\x07QK\x00K\x02K\x03\x86q\x08K\x03K\x01\x86q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs".to_vec();
        p.push(b'.');
        let r = run(&p, &mut ok).unwrap();
        let Some(Object::Dict(d)) = r.obj(r.root) else {
            panic!()
        };
        assert_eq!(r.str(d[0].0), Some("w"));
        let Some(Object::Tensor(t)) = r.obj(d[0].1) else {
            panic!()
        };
        assert_eq!(
            (t.shape.clone(), t.strides.clone()),
            (vec![2, 3], vec![3, 1])
        );
    }

    #[test]
    fn refuses_code_globals_by_name() {
        for (m, n) in [
            ("os", "system"),
            ("builtins", "exec"),
            ("subprocess", "Popen"),
            ("posix", "system"),
        ] {
            let mut p = b"\x80\x02".to_vec();
            p.extend_from_slice(format!("c{m}\n{n}\nX\x02\x00\x00\x00idtR.").as_bytes());
            let e = run(&p, &mut ok).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{m}.{n}`")) && e.contains("offset 2"),
                "{e}"
            );
        }
        let p = b"\x80\x04\x8c\x02os\x8c\x06system\x93.";
        assert!(
            run(p, &mut ok)
                .unwrap_err()
                .to_string()
                .contains("`os.system`")
        );
    }

    #[test]
    fn bounds_nesting_marks_and_truncation() {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', 200));
        p.extend(std::iter::repeat_n(b'a', 199));
        p.push(b'.');
        assert!(
            run(&p, &mut ok)
                .unwrap_err()
                .to_string()
                .contains("nested deeper")
        );
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', 5000));
        assert!(run(&p, &mut ok).unwrap_err().to_string().contains("MARK"));
        for op in [b"i".as_slice(), b"o", b"\x81", b"P1\n", b"\x82\x01"] {
            let mut p = b"\x80\x02".to_vec();
            p.extend_from_slice(op);
            assert!(
                run(&p, &mut ok)
                    .unwrap_err()
                    .to_string()
                    .contains("refused")
            );
        }
        assert!(run(b"\x80\x02X\xff\xff\xff\x7f", &mut ok).is_err());
        assert!(run(b"\x80\x02h\x05.", &mut ok).is_err());
        assert!(run(b"", &mut ok).is_err());
    }

    fn err(code: &[u8]) -> String {
        run(code, &mut ok).unwrap_err().to_string()
    }

    /// One crafted stream per refusal of the interpreter, each named.
    #[test]
    fn each_refusal_is_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x80\x06N.", "protocol 6"),
            (b"\x80\x02N", "without STOP"),
            (b"\x80\x02.", "empty stack"),
            (b"\x80\x02N(.", "empty stack"),
            (b"\x80\x02NNt.", "no MARK"),
            (
                b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00.",
                "ints up to 64 bits",
            ),
            (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "not UTF-8"),
            (b"\x80\x02cos\nsystem\n", "`os.system`"),
            (b"\x80\x02cposix\nsystem\n)R.", "(Python 3: `os.system`)"),
            (b"\x80\x02ctorch\nTensor\n.", "`torch.Tensor`"),
            (b"\x80\x02ccollections\nOrderedDict", "newline"),
            (b"\x80\x04K\x01K\x02\x93.", "not strings"),
            (b"\x80\x02N)R.", "not an allowed function"),
            (b"\x80\x02ctorch\nFloatStorage\n)R.", "storage type called"),
            (
                b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.",
                "with arguments",
            ),
            (b"\x80\x02ccollections\nOrderedDict\nK\x01R.", "not a tuple"),
            (
                b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(NNNNNNtR.",
                "first argument is not a storage",
            ),
            (
                b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.",
                "fewer than 6",
            ),
            (
                b"\x80\x02ctorch._utils\n_rebuild_parameter\nNNN\x87R.",
                "_rebuild_parameter",
            ),
            (b"\x80\x02NNb.", "BUILD"),
            (b"\x80\x02K\x01Q.", "persistent id that is not a tuple"),
            (
                b"\x80\x02X\x07\x00\x00\x00storageNNNN(tQ.",
                "not ('storage'",
            ),
            (b"\x80\x02K\x01K\x02a.", "not a container"),
            (b"\x80\x02}K\x01s.", "empty stack"),
            (b"\x80\x02](K\x01K\x02K\x03u.", "not a dict"),
            (b"\x80\x02}(K\x01u.", "odd number"),
            (b"\x80\x02j\x00\x00\x01\x00.", "never set"),
            (b"\x80\x02q\x00.", "empty stack"),
            (b"\x80\x02i", "INST"),
            (b"\x80\x02\x81", "NEWOBJ"),
            (b"\x80\x02\x97", "buffer"),
            (b"\x80\x02I1\n.", "`I`"),
        ];
        let bad: Vec<String> = cases
            .iter()
            .filter_map(|(code, want)| {
                let e = match run(code, &mut ok) {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => e.to_string(),
                };
                (!e.contains(want))
                    .then(|| format!("{:?}: {e} (wanted {want:?})", String::from_utf8_lossy(code)))
            })
            .collect();
        assert!(bad.is_empty(), "{bad:#?}");
    }

    fn storage_pid(key: &str, ty: &str, numel: u8) -> Vec<u8> {
        let mut p = b"(X\x07\x00\x00\x00storagec".to_vec();
        p.extend_from_slice(format!("torch\n{ty}\n").as_bytes());
        p.push(b'X');
        p.extend_from_slice(&(key.len() as u32).to_le_bytes());
        p.extend_from_slice(key.as_bytes());
        p.extend_from_slice(b"X\x03\x00\x00\x00cpuK");
        p.push(numel);
        p.extend_from_slice(b"tQ");
        p
    }

    #[test]
    fn storages_are_checked_once_and_must_agree() {
        // The same key twice with the same type: one check, one object.
        let mut p = b"\x80\x02".to_vec();
        p.extend(storage_pid("0", "HalfStorage", 4));
        p.extend(storage_pid("0", "HalfStorage", 4));
        p.extend_from_slice(b"\x86.");
        let mut n = 0;
        let r = run(&p, &mut |s| {
            assert_eq!((s.key.as_str(), s.dtype, s.numel), ("0", Dtype::F16, 4));
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        let Some(Object::Tuple(t)) = r.obj(r.root) else {
            panic!()
        };
        assert_eq!(t[0], t[1]);
        // The same key with another type.
        let mut p = b"\x80\x02".to_vec();
        p.extend(storage_pid("0", "HalfStorage", 4));
        p.extend(storage_pid("0", "FloatStorage", 4));
        p.extend_from_slice(b"\x86.");
        assert!(err(&p).contains("declared twice"));
        // A key that is not a plain entry name.
        let mut p = b"\x80\x02".to_vec();
        p.extend(storage_pid("../x", "HalfStorage", 4));
        p.push(b'.');
        assert!(err(&p).contains("not a plain entry name"));
        // The caller's refusal carries the offset.
        let mut p = b"\x80\x02".to_vec();
        p.extend(storage_pid("7", "BFloat16Storage", 4));
        p.push(b'.');
        let e = run(&p, &mut |_| Err(Error::bad_data("missing entry")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pickle offset") && e.contains("missing entry"),
            "{e}"
        );
    }

    #[test]
    fn strings_over_the_limit_are_refused_before_reading() {
        let mut p = b"\x80\x02\x8d".to_vec();
        p.extend_from_slice(&((MAX_STRING_BYTES as u64) + 1).to_le_bytes());
        assert!(err(&p).contains("limit"));
        let mut p = b"\x80\x02B".to_vec();
        p.extend_from_slice(&((MAX_STRING_BYTES as u32) + 1).to_le_bytes());
        assert!(err(&p).contains("limit"));
    }
}
