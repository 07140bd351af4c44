//! Layer compression with streaming digests.
//!
//! [`LayerSink`] is a `Write` sink for an uncompressed layer tar: it hashes
//! what comes in (the layer's `diff_id`), compresses it as chosen by
//! [`Compression`], hashes and counts what comes out (the blob `digest` and
//! `size` of the descriptor) and writes it to the inner writer. `finish`
//! returns a [`BlobInfo`] with all four. [`HashingWriter`] and [`sha256_hex`]
//! are the reusable pieces.
//!
//! Gzip is written in parallel, pigz's way, and the bytes never depend on
//! the thread count: the stream is cut into fixed [`BLOCK_SIZE`] blocks, each
//! block is raw deflate primed with the previous block's last 32 KiB as a
//! preset dictionary (so matches still reach back across the cut) and ends
//! with a sync flush, the last with the final block; the blocks are
//! concatenated in order inside one gzip member whose CRC-32 is combined from
//! per-block CRCs. One thread runs the same scheme inline. At most
//! 2 × threads blocks are in flight, so memory stays at a few MB whatever the
//! layer's size.
//!
//! zstd uses the zstd crate's single-threaded streaming encoder: the crate is
//! built without `zstdmt`, and zstd's multi-threaded frames differ from
//! single-threaded ones anyway, so one thread keeps the digest stable.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};
use sha2::{Digest, Sha256};

/// Uncompressed bytes per gzip block (pigz's default block size).
pub const BLOCK_SIZE: usize = 128 * 1024;
/// Deflate's window: the preset dictionary handed from block to block.
const WINDOW: usize = 32 * 1024;
/// BuildKit's default: Go's `gzip.DefaultCompression`, which is level 6.
pub const GZIP_DEFAULT_LEVEL: u32 = 6;
/// BuildKit's default: zstd's own default level.
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// Why compressing a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("unknown compression {0:?} (expected gzip, zstd or uncompressed)")]
    Unknown(String),
    #[error("compression level {level} is out of range for {codec} (0..={max})")]
    Level {
        codec: &'static str,
        level: i32,
        max: i32,
    },
    #[error("uncompressed layers have no compression level")]
    NoLevel,
    #[error("writing the compressed layer: {0}")]
    Io(#[from] io::Error),
    #[error("deflate failed: {0}")]
    Deflate(String),
    #[error("a gzip worker thread stopped unexpectedly")]
    Worker,
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip { level: u32 },
    Zstd { level: i32 },
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: GZIP_DEFAULT_LEVEL,
        }
    }
}

impl Compression {
    /// The media type suffix: `application/vnd.oci.image.layer.v1.tar` + this.
    pub fn media_suffix(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "+gzip",
            Compression::Zstd { .. } => "+zstd",
            Compression::None => "",
        }
    }

    /// Parses a BuildKit `compression=` value with its default level:
    /// `gzip`, `zstd`, `uncompressed` (or `none`). Case-insensitive.
    pub fn parse(s: &str) -> Result<Compression, CompressError> {
        match s.to_ascii_lowercase().as_str() {
            "gzip" => Ok(Compression::default()),
            "zstd" => Ok(Compression::Zstd {
                level: ZSTD_DEFAULT_LEVEL,
            }),
            "uncompressed" | "none" => Ok(Compression::None),
            _ => Err(CompressError::Unknown(s.to_string())),
        }
    }

    /// Sets the level (BuildKit's `compression-level=`): gzip 0..=9, zstd
    /// 0..=22 (0 is zstd's default, 3).
    pub fn with_level(self, level: i32) -> Result<Compression, CompressError> {
        let (codec, max) = match self {
            Compression::Gzip { .. } => ("gzip", 9),
            Compression::Zstd { .. } => ("zstd", 22),
            Compression::None => return Err(CompressError::NoLevel),
        };
        if !(0..=max).contains(&level) {
            return Err(CompressError::Level { codec, level, max });
        }
        Ok(match self {
            Compression::Gzip { .. } => Compression::Gzip {
                level: level.unsigned_abs(),
            },
            _ => Compression::Zstd { level },
        })
    }
}

