"""Sampler goldens: HF transformers' logits processors (repetition penalty, temperature, top-k,
top-p — the order generate() applies them with do_sample) on random logits, and the softmax
distribution the draw is made from. Writes cases.json, logits.f32, probs.f32 (raw little-endian)."""
import json

import numpy as np
import torch
from transformers.generation.logits_process import (LogitsProcessorList,
                                                    RepetitionPenaltyLogitsProcessor,
                                                    TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

VOCAB = 1000


def main(out):
    rng = np.random.default_rng(1234)
    params = [  # temperature, top_k, top_p, repetition_penalty
        (1.0, 0, 1.0, 1.0), (0.6, 0, 0.9, 1.05), (0.2, 0, 1.0, 1.0), (1.0, 40, 1.0, 1.0),
        (0.7, 50, 0.95, 1.3), (1.5, 0, 0.5, 1.0), (1.0, 1, 1.0, 1.0), (0.9, 0, 0.05, 2.0),
        (1.0, 5, 0.8, 0.8),
    ]
    cases, all_logits, all_probs = [], [], []
    for i, (temp, top_k, top_p, pen) in enumerate(params * 3):
        scale = [1.0, 4.0, 10.0][i // len(params)]
        logits = (rng.standard_normal(VOCAB) * scale).astype(np.float32)
        if i % 4 == 0 and top_p == 1.0:  # ties at the top-k boundary (under top-p the order
            # among tied tokens decides, and torch.sort is not stable: no defined answer)
            logits[rng.integers(0, VOCAB, 50)] = logits.max() - 0.5
        prev = rng.integers(0, VOCAB, int(rng.integers(0, 30))).tolist()
        if prev:
            prev += prev[:3]  # repeats: each distinct token is penalised once
        procs = LogitsProcessorList()
        if pen != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(pen))
        if temp != 1.0:
            procs.append(TemperatureLogitsWarper(temp))
        if top_k:
            procs.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
        ids = torch.tensor([prev], dtype=torch.long) if prev else torch.zeros((1, 0), dtype=torch.long)
        scores = procs(ids, torch.from_numpy(logits.copy())[None])
        probs = torch.softmax(scores, dim=-1)[0].numpy().astype(np.float32)
        cases.append(dict(temperature=temp, top_k=top_k, top_p=top_p, repetition_penalty=pen,
                          prev=prev))
        all_logits.append(logits)
        all_probs.append(probs)
    (out / "cases.json").write_text(json.dumps(dict(vocab=VOCAB, cases=cases), indent=1))
    np.concatenate(all_logits).astype("<f4").tofile(out / "logits.f32")
    np.concatenate(all_probs).astype("<f4").tofile(out / "probs.f32")
