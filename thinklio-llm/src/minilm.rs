//! A local sentence-embedding model: all-MiniLM-L6-v2 (384 dimensions, mean
//! pooling, unit length), run in-process on the CPU with `candle`.
//!
//! The model is read from a directory holding `model.safetensors`,
//! `tokenizer.json` and `config.json` (the layout of the sentence-transformers
//! release; `scripts/fetch-minilm.sh` puts one under `target/models/`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use thinklio_core::{Embedder, ModelError};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The longest input, in tokens, as the model was trained (longer texts are cut).
const MAX_TOKENS: usize = 256;

/// Texts run through the model together.
const BATCH: usize = 32;

/// all-MiniLM-L6-v2 on the CPU, as an [`Embedder`].
///
/// Embedding runs on tokio's blocking pool, in batches, never on an async
/// worker thread (under another executor, in place).
///
/// ```no_run
/// # async fn demo() -> Result<(), thinklio_core::ModelError> {
/// use thinklio_core::Embedder;
/// let minilm = thinklio_llm::MiniLm::load("target/models/all-minilm-l6-v2")?;
/// let v = minilm.embed(&["Ada lives in Lyon".to_owned()]).await?;
/// assert_eq!(v[0].len(), 384);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Loaded>,
}

struct Loaded {
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("dir", &self.inner.dir)
            .field("dimensions", &self.inner.dimensions)
            .finish()
    }
}

fn config_error(dir: &Path, what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Config(format!(
        "cannot load the model in {}: {what}: {e}",
        dir.display()
    ))
}

impl MiniLm {
    /// Loads the model from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| config_error(dir, "config.json", e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| config_error(dir, "config.json", e))?;
        let dimensions = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| v["hidden_size"].as_u64())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| config_error(dir, "config.json", "no hidden_size"))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| config_error(dir, "tokenizer.json", e))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| config_error(dir, "tokenizer.json", e))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| config_error(dir, "model.safetensors", e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| config_error(dir, "model.safetensors", e))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| config_error(dir, "model.safetensors", e))?;
        Ok(Self {
            inner: Arc::new(Loaded {
                model,
                tokenizer,
                dimensions,
                dir: dir.to_path_buf(),
            }),
        })
    }
}

impl Loaded {
    /// One batch through the model: mean of the token vectors under the
    /// attention mask, scaled to unit length (what sentence-transformers does
    /// for this model).
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        let failed = |e: &dyn std::fmt::Display| {
            ModelError::MalformedResponse(format!("local embedding: {e}"))
        };
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| failed(&e))?;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, ModelError> {
            let each = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &Device::Cpu))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failed(&e))?;
            Tensor::stack(&each, 0).map_err(|e| failed(&e))
        };
        let ids = rows(&|e| e.get_ids())?;
        let mask = rows(&|e| e.get_attention_mask())?;
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        };
        run().map_err(|e| failed(&e))
    }
}

#[async_trait]
impl Embedder for MiniLm {
    fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        // Batches of similar length: a batch is padded to its longest text,
        // so texts sorted by length waste little work on padding (as
        // sentence-transformers does). The vectors go back in input order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let inner = Arc::clone(&self.inner);
            let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
            let vectors = match tokio::runtime::Handle::try_current() {
                Ok(handle) => handle
                    .spawn_blocking(move || inner.embed_batch(&batch))
                    .await
                    .map_err(|e| ModelError::Transport(Box::new(e)))??,
                // Under another executor there is no blocking pool to use.
                Err(_) => inner.embed_batch(&batch)?,
            };
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
