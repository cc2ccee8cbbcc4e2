//! Accepts whatever `:authority` a client sends over the Unix socket.
//!
//! Kubelets and sidecars that dial a bare socket path (grpc-go before it
//! learnt to send `localhost`) send that path as `:authority`. The HTTP/2
//! server under tonic (h2) resets every such stream as malformed, since a
//! path is no authority, and the CO sees the driver fail. So every
//! connection is read through `Rewrite`: it decodes each header block the
//! client sends (HPACK, keeping the client's dynamic table), puts
//! `localhost` in place of an `:authority` that is not a valid one, and
//! encodes the block again as literals without indexing, so the server's
//! decoding table stays empty and in step whatever the client indexed.
//! Every other frame passes byte for byte; what the server sends is
//! untouched.

use loona_hpack::Decoder;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client's connection preface ("PRI * HTTP/2.0...").
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// initial value).
const MAX_FRAME: usize = 16_384;

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Block {
    stream: [u8; 4],
    end_stream: bool,
    fragment: Vec<u8>,
}

/// A client connection whose header blocks are rewritten as they are read.
pub(crate) struct Rewrite<S> {
    inner: S,
    raw: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    preface_left: usize,
    decoder: Decoder<'static>,
    block: Option<Block>,
    eof: bool,
}

impl<S> Rewrite<S> {
    pub(crate) fn new(inner: S) -> Self {
        Rewrite {
            inner,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            preface_left: PREFACE_LEN,
            decoder: Decoder::new(),
            block: None,
            eof: false,
        }
    }

    /// Moves every complete frame from `raw` to `out`, rewriting header
    /// blocks.
    fn process(&mut self) -> io::Result<()> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            self.out.extend(self.raw.drain(..n));
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(());
            }
        }
        while self.raw.len() >= FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if self.raw.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER_LEN + len).collect();
            let (kind, flags) = (frame[3], frame[4]);
            let stream = [frame[5], frame[6], frame[7], frame[8]];
            let payload = &frame[FRAME_HEADER_LEN..];
            match kind {
                HEADERS => {
                    let fragment = header_fragment(payload, flags)?;
                    self.block =
                        Some(Block { stream, end_stream: flags & END_STREAM != 0, fragment: fragment.to_vec() });
                }
                CONTINUATION => match &mut self.block {
                    Some(b) => b.fragment.extend_from_slice(payload),
                    None => return Err(invalid("CONTINUATION without HEADERS")),
                },
                _ => {
                    self.out.extend_from_slice(&frame);
                    continue;
                }
            }
            if flags & END_HEADERS != 0 {
                let b = self.block.take().ok_or_else(|| invalid("no header block"))?;
                let headers = self.decoder.decode(&b.fragment).map_err(|e| invalid(&format!("HPACK: {e}")))?;
                emit_block(&mut self.out, &b, &encode(&headers));
            }
        }
        Ok(())
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from the client: {what}"))
}

/// The header block fragment of a HEADERS frame (without padding and
/// priority fields).
fn header_fragment(payload: &[u8], flags: u8) -> io::Result<&[u8]> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = *p.first().ok_or_else(|| invalid("short padded HEADERS"))? as usize;
        p = &p[1..];
    }
    if flags & PRIORITY != 0 {
        p = p.get(5..).ok_or_else(|| invalid("short HEADERS priority"))?;
    }
    p.get(..p.len().checked_sub(pad).ok_or_else(|| invalid("padding longer than HEADERS"))?)
        .ok_or_else(|| invalid("bad HEADERS"))
}

/// Whether `value` passes as an `:authority` with the HTTP/2 server.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `first`.
fn put_int(out: &mut Vec<u8>, value: usize, n: u32, first: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut v = value - max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// The headers as HPACK literals without indexing (new name, no Huffman
/// coding), with an invalid `:authority` replaced.
fn encode(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let value: &[u8] = if name == b":authority" && !valid_authority(value) { b"localhost" } else { value };
        out.push(0);
        put_int(&mut out, name.len(), 7, 0);
        out.extend_from_slice(name);
        put_int(&mut out, value.len(), 7, 0);
        out.extend_from_slice(value);
    }
    out
}

