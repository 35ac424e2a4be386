//! The approximate vector index of a store that has none of its own
//! (SQLite): inverted lists. Vectors are clustered around centroids, about
//! one per hundred vectors (spherical k-means); each vector is filed under
//! its nearest centroid, and a search compares the query with the vectors
//! of the few lists whose centroids are nearest to it, instead of with
//! every visible vector.
//!
//! The clustering and the choice of lists live here so every store that
//! keeps lists applies one rule; the store keeps the centroids and each
//! vector's list. PostgreSQL uses pgvector's HNSW index instead.
//!
//! Written here rather than taken from a crate: the index is a few hundred
//! centroids in one blob and an integer per vector, so it lives in the
//! store's own tables and transactions, which an in-memory index crate
//! (HNSW graphs) would not; k-means over that is a page of arithmetic.

use std::num::NonZeroUsize;

/// Above this many visible facts a vector search uses the store's
/// approximate index (when it has one for the embedding's size); at or
/// below it the search is exact, which is both fast and complete for the
/// few hundred facts one principal usually sees. Both stores apply it.
pub const APPROXIMATE_ABOVE: i64 = 2_000;

/// How many vectors of one size a store holds before it builds lists for
/// them: as many as a principal must see before a search uses them.
pub const LISTS_FROM: usize = APPROXIMATE_ABOVE as usize;

/// The share of lists a search reads when the principal sees every
/// vector: 1 in 10. With all-MiniLM-L6-v2 embeddings of 100,000 facts
/// this keeps recall@10 against the exact search above 0.95 (see
/// `docs/benchmarks.md`, "Retrieval over a large layer").
const PROBE_SHARE: f64 = 0.1;

/// About how many vectors one list holds.
const VECTORS_PER_LIST: usize = 100;

/// How many vectors one list's centroid is trained from, at most: k-means
/// needs a sample, not every vector.
const SAMPLE_PER_LIST: usize = 64;

/// Rounds of k-means.
const ROUNDS: usize = 12;

/// The centroids of one embedding size's lists.
#[derive(Debug, Clone, PartialEq)]
pub struct IvfLists {
    dims: usize,
    /// `lists × dims` values, each centroid of unit length.
    centroids: Vec<f32>,
}

impl IvfLists {
    /// How many lists suit `vectors` vectors: one per hundred, between 16
    /// and 4,096.
    ///
    /// Small lists, not the textbook `√n`: a search reads a fixed share of
    /// the vectors either way, and finer lists put more of the true nearest
    /// into the lists it reads. With all-MiniLM-L6-v2 embeddings of 100,000
    /// facts (the suite's `layer` scenario) and a tenth of the lists read,
    /// recall@10 was 0.86 with `√n` (316) lists and 0.975 with 1,000, for
    /// the same vectors compared. Training
    /// costs more (about 20 s on two cores for 1,000 lists, off the store's
    /// thread), and picking the lists a query reads compares it with every
    /// centroid (1,000 dot products, well under a millisecond).
    pub fn lists_for(vectors: usize) -> usize {
        (vectors / VECTORS_PER_LIST).clamp(16, 4_096)
    }

    /// Clusters `vectors` (all of `dims` values; others are skipped) into
    /// `lists` lists with spherical k-means, from a sample of at most 64
    /// vectors per list picked with `seed`. `None` when there are fewer
    /// usable vectors than lists.
    pub fn train(vectors: &[&[f32]], dims: usize, lists: NonZeroUsize, seed: u64) -> Option<Self> {
        let lists = lists.get();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut sample: Vec<Vec<f32>> = vectors
            .iter()
            .filter(|v| v.len() == dims)
            .filter_map(|v| unit(v))
            .collect();
        if sample.len() < lists || dims == 0 {
            return None;
        }
        rng.shuffle(&mut sample);
        sample.truncate(lists * SAMPLE_PER_LIST);
        let mut index = Self {
            dims,
            centroids: sample[..lists].iter().flatten().copied().collect(),
        };
        let mut nearest = vec![0usize; sample.len()];
        for _ in 0..ROUNDS {
            let assigned = index.nearest_all(&sample.iter().map(Vec::as_slice).collect::<Vec<_>>());
            let moved = assigned != nearest;
            nearest = assigned;
            let mut sums = vec![0f32; lists * dims];
            let mut counts = vec![0usize; lists];
            for (v, &l) in sample.iter().zip(&nearest) {
                counts[l] += 1;
                for (s, x) in sums[l * dims..(l + 1) * dims].iter_mut().zip(v) {
                    *s += x;
                }
            }
            for l in 0..lists {
                let sum = &sums[l * dims..(l + 1) * dims];
                // An empty list starts again from a random vector.
                let centroid = match (counts[l], unit(sum)) {
                    (0, _) | (_, None) => sample[rng.usize(..sample.len())].clone(),
                    (_, Some(c)) => c,
                };
                index.centroids[l * dims..(l + 1) * dims].copy_from_slice(&centroid);
            }
            if !moved {
                break;
            }
        }
        Some(index)
    }

    /// Lists read back from a store: `centroids` holds `dims` values per
    /// list. `None` when its length is not a multiple of `dims`.
    pub fn from_centroids(dims: usize, centroids: Vec<f32>) -> Option<Self> {
        (dims > 0 && !centroids.is_empty() && centroids.len().is_multiple_of(dims))
            .then_some(Self { dims, centroids })
    }

    /// The centroids, `dims` values per list, for a store to keep.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// The embedding size the lists are for.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// How many lists there are.
    pub fn len(&self) -> usize {
        self.centroids.len() / self.dims
    }