/// What a finished layer blob is, for its descriptor and the image config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// `sha256:<hex>` of the compressed bytes.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Compressed size in bytes.
    pub size: u64,
    pub uncompressed_size: u64,
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lower-case hex SHA-256 of `bytes` (no `sha256:` prefix).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A `Write` that SHA-256-hashes and counts everything passing through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the inner writer, `sha256:<hex>` of what passed, and its size.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex(&self.hasher.finalize()));
        (self.inner, digest, self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and compresses a layer; see the module docs.
pub struct LayerSink<W: Write> {
    diff: Sha256,
    uncompressed_size: u64,
    engine: Engine<W>,
}

enum Engine<W: Write> {
    Plain(HashingWriter<W>),
    Gzip(Box<ParallelGzip<HashingWriter<W>>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<W>>),
    /// The zstd encoder could not be set up; reported on first use.
    Failed(io::ErrorKind, String),
}

impl<W: Write> LayerSink<W> {
    /// `threads` is the gzip worker count (0: one per CPU). It never changes
    /// the output. Out-of-range levels are clamped here; validate them with
    /// [`Compression::with_level`].
    pub fn new(inner: W, c: Compression, threads: usize) -> Self {
        let out = HashingWriter::new(inner);
        let engine = match c {
            Compression::None => Engine::Plain(out),
            Compression::Gzip { level } => {
                Engine::Gzip(Box::new(ParallelGzip::new(out, level.min(9), threads)))
            }
            Compression::Zstd { level } => match zstd_encoder(out, level) {
                Ok(e) => Engine::Zstd(e),
                Err(e) => Engine::Failed(e.kind(), e.to_string()),
            },
        };
        LayerSink {
            diff: Sha256::new(),
            uncompressed_size: 0,
            engine,
        }
    }

    /// Ends the compressed stream and returns the inner writer and the
    /// digests. The inner writer is not flushed.
    pub fn finish(self) -> Result<(W, BlobInfo), CompressError> {
        let out = match self.engine {
            Engine::Plain(out) => out,
            Engine::Gzip(gz) => (*gz).finish()?,
            Engine::Zstd(e) => e.finish()?,
            Engine::Failed(kind, msg) => return Err(io::Error::new(kind, msg).into()),
        };
        let (inner, digest, size) = out.finish();
        let info = BlobInfo {
            digest,
            diff_id: format!("sha256:{}", hex(&self.diff.finalize())),
            size,
            uncompressed_size: self.uncompressed_size,
        };
        Ok((inner, info))
    }
}

fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut e = zstd::stream::write::Encoder::new(out, level)?;
    // Frame checksum on, as zstd's CLI and Go's klauspost/zstd write it.
    e.include_checksum(true)?;
    Ok(e)
}

impl<W: Write> Write for LayerSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.engine {
            Engine::Plain(out) => out.write(buf)?,
            Engine::Gzip(gz) => {
                gz.push(buf).map_err(io::Error::other)?;
                buf.len()
            }
            Engine::Zstd(e) => e.write(buf)?,
            Engine::Failed(kind, msg) => return Err(io::Error::new(*kind, msg.clone())),
        };
        self.diff.update(&buf[..n]);
        self.uncompressed_size += n as u64;
        Ok(n)
    }

    /// Flushes finished output to the inner writer. Never cuts a gzip block
    /// or a zstd block early: flushing must not change the blob's digest.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.engine {
            Engine::Plain(out) => out.flush(),
            Engine::Gzip(gz) => gz.flush().map_err(io::Error::other),
            Engine::Zstd(e) => e.get_mut().flush(),
            Engine::Failed(kind, msg) => Err(io::Error::new(*kind, msg.clone())),
        }
    }
}