/// A HEADERS frame (and CONTINUATION frames when the block is long) for `b`
/// with the block `encoded`.
fn emit_block(out: &mut Vec<u8>, b: &Block, encoded: &[u8]) {
    let chunks: Vec<&[u8]> = if encoded.is_empty() { vec![&[]] } else { encoded.chunks(MAX_FRAME).collect() };
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let mut flags = if i + 1 == chunks.len() { END_HEADERS } else { 0 };
        if i == 0 && b.end_stream {
            flags |= END_STREAM;
        }
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&b.stream);
        out.extend_from_slice(chunk);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewrite<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // The client closed: what is left of a frame goes as it is.
                this.eof = true;
                this.out.append(&mut this.raw);
                continue;
            }
            this.raw.extend_from_slice(rb.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewrite<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Rewrite<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's bytes: the preface, a SETTINGS frame, then `blocks` as
    /// HEADERS frames on streams 1, 3, ..., the first padded and with
    /// priority, the second split into a CONTINUATION.
    fn client_bytes(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        v.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        for (i, b) in blocks.iter().enumerate() {
            let stream = (2 * i as u32 + 1).to_be_bytes();
            match i {
                0 => {
                    let mut p = vec![2u8, 0, 0, 0, 0, 16];
                    p.extend_from_slice(b);
                    p.extend_from_slice(&[0, 0]);
                    v.extend_from_slice(&(p.len() as u32).to_be_bytes()[1..]);
                    v.extend_from_slice(&[HEADERS, END_HEADERS | PADDED | PRIORITY]);
                    v.extend_from_slice(&stream);
                    v.extend_from_slice(&p);
                }
                _ => {
                    let (a, c) = b.split_at(b.len() / 2);
                    v.extend_from_slice(&(a.len() as u32).to_be_bytes()[1..]);
                    v.extend_from_slice(&[HEADERS, END_STREAM]);
                    v.extend_from_slice(&stream);
                    v.extend_from_slice(a);
                    v.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
                    v.extend_from_slice(&[CONTINUATION, END_HEADERS]);
                    v.extend_from_slice(&stream);
                    v.extend_from_slice(c);
                }
            }
        }
        v
    }

    /// The header lists of every HEADERS block in server-bound bytes.
    fn blocks_in(mut v: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        v = &v[PREFACE_LEN..];
        let mut decoder = Decoder::new();
        let (mut out, mut block) = (Vec::new(), Vec::new());
        while !v.is_empty() {
            let len = u32::from_be_bytes([0, v[0], v[1], v[2]]) as usize;
            let (kind, flags) = (v[3], v[4]);
            if kind == HEADERS || kind == CONTINUATION {
                assert_eq!(flags & (PADDED | PRIORITY), 0);
                block.extend_from_slice(&v[9..9 + len]);
                if flags & END_HEADERS != 0 {
                    out.push(decoder.decode(&block).unwrap());
                    block.clear();
                }
            }
            v = &v[9 + len..];
        }
        out
    }

    #[tokio::test]
    async fn a_path_authority_becomes_localhost_and_the_rest_stays() {
        let headers = |authority: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
            [(":method", "POST"), (":scheme", "http"), (":path", "/csi.v1.Identity/Probe"), (":authority", authority)]
                .iter()
                .chain([("content-type", "application/grpc"), ("te", "trailers")].iter())
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        // The client's encoder indexes: the second block refers to the
        // first's entries, as grpc-go's does.
        let mut enc = loona_hpack::Encoder::new();
        let first = headers("/var/lib/kubelet/plugins/csi.subvol.io/csi.sock");
        let second = headers("localhost:50051");
        let blocks = vec![
            enc.encode(first.iter().map(|(n, v)| (&n[..], &v[..]))),
            enc.encode(second.iter().map(|(n, v)| (&n[..], &v[..]))),
        ];
        let input = client_bytes(&blocks);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        tokio::io::AsyncWriteExt::write_all(&mut client, &input).await.unwrap();
        drop(client);
        let mut rewritten = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut Rewrite::new(server), &mut rewritten).await.unwrap();
        let got = blocks_in(&rewritten);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], headers("localhost"));
        assert_eq!(got[1], second, "a valid authority stays");
        assert_eq!(&rewritten[..PREFACE_LEN + 9], &input[..PREFACE_LEN + 9], "preface and SETTINGS pass as they are");
    }
}
