"""Child process for the ``llama-cpp-python-lookup`` peer: llama-cpp-python's own speculative
path, ``Llama(..., draft_model=LlamaPromptLookupDecoding(...))``, greedy.

    echo '{"model": ..., "prompts": [...], ...}' | python -m edgessd.benchmark.lcp_worker

Prints one JSON line per prompt: n_generated, gen_tok_s (tokens after the first, over the
time from the first token to the last: time per decode, as llama.cpp counts), text, and the
draft counters:
n_cycles = draft calls (each followed by one model evaluation), n_drafted = tokens proposed,
n_accepted = n_generated - 1 - n_cycles (the first token comes from the prompt's evaluation;
each later evaluation emits its accepted drafts plus one token).
"""
from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    job = json.load(sys.stdin)

    class Counting(LlamaPromptLookupDecoding):
        calls = 0
        drafted = 0

        def __call__(self, input_ids, /, **kwargs):
            out = super().__call__(input_ids, **kwargs)
            Counting.calls += 1
            Counting.drafted += len(out)
            return out

    # flash_attn=True: edgessd's context keeps llama.cpp's default (auto), which turns flash attention
    # on for CPU, CUDA and Metal; llama-cpp-python's default turns it off. That is another numeric path,
    # and greedy text then parts from plain's at near-ties (smollm2, chat-001: 'The' 26.02 vs 'In' 25.85).
    llm = llama_cpp.Llama(model_path=job["model"], n_ctx=job["n_ctx"], n_threads=job["n_threads"],
                          n_threads_batch=job["n_threads"], n_gpu_layers=job["n_gpu_layers"], verbose=False,
                          flash_attn=True,
                          draft_model=Counting(max_ngram_size=2, num_pred_tokens=job["num_pred_tokens"]))
    vocab = llm._model.vocab
    for prompt in job["prompts"]:
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        Counting.calls = Counting.drafted = 0
        out: list[int] = []
        t_first = t_last = 0.0
        for tok in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            now = time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                break
            out.append(int(tok))
            t_first = t_first or now
            t_last = now
            if len(out) >= job["n_predict"]:
                break
        n = len(out)
        cycles = Counting.calls
        text = llm.detokenize(out).decode("utf-8", "replace")
        rate = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0
        print(json.dumps({"n_generated": n, "gen_tok_s": rate, "text": text, "n_cycles": cycles,
                          "n_drafted": Counting.drafted, "n_accepted": max(n - 1 - cycles, 0)}), flush=True)


if __name__ == "__main__":
    main()
