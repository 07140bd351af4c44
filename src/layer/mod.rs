//! Layers: the deterministic tar writer, compression with streaming digests,
//! and the applier that unpacks a layer or an archive into a directory.
pub mod apply;
pub mod compress;
pub mod writer;