    /// Whether there are none (never true of lists that were built).
    pub fn is_empty(&self) -> bool {
        self.centroids.is_empty()
    }

    /// The list `vector` is filed under: the one with the nearest centroid.
    pub fn nearest(&self, vector: &[f32]) -> usize {
        self.nearest_n(vector, 1).first().copied().unwrap_or(0)
    }

    /// The lists of each of `vectors`, computed on every core.
    pub fn nearest_all(&self, vectors: &[&[f32]]) -> Vec<usize> {
        let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let chunk = vectors.len().div_ceil(threads).max(256);
        std::thread::scope(|s| {
            let parts: Vec<_> = vectors
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || part.iter().map(|v| self.nearest(v)).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().unwrap_or_default())
                .collect()
        })
    }

    /// The `n` lists whose centroids are nearest to `query`, nearest first.
    pub fn nearest_n(&self, query: &[f32], n: usize) -> Vec<usize> {
        if query.len() != self.dims {
            return Vec::new();
        }
        let mut scored: Vec<(f32, usize)> = self
            .centroids
            .chunks_exact(self.dims)
            .map(|c| dot(c, query))
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect();
        let n = n.min(scored.len());
        if n == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(n);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, i)| i).collect()
    }

    /// How many lists a search reads when its principal sees `visible` of
    /// the `total` vectors of this size: a tenth of the lists when it sees
    /// them all, more as it sees fewer (the nearest vectors it may see lie
    /// farther out). `None` when the search should be exact instead: it
    /// sees few enough, or so small a share that reading lists would cost
    /// as much as comparing what it sees.
    pub fn probes(&self, visible: i64, total: i64) -> Option<usize> {
        if visible <= APPROXIMATE_ABOVE || total <= 0 {
            return None;
        }
        let share = (total as f64 / visible.min(total) as f64) * PROBE_SHARE;
        let probes = (self.len() as f64 * share).ceil() as usize;
        (probes * 2 < self.len()).then_some(probes.max(1))
    }
}

/// `v` scaled to unit length; `None` for a zero or non-finite vector.
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = dot(v, v).sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
}

/// The dot product, in eight lanes so the compiler vectorises it (a plain
/// `sum()` of `f32` must keep its order and cannot).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors around `centres` random centres, `per` each.
    fn clustered(centres: usize, per: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let centre: Vec<Vec<f32>> = (0..centres)
            .map(|_| (0..dims).map(|_| rng.f32() - 0.5).collect())
            .collect();
        (0..centres * per)
            .map(|i| {
                centre[i % centres]
                    .iter()
                    .map(|x| x + (rng.f32() - 0.5) * 0.2)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn each_vector_is_filed_under_the_list_whose_centroid_is_nearest() {
        let vectors = clustered(20, 100, 16, 7);
        let refs: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
        let lists = IvfLists::train(&refs, 16, NonZeroUsize::new(20).unwrap(), 1).unwrap();
        assert_eq!((lists.len(), lists.dims()), (20, 16));
        for v in &vectors[..50] {
            let l = lists.nearest(v);
            let best = (0..lists.len())
                .map(|i| dot(&lists.centroids()[i * 16..(i + 1) * 16], v))
                .fold(f32::MIN, f32::max);
            assert_eq!(dot(&lists.centroids()[l * 16..(l + 1) * 16], v), best);
        }
        // Vectors of one cluster share a list: k-means found the clusters.
        let same = (0..100)
            .filter(|j| lists.nearest(&vectors[20 * j]) == lists.nearest(&vectors[0]))
            .count();
        assert!(same >= 95, "{same} of 100 share their cluster's list");
        assert_eq!(
            lists.nearest_all(&refs[..300]),
            refs[..300]
                .iter()
                .map(|v| lists.nearest(v))
                .collect::<Vec<_>>()
        );
        let back = IvfLists::from_centroids(16, lists.centroids().to_vec()).unwrap();
        assert_eq!(back, lists);
    }

    #[test]
    fn too_few_vectors_or_the_wrong_size_build_nothing() {
        let vectors = clustered(2, 5, 8, 3);
        let refs: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
        assert!(IvfLists::train(&refs, 8, NonZeroUsize::new(16).unwrap(), 1).is_none());
        assert!(IvfLists::train(&refs, 9, NonZeroUsize::new(2).unwrap(), 1).is_none());
        assert!(IvfLists::from_centroids(3, vec![0.0; 8]).is_none());
        assert!(IvfLists::from_centroids(0, vec![]).is_none());
    }

    #[test]
    fn a_search_reads_more_lists_as_its_principal_sees_less_and_is_exact_when_it_sees_little() {
        let lists = IvfLists::from_centroids(1, vec![1.0; 300]).unwrap();
        assert_eq!(lists.probes(100_000, 100_000), Some(30));
        assert_eq!(lists.probes(50_000, 100_000), Some(60));
        assert_eq!(lists.probes(20_000, 100_000), None, "half the lists: exact");
        assert_eq!(lists.probes(APPROXIMATE_ABOVE, 1_000_000), None);
        assert_eq!(
            lists.nearest_n(&[1.0, 2.0], 3),
            Vec::<usize>::new(),
            "wrong size"
        );
    }

    #[test]
    fn lists_hold_about_a_hundred_vectors_each() {
        assert_eq!(IvfLists::lists_for(100), 16);
        assert_eq!(IvfLists::lists_for(100_000), 1_000);
        assert_eq!(IvfLists::lists_for(1_000_000_000), 4_096);
    }
}
