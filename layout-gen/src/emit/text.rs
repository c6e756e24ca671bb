//! How the emitters put out text: small pieces appended without `core::fmt`, gathered in a
//! buffer that goes to its writer a chunk at a time.
//!
//! The output for 2,000 classes is millions of small pieces (string slices, integers, booleans)
//! and several megabytes. [`push!`] appends each piece directly, integers through `itoa`, where a
//! `write!` would go through `core::fmt`'s dynamic dispatch and padding logic. [`Chunked`] keeps
//! only [`CHUNK`] bytes in memory: building the 6 MB shim as one string and then writing it cost
//! about four times as much in page faults and copies as producing its text.

use std::io;

/// How many bytes [`Chunked`] gathers before passing them on: small enough to stay in cache.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Text on its way to a writer, a chunk at a time. Append to [`Chunked::text`], call
/// [`Chunked::flush_if_full`] between items, and [`Chunked::finish`] at the end; the first write
/// error stops all further writes and is returned by `finish`.
pub(crate) struct Chunked<'w> {
    buffer: String,
    sink: &'w mut dyn io::Write,
    error: Option<io::Error>,
}

impl<'w> Chunked<'w> {
    pub(crate) fn new(sink: &'w mut dyn io::Write) -> Self {
        Self {
            buffer: String::with_capacity(CHUNK + CHUNK / 4),
            sink,
            error: None,
        }
    }

    /// The buffer to append to.
    pub(crate) fn text(&mut self) -> &mut String {
        &mut self.buffer
    }

    /// Passes the buffer on once it holds at least [`CHUNK`] bytes.
    pub(crate) fn flush_if_full(&mut self) {
        if self.buffer.len() >= CHUNK {
            self.flush();
        }
    }

    /// Passes on what is left and reports the first write error, if any.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.flush();
        match self.error.take() {
            Some(error) => Err(error),
            None => self.sink.flush(),
        }
    }

    fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(error) = self.sink.write_all(self.buffer.as_bytes()) {
                self.error = Some(error);
            }
        }
        self.buffer.clear();
    }
}

/// The text `emit` writes, as a `String`.
pub(crate) fn to_string(emit: impl FnOnce(&mut dyn io::Write) -> io::Result<()>) -> String {
    let mut bytes = Vec::new();
    emit(&mut bytes).expect("writing to memory does not fail");
    String::from_utf8(bytes).expect("the emitters write UTF-8")
}

/// Something [`push!`] can append.
pub(crate) trait Piece {
    fn push_to(&self, out: &mut String);
}

impl Piece for str {
    fn push_to(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for String {
    fn push_to(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for std::sync::Arc<str> {
    fn push_to(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for char {
    fn push_to(&self, out: &mut String) {
        out.push(*self);
    }
}

impl Piece for bool {
    fn push_to(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl<T: Piece + ?Sized> Piece for &T {
    fn push_to(&self, out: &mut String) {
        (**self).push_to(out);
    }
}

macro_rules! decimal_pieces {
    ($($int:ty),*) => {$(
        impl Piece for $int {
            fn push_to(&self, out: &mut String) {
                out.push_str(itoa::Buffer::new().format(*self));
            }
        }
    )*};
}

decimal_pieces!(u32, u64, usize);

/// A number in lower-case hexadecimal with a `0x` prefix, as `{:#x}` writes it.
pub(crate) struct Hex(pub u64);

impl Piece for Hex {
    fn push_to(&self, out: &mut String) {
        out.push_str("0x");
        let digits = (64 - self.0.leading_zeros()).div_ceil(4).max(1);
        for shift in (0..digits).rev() {
            let nibble = (self.0 >> (shift * 4)) & 0xf;
            out.push(char::from_digit(nibble as u32, 16).expect("a nibble is a hex digit"));
        }
    }
}

/// Appends every piece to the `String` given first: `push!(out, "size: ", class.size, ",\n")`.
macro_rules! push {
    ($out:expr $(, $piece:expr)+ $(,)?) => {{
        let out: &mut String = $out;
        $( $crate::emit::text::Piece::push_to(&$piece, out); )+
    }};
}

pub(crate) use push;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_read_as_format_writes_them() {
        for value in [0, 1, 9, 10, 0xff, 0x785d_0e42_36e8_38df, u64::MAX] {
            let mut out = String::new();
            push!(&mut out, value, ' ', Hex(value), ' ', value as u32 == 0);
            assert_eq!(out, format!("{value} {value:#x} {}", value as u32 == 0));
        }
    }

    #[test]
    fn chunked_text_arrives_whole_and_in_order() {
        let text = to_string(|sink| {
            let mut out = Chunked::new(sink);
            for i in 0..50_000u32 {
                push!(out.text(), i, '\n');
                out.flush_if_full();
            }
            out.finish()
        });
        let expected: String = (0..50_000u32).map(|i| format!("{i}\n")).collect();
        assert!(expected.len() > 2 * CHUNK);
        assert_eq!(text, expected);
    }

    #[test]
    fn chunked_reports_the_first_write_error_and_stops_writing() {
        /// Accepts `room` bytes, then fails.
        struct Full {
            room: usize,
            calls_after_failure: usize,
        }
        impl io::Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.room == 0 {
                    self.calls_after_failure += 1;
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
                }
                let n = buf.len().min(self.room);
                self.room -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = Full {
            room: 10,
            calls_after_failure: 0,
        };
        let mut out = Chunked::new(&mut sink);
        for _ in 0..3 {
            out.text().push_str(&"x".repeat(CHUNK));
            out.flush_if_full();
        }
        let error = out.finish().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            sink.calls_after_failure, 1,
            "no write after the first failure"
        );
    }
}