/// One block for a worker: `buf[..dict_len]` is the preset dictionary,
/// `buf[dict_len..]` the data. `out` is a recycled output buffer.
struct Job {
    buf: Vec<u8>,
    dict_len: usize,
    last: bool,
    out: Vec<u8>,
    reply: SyncSender<Result<Done, String>>,
}

struct Done {
    buf: Vec<u8>,
    out: Vec<u8>,
    crc: crc32fast::Hasher,
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

/// The pigz-style gzip writer; see the module docs.
struct ParallelGzip<O: Write> {
    out: O,
    /// `None` when running inline (one thread).
    pool: Option<Pool>,
    max_in_flight: usize,
    /// Results in stream order.
    in_flight: VecDeque<Receiver<Result<Done, String>>>,
    /// The block being filled, after its `dict_len`-byte dictionary.
    buf: Vec<u8>,
    dict_len: usize,
    spare: Vec<(Vec<u8>, Vec<u8>)>,
    wrote_header: bool,
    crc: crc32fast::Hasher,
    total: u64,
    level: u32,
}

impl<O: Write> ParallelGzip<O> {
    fn new(out: O, level: u32, threads: usize) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(64);
        let pool = (threads > 1).then(|| spawn_pool(threads, level));
        ParallelGzip {
            out,
            pool,
            max_in_flight: 2 * threads,
            in_flight: VecDeque::new(),
            buf: Vec::with_capacity(WINDOW + BLOCK_SIZE),
            dict_len: 0,
            spare: Vec::new(),
            wrote_header: false,
            crc: crc32fast::Hasher::new(),
            total: 0,
            level,
        }
    }

