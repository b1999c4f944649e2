//! A job for the kernel driver: buffers and the launches over them, encoded
//! as `kernels/emu/driver.cpp` reads them; and the buffers it sends back.

use tessera_kernel_launch::Launch;

use crate::EmuError;

/// A buffer of a [`Job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufId(u32);

/// A kernel argument: a buffer's device pointer or a scalar of the kernel
/// parameter's C type (the driver checks each against the kernel's signature).
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// A pointer to a buffer.
    Buf(BufId),
    /// `int`.
    Int(i32),
    /// `unsigned int`.
    Uint(u32),
    /// `float`.
    Float(f32),
    /// `unsigned long long`.
    U64(u64),
}

/// Element types a buffer can be filled from or read as.
pub trait Element: Copy {
    /// Bytes per element.
    const SIZE: usize;
    /// Appends the little-endian bytes.
    fn put(self, out: &mut Vec<u8>);
    /// Reads one from `SIZE` little-endian bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
        }
    )*};
}
element!(u16, u32, i32, u64, f32);

/// Buffers, each allocated to its exact size by the driver, and the kernel
/// launches that run over them in order.
#[derive(Debug, Default, Clone)]
pub struct Job {
    buffers: Vec<Vec<u8>>,
    launches: Vec<u8>,
    num_launches: u32,
}

impl Job {
    /// An empty job.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer holding `data`.
    pub fn buffer<T: Element>(&mut self, data: &[T]) -> BufId {
        let mut bytes = Vec::with_capacity(data.len() * T::SIZE);
        for &x in data {
            x.put(&mut bytes);
        }
        self.buffers.push(bytes);
        BufId(self.buffers.len() as u32 - 1)
    }

    /// A buffer of `len` elements of `T`, every byte `fill`: outputs start
    /// as garbage (0xFF, a NaN in floats) so that an element a kernel fails
    /// to write shows.
    pub fn filled<T: Element>(&mut self, len: usize, fill: u8) -> BufId {
        self.buffers.push(vec![fill; len * T::SIZE]);
        BufId(self.buffers.len() as u32 - 1)
    }

    /// Queues `kernel` with `launch` and `args`.
    pub fn launch(&mut self, kernel: &str, launch: Launch, args: &[Arg]) {
        let l = &mut self.launches;
        l.extend_from_slice(&(kernel.len() as u32).to_le_bytes());
        l.extend_from_slice(kernel.as_bytes());
        let (g, b) = (launch.grid, launch.block);
        for v in [g.0, g.1, g.2, b.0, b.1, b.2, launch.shared_mem_bytes] {
            l.extend_from_slice(&v.to_le_bytes());
        }
        l.extend_from_slice(&(args.len() as u32).to_le_bytes());
        for a in args {
            let (tag, payload): (u32, u64) = match *a {
                Arg::Buf(BufId(i)) => (0, u64::from(i)),
                Arg::Int(v) => (1, u64::from(v as u32)),
                Arg::Uint(v) => (2, u64::from(v)),
                Arg::Float(v) => (3, u64::from(v.to_bits())),
                Arg::U64(v) => (4, v),
            };
            l.extend_from_slice(&tag.to_le_bytes());
            l.extend_from_slice(&payload.to_le_bytes());
        }
        self.num_launches += 1;
    }

    /// The job file.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = b"EMU1".to_vec();
        out.extend_from_slice(&(self.buffers.len() as u32).to_le_bytes());
        for b in &self.buffers {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        out.extend_from_slice(&self.num_launches.to_le_bytes());
        out.extend_from_slice(&self.launches);
        out
    }
}

/// The job's buffers after its launches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    buffers: Vec<Vec<u8>>,
}

impl Output {
    /// Buffer `id` as elements of `T`.
    pub fn get<T: Element>(&self, id: BufId) -> Vec<T> {
        self.buffers[id.0 as usize]
            .chunks_exact(T::SIZE)
            .map(T::get)
            .collect()
    }

    /// Reads the driver's output file, checking it holds `job`'s buffers.
    pub(crate) fn decode(bytes: &[u8], job: &Job) -> Result<Self, EmuError> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], EmuError> {
            let s = bytes
                .get(at..at + n)
                .ok_or_else(|| EmuError::Output(format!("truncated at byte {at}")))?;
            at += n;
            Ok(s)
        };
        let count = u32::get(take(4)?) as usize;
        if count != job.buffers.len() {
            return Err(EmuError::Output(format!(
                "{count} buffers for {}",
                job.buffers.len()
            )));
        }
        let mut buffers = Vec::with_capacity(count);
        for sent in &job.buffers {
            let len = u64::get(take(8)?) as usize;
            if len != sent.len() {
                return Err(EmuError::Output(format!(
                    "a buffer of {len} bytes for {}",
                    sent.len()
                )));
            }
            buffers.push(take(len)?.to_vec());
        }
        Ok(Self { buffers })
    }
}
