//! The corpus: deterministic documents whose text compresses like prose, and the changes
//! and bulk-push bodies that carry them.

use anyhow::Result;
use rag_sync::hlc::HlcClock;
use rag_sync::model::{Change, ChangeBody, Document, Metadata, NodeId, Version, VersionVector};
use rag_sync::wire::PushRequest;
use serde_json::json;

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A vocabulary of 5,000 pseudo-words drawn with a Zipf(1.2) law. Calibrated so that the
/// text is slightly *less* compressible than English prose: 900-char pieces gzip (-6) to
/// about 0.52 of their size alone and 1 MB of them to about 0.41 (the GPL-3 text: 0.52 and
/// 0.35), so the wire figures are not flattered by an easy corpus.
struct TextGen {
    vocab: Vec<String>,
    cumulative: Vec<f64>,
}

impl TextGen {
    fn new() -> TextGen {
        const CONS: &[u8] = b"bcdfghjklmnprstvwz";
        const VOW: &[u8] = b"aeiou";
        let mut rng = Rng::new(7);
        let mut seen = std::collections::HashSet::new();
        let mut vocab = Vec::new();
        while vocab.len() < 5000 {
            let syllables = [1, 1, 2, 2, 2, 3, 3, 4][rng.below(8) as usize];
            let mut w = String::new();
            for _ in 0..syllables {
                w.push(CONS[rng.below(CONS.len() as u64) as usize] as char);
                w.push(VOW[rng.below(VOW.len() as u64) as usize] as char);
                if rng.unit() < 0.3 {
                    w.push(CONS[rng.below(CONS.len() as u64) as usize] as char);
                }
            }
            if seen.insert(w.clone()) {
                vocab.push(w);
            }
        }
        vocab.sort_by_key(|w| w.len());
        let mut cumulative = Vec::with_capacity(vocab.len());
        let mut total = 0.0;
        for i in 0..vocab.len() {
            total += 1.0 / ((i + 1) as f64).powf(1.2);
            cumulative.push(total);
        }
        TextGen { vocab, cumulative }
    }

    fn text(&self, seed: u64, len: usize) -> String {
        let mut rng = Rng::new(seed);
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let mut out = String::with_capacity(len + 16);
        let mut capital = true;
        let mut in_sentence = 0;
        let mut sentence_len = 6 + rng.below(13);
        while out.len() < len {
            let x = rng.unit() * total;
            let i = self.cumulative.partition_point(|c| *c < x);
            let w = &self.vocab[i.min(self.vocab.len() - 1)];
            if !out.is_empty() {
                out.push(' ');
            }
            if capital {
                let mut cs = w.chars();
                if let Some(f) = cs.next() {
                    out.push(f.to_ascii_uppercase());
                    out.push_str(cs.as_str());
                }
                capital = false;
            } else {
                out.push_str(w);
            }
            in_sentence += 1;
            if in_sentence >= sentence_len {
                let p = [".", ".", ".", ",", ";"][rng.below(5) as usize];
                out.push_str(p);
                capital = p == ".";
                in_sentence = 0;
                sentence_len = 6 + rng.below(13);
            }
        }
        out.truncate(len);
        out
    }
}

/// The collection every document of the bench is in.
pub const COLLECTION: &str = "docs";

/// The loader: builds documents and the bulk-push bodies that carry them.
pub struct Loader {
    text: TextGen,
    pub text_len: usize,
    origin: NodeId,
    clock: HlcClock,
}

impl Loader {
    pub fn new(doc_size: usize) -> Loader {
        Loader {
            text: TextGen::new(),
            // id, collection and metadata take ~120 bytes of the document's JSON.
            text_len: doc_size.saturating_sub(124).max(16),
            origin: NodeId(0xbe00),
            clock: HlcClock::system(),
        }
    }

    pub fn document(&self, i: usize, revision: u64) -> Document {
        Document {
            id: format!("doc-{i:09}"),
            content: self.text.text((i as u64) ^ (revision << 40), self.text_len),
            metadata: Metadata::from_value(json!({
                "source": "rag-bench",
                "lang": "en",
                "seq": i,
                "rev": revision,
                "tags": [format!("t{}", i % 7), format!("t{}", i % 11)],
            }))
            .expect("an object"),
            embedding: None,
        }
    }

    /// A `POST /sync/changes` body writing documents `ids` at `revision`.
    pub fn push_body(&self, ids: impl Iterator<Item = usize>, revision: u64) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&PushRequest {
            changes: self.changes(ids, revision),
            source_watermark: self.clock.peek(),
        })?)
    }

    /// Changes writing documents `ids` at `revision`, as the loader's origin node made them
    /// (each one's cursor is its HLC, as in that node's log).
    pub fn changes(&self, ids: impl Iterator<Item = usize>, revision: u64) -> Vec<Change> {
        ids.map(|i| {
            let hlc = self.clock.now();
            let document = self.document(i, revision);
            let body = if revision == 0 {
                ChangeBody::DocumentInsert {
                    collection: COLLECTION.into(),
                    document,
                }
            } else {
                ChangeBody::DocumentUpdate {
                    collection: COLLECTION.into(),
                    document,
                }
            };
            Change {
                cursor: hlc,
                version: Version {
                    hlc,
                    node: self.origin,
                    vv: VersionVector([(self.origin, hlc)].into_iter().collect()),
                },
                body,
                conflicts: Vec::new(),
            }
        })
        .collect()
    }
}
