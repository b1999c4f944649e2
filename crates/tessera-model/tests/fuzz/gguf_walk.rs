//! Finds the fields of a GGUF header that say how to read the rest (counts,
//! lengths, value types, tensor dimensions, types and offsets), so the fuzz
//! cases mutate exactly those.

/// What a field is, which decides the values tried in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// tensor or metadata count (u64)
    Count,
    /// a string's byte length (u64)
    StrLen,
    /// a metadata value's or array element's type (u32)
    ValueType,
    /// an array's element count (u64)
    ArrayLen,
    /// a tensor's number of dimensions (u32)
    NDims,
    /// one tensor dimension (u64)
    Dim,
    /// a tensor's GGML type (u32)
    DType,
    /// a tensor's data offset (u64)
    Offset,
}

impl Kind {
    /// Width of the field in bytes.
    pub fn width(self) -> usize {
        match self {
            Kind::ValueType | Kind::NDims | Kind::DType => 4,
            _ => 8,
        }
    }
}

/// A field at a byte offset; `in_metadata` tells it lies in the key-value section.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub at: usize,
    pub kind: Kind,
    pub in_metadata: bool,
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
    in_metadata: bool,
}

impl Walker<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u32(&mut self, kind: Option<Kind>) -> Option<u32> {
        self.note(kind);
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self, kind: Option<Kind>) -> Option<u64> {
        self.note(kind);
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn note(&mut self, kind: Option<Kind>) {
        if let Some(kind) = kind {
            self.fields.push(Field {
                at: self.pos,
                kind,
                in_metadata: self.in_metadata,
            });
        }
    }

    fn string(&mut self) -> Option<()> {
        let len = self.u64(Some(Kind::StrLen))?;
        self.take(usize::try_from(len).ok()?).map(|_| ())
    }

    fn value(&mut self, ty: u32) -> Option<()> {
        match ty {
            0 | 1 | 7 => self.take(1).map(|_| ()),
            2 | 3 => self.take(2).map(|_| ()),
            4..=6 => self.take(4).map(|_| ()),
            10..=12 => self.take(8).map(|_| ()),
            8 => self.string(),
            9 => {
                let elem = self.u32(Some(Kind::ValueType))?;
                let len = self.u64(Some(Kind::ArrayLen))?;
                for _ in 0..len {
                    self.value(elem)?;
                }
                Some(())
            }
            _ => None,
        }
    }
}

/// The header's fields, in file order; `None` if `bytes` is not a v2/v3 GGUF
/// header this walker understands.
pub fn fields(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut w = Walker {
        bytes,
        pos: 0,
        fields: Vec::new(),
        in_metadata: false,
    };
    if w.take(4)? != b"GGUF" || !matches!(w.u32(None)?, 2 | 3) {
        return None;
    }
    let tensors = w.u64(Some(Kind::Count))?;
    let kvs = w.u64(Some(Kind::Count))?;
    w.in_metadata = true;
    for _ in 0..kvs {
        w.string()?;
        let ty = w.u32(Some(Kind::ValueType))?;
        w.value(ty)?;
    }
    w.in_metadata = false;
    for _ in 0..tensors {
        w.string()?;
        let dims = w.u32(Some(Kind::NDims))?;
        for _ in 0..dims {
            w.u64(Some(Kind::Dim))?;
        }
        w.u32(Some(Kind::DType))?;
        w.u64(Some(Kind::Offset))?;
    }
    Some(w.fields)
}

/// The header's length in bytes (up to the end of the tensor infos).
pub fn header_len(bytes: &[u8]) -> Option<usize> {
    let fields = fields(bytes)?;
    let last = fields.last()?;
    Some(last.at + last.kind.width())
}