    fn push(&mut self, mut data: &[u8]) -> Result<(), CompressError> {
        while !data.is_empty() {
            // A full block is sent only once more data shows it is not the
            // last one: the last block must end with deflate's final block.
            if self.buf.len() - self.dict_len == BLOCK_SIZE {
                self.submit(false)?;
            }
            let room = BLOCK_SIZE - (self.buf.len() - self.dict_len);
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.total += take as u64;
            data = &data[take..];
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> Result<(), CompressError> {
        let (mut next, out) = self.spare.pop().unwrap_or_default();
        next.clear();
        if !last {
            // The next block's dictionary: this block's last 32 KiB.
            next.extend_from_slice(&self.buf[self.buf.len() - WINDOW..]);
        }
        let buf = std::mem::replace(&mut self.buf, next);
        let dict_len = std::mem::replace(&mut self.dict_len, self.buf.len());
        let Some(jobs) = self.pool.as_ref().and_then(|p| p.jobs.as_ref()) else {
            let done = compress_block(self.level, buf, dict_len, last, out);
            return self.emit(done.map_err(CompressError::Deflate)?);
        };
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job {
            buf,
            dict_len,
            last,
            out,
            reply,
        };
        jobs.send(job).map_err(|_| CompressError::Worker)?;
        self.in_flight.push_back(rx);
        while self.in_flight.len() >= self.max_in_flight {
            self.wait_oldest()?;
        }
        self.drain_ready()
    }

    fn wait_oldest(&mut self) -> Result<(), CompressError> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let done = rx.recv().map_err(|_| CompressError::Worker)?;
        self.emit(done.map_err(CompressError::Deflate)?)
    }

    /// Writes out finished blocks at the front of the queue without waiting.
    fn drain_ready(&mut self) -> Result<(), CompressError> {
        while let Some(rx) = self.in_flight.front() {
            let done = match rx.try_recv() {
                Ok(done) => done,
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => return Err(CompressError::Worker),
            };
            self.in_flight.pop_front();
            self.emit(done.map_err(CompressError::Deflate)?)?;
        }
        Ok(())
    }

    fn emit(&mut self, done: Done) -> Result<(), CompressError> {
        if !self.wrote_header {
            self.out.write_all(&gzip_header(self.level))?;
            self.wrote_header = true;
        }
        self.out.write_all(&done.out)?;
        self.crc.combine(&done.crc);
        if self.spare.len() < self.max_in_flight + 2 {
            self.spare.push((done.buf, done.out));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CompressError> {
        self.drain_ready()?;
        Ok(self.out.flush()?)
    }

    fn finish(mut self) -> Result<O, CompressError> {
        self.submit(true)?;
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        // RFC 1952 trailer: CRC-32 and ISIZE (length mod 2^32), little-endian.
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        // Dropping the pool joins the workers.
        self.pool = None;
        Ok(self.out)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None; // disconnects: each worker ends its job and exits
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// RFC 1952 member header as Go's `compress/gzip` writes it with no name and
/// no mtime: FLG 0, MTIME 0, XFL 2 at level 9 / 4 at level 1 / else 0, and
/// OS 255 ("unknown", Go's default), so no build host detail leaks in.
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

fn spawn_pool(threads: usize, level: u32) -> Pool {
    let (tx, rx) = mpsc::sync_channel::<Job>(2 * threads);
    let rx = Arc::new(Mutex::new(rx));
    let workers = (0..threads)
        .map(|_| {
            let rx = Arc::clone(&rx);
            std::thread::spawn(move || worker(&rx, level))
        })
        .collect();
    Pool {
        jobs: Some(tx),
        workers,
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, level: u32) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let done = compress_block(level, job.buf, job.dict_len, job.last, job.out);
        // A closed reply channel means the sink was dropped: nothing to do.
        let _ = job.reply.send(done);
    }
}

/// Deflates `buf[dict_len..]` primed with `buf[..dict_len]`: a pure
/// function of its inputs, which makes the output thread-count independent.
/// `buf[dict_len..]` as deflate stored blocks (RFC 1951 3.2.4), written
/// here rather than by zlib, whose stored blocks are cut to the room left
/// in its output buffer (which would make the bytes depend on buffer
/// reuse, so on the thread count). Blocks start on a byte boundary, so
/// each is one header byte, LEN, NLEN and the bytes; only the last block
/// of the stream has BFINAL.
fn stored_block(buf: Vec<u8>, dict_len: usize, last: bool, mut out: Vec<u8>) -> Done {
    let input = &buf[dict_len..];
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    out.clear();
    out.reserve(input.len() + input.len() / 65535 * 5 + 10);
    let mut chunks: Vec<&[u8]> = input.chunks(65535).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let len = chunk.len() as u16;
        out.push(u8::from(last && i + 1 == n));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    Done { buf, out, crc }
}

/// Whether a block's bytes are spread as evenly as random data's: the
/// sum of the squares of the byte counts is within 2% of its minimum
/// (`n²/256`), checked in integers.
fn looks_incompressible(input: &[u8]) -> bool {
    if input.len() < 16 << 10 {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in input {
        counts[b as usize] += 1;
    }
    let squares: u128 = counts.iter().map(|&c| u128::from(c) * u128::from(c)).sum();
    let n = input.len() as u128;
    squares * 256 * 100 < n * n * 102
}

fn compress_block(
    level: u32,
    buf: Vec<u8>,
    dict_len: usize,
    last: bool,
    mut out: Vec<u8>,
) -> Result<Done, String> {
    // A fresh raw-deflate stream (the gzip framing is ours) for every block,
    // not a reset one: a reset stream keeps its old window and match tables,
    // and its output then depended on the blocks it had compressed before
    // (seen with zlib-rs: 1 and 2 threads gave different bytes). A new
    // stream starts zeroed; allocating it is noise next to deflating 128 KiB.
    // Data that is already compressed (images, fonts, archives) is stored,
    // not deflated: deflate cannot shrink it and is at its slowest on it.
    // The choice depends on the block's bytes alone, so the output stays
    // the same at any thread count and on any machine.
    let level = if level > 0 && looks_incompressible(&buf[dict_len..]) {
        0
    } else {
        level
    };
    if level == 0 {
        return Ok(stored_block(buf, dict_len, last, out));
    }
    let c = &mut Compress::new(flate2::Compression::new(level), false);
    if dict_len > 0 {
        c.set_dictionary(&buf[..dict_len])
            .map_err(|e| e.to_string())?;
    }
    let input = &buf[dict_len..];
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    out.clear();
    // Room for the whole block at once (deflate's worst case, zlib's
    // compressBound, plus the sync flush's marker): the bytes deflate
    // makes once its output runs out mid-flush depend on where it ran out,
    // so on this recycled buffer's capacity (seen as two digests for one
    // layer under load).
    out.reserve(input.len() + (input.len() >> 10) + 1024);
    // Sync flush ends a non-last block on a byte boundary with an empty
    // stored block and without the BFINAL bit, so blocks concatenate.
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.len().max(64 * 1024));
        }
        let consumed = (c.total_in() - start) as usize;
        let before = (c.total_in(), c.total_out());
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(|e| e.to_string())?;
        let consumed = (c.total_in() - start) as usize;
        match status {
            Status::StreamEnd => break,
            // Done flushing once all input is in and output space is left.
            _ if !last && consumed == input.len() && out.len() < out.capacity() => break,
            Status::BufError if before == (c.total_in(), c.total_out()) => {
                return Err("deflate made no progress".to_string());
            }
            _ => {}
        }
    }
    Ok(Done { buf, out, crc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    /// Deterministic pseudo-random bytes (xorshift64*): incompressible.
    fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            v.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// Deterministic text-like bytes: words and numbers, lines of varying length.
    fn text_bytes(n: usize, seed: u64) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "layer", "image", "the", "build", "RUN", "apt-get", "install", "-y", "COPY",
            "/usr/lib", "config", "of", "and", "kiln", "digest", "sha256", "tar", "gzip", "{", "}",
            "return", "fn", "let", "mut", "=", "0x1f", "error", "while", "for", "in", "static",
            "void",
        ];
        let r = random_bytes(n, seed);
        let mut v = Vec::with_capacity(n + 16);
        let mut i = 0;
        while v.len() < n {
            let x = r[i % r.len()] as usize;
            i += 1;
            v.extend_from_slice(WORDS[x % WORDS.len()].as_bytes());
            v.push(if x.is_multiple_of(11) { b'\n' } else { b' ' });
            if x.is_multiple_of(37) {
                v.extend_from_slice(format!("{}", x * 7919 + i).as_bytes());
            }
        }
        v.truncate(n);
        v
    }

    fn compress(data: &[u8], c: Compression, threads: usize, chunk: usize) -> (Vec<u8>, BlobInfo) {
        let mut sink = LayerSink::new(Vec::new(), c, threads);
        for part in data.chunks(chunk) {
            sink.write_all(part).unwrap();
        }
        sink.finish().unwrap()
    }

    const GZ6: Compression = Compression::Gzip { level: 6 };

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn gzip_is_identical_for_any_thread_count_and_write_size() {
        let sizes = [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            2 * BLOCK_SIZE,
            3 * BLOCK_SIZE + 123,
        ];
        for (i, &n) in sizes.iter().enumerate() {
            for data in [text_bytes(n, i as u64 + 1), random_bytes(n, i as u64 + 1)] {
                let (one, info1) = compress(&data, GZ6, 1, 65536);
                for (threads, chunk) in [(2, 7777), (8, 512), (3, 1 << 20)] {
                    let (many, info) = compress(&data, GZ6, threads, chunk);
                    assert!(one == many, "size {n}: {threads} threads differ");
                    assert_eq!(info, info1);
                }
                assert_eq!(gunzip(&one), data, "size {n}");
            }
        }
        // Many blocks, so that workers compress blocks in varying orders.
        let data = text_bytes(20 * BLOCK_SIZE + 5, 99);
        let (one, _) = compress(&data, GZ6, 1, 65536);
        for threads in [2, 8] {
            assert!(
                compress(&data, GZ6, threads, 65536).0 == one,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn incompressible_blocks_are_stored() {
        assert!(looks_incompressible(&random_bytes(BLOCK_SIZE, 1)));
        assert!(!looks_incompressible(&text_bytes(BLOCK_SIZE, 1)));
        assert!(!looks_incompressible(&vec![0u8; BLOCK_SIZE]));
        let mut mixed = random_bytes(4 * BLOCK_SIZE, 5);
        mixed.extend(text_bytes(4 * BLOCK_SIZE, 5));
        let (gz, _) = compress(&mixed, GZ6, 2, 65536);
        assert_eq!(gunzip(&gz), mixed);
        let (random_part, _) = compress(&mixed[..4 * BLOCK_SIZE], GZ6, 1, 65536);
        // Stored: a few bytes of framing per 64 KiB, never deflate's
        // attempts.
        assert!(
            random_part.len() < 4 * BLOCK_SIZE + 4 * BLOCK_SIZE / 1000 + 64,
            "{}",
            random_part.len()
        );
        assert!(gz.len() < mixed.len() * 3 / 4, "{}", gz.len());
    }

    /// A block's bytes do not depend on the room its recycled output
    /// buffer happens to have (which depends on which worker returned
    /// which buffer when: seen as two digests for one arm64 binary's
    /// layer under load). The buffer running out anywhere near the end of
    /// a half-compressible block, as binaries are, with and without a
    /// dictionary, must not change a byte.
    #[test]
    fn blocks_do_not_depend_on_the_output_buffer() {
        let mut data = Vec::new();
        for i in 0..96 {
            if i % 2 == 0 {
                data.extend(random_bytes(2048, i));
            } else {
                data.extend(text_bytes(2048, i));
            }
        }
        for dict in [0, WINDOW] {
            let buf = data[..dict + BLOCK_SIZE].to_vec();
            for last in [false, true] {
                let want = compress_block(6, buf.clone(), dict, last, Vec::new())
                    .expect("deflate")
                    .out;
                assert!(want.len() > 70_000, "{}", want.len());
                let near_end = want.len() - 64..want.len() + 8;
                for room in [1, 40_000, 66_000].into_iter().chain(near_end) {
                    let got = compress_block(6, buf.clone(), dict, last, Vec::with_capacity(room))
                        .expect("deflate")
                        .out;
                    assert!(got == want, "room {room}, dict {dict}, last {last}");
                }
            }
        }
    }

    #[test]
    fn gzip_digests_match_the_bytes() {
        let data = text_bytes(1_000_000, 7);
        let (gz, info) = compress(&data, GZ6, 4, 100_000);
        assert_eq!(info.digest, format!("sha256:{}", sha256_hex(&gz)));
        assert_eq!(info.diff_id, format!("sha256:{}", sha256_hex(&data)));
        assert_eq!(info.size, gz.len() as u64);
        assert_eq!(info.uncompressed_size, data.len() as u64);
        assert!(
            gz.len() < data.len() / 3,
            "text should compress: {}",
            gz.len()
        );
        // Fixed header: no name, mtime 0, OS 255.
        assert_eq!(gz[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn gzip_levels_round_trip() {
        let data = text_bytes(300_000, 9);
        for level in [0, 1, 9] {
            let (gz, _) = compress(&data, Compression::Gzip { level }, 2, 4096);
            assert_eq!(gunzip(&gz), data, "level {level}");
            assert_eq!(gz[8], gzip_header(level)[8]);
        }
    }

    #[test]
    fn system_gzip_and_zcat_accept_the_output() {
        let data = text_bytes(700_000, 3);
        let (gz, _) = compress(&data, GZ6, 2, 10_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.tar.gz");
        std::fs::write(&path, &gz).unwrap();
        for cmd in [&["gzip", "-dc"][..], &["zcat"][..]] {
            let out = std::process::Command::new(cmd[0])
                .args(&cmd[1..])
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{cmd:?}: {out:?}");
            assert!(out.stdout == data, "{cmd:?} output differs");
        }
        let t = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(t.success());
    }

    #[test]
    fn flush_does_not_change_the_bytes() {
        let data = text_bytes(600_000, 5);
        let (plain, _) = compress(&data, GZ6, 2, 50_000);
        for c in [GZ6, Compression::Zstd { level: 3 }] {
            let (want, _) = compress(&data, c, 2, 50_000);
            let mut sink = LayerSink::new(Vec::new(), c, 2);
            for part in data.chunks(50_000) {
                sink.write_all(part).unwrap();
                sink.flush().unwrap();
            }
            let (got, _) = sink.finish().unwrap();
            assert!(got == want, "{c:?}");
        }
        assert_eq!(gunzip(&plain), data);
    }

    #[test]
    fn zstd_round_trips_with_digests() {
        let data = text_bytes(500_000, 11);
        let (z, info) = compress(&data, Compression::Zstd { level: 3 }, 4, 3000);
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), data);
        assert_eq!(info.digest, format!("sha256:{}", sha256_hex(&z)));
        assert_eq!(info.diff_id, format!("sha256:{}", sha256_hex(&data)));
        assert_eq!(info.size, z.len() as u64);
        let (z1, _) = compress(&data, Compression::Zstd { level: 3 }, 1, 65536);
        assert!(z == z1, "zstd output depends on threads or write sizes");
    }

    #[test]
    fn uncompressed_digest_is_the_diff_id() {
        let data = random_bytes(10_000, 1);
        let (out, info) = compress(&data, Compression::None, 2, 999);
        assert_eq!(out, data);
        assert_eq!(info.digest, info.diff_id);
        assert_eq!(info.size, 10_000);
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest, size) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(size, 11);
        assert_eq!(
            digest,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_levels_and_suffixes() {
        assert_eq!(Compression::parse("gzip").unwrap(), GZ6);
        assert_eq!(
            Compression::parse("ZSTD").unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            Compression::parse("uncompressed").unwrap(),
            Compression::None
        );
        assert_eq!(Compression::parse("none").unwrap(), Compression::None);
        assert!(Compression::parse("estargz").is_err());
        assert_eq!(GZ6.with_level(9).unwrap(), Compression::Gzip { level: 9 });
        assert!(GZ6.with_level(10).is_err());
        assert!(GZ6.with_level(-1).is_err());
        assert!(Compression::Zstd { level: 3 }.with_level(22).is_ok());
        assert!(Compression::Zstd { level: 3 }.with_level(23).is_err());
        assert!(Compression::None.with_level(1).is_err());
        assert_eq!(GZ6.media_suffix(), "+gzip");
        assert_eq!(Compression::Zstd { level: 1 }.media_suffix(), "+zstd");
        assert_eq!(Compression::None.media_suffix(), "");
    }

    /// Small throughput probe (no timing assertions): prints MB/s.
    #[test]
    fn gzip_throughput_probe() {
        let n = 4 << 20;
        for (kind, data) in [("random", random_bytes(n, 2)), ("text", text_bytes(n, 2))] {
            let mut first = None;
            for threads in [1, 2] {
                let t = std::time::Instant::now();
                let (gz, info) = compress(&data, GZ6, threads, 1 << 16);
                let secs = t.elapsed().as_secs_f64();
                eprintln!(
                    "gzip {kind} {threads} thread(s): {:.0} MB/s, ratio {:.2}",
                    n as f64 / secs / 1e6,
                    gz.len() as f64 / n as f64
                );
                assert_eq!(info.uncompressed_size, n as u64);
                assert!(first.get_or_insert(gz.clone()) == &gz);
            }
        }
    }
}
