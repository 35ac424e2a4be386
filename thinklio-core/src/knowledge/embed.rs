//! The offline embedder and vector helpers.

use async_trait::async_trait;

use crate::model::{Embedder, ModelError};

/// Cosine similarity of two vectors; 0 when either is empty, zero or they
/// differ in length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0_f32, 0.0_f32, 0.0_f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// An embedder that needs no model and no download: feature hashing of the
/// lower-cased words and of their character trigrams into a unit vector.
///
/// **Quality.** It is lexical: texts that share words or word pieces
/// ("address", "addresses") come out close; synonyms and paraphrases with no
/// shared words ("Where do I live?" against "home city: Lyon") do not. With
/// keyword search fused in, it finds facts that use the question's words;
/// for real semantic recall use a model (the local MiniLM embedder of
/// `thinklio-llm`, or an embeddings API). Vectors are stable across versions
/// and machines: the hash is fixed here, not taken from the standard library.
#[derive(Debug, Clone, Copy)]
pub struct OfflineEmbedder {
    dimensions: usize,
}

impl Default for OfflineEmbedder {
    fn default() -> Self {
        Self { dimensions: 384 }
    }
}

impl OfflineEmbedder {
    /// An offline embedder with `dimensions` dimensions (at least 1).
    pub fn new(dimensions: usize) -> Self {
        Self {
            dimensions: dimensions.max(1),
        }
    }

    /// The embedding of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0_f32; self.dimensions];
        let lower = text.to_lowercase();
        for word in lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            if STOPWORDS.contains(&word) {
                continue;
            }
            self.add(&mut v, word.as_bytes(), 1.0);
            let padded: Vec<char> = format!("<{word}>").chars().collect();
            for tri in padded.windows(3) {
                let s: String = tri.iter().collect();
                self.add(&mut v, s.as_bytes(), 0.35);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    fn add(&self, v: &mut [f32], feature: &[u8], weight: f32) {
        let h = fnv1a(feature);
        // Bucket from the low bits, sign from a high bit: signed hashing
        // keeps collisions from adding up to a bias.
        let bucket = (h % self.dimensions as u64) as usize;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        v[bucket] += sign * weight;
    }
}

/// Batches up to this many texts are embedded on the calling thread.
const INLINE: usize = 4;

/// FNV-1a, 64 bits. Written here (a few lines) rather than taken from a
/// crate or `std`'s `DefaultHasher`, whose algorithm may change between
/// releases: stored embeddings must keep their meaning.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Words too common to say anything about a fact: left out of embeddings
/// here and out of keyword queries by every store.
pub const STOPWORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "does", "for", "from", "get", "had", "has", "have", "he", "her", "hers",
    "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or",
    "our", "s", "she", "should", "so", "some", "than", "that", "the", "their", "them", "there",
    "they", "this", "to", "us", "was", "we", "were", "what", "when", "where", "which", "who",
    "whom", "why", "will", "with", "would", "you", "your",
];

/// The words of a question worth searching for: lower-cased, alphanumeric,
/// without [`STOPWORDS`], each once, in order. Stores build their keyword
/// queries from these.
pub fn keywords(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if w.len() > 1 && !STOPWORDS.contains(&w.as_str()) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

#[async_trait]
impl Embedder for OfflineEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        // A question or two costs microseconds: done in place. A batch (an
        // import, an extraction) goes to the blocking pool, off the async
        // workers.
        let handle = tokio::runtime::Handle::try_current();
        match handle {
            Ok(handle) if texts.len() > INLINE => {
                let this = *self;
                let texts = texts.to_vec();
                handle
                    .spawn_blocking(move || texts.iter().map(|t| this.embed_one(t)).collect())
                    .await
                    .map_err(|e| ModelError::Transport(Box::new(e)))
            }
            // Small batches, or an executor other than tokio's: in place.
            _ => Ok(texts.iter().map(|t| self.embed_one(t)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_words_are_close_and_unrelated_text_is_not() {
        let e = OfflineEmbedder::default();
        let fact = e.embed_one("Ada lives in Lyon");
        let question = e.embed_one("Where does Ada live? Lyon?");
        let other = e.embed_one("The printer on floor 3 is broken");
        assert!(
            cosine(&fact, &question) > 0.4,
            "{}",
            cosine(&fact, &question)
        );
        assert!(cosine(&fact, &other) < 0.2, "{}", cosine(&fact, &other));
        assert_eq!(fact.len(), 384);
        assert!((cosine(&fact, &fact) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn vectors_are_stable() {
        // A stored embedding must mean the same after an upgrade.
        let v = OfflineEmbedder::new(8).embed_one("lyon");
        let again = OfflineEmbedder::new(8).embed_one("LYON");
        assert_eq!(v, again);
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn keywords_drop_stopwords_repeats_and_punctuation() {
        assert_eq!(
            keywords("Where does Ada live? Ada's \"flat\" -- in LYON!"),
            vec!["ada", "live", "flat", "lyon"]
        );
        assert!(keywords("what is it?").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_embed_off_the_async_workers_with_the_same_vectors() {
        let e = OfflineEmbedder::default();
        let texts: Vec<String> = (0..50).map(|i| format!("fact number {i}")).collect();
        let batch = e.embed(&texts).await.unwrap();
        assert_eq!(batch.len(), 50);
        assert_eq!(batch[7], e.embed_one(&texts[7]));
    }

    #[test]
    fn empty_and_mismatched_vectors_have_no_similarity() {
        assert_eq!(cosine(&[], &[]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
